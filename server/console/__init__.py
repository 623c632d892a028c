"""The staff console's server side: its cookie session, live updates, call recordings, the WhatsApp
connection screen, one-step payment links and user management. No Flask here except where a
module says so; the routes in `server/routes/console*.py` and `events_api.py` call these."""
