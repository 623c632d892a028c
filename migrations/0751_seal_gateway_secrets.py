"""Payment gateway secrets at rest: seal every plain-text PayPal `client_secret` and Tranzila `secret`
stored in `payment_gateways.settings` (server/security/secrets_box.py). No schema change; values
already sealed are left as they are, so the migration is safe to meet a partly sealed table.

A rollback to a version from before sealing would read the sealed text as the secret: the
provider refuses it (no secret leaks), and `flask --app main rotate-secrets` is not needed after.
"""
import sqlalchemy as sa

SECRET_FIELDS = {"paypal": ("client_secret",), "tranzila": ("secret",)}
SEALED_PREFIX = "enc:v1:"


def upgrade(op, env):
    conn = op.get_bind()
    table = sa.table("payment_gateways", sa.column("id", sa.Integer), sa.column("provider", sa.String),
                     sa.column("settings", sa.JSON))
    for row in conn.execute(sa.select(table.c.id, table.c.provider, table.c.settings)).all():
        values = dict(row.settings or {})
        plain = [name for name in SECRET_FIELDS.get(row.provider, ())
                 if isinstance(values.get(name), str) and values[name] and not values[name].startswith(SEALED_PREFIX)]
        if not plain:
            continue
        if env.secrets_box is None:
            raise RuntimeError("sealing stored gateway secrets needs the secrets key: run migrations through the "
                               "app (flask --app main migrate) with SECRETS_KEY or APP_SECRET set")
        for name in plain:
            values[name] = env.secrets_box.seal(values[name])
        conn.execute(table.update().where(table.c.id == row.id).values(settings=values))
