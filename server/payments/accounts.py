"""Whose provider credentials pay for a business: its own `PaymentGateway` row first, else the server's.

A business's row is used whole or not at all (its PayPal app has its own webhook id, its Tranzila
terminal its own API keys; mixing them with the server's would never verify). A row switched off
(`enabled = false`) means the business does not use that provider, even if the server has keys.

Secrets in a row are write-only through the API: `gateway_view()` says whether each one is set,
never what it is. They are stored sealed (server/payments/gateway_secrets.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Mapping, Optional, Union, overload

import sqlalchemy as sa
from sqlalchemy.orm import Session

from server.config import Settings
from server.db.dao_crm import audit
from server.db.models import PaymentGateway
from server.errors import DomainError, Problem
from server.payments.gateway_secrets import open_secrets, seal_secrets
from server.providers.paypal import PayPalClient
from server.providers.tranzila import TranzilaClient

PROVIDERS = ("paypal", "tranzila")
LABELS = {"paypal": "PayPal", "tranzila": "Tranzila"}
TRANZILA_MODES = ("iframe", "payment_request")
# Per provider: each settings field a business may store, and whether it is a secret.
GATEWAY_FIELDS = {
    "paypal": {"client_id": False, "client_secret": True, "webhook_id": False},
    "tranzila": {"terminal": False, "app_key": False, "secret": True, "mode": False},
}
MAX_FIELD_LENGTH = 200


@dataclass(frozen=True)
class PayPalAccount:
    client_id: str
    client_secret: str
    webhook_id: str
    source: str  # "business" or "system"

    def client(self, settings: Settings) -> PayPalClient:
        return PayPalClient(
            settings.paypal_base_url, self.client_id, self.client_secret, timeout=settings.payments_http_timeout_seconds
        )


@dataclass(frozen=True)
class TranzilaAccount:
    terminal: str
    app_key: str
    secret: str
    mode: str  # "iframe" or "payment_request"
    source: str

    @property
    def has_api_keys(self) -> bool:
        return bool(self.app_key and self.secret)

    def client(self, settings: Settings) -> TranzilaClient:
        return TranzilaClient(
            settings.tranzila_api_base_url, self.app_key, self.secret, timeout=settings.payments_http_timeout_seconds
        )


Account = Union[PayPalAccount, TranzilaAccount]


def gateway_row(session: Session, business_id: int, provider: str) -> Optional[PaymentGateway]:
    return session.scalar(
        sa.select(PaymentGateway).where(PaymentGateway.business_id == business_id, PaymentGateway.provider == provider)
    )


def _paypal_from(values: dict[str, Any], source: str) -> Optional[PayPalAccount]:
    if not (values.get("client_id") and values.get("client_secret")):
        return None
    return PayPalAccount(values["client_id"], values["client_secret"], values.get("webhook_id") or "", source)


def _tranzila_from(values: dict[str, Any], source: str) -> Optional[TranzilaAccount]:
    account = TranzilaAccount(
        values.get("terminal") or "",
        values.get("app_key") or "",
        values.get("secret") or "",
        values.get("mode") or "iframe",
        source,
    )
    # A payment request is an API call; the hosted page alone needs only the terminal.
    if not account.terminal or (account.mode == "payment_request" and not account.has_api_keys):
        return None
    return account


def _system_values(settings: Settings, provider: str) -> dict[str, Any]:
    if provider == "paypal":
        return {
            "client_id": settings.paypal_client_id,
            "client_secret": settings.paypal_client_secret,
            "webhook_id": settings.paypal_webhook_id,
        }
    return {
        "terminal": settings.tranzila_terminal,
        "app_key": settings.tranzila_app_key,
        "secret": settings.tranzila_secret,
        "mode": settings.tranzila_payment_mode,
    }


_BUILDERS = {"paypal": _paypal_from, "tranzila": _tranzila_from}


@overload
def provider_account(
    session: Session, settings: Settings, business_id: int, provider: Literal["paypal"]
) -> Optional[PayPalAccount]: ...


@overload
def provider_account(
    session: Session, settings: Settings, business_id: int, provider: Literal["tranzila"]
) -> Optional[TranzilaAccount]: ...


@overload
def provider_account(session: Session, settings: Settings, business_id: int, provider: str) -> Optional[Account]: ...


def provider_account(session: Session, settings: Settings, business_id: int, provider: str) -> Optional[Account]:
    """The credentials `business_id` uses for `provider`, or None when it has none (→ 501)."""
    build = _BUILDERS[provider]
    row = gateway_row(session, business_id, provider)
    if row is not None:
        if not row.enabled:
            return None
        own = build(open_secrets(session, provider, row.settings or {}), "business")
        if own is not None:
            return own
    return build(_system_values(settings, provider), "system")


def system_configured(settings: Settings, provider: str) -> bool:
    return _BUILDERS[provider](_system_values(settings, provider), "system") is not None


def readiness_warnings(session: Session, settings: Settings) -> list[dict[str, Any]]:
    """What an operator should know although the instance is ready: Tranzila terminals without API
    keys, whose notifications can't be confirmed with Tranzila, so their payments wait for an owner."""
    if not settings.payments_enabled:
        return []
    system = _tranzila_from(_system_values(settings, "tranzila"), "system")
    rows = session.scalars(
        sa.select(PaymentGateway).where(PaymentGateway.provider == "tranzila", PaymentGateway.enabled.is_(True))
    )
    # Present secrets are enough to know; they are not opened here.
    own = [_tranzila_from(row.settings or {}, "business") for row in rows]
    businesses = sum(1 for account in own if account is not None and not account.has_api_keys)
    unkeyed_system = system is not None and not system.has_api_keys
    if not (unkeyed_system or businesses):
        return []
    where = " and ".join(
        part
        for part in (
            "the server's terminal" if unkeyed_system else "",
            f"{businesses} business terminal(s)" if businesses else "",
        )
        if part
    )
    return [
        {
            "code": "tranzila_without_api_keys",
            "system": unkeyed_system,
            "businesses": businesses,
            "message": f"Tranzila API keys missing for {where}: notifications can't be confirmed with Tranzila, "
            f"so those payments wait as awaiting_confirm until an owner confirms them",
        }
    ]


# ---- the owner's view and update of a business's rows ------------------------------------------
def list_gateways(session: Session, settings: Settings, business_id: int) -> dict[str, Any]:
    return {
        "gateways": [
            gateway_view(gateway_row(session, business_id, provider), settings, provider) for provider in PROVIDERS
        ]
    }


def gateway_view(row: Optional[PaymentGateway], settings: Settings, provider: str) -> dict[str, Any]:
    fields = GATEWAY_FIELDS[provider]
    values = (row.settings or {}) if row is not None else {}
    own = row is not None and _BUILDERS[provider](values, "business") is not None
    return {
        "provider": provider,
        "enabled": row.enabled if row is not None else True,
        "settings": {name: values.get(name) for name, secret in fields.items() if not secret},
        "secrets_set": {name: bool(values.get(name)) for name, secret in fields.items() if secret},
        "business_credentials_complete": own,
        "system_credentials_available": system_configured(settings, provider),
    }


def known_provider(provider: str) -> str:
    """`provider` as named in a path, or a 404."""
    if provider not in PROVIDERS:
        raise DomainError(Problem.NOT_FOUND, "not_found", f"no such provider; use one of {', '.join(PROVIDERS)}")
    return provider


def update_gateway(
    session: Session, settings: Settings, business_id: int, actor: str, provider: str, body: Mapping[str, Any]
) -> dict[str, Any]:
    """Apply an owner's PUT: fields sent replace stored ones (null clears), fields left out stay.
    Answers the row as `gateway_view` shows it.

    The audit names the fields that changed, never their values."""
    fields = GATEWAY_FIELDS[known_provider(provider)]
    unknown = sorted(set(body) - set(fields) - {"enabled"})
    if unknown:
        raise _invalid(
            unknown[0], f"unknown field {unknown[0]!r}; {provider} takes {', '.join(sorted(fields))} and enabled"
        )
    if "enabled" in body and not isinstance(body["enabled"], bool):
        raise _invalid("enabled", "enabled must be true or false")
    for name in sorted(set(body) & set(fields)):
        value = body[name]
        if value is not None and (not isinstance(value, str) or len(value.strip()) > MAX_FIELD_LENGTH):
            raise _invalid(name, f"{name} must be a string of at most {MAX_FIELD_LENGTH} characters")
    if provider == "tranzila" and body.get("mode") not in (None, *TRANZILA_MODES):
        raise _invalid("mode", f"mode must be one of {', '.join(TRANZILA_MODES)}")
    row = gateway_row(session, business_id, provider)
    if row is None:
        row = PaymentGateway(business_id=business_id, provider=provider, enabled=True, settings={})
        session.add(row)
    values = open_secrets(session, provider, row.settings or {})  # stored sealed; compared in plain text
    changed = []
    for name in fields:
        if name in body:
            new = (body[name] or "").strip() or None
            if values.get(name) != new:
                changed.append(name)
            values[name] = new
    if "enabled" in body and body["enabled"] != row.enabled:
        row.enabled = body["enabled"]
        changed.append("enabled")
    row.settings = seal_secrets(session, provider, {k: v for k, v in values.items() if v is not None})
    session.flush()
    audit(
        session,
        business_id,
        actor,
        "payment_gateway.updated",
        "payment_gateway",
        row.id,
        provider=provider,
        changed=changed,
    )
    return gateway_view(row, settings, provider)


def _invalid(field: str, message: str) -> DomainError:
    return DomainError(Problem.INVALID, "invalid_field", message, field=field)
