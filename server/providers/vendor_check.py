"""The deep vendor check: one tiny real request to each configured vendor, to tell GO from NO-GO.

`/readyz` only says which vendors are configured; a wrong key or a suspended account shows only
when a call or a payment fails. `flask --app main check-providers` (and `./smoke.sh --deep`, through
`POST /api/admin/vendor-check`) asks each vendor for the least it can answer:

    google_stt   Recognize 0.2 s of μ-law silence           google_tts   SynthesizeSpeech of one word
    openai       a one-token chat completion                twilio       GET /2010-04-01/Accounts/{sid}.json
    paypal       an OAuth client-credentials token          bridge       GET /status, then the signed GET /qr.json

Each result has the vendor's latency and, on failure, a reason in our own words ("wrong
credentials (HTTP 401)", "timed out after 5 s"): never the vendor's answer, which may echo part of
a key. A vendor that is not configured is "skipped". The last report is kept in `service_state`
(every worker and `/readyz` read it there; `/readyz` never calls a vendor itself).
"""

from __future__ import annotations

import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Callable, Iterator, Optional

import requests
import sqlalchemy as sa
from sqlalchemy.orm import Session

from server.config import Settings
from server.db.models import ServiceState, utcnow
from server.providers.baileys_admin import bridge_secrets
from server.providers.base import ProviderError
from server.security import bridge_hmac

CHECK_TIMEOUT_SECONDS = 5.0  # per vendor; the checks run side by side
STATE_KEY = "vendor_check"
OK, FAILED, SKIPPED = "ok", "failed", "skipped"
SILENCE_MULAW = b"\xff" * 1600  # 0.2 s at 8 kHz: μ-law 0xFF is zero amplitude


class CheckFailed(Exception):
    """The vendor answered, or failed to, in a way that makes it unusable; the message is the reason."""


@dataclass(frozen=True)
class VendorResult:
    vendor: str
    status: str  # ok | failed | skipped
    latency_ms: Optional[int]
    detail: str


# ---- the vendors, one function each: return what was seen, or raise CheckFailed ----------------
# The vendors' SDKs are imported by their checks: /readyz and the app's start need none of them.
def check_google_stt(settings: Settings) -> str:
    from google.cloud import speech_v1 as speech
    from google.cloud.speech_v1.services.speech.transports import SpeechGrpcTransport

    from server.providers.google_credentials import build_google_client

    client = build_google_client(
        speech.SpeechClient, SpeechGrpcTransport, settings.google_speech_emulator_host, settings
    )
    config = speech.RecognitionConfig(
        encoding=speech.RecognitionConfig.AudioEncoding.MULAW,
        sample_rate_hertz=8000,
        language_code=settings.stt_language,
    )
    with client, _google_errors():  # leaving the client closes its channel
        client.recognize(
            config=config, audio=speech.RecognitionAudio(content=SILENCE_MULAW), timeout=CHECK_TIMEOUT_SECONDS
        )
    return f"recognised 0.2 s of audio ({settings.stt_language})"


def check_google_tts(settings: Settings) -> str:
    from google.cloud import texttospeech_v1 as tts
    from google.cloud.texttospeech_v1.services.text_to_speech.transports import TextToSpeechGrpcTransport

    from server.providers.google_credentials import build_google_client

    client = build_google_client(
        tts.TextToSpeechClient, TextToSpeechGrpcTransport, settings.google_tts_emulator_host, settings
    )
    with client, _google_errors():
        response = client.synthesize_speech(
            input=tts.SynthesisInput(text="שלום"),
            voice=tts.VoiceSelectionParams(
                language_code="-".join(settings.tts_voice.split("-")[:2]), name=settings.tts_voice
            ),
            audio_config=tts.AudioConfig(audio_encoding=tts.AudioEncoding.MULAW, sample_rate_hertz=8000),
            timeout=CHECK_TIMEOUT_SECONDS,
        )
    if not response.audio_content:
        raise CheckFailed("answered no audio")
    return f"synthesised one word with {settings.tts_voice} ({len(response.audio_content)} bytes)"


def check_openai(settings: Settings) -> str:
    import openai

    client = openai.OpenAI(
        api_key=settings.openai_api_key,
        base_url=settings.openai_base_url or None,
        max_retries=0,
        timeout=CHECK_TIMEOUT_SECONDS,
    )
    try:
        client.chat.completions.create(
            model=settings.openai_model, messages=[{"role": "user", "content": "ping"}], max_completion_tokens=1
        )
    except openai.APITimeoutError:
        raise CheckFailed(f"timed out after {CHECK_TIMEOUT_SECONDS:g} s") from None
    except openai.APIConnectionError as exc:
        raise CheckFailed(f"unreachable ({type(exc.__cause__ or exc).__name__})") from None
    except openai.NotFoundError:
        raise CheckFailed(f"model {settings.openai_model} not found for this key (HTTP 404)") from None
    except openai.APIStatusError as exc:
        raise CheckFailed(http_reason(exc.status_code)) from None
    return f"one-token completion from {settings.openai_model}"


def check_twilio(settings: Settings) -> str:
    url = f"{settings.twilio_api_base_url.rstrip('/')}/2010-04-01/Accounts/{settings.twilio_account_sid}.json"
    answer = _http(
        "GET",
        url,
        auth=(settings.twilio_account_sid, settings.twilio_auth_token),
        headers={"Accept": "application/json"},
    )
    if answer.status_code != 200:
        raise CheckFailed(http_reason(answer.status_code))
    status = _json_field(answer, "status")
    if status != "active":
        raise CheckFailed(f"the account is {status or 'in an unknown state'}, not active")
    return "account active"


def check_paypal(settings: Settings) -> str:
    answer = _http(
        "POST",
        f"{settings.paypal_base_url}/v1/oauth2/token",
        auth=(settings.paypal_client_id, settings.paypal_client_secret),
        data={"grant_type": "client_credentials"},
        headers={"Accept": "application/json"},
    )
    if answer.status_code != 200:
        raise CheckFailed(http_reason(answer.status_code))
    if not _json_field(answer, "access_token"):
        raise CheckFailed("answered no access token")
    return f"OAuth token issued ({settings.paypal_mode})"


def check_bridge(settings: Settings) -> str:
    # The bridge runs one WhatsApp account per business; its signed list of them also proves that
    # both sides share WA_SHARED_SECRET.
    listed = _http(
        "GET",
        settings.bridge_url + "/instances",
        headers={bridge_hmac.HEADER: bridge_hmac.sign_request(bridge_secrets(settings), "GET", "/instances")},
    )
    if listed.status_code == 401:
        raise CheckFailed(
            "wrong shared secret (HTTP 401): WA_SHARED_SECRET differs from the bridge's, or the bridge runs"
            " an older release that signs requests another way (restart both from the same release)"
        )
    if listed.status_code != 200:
        raise CheckFailed(http_reason(listed.status_code))
    instances = [i for i in _json_field(listed, "instances") or [] if isinstance(i, dict)]
    if not instances:
        raise CheckFailed("no WhatsApp account on the bridge yet: add one per business (whatsapp-instance add)")
    down = [f"business {i.get('business_id')}: {i.get('state')}" for i in instances if i.get("state") != "open"]
    if down:
        raise CheckFailed(f"WhatsApp is not connected ({'; '.join(down)}): link the phone from the console")
    return f"WhatsApp connected ({len(instances)} of {len(instances)} accounts)"


# Each vendor: its check, and whether the settings configure it.
VENDORS: dict[str, tuple[Callable[[Settings], str], Callable[[Settings], bool]]] = {
    "google_stt": (check_google_stt, lambda s: s.speech_configured),
    "google_tts": (check_google_tts, lambda s: s.tts_configured),
    "openai": (check_openai, lambda s: s.llm_configured),
    "twilio": (check_twilio, lambda s: bool(s.twilio_account_sid and s.twilio_auth_token)),
    "paypal": (check_paypal, lambda s: bool(s.paypal_client_id and s.paypal_client_secret)),
    "bridge": (check_bridge, lambda s: s.enable_wa_baileys and bool(s.wa_shared_secret)),
}


# ---- the orchestrator ------------------------------------------------------------------------
def check_vendors(settings: Settings) -> dict[str, Any]:
    """Every configured vendor checked side by side; the report (`go` is False when any failed)."""
    started = utcnow()
    _import_sdks(settings)  # before the clocks start: a first import of a vendor SDK takes seconds
    with ThreadPoolExecutor(max_workers=len(VENDORS), thread_name_prefix="vendor-check") as pool:
        futures = {
            name: pool.submit(_run_one, name, check, configured, settings)
            for name, (check, configured) in VENDORS.items()
        }
        results = [futures[name].result() for name in VENDORS]
    return {
        "go": not any(r.status == FAILED for r in results),
        "checked_at": started.isoformat(),
        "failed": [r.vendor for r in results if r.status == FAILED],
        "results": [asdict(r) for r in results],
    }


def _import_sdks(settings: Settings) -> None:
    if settings.llm_configured:
        import openai  # noqa: F401
    if settings.speech_configured or settings.tts_configured:
        import google.cloud.speech_v1  # noqa: F401
        import google.cloud.texttospeech_v1  # noqa: F401


def _run_one(
    name: str, check: Callable[[Settings], str], configured: Callable[[Settings], bool], settings: Settings
) -> VendorResult:
    if not configured(settings):
        return VendorResult(name, SKIPPED, None, "not configured")
    began = time.monotonic()
    try:
        detail, status = check(settings), OK
    except CheckFailed as exc:
        detail, status = str(exc), FAILED
    except ProviderError as exc:  # our own message: e.g. an unreadable GCP_CREDENTIALS_JSON, named, not echoed
        detail, status = str(exc), FAILED
    except Exception as exc:  # a bug or an unexpected SDK error: its type only (its text may hold a secret)
        detail, status = f"unexpected {type(exc).__name__}", FAILED
    return VendorResult(name, status, round((time.monotonic() - began) * 1000), detail)


def store_report(session: Session, report: dict[str, Any]) -> None:
    row = session.get(ServiceState, STATE_KEY)
    if row is None:
        session.add(ServiceState(key=STATE_KEY, value=report))
    else:
        row.value = report
        row.updated_at = utcnow()


def last_report(session: Session, now: Optional[datetime] = None) -> Optional[dict[str, Any]]:
    """The last stored report with its age in seconds, or None when no check ever ran."""
    row = session.execute(
        sa.select(ServiceState.value, ServiceState.updated_at).where(ServiceState.key == STATE_KEY)
    ).first()
    if row is None or not row.value:
        return None
    age = ((now or utcnow()) - row.updated_at).total_seconds()
    return {**row.value, "age_seconds": max(0, round(age))}


def render_report(report: dict[str, Any]) -> str:
    """The report as lines for a terminal: one per vendor, then GO or NO-GO with the failed vendors."""
    labels = {OK: "OK", FAILED: "FAIL", SKIPPED: "SKIP"}
    lines = []
    for result in report["results"]:
        latency = f"{result['latency_ms']} ms" if result["latency_ms"] is not None else ""
        lines.append(f"{labels[result['status']]:4}  {result['vendor']:11} {latency:>8}  {result['detail']}")
    verdict = "GO" if report["go"] else f"NO-GO: {', '.join(report['failed'])} failed"
    return "\n".join([*lines, "", verdict])


# ---- shared helpers ----------------------------------------------------------------------------
def http_reason(status: int) -> str:
    """A vendor's HTTP status in an operator's words."""
    if status == 401:
        return "wrong credentials (HTTP 401)"
    if status == 403:
        return "access denied (HTTP 403): the credentials lack a permission, or the account is restricted"
    if status == 404:
        return "not found (HTTP 404): wrong account id or base URL"
    if status == 429:
        return "rate limited or out of quota (HTTP 429)"
    if status >= 500:
        return f"the vendor failed (HTTP {status})"
    return f"refused (HTTP {status})"


@contextlib.contextmanager
def _google_errors() -> Iterator[None]:
    """Google's gRPC errors in an operator's words."""
    import google.auth.exceptions
    from google.api_core import exceptions as google_exceptions

    try:
        yield
    except (google_exceptions.Unauthenticated, google.auth.exceptions.RefreshError):
        raise CheckFailed("wrong credentials (UNAUTHENTICATED): the service-account key was refused") from None
    except google_exceptions.PermissionDenied:
        raise CheckFailed("access denied (PERMISSION_DENIED): is the API enabled for the key's project?") from None
    except google_exceptions.DeadlineExceeded:
        raise CheckFailed(f"timed out after {CHECK_TIMEOUT_SECONDS:g} s") from None
    except google_exceptions.ServiceUnavailable:
        raise CheckFailed("unreachable (UNAVAILABLE)") from None
    except google_exceptions.GoogleAPICallError as exc:
        raise CheckFailed(f"refused ({type(exc).__name__})") from None


def _http(method: str, url: str, **kwargs: Any) -> requests.Response:
    try:
        return requests.request(method, url, timeout=CHECK_TIMEOUT_SECONDS, **kwargs)
    except requests.Timeout:
        raise CheckFailed(f"timed out after {CHECK_TIMEOUT_SECONDS:g} s") from None
    except requests.RequestException as exc:
        raise CheckFailed(f"unreachable ({type(exc).__name__})") from None


def _json_field(answer: requests.Response, name: str) -> Any:
    try:
        body = answer.json()
    except ValueError:
        raise CheckFailed("answered something that is not JSON") from None
    return body.get(name) if isinstance(body, dict) else None
