"""Benchmark the live-call engine: N simultaneous calls on one gevent worker, printed as JSON.

    python -m bench.bench_calls --calls 1,50,100,200 [--turns 4] [--providers scripted|wire-fakes]
                                [--database-url postgresql://…] [--no-pin] [--tools] [--profile DIR]
                                [--preemptive on|off|both] [--stt-final-ms MS] [--llm-first-token-ms MS]

It starts the app under `gunicorn -k gevent -w 1` with providers of fixed latency (STT final
300 ms after speech, LLM first token 400 ms, TTS 150 ms per sentence), creates a business and N
call rows, and plays N Twilio-faithful callers (`testkit/fakes/twilio_caller.py`) at once from this
process (gevent, so the client is not the bottleneck). Each call hears the opening line, then
speaks `--turns` utterances; every second turn asks for a long answer and interrupts it. With
`--tools` the model calls a tool in every other turn (`take_message`: the scripted LLM calls it
after its first-token delay, the server runs it (a task and a `tool_calls` row written through the
call's store), and the model answers after a second first-token delay, as the follow-up request of
a real model would); the tool's own time is the server's, so it shows in server_added_latency.

`--preemptive` sets the business's preemptive generation (on by default, as in the product);
`both` plays the calls with it off, then as many with it on, and `first_audio_by_preemption`
reports each half's first audio, how many turns used a reply written ahead and what the dropped
ones cost. `--stt-final-ms` / `--llm-first-token-ms` change the script (e.g. 500 / 300).

`--calls` takes one number or several (`1,50,100,200`): the levels run one after the other on the
same worker, after one unmeasured warm-up call (the first call of a worker imports the vendor SDKs,
about a second of CPU), and each level is reported on its own and against the one-call level of
the same run (`vs_one_call`). `--profile DIR` samples the worker with py-spy for the middle of each
level (`DIR/level-N.txt`, folded stacks) and adds its top functions to that level's figures.

With two or more CPUs the worker is pinned to CPU 0, and this client and the provider fakes to CPU 1. Figures (all ms):

* calls_lost: calls the server never ended cleanly (no `ws_end` line in its log: dropped, or its
  worker died); their frames can't be counted, so they are lost calls, not "0 frames lost".
* frames_lost: inbound (sent by the callers, not counted by the server) + outbound (sent by the
  server, not received by the callers), over the calls that ended cleanly.
* outbound_interarrival: gaps between consecutive media frames within one reply (p50/p99/max);
  a perfect pacer gives 20 after the first few (which go out early: the pacer's lead).
  jitter_ms: how far those gaps stray from 20 ms (|gap - 20|, p50/p99).
  playout_underruns: frames that arrived after the caller's playback buffer had run dry mid-reply;
  server_pacer_underruns: the same as the server's pacer saw it (its own lateness only).
* server_added_latency: the server's `t_first_audio_ms` minus the providers' scripted time for
  that turn (STT final delay + LLM time to the first sentence + TTS latency).
* t_first_audio (server, from `turn_metrics`) and t_first_audio_client (last loud frame sent →
  first reply frame received).
* barge_in_reaction: the interrupting speech's first frame → `clear` received;
  barge_in_after_stt subtracts the scripted STT's interim delay (when the STT reports speech).
* worker_cpu_percent (of one core) and worker_rss_mb, and both per call; cpu_seconds_per_call: the
  worker's CPU time over the level divided by its calls (the whole call: opening line, turns, end).
* runqueue_wait_percent: time the worker (and this client) were ready to run but another process had
  the CPU. On a shared machine a high figure means the latencies measure the machine, not the code.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import gc  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Iterator, Optional  # noqa: E402

import gevent  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parent.parent

from bench import profiles  # noqa: E402
from bench.call_logs import count_losses, server_records  # noqa: E402
from server.config import Settings  # noqa: E402
from server.db.dao_crm import create_call  # noqa: E402
from server.db.engine import Database  # noqa: E402
from server.db.migrate import run_migrations  # noqa: E402
from server.db.models import Business, BusinessNumber  # noqa: E402
from testkit.fakes.scripted_providers import Script, first_sentence_ms, speech  # noqa: E402
from testkit.fakes.twilio_caller import Playback, ReceivedClear, ReceivedMedia, TwilioCaller, new_sid  # noqa: E402
from testkit.servers import GunicornServer  # noqa: E402

AUTH_TOKEN = "bench-twilio-token"
APP_SECRET = "bench-app-secret"
BENCH_SCRIPT = Script(
    stt_final_ms=300, stt_interim_ms=200, llm_first_token_ms=400, llm_token_ms=20, tts_ms=150, tts_ms_per_char=50
)
QUESTIONS = ("מה שעות הפתיחה שלכם מחר", "כמה עולה תספורת לילד", "אפשר לקבוע תור ליום שלישי", "איפה אתם נמצאים בדיוק")
LONG_QUESTION = "תספרו לי הכל בבקשה long"
INTERRUPTION = "רגע סליחה שאלה אחרת"
TOOL_DIRECTIVE = "tool:take_message"  # the scripted LLM calls this tool first (see --tools)
PREEMPTIVE_MODES = {"on": (True,), "off": (False,), "both": (False, True)}
REPLY_GAP_SECONDS = 0.25  # a longer silence between two frames separates two replies
FRAME_GAP_MS = 20.0  # one 20 ms frame after the other: the gap a perfect pacer keeps


# ---- providers: how the server under test gets its STT/LLM/TTS ---------------------------------
@contextlib.contextmanager
def scripted_providers(script: Script) -> Iterator[dict[str, str]]:
    """In-process scripted providers (testkit/fakes/scripted_providers.py)."""
    yield {
        "VOICE_PROVIDERS": "testkit.fakes.scripted_providers:build",
        "SCRIPTED_STT_FINAL_MS": str(script.stt_final_ms),
        "SCRIPTED_STT_INTERIM_MS": str(script.stt_interim_ms),
        "SCRIPTED_LLM_FIRST_TOKEN_MS": str(script.llm_first_token_ms),
        "SCRIPTED_LLM_TOKEN_MS": str(script.llm_token_ms),
        "SCRIPTED_TTS_MS": str(script.tts_ms),
        "SCRIPTED_TTS_MS_PER_CHAR": str(script.tts_ms_per_char),
    }


# name → a context manager factory taking the Script and yielding the server's environment. Other
# modes live in their own module ("module:function"), loaded only when chosen.
PROVIDER_MODES = {"scripted": scripted_providers, "wire-fakes": "bench.wire_fakes:provider_env"}


def provider_mode(name: str):
    mode = PROVIDER_MODES[name]
    if isinstance(mode, str):
        module, _, function = mode.partition(":")
        try:
            return getattr(importlib.import_module(module), function)
        except (ImportError, AttributeError) as exc:
            raise SystemExit(f"--providers {name} is not available: {exc}") from exc
    return mode


# ---- one call ---------------------------------------------------------------------------------
@dataclass
class CallResult:
    call_sid: str
    utterances: list[str] = field(default_factory=list)  # in turn order (turn 1, 2, …)
    barge_in_ms: list[float] = field(default_factory=list)
    first_audio_ms: list[float] = field(default_factory=list)
    caller: Optional[TwilioCaller] = None
    error: str = ""
    preemptive: bool = True  # its business has preemptive generation on


def run_call(
    server_url: str,
    call_sid: str,
    business_id: int,
    turns: int,
    start_delay: float,
    tools: bool = False,
    preemptive: bool = True,
) -> CallResult:
    result = CallResult(call_sid, preemptive=preemptive)
    gevent.sleep(start_delay)
    try:
        caller = result.caller = TwilioCaller.dial(
            server_url, call_sid, auth_token=AUTH_TOKEN, app_secret=APP_SECRET, business_id=business_id
        )
        if not caller.wait_for(lambda c: c.marks_echoed >= 1, 20):
            raise RuntimeError("no opening line")
        caller.wait_until_quiet(0.3, 20)
        for turn in range(turns):
            if turn % 2 == 1:
                _barge_in_turn(caller, result)
            else:
                question = QUESTIONS[turn // 2 % len(QUESTIONS)]
                _plain_turn(caller, result, f"{question} {TOOL_DIRECTIVE}" if tools else question)
        caller.hang_up()
    except Exception as exc:  # one broken call must not hide the others' figures
        result.error = f"{type(exc).__name__}: {exc}"
        if result.caller is not None:
            result.caller.close()
    return result


def _say(caller: TwilioCaller, result: CallResult, text: str, *, wait: bool = True) -> Playback:
    playback = caller.play(speech(text, 900), wait=wait)
    result.utterances.append(text)
    return playback


def _first_media_after(caller: TwilioCaller, after: float) -> Optional[float]:
    found = None
    for event in reversed(caller.events):  # newest first: only the events since `after` are read
        if event.at <= after:
            break
        if isinstance(event, ReceivedMedia):
            found = event.at
    return found


def _await_reply(caller: TwilioCaller, result: CallResult, spoke_until: float) -> float:
    if not caller.wait_for(lambda c: _first_media_after(c, spoke_until) is not None, 10):
        raise RuntimeError("no reply")
    first = _first_media_after(caller, spoke_until)
    result.first_audio_ms.append((first - spoke_until) * 1000)
    return first


def _plain_turn(caller: TwilioCaller, result: CallResult, text: str) -> None:
    spoken = _say(caller, result, text)
    _await_reply(caller, result, spoken.last_sent_at)
    caller.wait_until_quiet(0.4, 30)


def _barge_in_turn(caller: TwilioCaller, result: CallResult) -> None:
    spoken = _say(caller, result, LONG_QUESTION)
    first = _await_reply(caller, result, spoken.last_sent_at)
    gevent.sleep(max(0.0, first + 1.0 + random.random() - time.monotonic()))  # let it talk for 1–2 s
    clears_before = len(caller.clears)
    interruption = _say(caller, result, INTERRUPTION, wait=False)
    if not caller.wait_for(lambda c: len(c.clears) > clears_before, 10):
        raise RuntimeError("barge-in not answered with clear")
    interruption.wait()
    result.barge_in_ms.append((caller.clears[-1].at - interruption.first_sent_at) * 1000)
    _await_reply(caller, result, interruption.last_sent_at)
    caller.wait_until_quiet(0.4, 30)


# ---- analysis ---------------------------------------------------------------------------------
def preemption_figures(results: list[CallResult], turn_records: list[dict]) -> dict[str, dict]:
    """First audio (server and client side) of the calls with preemptive generation on and off, and
    what it cost: turns whose reply was written ahead and kept, replies written ahead and dropped."""
    mode = {r.call_sid: "on" if r.preemptive else "off" for r in results}
    figures: dict[str, dict] = {}
    for name in sorted(set(mode.values())):
        records = [r for r in turn_records if mode.get(r["call_sid"]) == name and r["turn_id"] > 0]
        served = [
            r["t_first_audio_ms"] for r in records if r.get("t_first_audio_ms") is not None and not r.get("error")
        ]
        figures[name] = {
            "t_first_audio_ms": spread(served, 50, 95),
            "t_first_audio_client_ms": spread(
                [ms for r in results if mode[r.call_sid] == name for ms in r.first_audio_ms], 50, 95
            ),
            "turns": {
                kind: sum(1 for r in records if r.get("preemptive") == kind) for kind in ("used", "dropped", "none")
            },
            "dropped_generations": sum(r.get("preemptive_dropped") or 0 for r in records),
            "dropped_chars": sum(r.get("preemptive_dropped_chars") or 0 for r in records),
        }
    return figures


def percentile(values: list[float], p: float) -> Optional[float]:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return round(ordered[index], 1)


def spread(values: list[float], *ps: float) -> dict[str, Optional[float]]:
    out = {f"p{p:g}": percentile(values, p) for p in ps}
    out["max"] = round(max(values), 1) if values else None
    out["n"] = len(values)
    return out


def reply_frame_gaps(caller: TwilioCaller) -> tuple[list[float], int]:
    """Inter-arrival gaps (ms) of media within replies, and playback underruns within them."""
    gaps, underruns = [], 0
    previous: Optional[float] = None
    buffer_end = 0.0
    for event in caller.events:
        if isinstance(event, ReceivedClear):
            previous = None
            continue
        if not isinstance(event, ReceivedMedia):
            continue
        if previous is not None and event.at - previous < REPLY_GAP_SECONDS:
            gaps.append((event.at - previous) * 1000)
            if event.at > buffer_end + 0.001:
                underruns += 1
            buffer_end = max(buffer_end, event.at) + 0.02
        else:
            buffer_end = event.at + 0.02
        previous = event.at
    return gaps, underruns


class ProcessMeter:
    """CPU time and RSS of one process, from /proc (Linux)."""

    def __init__(self, pid: int):
        self.pid = pid
        self._ticks = os.sysconf("SC_CLK_TCK")
        self.peak_rss_kb = 0

    def runqueue_wait_seconds(self) -> float:
        """Time the process was ready to run but waited for a CPU (other processes had it)."""
        return int(Path(f"/proc/{self.pid}/schedstat").read_text().split()[1]) / 1e9

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self._ticks

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
                self.peak_rss_kb = max(self.peak_rss_kb, rss)
                return rss
        return 0


def worker_pid(master_pid: int) -> int:
    return child_pids(master_pid)[0]


def child_pids(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def setup_database(url: str, calls: int, preemptive: bool = True) -> tuple[int, list[str]]:
    database = Database(Settings.from_env({"DATABASE_URL": url}, dotenv=False).sqlalchemy_url)
    run_migrations(database.engine)
    with database.scope() as session:
        business = Business(
            name="מספרת הבנץ'",
            ai_instructions="מספרה לכל המשפחה.",
            features={"preemptive_generation": preemptive},
        )
        session.add(business)
        session.flush()
        session.add(
            BusinessNumber(business_id=business.id, number=f"+9723{random.randint(1000000, 9999999)}", kind="voice")
        )
        sids = [new_sid("CA") for _ in range(calls)]
        for n, sid in enumerate(sids):
            create_call(
                session,
                business.id,
                call_sid=sid,
                from_number=f"+97250{n:07d}",
                to_number="+97235550001",
                status="in-progress",
            )
        business_id = business.id
    database.engine.dispose()
    return business_id, sids


def main() -> None:
    global BENCH_SCRIPT  # --stt-final-ms and --llm-first-token-ms change the script
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--calls", type=call_levels, default=[100], help="simultaneous calls, or levels run in turn: 1,50,100,200"
    )
    parser.add_argument("--turns", type=int, default=4, help="caller utterances per call (every 2nd interrupts)")
    parser.add_argument("--providers", choices=sorted(PROVIDER_MODES), default="scripted")
    parser.add_argument("--database-url", default="", help="default: a fresh SQLite file")
    parser.add_argument("--ramp-seconds", type=float, default=2.0, help="spread the call starts over this long")
    parser.add_argument("--no-pin", action="store_true", help="don't pin server and client to separate CPUs")
    parser.add_argument("--tools", action="store_true", help="the model calls a tool (take_message) in the plain turns")
    parser.add_argument(
        "--preemptive",
        choices=sorted(PREEMPTIVE_MODES),
        default="on",
        help="preemptive generation of the calls' business; both: the calls with it off, then as many with it on",
    )
    parser.add_argument(
        "--stt-final-ms",
        type=int,
        help=f"the final transcript this long after the speech ({BENCH_SCRIPT.stt_final_ms})",
    )
    parser.add_argument(
        "--llm-first-token-ms", type=int, help=f"the model's first token ({BENCH_SCRIPT.llm_first_token_ms})"
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the server (e.g. GEVENT_MONITOR_THREAD_ENABLE=true)",
    )
    parser.add_argument("--profile", type=Path, metavar="DIR", help="sample the worker with py-spy in each level")
    parser.add_argument("--profile-seconds", type=float, default=20.0, help="how long each level is sampled")
    args = parser.parse_args()
    BENCH_SCRIPT = dataclasses.replace(
        BENCH_SCRIPT,
        stt_final_ms=args.stt_final_ms or BENCH_SCRIPT.stt_final_ms,
        llm_first_token_ms=args.llm_first_token_ms or BENCH_SCRIPT.llm_first_token_ms,
    )

    workdir = Path(tempfile.mkdtemp(prefix="agentlocator-bench-"))
    database_url = args.database_url or f"sqlite:///{workdir / 'bench.db'}"
    pin = not args.no_pin and len(os.sched_getaffinity(0)) >= 2
    if pin:
        os.sched_setaffinity(0, {1})  # the provider fakes, started next, stay off the worker's CPU
    with provider_mode(args.providers)(BENCH_SCRIPT) as provider_env:
        server = GunicornServer(
            {
                "DATABASE_URL": database_url,
                "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
                "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
                "APP_SECRET": APP_SECRET,
                "LOG_LEVEL": "INFO",
                **provider_env,
                **dict(item.split("=", 1) for item in args.server_env),
            },
            log_path=workdir / "server.log",
            extra_args=("--worker-connections", "2000"),
        )
        server.env["PUBLIC_BASE_URL"] = server.url
        with server:
            worker = worker_pid(server.process.pid)
            if pin:
                os.sched_setaffinity(server.process.pid, {0})
                os.sched_setaffinity(worker, {0})
                os.sched_setaffinity(0, {1})
            # Every received frame is kept for the analysis; a full collection over hundreds of
            # thousands of them would stall this client (and show up as server jitter).
            gc.disable()
            warm_up = run_level(args, server, worker, database_url, 1, profile=False)
            levels = [run_level(args, server, worker, database_url, calls) for calls in args.calls]
            gevent.sleep(1.0)  # let the server log every ws_end
            log_text = server.logs()
    figures = [report(args, level, log_text, pin, database_url) for level in levels]
    one_call = next((f for f in figures if f["calls"] == 1), None)
    for level in figures:
        level["vs_one_call"] = against_one_call(level, one_call)
    output = figures[0] if len(figures) == 1 else {"levels": figures, "summary": [summary_row(f) for f in figures]}
    output["warm_up_call_cpu_seconds"] = round(warm_up.cpu, 2)
    print(json.dumps(output, ensure_ascii=False, indent=2))


def call_levels(text: str) -> list[int]:
    """ "100" or "1,50,100,200" → the levels, each at least one call."""
    levels = [int(part) for part in text.split(",") if part.strip()]
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError("--calls takes positive numbers, e.g. 1,50,100,200")
    return levels


@dataclass
class Level:
    """One level of the run: its calls, what they did, and what the worker spent on them."""

    calls: int
    results: list[CallResult]
    cpu: float
    wall: float
    idle_rss_kb: int
    peak_rss_kb: int
    client_cpu: float
    helpers_cpu: float
    runqueue_wait: dict[str, float]
    loop_lag: list[float]
    late_ticks: int
    profile: Optional[dict] = None


def run_level(args, server: GunicornServer, worker: int, database_url: str, calls: int, profile: bool = True) -> Level:
    phases = [(on, *setup_database(database_url, calls, on)) for on in PREEMPTIVE_MODES[args.preemptive]]
    meter = ProcessMeter(worker)
    idle_rss = meter.rss_kb()
    # The other processes of the run (the wire fakes; gunicorn's master is idle): if they saturate
    # the machine's other core, the figures measure them, not the worker.
    helpers = [ProcessMeter(pid) for pid in child_pids(os.getpid()) if pid != server.process.pid]
    helpers_cpu_start = sum(h.cpu_seconds() for h in helpers)
    client = ProcessMeter(os.getpid())
    client_cpu_start, client_wait_start = time.process_time(), client.runqueue_wait_seconds()
    cpu_start, wait_start, wall_start = meter.cpu_seconds(), meter.runqueue_wait_seconds(), time.monotonic()
    sampler = gevent.spawn(lambda: [(meter.rss_kb(), gevent.sleep(0.5)) for _ in iter(int, 1)])
    loop_lag: list[float] = []
    lag_probe = gevent.spawn(measure_loop_lag, loop_lag)
    profiler = gevent.spawn(profile_level, args, worker, calls) if profile and args.profile else None
    jobs = []
    for preemptive, business_id, sids in phases:  # one after the other: each phase's calls at once
        phase = [
            gevent.spawn(
                run_call,
                server.url,
                sid,
                business_id,
                args.turns,
                args.ramp_seconds * n / max(1, calls),
                args.tools,
                preemptive,
            )
            for n, sid in enumerate(sids)
        ]
        gevent.joinall(phase)
        jobs += phase
    wall = time.monotonic() - wall_start
    cpu = meter.cpu_seconds() - cpu_start
    client_cpu = time.process_time() - client_cpu_start
    helpers_cpu = sum(h.cpu_seconds() for h in helpers) - helpers_cpu_start
    waits = {
        "worker": meter.runqueue_wait_seconds() - wait_start,
        "client": client.runqueue_wait_seconds() - client_wait_start,
    }
    sampler.kill()
    lag_probe.kill()
    results = [job.value for job in jobs]
    return Level(
        calls=calls,
        results=results,
        cpu=cpu,
        wall=wall,
        idle_rss_kb=idle_rss,
        peak_rss_kb=meter.peak_rss_kb,
        client_cpu=client_cpu,
        helpers_cpu=helpers_cpu,
        runqueue_wait={name: round(100 * seconds / wall, 1) for name, seconds in waits.items()},
        loop_lag=loop_lag,
        late_ticks=sum(r.caller.mic_late_ticks for r in results if r.caller),
        profile=profiler.get() if profiler is not None else None,
    )


def profile_level(args, worker: int, calls: int) -> Optional[dict]:
    """py-spy over the middle of the level: from when every call has started, for --profile-seconds."""
    gevent.sleep(args.ramp_seconds + 2.0)
    args.profile.mkdir(parents=True, exist_ok=True)
    path = args.profile / f"level-{calls}.txt"
    sampler = profiles.record(worker, path, args.profile_seconds)
    while sampler.poll() is None:  # a blocking wait() would stop this client's callers
        gevent.sleep(0.2)
    return profiles.summarise(path) if path.exists() else None


def against_one_call(level: dict, one_call: Optional[dict]) -> Optional[dict]:
    """This level's first audio and CPU per call as a multiple of the one-call level's."""
    if one_call is None:
        return None

    def ratio(mine: Optional[float], base: Optional[float]) -> Optional[float]:
        return round(mine / base, 2) if mine is not None and base else None

    return {
        "t_first_audio_p50": ratio(level["t_first_audio_ms"]["p50"], one_call["t_first_audio_ms"]["p50"]),
        "t_first_audio_p95": ratio(level["t_first_audio_ms"]["p95"], one_call["t_first_audio_ms"]["p95"]),
        "cpu_seconds_per_call": ratio(level["cpu_seconds_per_call"], one_call["cpu_seconds_per_call"]),
    }


def summary_row(level: dict) -> dict:
    """The figures the targets are stated in, one row per level."""
    return {
        "calls": level["calls"],
        "calls_failed": level["calls_failed"],
        "calls_lost": level["calls_lost"],
        "cpu_seconds_per_call": level["cpu_seconds_per_call"],
        "worker_cpu_percent": level["worker_cpu_percent"],
        "t_first_audio_p50_p95": [level["t_first_audio_ms"]["p50"], level["t_first_audio_ms"]["p95"]],
        "frames_lost": level["frames_lost"],
        "playout_underruns": level["playout_underruns"],
        "jitter_p99": level["jitter_ms"]["p99"],
        "server_added_p50_p95_p99": [level["server_added_latency_ms"][p] for p in ("p50", "p95", "p99")],
        "worker_runqueue_wait_percent": level["runqueue_wait_percent"]["worker"],
        "provider_fakes_cpu_percent": level["provider_fakes_cpu_percent"],
    }


def measure_loop_lag(samples: list[float]) -> None:
    """How late this client's own event loop wakes up (if it lags, the figures measure the client)."""
    while True:
        due = time.monotonic() + 0.01
        gevent.sleep(0.01)
        samples.append((time.monotonic() - due) * 1000)


def report(args, level: Level, log_text: str, pinned: bool, database_url: str) -> dict:
    results, cpu, wall = level.results, level.cpu, level.wall
    by_call = {r.call_sid: r for r in results}
    all_ends, all_turn_records = server_records(log_text)  # the log of every level: keep this one's calls
    ends = {sid: end for sid, end in all_ends.items() if sid in by_call}
    turn_records = [record for record in all_turn_records if record["call_sid"] in by_call]
    losses = count_losses(
        [
            (r.call_sid, r.caller.frames_sent if r.caller else 0, len(r.caller.media) if r.caller else 0)
            for r in results
        ],
        ends,
    )
    gaps: list[float] = []
    underruns = 0
    for result in results:
        caller = result.caller
        if caller is None or result.call_sid not in ends:
            continue
        call_gaps, call_underruns = reply_frame_gaps(caller)
        gaps += call_gaps
        underruns += call_underruns
    added, first_audio = [], []
    for record in turn_records:
        result = by_call.get(record["call_sid"])
        turn = record["turn_id"]
        if result is None or turn == 0 or record.get("error") or record.get("t_first_audio_ms") is None:
            continue
        if turn - 1 >= len(result.utterances):
            continue
        scripted = (
            BENCH_SCRIPT.stt_final_ms
            + first_sentence_ms(result.utterances[turn - 1], BENCH_SCRIPT)
            + BENCH_SCRIPT.tts_ms
        )
        first_audio.append(record["t_first_audio_ms"])
        added.append(record["t_first_audio_ms"] - scripted)
    barge = [ms for r in results for ms in r.barge_in_ms]
    errors = [f"{r.call_sid}: {r.error}" for r in results if r.error]
    return {
        "calls": level.calls,
        "turns_per_call": args.turns,
        "providers": args.providers,
        "tools": args.tools,
        "tool_calls": sum(
            1 for line in log_text.splitlines() if '"event": "tool_call"' in line and _call_sid_of(line) in by_call
        ),
        "database": database_url.split(":", 1)[0],
        "pinned_server_cpu0_client_cpu1": pinned,
        "calls_failed": len(errors),
        "errors": errors[:5],
        "calls_lost": len(losses.lost_calls),
        "lost_calls": losses.lost_calls[:5],
        "frames_lost": {"inbound": losses.inbound_frames, "outbound": losses.outbound_frames},
        "outbound_interarrival_ms": spread(gaps, 50, 99),
        "jitter_ms": spread([abs(gap - FRAME_GAP_MS) for gap in gaps], 50, 99),
        "playout_underruns": underruns,
        "server_pacer_underruns": sum(end.get("pacer_underruns", 0) for end in ends.values()),
        "server_added_latency_ms": spread(added, 50, 95, 99),
        "t_first_audio_ms": spread(first_audio, 50, 95),
        "t_first_audio_client_ms": spread([ms for r in results for ms in r.first_audio_ms], 50, 95),
        "preemptive": args.preemptive,
        "first_audio_by_preemption": preemption_figures(results, turn_records),
        "barge_in_reaction_ms": spread(barge, 50, 95),
        "barge_in_after_stt_ms": spread([ms - BENCH_SCRIPT.stt_interim_ms for ms in barge], 50, 95),
        "cpu_seconds_per_call": round(cpu / level.calls, 3),
        "worker_cpu_percent": round(100 * cpu / wall, 1),
        "worker_cpu_percent_per_call": round(100 * cpu / wall / level.calls, 3),
        "worker_rss_mb": round(level.peak_rss_kb / 1024, 1),
        "worker_rss_kb_per_call": round((level.peak_rss_kb - level.idle_rss_kb) / level.calls, 1),
        "client_cpu_percent": round(100 * level.client_cpu / wall, 1),
        "provider_fakes_cpu_percent": round(100 * level.helpers_cpu / wall, 1),
        "client_late_ticks": level.late_ticks,
        "client_loop_lag_ms": spread(level.loop_lag, 50, 99),
        # Time spent runnable but without a CPU: other processes on the machine, not this code.
        "runqueue_wait_percent": level.runqueue_wait,
        "wall_seconds": round(wall, 1),
        "script_ms": {
            "stt_final": BENCH_SCRIPT.stt_final_ms,
            "stt_interim": BENCH_SCRIPT.stt_interim_ms,
            "llm_first_token": BENCH_SCRIPT.llm_first_token_ms,
            "llm_token": BENCH_SCRIPT.llm_token_ms,
            "tts": BENCH_SCRIPT.tts_ms,
        },
        "profile": level.profile,
    }


def _call_sid_of(line: str) -> str:
    try:
        return json.loads(line).get("call_sid", "")
    except ValueError:
        return ""


if __name__ == "__main__":
    main()
