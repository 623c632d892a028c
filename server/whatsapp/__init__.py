"""WhatsApp: inbound messages from Twilio and the Baileys bridge, the unified send service with
provider routing, delivery statuses and AI auto-replies. The routes stay thin and call in here."""
