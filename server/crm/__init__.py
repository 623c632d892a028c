"""The CRM API's logic, kept out of the route module so that `server/routes/crm_api.py` stays thin.

Each service takes the session and the business it acts for (and the objects the route fetched),
and answers JSON-ready values or raises `server.errors.DomainError`.

- `validation`: body fields and query parameters → typed values, or a 400 naming the field
  (amounts: `server.money`, the rules shared with payments)
- `pagination`: opaque keyset cursors, newest first
- `queries`: the filters of each list endpoint
- `serializers`: rows → JSON
- `calls`: the call list and a call's detail
- `conversations`: threads, their messages, thread changes and the staff reply
- `documents`: deals, invoices and contracts, with their state machines
- `customers`, `accounts` (users and tokens), `business` (its settings), `audit_log`

The OpenAPI document of these routes is `server/routes/crm_openapi.py`.
"""
