"""The secret fields of a business's `PaymentGateway.settings` (PayPal `client_secret`, Tranzila
`secret`) are stored sealed by the session's `SecretsBox`; the other fields stay readable JSON.

`open_secrets` gives the values with secrets in plain text (for a provider client or a comparison),
`seal_secrets` the form to store, `reseal_all` re-seals every stored secret under the primary key
(`flask --app main rotate-secrets`).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from server.db.models import PaymentGateway
from server.security.secrets_box import SecretsBox, session_box


def _secret_names(provider: str) -> list[str]:
    from server.payments.accounts import GATEWAY_FIELDS  # the field table lives with the accounts

    return [name for name, secret in GATEWAY_FIELDS.get(provider, {}).items() if secret]


def open_secrets(session: Session, provider: str, values: dict[str, Any]) -> dict[str, Any]:
    names = [n for n in _secret_names(provider) if values.get(n)]
    if not names:
        return dict(values)
    box = session_box(session)
    return {**values, **{name: box.open(values[name]) for name in names}}


def seal_secrets(session: Session, provider: str, values: dict[str, Any]) -> dict[str, Any]:
    names = [n for n in _secret_names(provider) if values.get(n)]
    if not names:
        return dict(values)
    box = session_box(session)
    return {
        **values,
        **{name: values[name] if box.is_sealed(values[name]) else box.seal(values[name]) for name in names},
    }


def reseal_all(session: Session, box: SecretsBox) -> int:
    """Seal every stored gateway secret under the primary key; the number of rows rewritten."""
    rewritten = 0
    for row in session.scalars(sa.select(PaymentGateway).order_by(PaymentGateway.id).with_for_update()):
        values = dict(row.settings or {})
        changed = False
        for name in _secret_names(row.provider):
            if values.get(name):
                values[name] = box.reseal(values[name])
                changed = True
        if changed:
            row.settings = values
            rewritten += 1
    session.flush()
    return rewritten
