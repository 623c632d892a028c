"""Benchmark the speech recogniser's client side alone: N live-call streams in one gevent process.

    python -m bench.bench_stt_streams --streams 1,100,200 [--seconds 20] [--no-pin]

Each stream is a call's `SpeechInput` (the engine's batching, with the call's VAD) over the
production `GoogleSpeechToText` (the real Google SDK over gRPC), against the wire-level Speech
fake in its own process. A stream is fed as a call's media socket feeds it: one 20 ms μ-law frame
every 20 ms, in bursts of speech (1 s) and silence (1.5 s). The fake finalises each burst after
`--final-silence-ms` of silent audio, so a final "should" arrive when that much silence has been
sent; how much later it arrives is the client's (and the fake's) lag.

Printed per level, as JSON: final_lag_ms (p50/p95/max, from the moment the silence that ends the
utterance was sent to the final's arrival), requests_per_stream_second (audio chunks the streams
were given: 10 while a caller may be talking, 2 while one listens), finals received against
expected, the process's CPU (percent of one core) and CPU-seconds per stream-second. With two or
more CPUs this process is pinned to CPU 0 and the fake to CPU 1, as in `bench_calls`.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402

from server.config import Settings  # noqa: E402
from server.providers.base import Transcript  # noqa: E402
from server.providers.google_stt import GoogleSpeechToText  # noqa: E402
from server.voice.audio import SpeechDetector, linear_to_mulaw  # noqa: E402
from server.voice.stt import SpeechInput  # noqa: E402
from testkit.fakes.wire_fakes import wire_fakes  # noqa: E402

FRAME_SECONDS = 0.020
SPEECH_FRAMES = 50  # 1 s of speech …
SILENCE_FRAMES = 75  # … then 1.5 s of silence
LOUD_FRAME = bytes(linear_to_mulaw(6000 if i % 2 else -6000) for i in range(160))
SILENT_FRAME = bytes([linear_to_mulaw(0)]) * 160


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class CountedRequests:
    """The recogniser, counting the requests (audio chunks) its streams are given."""

    def __init__(self, stt: GoogleSpeechToText):
        self.stt = stt
        self.requests = 0

    def open_stream(self):
        stream = self.stt.open_stream()
        send_audio = stream.send_audio

        def counted(chunk: bytes) -> None:
            self.requests += 1
            send_audio(chunk)

        stream.send_audio = counted  # type: ignore[method-assign]
        return stream


def run_stream(stt: CountedRequests, seconds: float, final_silence_ms: int, lags: list[float], counts: dict) -> None:
    expected_at: list[float] = []  # when each burst's final became due, in order
    finals = 0

    def on_transcript(transcript: Transcript) -> None:
        nonlocal finals
        if transcript.is_final and finals < len(expected_at):
            lags.append((time.monotonic() - expected_at[finals]) * 1000)
            finals += 1

    detector = SpeechDetector(min_speech_ms=200)
    speech = SpeechInput(
        stt,
        on_transcript=on_transcript,
        on_unavailable=lambda reason: None,
        quiet_since=lambda: detector.last_voice_at,
        call_sid="bench",
    )
    reader = gevent.spawn(speech.run)
    started = time.monotonic()
    frame = 0
    silence_frames_for_final = final_silence_ms // 20
    while time.monotonic() - started < seconds:
        position = frame % (SPEECH_FRAMES + SILENCE_FRAMES)
        audio = LOUD_FRAME if position < SPEECH_FRAMES else SILENT_FRAME
        detector.feed(audio, time.monotonic())  # as the call session does, before the recogniser
        speech.send(audio)
        if position == SPEECH_FRAMES + silence_frames_for_final - 1:
            expected_at.append(time.monotonic())
        frame += 1
        gevent.sleep(max(0.0, started + frame * FRAME_SECONDS - time.monotonic()))
    gevent.sleep(2.0)  # the last finals
    speech.close()
    reader.kill()
    counts["expected"] += len(expected_at)
    counts["received"] += finals


def run_level(stt: CountedRequests, streams: int, seconds: float, final_silence_ms: int) -> dict:
    lags: list[float] = []
    stt.requests = 0
    counts = {"expected": 0, "received": 0}
    cpu_before, wall_before = cpu_seconds(), time.monotonic()
    workers = []
    for _ in range(streams):
        workers.append(gevent.spawn(run_stream, stt, seconds, final_silence_ms, lags, counts))
        gevent.sleep(1.0 / max(streams, 1))  # spread the starts over a second
    gevent.joinall(workers)
    cpu_used = cpu_seconds() - cpu_before
    return {
        "streams": streams,
        "final_lag_ms": {
            "p50": round(percentile(lags, 0.50)),
            "p95": round(percentile(lags, 0.95)),
            "max": round(max(lags, default=float("nan"))),
        },
        "finals": counts,
        "requests_per_stream_second": round(stt.requests / (streams * seconds), 2),
        "cpu_percent": round(100 * cpu_used / (time.monotonic() - wall_before)),
        "cpu_seconds_per_stream_second": round(cpu_used / (streams * seconds), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", default="1,100,200", help="levels, e.g. 1,100,200")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long each stream sends audio")
    parser.add_argument("--final-silence-ms", type=int, default=500)
    parser.add_argument("--no-pin", action="store_true")
    args = parser.parse_args()
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2
    options = {"testkit.fakes.google_speech": ["--final-silence-ms", str(args.final_silence_ms)]}
    if pin:
        os.sched_setaffinity(0, {1})  # the fake, started now, inherits CPU 1 …
    with wire_fakes(options, modules=("testkit.fakes.google_speech",)) as env:
        if pin:
            os.sched_setaffinity(0, {0})  # … and this process moves to CPU 0
        stt = CountedRequests(GoogleSpeechToText(Settings.from_env({**env, "STT_MODEL": "phone_call"}, dotenv=False)))
        run_level(stt, 1, 3.0, args.final_silence_ms)  # warm-up: imports, channel, first stream
        for level in (int(n) for n in args.streams.split(",")):
            print(json.dumps(run_level(stt, level, args.seconds, args.final_silence_ms)), flush=True)


if __name__ == "__main__":
    main()
