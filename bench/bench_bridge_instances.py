"""Memory of the Baileys bridge per instance (one business's WhatsApp account each).

    python -m bench.bench_bridge_instances [--counts 1,5,20] [--settle-seconds 3] [--sends 5]

For each count N it starts the real bridge (`node baileys-bridge/index.js`) with the fake WhatsApp
socket (`WA_SOCKET_MODULE=test/fakes/fake-socket.js`) and `WA_INSTANCES=1..N`, waits until every
instance reports `open` (signed `GET /instances`), lets it settle, and reads the process's resident
memory (VmRSS, /proc/<pid>/status). Then every instance sends `--sends` messages (signed
`POST /send`: pacing, idempotency keys and the sent-message store fill up) and receives as many (the
fake's control API injects them; the events go to a local sink that answers 204), and the memory is
read again. Also run with no instance at all, as the baseline of the process itself.

RSS moves with the garbage collector's mood, so the same counts also run through
`bench/bridge_instances_probe.mjs` (`node --expose-gc`): the bridge built in-process as index.js
builds it, the same traffic, then `process.memoryUsage()` after forced collections. Its V8 heap
is the steady figure per instance.

What it measures is the bridge's own cost per instance: session directory, caches, queues, timers,
its share of the event loop. The fake socket is a few objects; a real Baileys socket adds its
websocket, Signal sessions and protobuf buffers on top (several MB each, not measured here).
The last line is the whole result as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import requests

from server.security import bridge_hmac
from testkit.servers import PROJECT_ROOT, free_port

BRIDGE_DIR = PROJECT_ROOT / "baileys-bridge"
SECRET = "bench-bridge-secret"


class _Sink(BaseHTTPRequestHandler):
    """The app's webhook, reduced to counting the events it gets."""

    received = 0
    lock = threading.Lock()

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with _Sink.lock:
            _Sink.received += 1
        self.send_response(204)
        self.end_headers()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def signed(method: str, url: str, body: dict | None = None) -> requests.Response:
    """A request to the bridge, signed as the app signs it (`v2`: method, path with query, body)."""
    raw = b"" if body is None else json.dumps(body).encode()
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    signature = bridge_hmac.sign_request(SECRET, method, target, raw)
    headers = {bridge_hmac.HEADER: signature, "Content-Type": "application/json"}
    return requests.request(method, url, data=raw or None, headers=headers, timeout=30)


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except requests.RequestException:
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}")


def measure(count: int, sink_url: str, settle: float, sends: int) -> dict:
    port, control_port = free_port(), free_port()
    auth_dir = tempfile.mkdtemp(prefix="bench-bridge-")
    env = {
        **os.environ,
        "WA_SHARED_SECRET": SECRET,
        "WA_BAILEYS_PORT": str(port),
        "WA_AUTH_DIR": auth_dir,
        "WA_INSTANCES": ",".join(str(i) for i in range(1, count + 1)),
        "APP_URL": sink_url,
        "WA_SEND_MIN_INTERVAL_MS": "0",
        "LOG_LEVEL": "warn",
        "WA_SOCKET_MODULE": "test/fakes/fake-socket.js",
        "FAKE_WA_CONTROL_PORT": str(control_port),
        "FAKE_WA_OPEN_DELAY_MS": "5",
    }
    base, control = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{control_port}"
    process = subprocess.Popen(
        [shutil.which("node") or "node", "index.js"], cwd=BRIDGE_DIR, env=env, stdout=subprocess.DEVNULL
    )
    try:
        wait_for(lambda: requests.get(base + "/healthz", timeout=1).ok, 30, "the bridge")

        def all_open():
            listed = signed("GET", base + "/instances").json()["instances"]
            return len(listed) == count and all(i["state"] == "open" for i in listed)

        started = time.monotonic()
        wait_for(all_open, 120, f"{count} instances open")
        connected_s = time.monotonic() - started
        time.sleep(settle)
        idle = rss_kib(process.pid)

        before = _Sink.received
        for business_id in range(1, count + 1):
            for n in range(sends):
                body = {
                    "business_id": business_id,
                    "to": "+972501234567",
                    "text": f"bench {n}",
                    "idempotency_key": f"b{business_id}-{n}",
                }
                assert signed("POST", base + "/send", body).status_code == 200
        for n in range(sends * count):
            message = {
                "key": {"remoteJid": "972501234567@s.whatsapp.net", "fromMe": False, "id": f"BENCH{n}"},
                "message": {"conversation": "hi"},
            }
            requests.post(control + "/inject", json=message, timeout=10).raise_for_status()
        # Connection events (count of them) and the injected messages reach the sink.
        wait_for(lambda: _Sink.received - before >= sends * count, 60, "events delivered")
        time.sleep(settle)
        busy = rss_kib(process.pid)
        return {
            "instances": count,
            "rss_idle_kib": idle,
            "rss_after_traffic_kib": busy,
            "connect_s": round(connected_s, 2),
        }
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(auth_dir, ignore_errors=True)


def probe(count: int, sends: int) -> dict:
    """The in-process probe's memory after gc(): {"rss", "heapUsed", "external", …} in bytes."""
    script = PROJECT_ROOT / "bench" / "bridge_instances_probe.mjs"
    node = shutil.which("node") or "node"
    out = subprocess.run(
        [node, "--expose-gc", str(script), str(count), str(sends)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", default="1,5,20")
    parser.add_argument("--settle-seconds", type=float, default=3.0)
    parser.add_argument("--sends", type=int, default=5)
    args = parser.parse_args()
    if not (BRIDGE_DIR / "node_modules").is_dir():
        raise SystemExit("baileys-bridge/node_modules is missing: cd baileys-bridge && npm ci")

    sink = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    sink_url = f"http://127.0.0.1:{sink.server_address[1]}"

    results = [measure(0, sink_url, args.settle_seconds, 0)]
    for count in (int(c) for c in args.counts.split(",")):
        results.append(measure(count, sink_url, args.settle_seconds, args.sends))
    for row in results:
        row["heap_after_gc_kib"] = round(
            probe(row["instances"], args.sends if row["instances"] else 0)["heapUsed"] / 1024
        )
    # The first instance also pays one-time costs (Baileys' auth and crypto code paths warmed up,
    # first sockets): the cost of each further one is the slope from the 1-instance run.
    one = next((row for row in results if row["instances"] == 1), None)
    print(
        f"{'instances':>9} {'RSS idle MiB':>13} {'after traffic MiB':>18} {'RSS KiB/extra':>14} "
        f"{'heap MiB (gc)':>14} {'heap KiB/extra':>15} {'connect s':>10}"
    )
    for row in results:
        n = row["instances"]
        if one is not None and n > 1:
            rss_extra = (row["rss_after_traffic_kib"] - one["rss_after_traffic_kib"]) / (n - 1)
            row["rss_kib_per_extra_instance"] = round(rss_extra)
            row["heap_kib_per_extra_instance"] = round((row["heap_after_gc_kib"] - one["heap_after_gc_kib"]) / (n - 1))
        rss_col = str(row.get("rss_kib_per_extra_instance", "-"))
        heap_col = str(row.get("heap_kib_per_extra_instance", "-"))
        idle, busy, heap = (
            row["rss_idle_kib"] / 1024,
            row["rss_after_traffic_kib"] / 1024,
            row["heap_after_gc_kib"] / 1024,
        )
        print(f"{n:>9} {idle:>13.1f} {busy:>18.1f} {rss_col:>14} {heap:>14.1f} {heap_col:>15} {row['connect_s']:>10}")
    sink.shutdown()
    print(json.dumps({"bridge_instances": results}))


if __name__ == "__main__":
    main()
