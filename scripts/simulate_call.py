#!/usr/bin/env python3
"""Place a test call into AgentLocator the way Twilio does, without a phone.

It sends the signed `POST /webhook/incoming_call` with a made-up CallSid, reads the TwiML, opens
the `<Stream>` WebSocket with its `<Parameter>`s (signed), and speaks the given WAV files into it
(any rate, width or channel count the stdlib `wave` module reads: they are converted to 8 kHz
μ-law), one per turn, each after the agent finished talking. It saves what the agent said as a
WAV file and prints the call's transcript and each turn's latency metrics from the CRM API.

Against a running deployment (real Google/OpenAI keys, a business with a voice number):

    .venv/bin/python -m scripts.simulate_call --app-url https://agent.example.com \\
        --to +97231234567 --api-token TOKEN hello.wav question.wav

The Twilio account SID and auth token come from the usual settings (`TWILIO_ACCOUNT_SID`,
`TWILIO_AUTH_TOKEN`, environment or `.env`). If the app is reached at another address than its
`PUBLIC_BASE_URL` (a tunnel), pass both `--app-url` (where to connect) and `--public-url` (what
Twilio would sign).

Anywhere, with no vendor at all:

    .venv/bin/python -m scripts.simulate_call --with-fakes [hello.wav ...]

This starts the wire-level fakes of Google Speech, Google TTS, OpenAI and Twilio REST, plus the
app under gunicorn on a temporary SQLite database with a demo business, and calls it. The fake
speech recogniser turns every burst of sound into the next line of a scripted Hebrew
conversation, so any recording (or, without WAV files, generated test tones) works.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
import wave
from pathlib import Path
from typing import Iterator

import requests

from server.config import Settings
from server.voice.audio import SAMPLE_RATE, mulaw_to_linear, pcm16_to_mulaw, resample_pcm16
from testkit.fakes.twilio_caller import TwilioCaller
from testkit.fakes.twilio_phone import Line, new_call_sid, place_call, report_completed

FAKE_CONVERSATION = ("שלום, אני רוצה לקבוע תור", "מחר בעשר בבוקר", "תודה רבה, להתראות")
DEMO_NUMBER = "+97235550001"
DEMO_CALLER = "+972501234567"


# ---- audio ----------------------------------------------------------------------------------
def read_wav_as_mulaw(path: Path) -> bytes:
    """Any PCM WAV → mono 8 kHz μ-law."""
    with wave.open(str(path), "rb") as reader:
        channels, width, rate = reader.getnchannels(), reader.getsampwidth(), reader.getframerate()
        frames = reader.readframes(reader.getnframes())
    return pcm16_to_mulaw(resample_pcm16(to_mono_pcm16(frames, width, channels), rate, SAMPLE_RATE))


def to_mono_pcm16(frames: bytes, width: int, channels: int) -> list[int]:
    """WAV sample bytes (8-bit unsigned, 16/24/32-bit signed little-endian) → mono 16-bit samples."""
    samples = []
    for start in range(0, len(frames) - width * channels + 1, width * channels):
        total = 0
        for channel in range(channels):
            raw = frames[start + channel * width : start + (channel + 1) * width]
            value = raw[0] - 128 if width == 1 else int.from_bytes(raw, "little", signed=True)
            total += value << 8 if width == 1 else value >> (8 * (width - 2))
        samples.append(total // channels)
    return samples


def write_mulaw_as_wav(path: Path, mulaw: bytes) -> None:
    """μ-law 8 kHz → a 16-bit PCM WAV any player opens."""
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(SAMPLE_RATE)
        writer.writeframes(b"".join(mulaw_to_linear(b).to_bytes(2, "little", signed=True) for b in mulaw))


# ---- the call -------------------------------------------------------------------------------
def run_call(line: Line, utterances: list[bytes], *, answer_timeout: float) -> TwilioCaller:
    call_sid = new_call_sid()
    print(f"calling {line.to_number} from {line.from_number} as {call_sid}")
    caller = place_call(line, call_sid)
    print(f"stream connected (subprotocol {caller.subprotocol or 'none'})")
    started = time.monotonic()
    if not wait_for_agent(caller, 0, answer_timeout):
        print("the agent said nothing after the call connected")
    for number, audio in enumerate(utterances, 1):
        heard = len(caller.media)
        caller.play(audio)
        print(f"turn {number}: said {len(audio) / SAMPLE_RATE:.1f} s of audio")
        if not wait_for_agent(caller, heard, answer_timeout):
            print(f"turn {number}: no answer within {answer_timeout:g} s")
    caller.hang_up()
    report_completed(line, call_sid, int(time.monotonic() - started))
    return caller


def wait_for_agent(caller: TwilioCaller, frames_before: int, timeout: float) -> bool:
    """Wait for the agent to start answering, then for its answer to finish playing."""
    if not caller.wait_for(lambda c: len(c.media) > frames_before or c.closed.is_set(), timeout=timeout):
        return False
    caller.wait_until_quiet(quiet=0.7, timeout=60)
    return len(caller.media) > frames_before


def print_report(line: Line, call_sid: str, api_token: str) -> None:
    """The call as the CRM stores it: transcript and per-turn metrics (the last turn is written at hang-up)."""
    url = f"{line.app_url.rstrip('/')}/api/crm/calls/{call_sid}"
    call: dict = {}
    for _ in range(20):
        response = requests.get(url, headers={"Authorization": f"Bearer {api_token}"}, timeout=10)
        if response.status_code != 200:
            print(f"CRM API answered {response.status_code}: {response.text[:300]}")
            return
        call = response.json()
        if call.get("status") == "completed" or call.get("ended_at"):
            break
        time.sleep(0.25)
    print("\ntranscript:\n" + (call.get("transcript") or "(empty)"))
    print("\nturn  t_audio  t_nlp  t_tts  t_total  first_audio  interrupted  agent")
    for turn in call.get("turns", []):
        m = turn["metrics"]
        cells = [m.get(k) for k in ("t_audio_ms", "t_nlp_ms", "t_tts_ms", "t_total_ms", "t_first_audio_ms")]
        print(
            f"{turn['turn_index']:>4}  "
            + "  ".join(f"{'-' if v is None else v:>6}" for v in cells)
            + f"  {'yes' if turn['interrupted'] else 'no':>11}  {turn['agent_text'][:60]}"
        )


# ---- running everything locally ---------------------------------------------------------------
@contextlib.contextmanager
def local_app_with_fakes() -> Iterator[tuple[Line, str]]:
    """The fakes, the app under gunicorn on a temporary SQLite database, and a demo business."""
    from server.db.engine import Database
    from server.db.models import Business, BusinessNumber, User
    from server.security.auth import issue_token
    from server.security.passwords import hash_password
    from testkit.fakes.google_speech import FakeSpeech
    from testkit.fakes.google_tts import FakeTextToSpeech
    from testkit.fakes.openai_server import FakeOpenAI
    from testkit.fakes.twilio_rest import FakeTwilioRest
    from testkit.servers import GunicornServer

    account_sid, auth_token = "AC" + "0" * 32, "simulated-auth-token"
    with (
        tempfile.TemporaryDirectory() as scratch,
        FakeSpeech() as stt,
        FakeTextToSpeech() as tts,
        FakeOpenAI() as llm,
        FakeTwilioRest(account_sid=account_sid, auth_token=auth_token) as twilio,
    ):
        stt.script(*FAKE_CONVERSATION)
        database_url = f"sqlite:///{scratch}/simulated.db"
        server = GunicornServer(
            {
                "DATABASE_URL": database_url,
                "APP_SECRET": "simulated-app-secret",
                "TWILIO_ACCOUNT_SID": account_sid,
                "TWILIO_AUTH_TOKEN": auth_token,
                "TWILIO_API_BASE_URL": twilio.url,
                "GOOGLE_SPEECH_EMULATOR_HOST": stt.address,
                "GOOGLE_TTS_EMULATOR_HOST": tts.address,
                "OPENAI_BASE_URL": llm.base_url,
                "OPENAI_API_KEY": llm.api_key,
            },
            log_path=Path(scratch) / "app.log",
        )
        server.env["PUBLIC_BASE_URL"] = server.url
        with server:
            database = Database(database_url)
            with database.scope() as session:
                business = Business(name="מספרת הדגמה", ai_instructions="מספרה בתל אביב, פתוח א-ה 9:00-19:00.")
                session.add(business)
                session.flush()
                session.add(BusinessNumber(business_id=business.id, number=DEMO_NUMBER, kind="voice"))
                user = User(
                    business_id=business.id,
                    email="owner@simulated.example",
                    role="owner",
                    password_hash=hash_password("simulated-password"),
                )
                session.add(user)
                session.flush()
                token = issue_token(session, user)
            database.engine.dispose()
            print(
                f"app on {server.url} (log: {server.log_path} while running); fakes: speech {stt.address}, "
                f"tts {tts.address}, openai {llm.base_url}"
            )
            yield (
                Line(
                    app_url=server.url,
                    public_url=server.url,
                    account_sid=account_sid,
                    auth_token=auth_token,
                    from_number=DEMO_CALLER,
                    to_number=DEMO_NUMBER,
                ),
                token,
            )


def generated_utterances() -> list[bytes]:
    from testkit.fakes.google_speech import speech

    return [speech(900) for _ in FAKE_CONVERSATION]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    parser.add_argument("wavs", nargs="*", type=Path, help="what the caller says, one WAV file per turn")
    parser.add_argument("--with-fakes", action="store_true", help="start the vendor fakes and the app locally")
    parser.add_argument("--app-url", help="where the app is reached (default: PUBLIC_BASE_URL)")
    parser.add_argument("--public-url", help="the app's public base URL Twilio signs (default: --app-url)")
    parser.add_argument("--to", help="the business's voice number (E.164)")
    parser.add_argument("--from", dest="from_number", default=DEMO_CALLER, help="the caller's number")
    parser.add_argument("--api-token", help="a CRM API token of that business, to print transcript and metrics")
    parser.add_argument("--out", type=Path, default=Path("agent_said.wav"), help="where to save the agent's audio")
    parser.add_argument("--answer-timeout", type=float, default=15.0, help="seconds to wait for each answer")
    args = parser.parse_args(argv)

    utterances = [read_wav_as_mulaw(path) for path in args.wavs]
    with contextlib.ExitStack() as stack:
        if args.with_fakes:
            line, api_token = stack.enter_context(local_app_with_fakes())
            utterances = utterances or generated_utterances()
        else:
            settings = Settings.from_env()
            app_url = args.app_url or settings.public_base_url
            if not (app_url and args.to and utterances and settings.twilio_auth_token):
                parser.error(
                    "without --with-fakes: --app-url (or PUBLIC_BASE_URL), --to, at least one WAV "
                    "file and TWILIO_AUTH_TOKEN are required"
                )
            line = Line(
                app_url=app_url,
                public_url=args.public_url or settings.public_base_url or app_url,
                account_sid=settings.twilio_account_sid or "AC" + "0" * 32,
                auth_token=settings.twilio_auth_token,
                from_number=args.from_number,
                to_number=args.to,
            )
            api_token = args.api_token
        caller = run_call(line, utterances, answer_timeout=args.answer_timeout)
        write_mulaw_as_wav(args.out, caller.audio())
        print(f"agent audio: {len(caller.audio()) / SAMPLE_RATE:.1f} s saved to {args.out}")
        if api_token:
            print_report(line, caller.call_sid, api_token)
        else:
            print("(pass --api-token to print the transcript and turn metrics)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
