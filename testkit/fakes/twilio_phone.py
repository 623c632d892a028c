"""Place a call into the app exactly as Twilio does, from the first webhook to the media stream.

1. A signed `POST /webhook/incoming_call` (form parameters as Twilio sends them).
2. The answer's TwiML is read: `<Connect><Stream url=…>` and its `<Parameter>`s.
3. A WebSocket to that Stream URL (signed), `connected` + `start` with those parameters, then
   20 ms μ-law frames: `TwilioCaller` from `testkit/fakes/twilio_caller.py`.
4. When the caller hangs up, the signed `POST /webhook/call_status` Twilio sends at the end.

A call the app gives new TwiML through the REST API (the REST fake, `place_call(…, twilio=fake)`)
leaves its media stream as on Twilio: `stop`, then the WebSocket closes. For a transfer's `<Dial>`,
`whisper` fetches what the person who answers hears (`<Number url>`), and `dial_ended` posts the
`<Dial action>` with how the dial ended (`completed`, `no-answer`, `busy`, `failed`, `canceled`).

The app may sit behind a public URL (`PUBLIC_BASE_URL`) that differs from where it can be
reached (`app_url`): signatures use the public URL, requests go to `app_url`.
"""

from __future__ import annotations

import secrets
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
from twilio.request_validator import RequestValidator

from testkit.fakes.twilio_caller import TwilioCaller, twilio_signature
from testkit.fakes.twilio_rest import FakeTwilioRest


@dataclass(frozen=True)
class Line:
    """Who calls whom, on which Twilio account."""

    app_url: str
    public_url: str
    account_sid: str
    auth_token: str
    from_number: str
    to_number: str


@dataclass(frozen=True)
class StreamInstructions:
    url: str
    parameters: dict[str, str]
    twiml: str


class CallNotConnected(Exception):
    """The app answered without a `<Connect><Stream>` (e.g. straight to voicemail)."""


def new_call_sid() -> str:
    return "CA" + secrets.token_hex(16)


def signed_post(line: Line, path: str, params: dict[str, str]) -> requests.Response:
    signature = RequestValidator(line.auth_token).compute_signature(line.public_url.rstrip("/") + path, params)
    return requests.post(
        line.app_url.rstrip("/") + path, data=params, headers={"X-Twilio-Signature": signature}, timeout=10
    )


def incoming_call(line: Line, call_sid: str) -> StreamInstructions:
    response = signed_post(
        line,
        "/webhook/incoming_call",
        {
            "CallSid": call_sid,
            "AccountSid": line.account_sid,
            "From": line.from_number,
            "To": line.to_number,
            "CallStatus": "ringing",
            "Direction": "inbound",
            "ApiVersion": "2010-04-01",
        },
    )
    response.raise_for_status()
    stream = ElementTree.fromstring(response.text).find("./Connect/Stream")
    if stream is None:
        raise CallNotConnected(response.text)
    parameters = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
    return StreamInstructions(url=stream.get("url", ""), parameters=parameters, twiml=response.text)


def connect_stream(line: Line, call_sid: str, stream: StreamInstructions) -> TwilioCaller:
    local_url = "ws" + line.app_url.rstrip("/")[len("http") :] + urlsplit(stream.url).path
    caller = TwilioCaller(
        local_url,
        call_sid=call_sid,
        custom_parameters=stream.parameters,
        signature=twilio_signature(line.auth_token, stream.url),
        account_sid=line.account_sid,
    )
    caller.start()
    return caller


def place_call(line: Line, call_sid: str | None = None, *, twilio: FakeTwilioRest | None = None) -> TwilioCaller:
    call_sid = call_sid or new_call_sid()
    caller = connect_stream(line, call_sid, incoming_call(line, call_sid))
    if twilio is not None:
        twilio.attach_stream(call_sid, caller.hang_up)  # a redirect ends the stream: `stop`, close
    return caller


def _call_params(line: Line, call_sid: str, **extra: str) -> dict[str, str]:
    return {
        "CallSid": call_sid,
        "AccountSid": line.account_sid,
        "From": line.from_number,
        "To": line.to_number,
        "Direction": "inbound",
        "ApiVersion": "2010-04-01",
        **extra,
    }


def _public_path(line: Line, url: str) -> str:
    """The path (and query) of `url`, one of the app's public URLs, to post at `line.app_url`."""
    if not url.startswith(line.public_url.rstrip("/") + "/"):
        raise AssertionError(f"{url} is not on the app's public URL {line.public_url}")
    return url[len(line.public_url.rstrip("/")) :]


def whisper(line: Line, dial: dict, *, child_sid: str | None = None) -> requests.Response:
    """What Twilio fetches when the dialled person answers: the `<Number url>` (POST, signed), for the
    child call leg Twilio placed to that number."""
    attributes = dial["number_attributes"]
    params = {
        "CallSid": child_sid or new_call_sid(),
        "AccountSid": line.account_sid,
        "From": dial.get("callerId", line.from_number),
        "To": dial["number"],
        "Direction": "outbound-dial",
        "CallStatus": "in-progress",
        "ApiVersion": "2010-04-01",
    }
    return signed_post(line, _public_path(line, attributes["url"]), params)


def dial_ended(line: Line, call_sid: str, dial: dict, status: str, *, duration_seconds: int = 0) -> requests.Response:
    """The `<Dial action>` Twilio posts when the dial is over: `DialCallStatus` and the child leg."""
    params = _call_params(
        line,
        call_sid,
        CallStatus="in-progress",
        DialCallStatus=status,
        DialCallSid=new_call_sid(),
        DialCallDuration=str(duration_seconds),
        DialBridged="true" if status == "completed" else "false",
    )
    if status != "completed":
        params.pop("DialCallDuration")
    return signed_post(line, _public_path(line, dial["action"]), params)


def report_completed(line: Line, call_sid: str, duration_seconds: int) -> requests.Response:
    return signed_post(
        line,
        "/webhook/call_status",
        {
            "CallSid": call_sid,
            "AccountSid": line.account_sid,
            "From": line.from_number,
            "To": line.to_number,
            "CallStatus": "completed",
            "CallDuration": str(duration_seconds),
            "Direction": "inbound",
        },
    )
