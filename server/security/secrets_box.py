"""Secrets at rest: values such as a business's payment gateway secret are stored encrypted.

`SecretsBox` seals a string with Fernet (AES-128-CBC plus HMAC-SHA256, from `cryptography`) and
stores it as `enc:v1:<token>`. The key is `SECRETS_KEY` (a Fernet key); without one it is derived
from `APP_SECRET` with HKDF-SHA256, so a single-host install is encrypted with no extra setting.
Rotation: put the new key in `SECRETS_KEY` and the old one(s) in `SECRETS_KEY_PREVIOUS`; values
sealed under any of them open (MultiFernet), new values are sealed under the first, and
`flask --app main rotate-secrets` re-seals every stored value under it. When `SECRETS_KEY` is set,
the APP_SECRET-derived key still opens values sealed before it was, so adding a dedicated key
needs no other step than that command.

A value without the prefix is plain text written before encryption existed; it is returned as is
(the migration that introduced encryption sealed every such value, and `rotate-secrets` seals any
straggler).
"""

from __future__ import annotations

import base64
from typing import Iterable, Optional

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from server.errors import DomainError, Problem

PREFIX = "enc:v1:"
_HKDF_INFO = b"agentlocator:secrets-at-rest:v1"


def key_from_app_secret(app_secret: str) -> bytes:
    """A Fernet key derived from the app secret (HKDF-SHA256, fixed context, no salt: deterministic)."""
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(app_secret.encode())
    return base64.urlsafe_b64encode(derived)


class SecretsBox:
    def __init__(self, keys: Iterable[bytes | str]):
        fernets = [Fernet(key) for key in keys]
        if not fernets:
            raise ValueError("a SecretsBox needs at least one key")
        self._fernet = MultiFernet(fernets)

    @classmethod
    def from_config(cls, secrets_key: str, previous: Iterable[str], app_secret: str) -> "SecretsBox":
        """The primary key first (SECRETS_KEY, else derived from APP_SECRET), then every older key."""
        derived = key_from_app_secret(app_secret) if app_secret else None
        keys: list[bytes | str] = [secrets_key] if secrets_key else []
        if derived is not None:
            keys.append(derived)
        keys.extend(previous)
        return cls(keys)

    @staticmethod
    def is_sealed(value: Optional[str]) -> bool:
        return isinstance(value, str) and value.startswith(PREFIX)

    def seal(self, plain: str) -> str:
        return PREFIX + self._fernet.encrypt(plain.encode()).decode()

    def open(self, stored: Optional[str]) -> Optional[str]:
        if stored is None or not self.is_sealed(stored):
            return stored
        try:
            return self._fernet.decrypt(stored[len(PREFIX) :].encode()).decode()
        except InvalidToken:
            raise DomainError(
                Problem.UNAVAILABLE,
                "secret_unreadable",
                "a stored secret cannot be decrypted with SECRETS_KEY or SECRETS_KEY_PREVIOUS; "
                "the key it was sealed with is missing from the configuration",
            ) from None

    def reseal(self, stored: str) -> str:
        """`stored` sealed under the primary key (plain text gets sealed; a sealed value is rotated)."""
        if not self.is_sealed(stored):
            return self.seal(stored)
        try:
            return PREFIX + self._fernet.rotate(stored[len(PREFIX) :].encode()).decode()
        except InvalidToken:
            raise DomainError(
                Problem.UNAVAILABLE,
                "secret_unreadable",
                "a stored secret cannot be decrypted with SECRETS_KEY or SECRETS_KEY_PREVIOUS",
            ) from None


def session_box(session) -> SecretsBox:
    """The box of the `Database` this session came from."""
    box = session.info.get("secrets_box")
    if box is None:
        raise DomainError(
            Problem.NOT_CONFIGURED, "secrets_not_configured", "stored secrets need SECRETS_KEY or APP_SECRET"
        )
    return box
