"""The CRM API's logic, kept out of the route module so that `server/routes/crm_api.py` stays thin.

- `validation`: body fields and query parameters → typed values, or a 400 naming the field
- `money`: decimal amounts → integer minor units, exactly
- `pagination`: opaque keyset cursors, newest first
- `queries`: the filters of each list endpoint
- `serializers`: rows → JSON
- `documents`: deals, invoices and contracts, with their state machines
- `conversations`: thread changes and the staff reply
- `customers`, `accounts` (users and tokens)
- `api_spec`: the OpenAPI path items of every CRM route
"""
