"""The fixed prompts in the agent's real voice: the greeting, the opening line, the apology and the
voicemail prompt, synthesised with Google TTS once, off the call path, and kept as files.

Before, Twilio `<Play>`ed two espeak recordings (`static/tts/*.mp3`: a robot voice, nothing like
the agent's), and each worker synthesised the opening line while the caller waited. Now:

* `PromptAudioStore` keeps each prompt as a μ-law 8 kHz WAV file (what Twilio plays without
  transcoding, and whose payload the engine sends as is) in `PROMPT_AUDIO_DIR`, named by the sha256
  of the voice and the spoken text: a changed text or voice is a new file, and the old one is never
  played again. Twilio fetches it from `/tts/prompts/<sha256>.wav`.
* The `prompt_audio` job (the jobs worker) makes a business's prompts when its opening line or
  greeting changes (queued by the settings route) and on first use when one is missing.
* On first use, a missing greeting or voicemail prompt is synthesised right there within
  `FIRST_USE_TIMEOUT_SECONDS`; slower than that (or TTS down, or not configured), the caller hears
  the espeak file (the last resort, which needs nothing) and the job makes the real one for the
  next call. The engine's phrase cache (opening line, apology) reads and fills the same store.

The voice is the deployment's `TTS_VOICE` (there is no per-business voice setting yet).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import struct
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Optional

from server.agent.prompt import opening_line
from server.config import PROJECT_ROOT, Settings
from server.errors import DomainError
from server.jobs import JobContext, JobQueue, job
from server.logs import log_event
from server.providers.base import ProviderError, TextToSpeech
from server.providers.wav import WavError, parse_wav
from server.voice.speech_text import spoken_text
from server.voice.turns import APOLOGY_TEXT, synthesize

log = logging.getLogger("agentlocator.voice.prompt_audio")

# The texts of the two prompts Twilio plays (the same words as the espeak files, scripts/make_static_audio.sh).
GREETING_TEXT = "שלום, הגעתם לעוזר הדיגיטלי של העסק. רגע אחד בבקשה."
FALLBACK_TEXT = "סליחה, אני לא יכול לענות כרגע. אנא השאירו הודעה אחרי הצליל, ונחזור אליכם בהקדם."
GREETING_ESPEAK_PATH = "/static/tts/greeting_he.mp3"
FALLBACK_ESPEAK_PATH = "/static/tts/fallback_he.mp3"
URL_PREFIX = "/tts/prompts/"
FIRST_USE_TIMEOUT_SECONDS = 1.5  # a webhook can wait this long for a missing prompt; Twilio waits 15 s
JOB_KIND = "prompt_audio"
KEY_PATTERN = re.compile(r"^[0-9a-f]{64}$")
SAMPLE_RATE_HZ = 8000
WAVE_FORMAT_MULAW = 7


class PromptAudioStore:
    """Prompt audio files, one per (voice, spoken text), shared by every worker of an instance."""

    def __init__(self, directory: Path, voice: str):
        self.directory = directory
        self.voice = voice

    @classmethod
    def for_settings(cls, settings: Settings) -> "PromptAudioStore":
        return cls(prompt_audio_dir(settings), settings.tts_voice)

    def key(self, text: str) -> str:
        return hashlib.sha256(f"{self.voice}\n{spoken_text(text.strip())}".encode()).hexdigest()

    def path(self, text: str) -> Path:
        return self.directory / f"{self.key(text)}.wav"

    def url_path(self, text: str) -> Optional[str]:
        """The path Twilio fetches the prompt from, or None while it isn't made."""
        key = self.key(text)
        return f"{URL_PREFIX}{key}.wav" if (self.directory / f"{key}.wav").is_file() else None

    def get(self, text: str) -> Optional[bytes]:
        """The prompt's μ-law audio, or None while it isn't made (or its file is unreadable)."""
        try:
            return parse_wav(self.path(text).read_bytes()).payload
        except (OSError, WavError):
            return None

    def put(self, text: str, mulaw: bytes) -> None:
        """Keep `mulaw` as the prompt's WAV file; written aside and renamed, so no reader sees half a file."""
        self.directory.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=self.directory, suffix=".part")
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(mulaw_wav(mulaw))
            os.replace(temporary, self.path(text))
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def ensure(self, text: str, tts: TextToSpeech, timeout_seconds: float) -> bool:
        """Make the prompt unless it exists; False when TTS failed or took longer than `timeout_seconds`."""
        if self.path(text).is_file():
            return True
        try:
            audio = synthesize(tts, text, timeout_seconds)  # said right: spoken_text() is applied there
        except ProviderError as exc:
            log_event(log, "prompt_audio_failed", logging.WARNING, voice=self.voice, error=str(exc)[:200])
            return False
        self.put(text, audio)
        log_event(log, "prompt_audio_made", voice=self.voice, key=self.key(text), bytes=len(audio))
        return True


def prompt_audio_dir(settings: Settings) -> Path:
    return PROJECT_ROOT / (settings.prompt_audio_dir or "instance/prompt_audio")


def mulaw_wav(mulaw: bytes) -> bytes:
    """Mono 8 kHz μ-law in a RIFF/WAVE container (fmt with cbSize, fact, data), as Twilio plays it."""
    fmt = struct.pack("<HHIIHHH", WAVE_FORMAT_MULAW, 1, SAMPLE_RATE_HZ, SAMPLE_RATE_HZ, 1, 8, 0)
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt
    chunks += b"fact" + struct.pack("<I", 4) + struct.pack("<I", len(mulaw))
    chunks += b"data" + struct.pack("<I", len(mulaw)) + mulaw + (b"\x00" if len(mulaw) % 2 else b"")
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


@functools.lru_cache(maxsize=4)
def google_tts(settings: Settings) -> Optional[TextToSpeech]:
    """The prompts' synthesiser: Google TTS when it is configured, else None (the espeak files stay)."""
    if not settings.tts_configured:
        return None
    from server.providers.google_tts import GoogleTextToSpeech

    return GoogleTextToSpeech(settings)


def business_prompts(opening: str) -> list[str]:
    """Every fixed text a business's callers may hear, its opening line among them."""
    return [text for text in (GREETING_TEXT, opening, FALLBACK_TEXT, APOLOGY_TEXT) if text.strip()]


# ---- Twilio's <Play> URLs ----------------------------------------------------------------------
def greeting_path(settings: Settings, jobs: Optional[JobQueue] = None) -> str:
    return _play_path(settings, GREETING_TEXT, GREETING_ESPEAK_PATH, jobs)


def fallback_path(settings: Settings, jobs: Optional[JobQueue] = None) -> str:
    """The voicemail prompt. Without `jobs` (the database is down, or a path that must answer at once)
    only a prompt already made is used: nothing is synthesised or queued."""
    return _play_path(settings, FALLBACK_TEXT, FALLBACK_ESPEAK_PATH, jobs)


def _play_path(settings: Settings, text: str, espeak_path: str, jobs: Optional[JobQueue]) -> str:
    store = PromptAudioStore.for_settings(settings)
    found = store.url_path(text)
    if found is not None or jobs is None:
        return found or espeak_path
    # Its own client, whose gRPC deadline is the short one: bounded with or without gevent.
    tts = google_tts(settings.replace(tts_timeout_seconds=FIRST_USE_TIMEOUT_SECONDS))
    if tts is not None and store.ensure(text, tts, FIRST_USE_TIMEOUT_SECONDS):
        return store.url_path(text) or espeak_path
    queue_prompts(jobs, settings, [text])  # for the next call
    return espeak_path


# ---- the job -----------------------------------------------------------------------------------
def queue_prompts(jobs: JobQueue, settings: Settings, texts: Iterable[str]) -> None:
    """Have the jobs worker make `texts`' prompts (once per set of texts and voice)."""
    if not settings.tts_configured:
        return
    wanted = sorted(set(texts))
    store = PromptAudioStore.for_settings(settings)
    key = hashlib.sha256("\n".join(store.key(text) for text in wanted).encode()).hexdigest()[:32]
    # Once a day at most: a set whose job failed for good (Google down for hours) is tried again tomorrow.
    day = datetime.now(timezone.utc).date().isoformat()
    try:
        jobs.enqueue(JOB_KIND, f"{JOB_KIND}:{key}:{day}", wanted)
    except DomainError:  # the queue is down (logged): the espeak files play until it is back
        pass


def queue_business_prompts(jobs: JobQueue, settings: Settings, business: Any) -> None:
    """A business's settings changed (`business`: anything with `name` and `opening_line`): make its
    prompts before its next call."""
    queue_prompts(jobs, settings, business_prompts(opening_line(business)))


def queue_missing_prompts(jobs: JobQueue, settings: Settings, opening: str) -> None:
    """A call came in: queue whichever of the business's prompts isn't made yet (file checks only)."""
    if not settings.tts_configured:
        return
    store = PromptAudioStore.for_settings(settings)
    missing = [text for text in business_prompts(opening) if store.url_path(text) is None]
    if missing:
        queue_prompts(jobs, settings, missing)


@job(JOB_KIND)
def _make_prompts(ctx: JobContext, texts: list[str]) -> None:
    tts = google_tts(ctx.settings)
    if tts is None:
        return
    store = PromptAudioStore.for_settings(ctx.settings)
    failed = [text for text in texts if not store.ensure(text, tts, ctx.settings.tts_timeout_seconds)]
    if failed:  # retried with backoff; meanwhile the espeak files (or a synthesis per worker) stand in
        raise ProviderError(f"{len(failed)} of {len(texts)} prompts could not be synthesised")
