"""Every error code the API can answer the console with has a Hebrew text in the console's error
map (static/app/js/api.js), so staff never read a generic message for a known failure."""

from __future__ import annotations

import re

from testkit.servers import PROJECT_ROOT

# Codes only vendors' webhooks, the call's media stream or a retired endpoint get: the console
# calls none of those.
NOT_FOR_THE_CONSOLE = {
    "call_not_recorded_yet",  # a queued Twilio callback
    "gone",  # the retired Stripe endpoint
    "invalid_event",  # WhatsApp webhooks
    "invalid_signature",  # Twilio, PayPal, Tranzila and bridge webhooks
    "invalid_webhook",
    "missing_call_sid",  # Twilio voice callbacks
    "missing_dial_status",  # Twilio's dial result
    "unknown_call",  # Twilio's dial result and whisper
    "unknown_transfer",
    "unknown_business",  # bridge events
    "notification_rejected",  # payment gateway notifications
    "unavailable",  # a payment notification to come again
    "websocket_required",  # the media stream
}


def _server_codes() -> set[str]:
    codes: set[str] = set()
    for path in (PROJECT_ROOT / "server").rglob("*.py"):
        codes.update(re.findall(r'DomainError\(\s*Problem\.\w+,\s*"(\w+)"', path.read_text()))
    return codes


def _hebrew_codes() -> set[str]:
    script = (PROJECT_ROOT / "static" / "app" / "js" / "api.js").read_text()
    table = script[script.index("const MESSAGES = {") : script.index("};", script.index("const MESSAGES = {"))]
    return set(re.findall(r"^\s+(\w+): '", table, re.M))


def test_every_error_code_the_console_can_get_has_a_hebrew_text():
    codes = _server_codes()
    assert {"sign_in_busy", "rate_limited", "database_busy", "not_found"} <= codes  # the scan finds them
    assert NOT_FOR_THE_CONSOLE <= codes, "a code listed as not for the console no longer exists"
    missing = sorted(codes - NOT_FOR_THE_CONSOLE - _hebrew_codes())
    assert missing == [], f"no Hebrew text in static/app/js/api.js for {missing}"
