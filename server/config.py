"""One typed settings object, built from the environment (and an optional `.env` file).

Nothing else in the project reads `os.environ`: every module receives `Settings`. A wrong value
stops start-up with one line naming the variable, and secrets never appear in `repr()` or logs.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Each speech channel's poller holds one of gRPC's 64 waiting threads under gevent
# (server/providers/google_credentials.py); the rest are for syntheses and recognitions in flight.
MAX_STT_CHANNELS = 32


class ConfigError(ValueError):
    """A configuration value is missing or malformed; the message names the variable."""


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("expected true/false")


def _port(raw: str) -> int:
    value = int(raw)
    if not 0 < value < 65536:
        raise ValueError("expected a TCP port 1-65535")
    return value


def _positive_float(raw: str) -> float:
    value = float(raw)
    if value <= 0:
        raise ValueError("expected a positive number")
    return value


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError("expected a positive whole number")
    return value


def _channel_count(raw: str) -> int:
    value = int(raw)
    if not 1 <= value <= MAX_STT_CHANNELS:
        raise ValueError(f"expected a whole number from 1 to {MAX_STT_CHANNELS}")
    return value


def _non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("expected a whole number, 0 or more")
    return value


def _rate_limits(raw: str) -> str:
    from limits import parse_many

    value = raw.strip()
    try:
        parse_many(value)
    except ValueError:
        raise ValueError("expected limits such as 20/minute;200/hour") from None
    return value


def _log_level(raw: str) -> str:
    value = raw.strip().upper()
    if value not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise ValueError("expected DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return value


def _http_url(raw: str) -> str:
    value = raw.strip()
    if not value.startswith(("http://", "https://")) or len(value.split("://", 1)[1].strip("/")) == 0:
        raise ValueError("expected an http:// or https:// URL")
    return value


def _optional_http_url(raw: str) -> str:
    return _http_url(raw) if raw.strip() else ""


def _host_port(raw: str) -> str:
    value = raw.strip()
    if not value:
        return ""
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        raise ValueError("expected host:port")
    _port(port)
    return value


def _provider_list(raw: str) -> tuple[str, ...]:
    names = tuple(p.strip().lower() for p in raw.split(",") if p.strip())
    unknown = [n for n in names if n not in {"twilio", "baileys"}]
    if unknown:
        raise ValueError(f"unknown provider {unknown[0]!r}; expected twilio and/or baileys")
    return names


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}")
        return value

    return parse


def _text(raw: str) -> str:
    return raw.strip()


def _fernet_key(raw: str) -> str:
    value = raw.strip()
    if not value:
        return ""
    from cryptography.fernet import Fernet

    try:
        Fernet(value)
    except (ValueError, TypeError):
        raise ValueError(
            'expected a Fernet key (32 random bytes, URL-safe base64; see docs/operations.md "Secrets at rest")'
        ) from None
    return value


def _fernet_keys(raw: str) -> tuple[str, ...]:
    return tuple(_fernet_key(part) for part in raw.split(",") if part.strip())


def _jobs_url(raw: str) -> str:
    value = raw.strip()
    if value and not value.startswith(("sqlite:///", "redis://", "rediss://", "unix://")):
        raise ValueError("expected sqlite:///PATH, redis://HOST:PORT/DB, rediss://… or unix://…")
    return value


def env(name: str, default: Any, parse: Callable[[str], Any] = _text, *, secret: bool = False):
    """Declare a setting read from the environment variable `name`."""
    return field(default=default, metadata={"env": name, "parse": parse, "secret": secret})


@dataclass(frozen=True)
class Settings:
    # service
    port: int = env("PORT", 5000, _port)
    public_base_url: str = env("PUBLIC_BASE_URL", "", _optional_http_url)
    database_url: str = env("DATABASE_URL", "")
    log_level: str = env("LOG_LEVEL", "INFO", _log_level)
    max_content_length: int = env("MAX_CONTENT_LENGTH", 1024 * 1024, _positive_int)
    app_secret: str = env("APP_SECRET", "", secret=True)
    shutdown_grace_seconds: float = env("SHUTDOWN_GRACE_SECONDS", 30.0, _positive_float)
    git_commit: str = env("GIT_COMMIT", "")
    build_time: str = env("BUILD_TIME", "")
    deploy_id: str = env("DEPLOY_ID", "")
    sqlite_busy_timeout_seconds: float = env("SQLITE_BUSY_TIMEOUT_SECONDS", 5.0, _positive_float)
    database_connect_timeout_seconds: float = env("DATABASE_CONNECT_TIMEOUT_SECONDS", 1.5, _positive_float)
    database_pool_size: int = env("DATABASE_POOL_SIZE", 10, _positive_int)
    database_pool_timeout_seconds: float = env("DATABASE_POOL_TIMEOUT_SECONDS", 5.0, _positive_float)
    secrets_key: str = env("SECRETS_KEY", "", _fernet_key, secret=True)
    secrets_key_previous: tuple = env("SECRETS_KEY_PREVIOUS", (), _fernet_keys, secret=True)

    # sign-in and tokens
    token_ttl_days: int = env("TOKEN_TTL_DAYS", 90, _non_negative_int)
    session_idle_minutes: int = env("SESSION_IDLE_MINUTES", 720, _positive_int)
    login_limit_per_address: str = env("LOGIN_LIMIT_PER_ADDRESS", "20/minute;200/hour", _rate_limits)
    login_limit_per_account: str = env("LOGIN_LIMIT_PER_ACCOUNT", "10/10minutes;100/day", _rate_limits)
    trusted_proxy_hops: int = env("TRUSTED_PROXY_HOPS", 0, _non_negative_int)

    # background jobs (URLs may carry a password)
    jobs_url: str = env("JOBS_URL", "", _jobs_url, secret=True)
    redis_url: str = env("REDIS_URL", "", _jobs_url, secret=True)
    jobs_workers: int = env("JOBS_WORKERS", 4, _positive_int)
    # A running job's lease, renewed by its worker: a job whose worker died is queued again this long
    # after the worker's last renewal, plus as much again for workers to renew after a database outage.
    jobs_lease_seconds: float = env("JOBS_LEASE_SECONDS", 30.0, _positive_float)

    # Twilio (voice + WhatsApp)
    twilio_account_sid: str = env("TWILIO_ACCOUNT_SID", "")
    twilio_auth_token: str = env("TWILIO_AUTH_TOKEN", "", secret=True)
    twilio_api_base_url: str = env("TWILIO_API_BASE_URL", "https://api.twilio.com", _http_url)
    twilio_api_timeout_seconds: float = env("TWILIO_API_TIMEOUT_SECONDS", 10.0, _positive_float)
    watchdog_seconds: float = env("WATCHDOG_SECONDS", 6.0, _positive_float)
    ws_start_timeout_seconds: float = env("WS_START_TIMEOUT_SECONDS", 5.0, _positive_float)
    recording_cache_dir: str = env("RECORDING_CACHE_DIR", "")

    # speech + language
    google_application_credentials: str = env("GOOGLE_APPLICATION_CREDENTIALS", "")
    gcp_credentials_json: str = env("GCP_CREDENTIALS_JSON", "", secret=True)
    google_speech_emulator_host: str = env("GOOGLE_SPEECH_EMULATOR_HOST", "", _host_port)
    google_tts_emulator_host: str = env("GOOGLE_TTS_EMULATOR_HOST", "", _host_port)
    stt_language: str = env("STT_LANGUAGE", "he-IL")
    stt_model: str = env("STT_MODEL", "phone_call")
    # gRPC channels a worker spreads its calls' speech streams over (server/providers/google_stt.py).
    stt_channels: int = env("STT_CHANNELS", 8, _channel_count)
    tts_voice: str = env("TTS_VOICE", "he-IL-Wavenet-A")
    tts_speaking_rate: float = env("TTS_SPEAKING_RATE", 1.0, _positive_float)
    prompt_audio_dir: str = env("PROMPT_AUDIO_DIR", "")
    openai_api_key: str = env("OPENAI_API_KEY", "", secret=True)
    openai_model: str = env("OPENAI_MODEL", "gpt-4o-mini")
    openai_base_url: str = env("OPENAI_BASE_URL", "", _optional_http_url)
    llm_first_token_timeout_seconds: float = env("LLM_FIRST_TOKEN_TIMEOUT_SECONDS", 4.0, _positive_float)
    voice_providers: str = env("VOICE_PROVIDERS", "server.providers.google_openai:build_voice_providers")
    tts_timeout_seconds: float = env("TTS_TIMEOUT_SECONDS", 4.0, _positive_float)
    barge_in_min_speech_ms: int = env("BARGE_IN_MIN_SPEECH_MS", 240, _positive_int)
    # Quiet the VAD must hear after an interim transcript before the reply is written ahead of the
    # final (preemptive generation, server/voice/preemptive.py; each business can switch it off).
    preemptive_silence_ms: int = env("PREEMPTIVE_SILENCE_MS", 120, _positive_int)

    # WhatsApp
    enable_wa_twilio: bool = env("ENABLE_WA_TWILIO", False, _bool)
    twilio_wa_from: str = env("TWILIO_WA_FROM", "")
    enable_wa_baileys: bool = env("ENABLE_WA_BAILEYS", False, _bool)
    wa_baileys_port: int = env("WA_BAILEYS_PORT", 8000, _port)
    wa_baileys_url: str = env("WA_BAILEYS_URL", "", _optional_http_url)
    wa_shared_secret: str = env("WA_SHARED_SECRET", "", secret=True)
    wa_shared_secret_previous: str = env("WA_SHARED_SECRET_PREVIOUS", "", secret=True)
    wa_baileys_timeout_seconds: float = env("WA_BAILEYS_TIMEOUT_SECONDS", 10.0, _positive_float)
    wa_session_dir: str = env("WA_SESSION_DIR", "")
    wa_provider_priority: tuple = env("WA_PROVIDER_PRIORITY", ("baileys", "twilio"), _provider_list)

    # WhatsApp media (pictures, voice notes, videos, documents): a local directory, or an
    # S3-compatible bucket when MEDIA_S3_BUCKET is set (server/providers/media_storage.py).
    media_dir: str = env("MEDIA_DIR", "")
    media_s3_bucket: str = env("MEDIA_S3_BUCKET", "")
    media_s3_endpoint_url: str = env("MEDIA_S3_ENDPOINT_URL", "", _optional_http_url)
    media_s3_region: str = env("MEDIA_S3_REGION", "")
    media_s3_access_key_id: str = env("MEDIA_S3_ACCESS_KEY_ID", "")
    media_s3_secret_access_key: str = env("MEDIA_S3_SECRET_ACCESS_KEY", "", secret=True)
    media_max_bytes: int = env("MEDIA_MAX_BYTES", 16 * 1024 * 1024, _positive_int)
    media_max_per_message: int = env("MEDIA_MAX_PER_MESSAGE", 10, _positive_int)
    media_retention_days: int = env("MEDIA_RETENTION_DAYS", 365, _non_negative_int)

    # payments
    payments_enabled: bool = env("PAYMENTS_ENABLED", True, _bool)
    paypal_client_id: str = env("PAYPAL_CLIENT_ID", "")
    paypal_client_secret: str = env("PAYPAL_CLIENT_SECRET", "", secret=True)
    paypal_mode: str = env("PAYPAL_MODE", "sandbox", _choice("sandbox", "live"))
    paypal_api_base_url: str = env("PAYPAL_API_BASE_URL", "", _optional_http_url)
    paypal_webhook_id: str = env("PAYPAL_WEBHOOK_ID", "")
    tranzila_terminal: str = env("TRANZILA_TERMINAL", "")
    tranzila_app_key: str = env("TRANZILA_API_APP_KEY", "")
    tranzila_secret: str = env("TRANZILA_API_SECRET", "", secret=True)
    tranzila_api_base_url: str = env("TRANZILA_API_BASE_URL", "https://api.tranzila.com", _http_url)
    tranzila_iframe_base_url: str = env("TRANZILA_IFRAME_BASE_URL", "https://direct.tranzila.com", _http_url)
    tranzila_payment_mode: str = env("TRANZILA_PAYMENT_MODE", "iframe", _choice("iframe", "payment_request"))
    payment_link_ttl_days: int = env("PAYMENT_LINK_TTL_DAYS", 30, _positive_int)
    payments_http_timeout_seconds: float = env("PAYMENTS_HTTP_TIMEOUT_SECONDS", 15.0, _positive_float)

    # ---- derived values -------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        """The public base URL, or the local address when none is configured (development)."""
        return self.public_base_url or f"http://localhost:{self.port}"

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            # Heroku-style URLs say postgres://, which SQLAlchemy 2 no longer accepts, and a bare
            # postgresql:// would pick psycopg 3; the driver we ship (and make cooperative) is psycopg2.
            for prefix in ("postgres://", "postgresql://"):
                if self.database_url.startswith(prefix):
                    return "postgresql+psycopg2://" + self.database_url[len(prefix) :]
            return self.database_url
        return f"sqlite:///{PROJECT_ROOT / 'instance' / 'agentlocator.db'}"

    @property
    def recording_cache_path(self) -> Path:
        """Where recordings fetched from Twilio for the console are kept (relative: to the project root)."""
        return PROJECT_ROOT / (self.recording_cache_dir or "instance/recordings")

    @property
    def media_path(self) -> Path:
        """The local media directory (relative: to the project root), used when no S3 bucket is set."""
        return PROJECT_ROOT / (self.media_dir or "instance/media")

    @property
    def bridge_url(self) -> str:
        return (self.wa_baileys_url or f"http://127.0.0.1:{self.wa_baileys_port}").rstrip("/")

    @property
    def paypal_base_url(self) -> str:
        if self.paypal_api_base_url:
            return self.paypal_api_base_url.rstrip("/")
        return "https://api-m.paypal.com" if self.paypal_mode == "live" else "https://api-m.sandbox.paypal.com"

    @property
    def google_credentials_configured(self) -> bool:
        return bool(self.google_application_credentials or self.gcp_credentials_json)

    @property
    def speech_configured(self) -> bool:
        return self.google_credentials_configured or bool(self.google_speech_emulator_host)

    @property
    def tts_configured(self) -> bool:
        return self.google_credentials_configured or bool(self.google_tts_emulator_host)

    @property
    def llm_configured(self) -> bool:
        return bool(self.openai_api_key)

    @property
    def voice_ai_ready(self) -> bool:
        """Live AI calls need all three; without them calls go straight to voicemail."""
        return self.speech_configured and self.tts_configured and self.llm_configured

    def providers_configured(self) -> dict[str, bool]:
        return {
            "twilio": bool(self.twilio_account_sid and self.twilio_auth_token),
            "google_stt": self.speech_configured,
            "google_tts": self.tts_configured,
            "openai": self.llm_configured,
            "whatsapp_twilio": self.enable_wa_twilio and bool(self.twilio_wa_from and self.twilio_auth_token),
            "whatsapp_baileys": self.enable_wa_baileys and bool(self.wa_shared_secret),
            "paypal": bool(self.paypal_client_id and self.paypal_client_secret),
            "tranzila": bool(self.tranzila_terminal),
        }

    def replace(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **changes)

    def __repr__(self) -> str:
        shown = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("secret") and value:
                value = "***"
            shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, dotenv: bool = True) -> "Settings":
        """Build settings from `environ` (default: the process environment plus `.env`)."""
        if environ is None:
            environ = dict(os.environ)
            if dotenv:
                environ = {**_read_dotenv(PROJECT_ROOT / ".env"), **environ}
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name = f.metadata["env"]
            raw = environ.get(name)
            if raw is None:
                continue
            try:
                values[f.name] = f.metadata["parse"](raw)
            except (ValueError, TypeError) as exc:
                shown = "(hidden)" if f.metadata["secret"] else repr(raw)
                reason = (
                    str(exc)
                    if not isinstance(exc, ValueError) or "invalid literal" not in str(exc)
                    else "expected a number"
                )
                raise ConfigError(f"Invalid {name}={shown}: {reason}") from None
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.enable_wa_baileys and not self.wa_shared_secret:
            raise ConfigError("Invalid WA_SHARED_SECRET: required when ENABLE_WA_BAILEYS=true")
        if self.enable_wa_twilio and not self.twilio_wa_from:
            raise ConfigError("Invalid TWILIO_WA_FROM: required when ENABLE_WA_TWILIO=true")


def _read_dotenv(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(path).items() if v is not None}
