"""Open-loop load test of ``glassbox serve`` on loopback: latency and errors at rising request rates.

Open-loop means the client does not wait for one answer before sending the
next: at rate r, request i is *scheduled* for t0 + i/r and a dispatcher hands
it to a pool of worker threads (one keep-alive ``http.client.HTTPConnection``
each) at that moment, whatever happened to earlier requests. Latency runs from
the scheduled time to the end of the response, so time spent queued behind a
slow server (or a busy client) counts; a closed-loop client would quietly send
less when the server slows down and report flattering percentiles
("coordinated omission"). Every step is bounded: ``rate * duration`` requests,
a per-request timeout (counted as an error) and a deadline after which
requests still queued are dropped and counted as ``unfinished``.
``client_lag_p99_ms`` (scheduled time to a worker taking the request) tells
queueing in this client (all connections busy, or too little CPU for it)
from queueing in the server.

Without ``--run`` it trains the healthcare recipe into a temporary folder and
exports it with ``--int8`` first (about 15 s). The server runs as its own
process and is always stopped at the end.

    .venv/bin/python benchmarks/serve_load.py [--run RUN] [--rates 50,100,200,400,800] [--duration 5]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import http.client
import json
import os
import platform
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

HOST = "127.0.0.1"
HEALTH_TIMEOUT_S = 60.0
SLACK_S = 2.0  # after a step's last scheduled send and the request timeout: then give up on the rest
TARGET_RATE, TARGET_P99_MS = 200, 20.0
# The CLI through this interpreter, so any venv works.
GLASSBOX = [sys.executable, "-m", "glassbox"]


def _glassbox(*args: str, timeout: float = 600) -> None:
    done = subprocess.run([*GLASSBOX, *args], capture_output=True, text=True, timeout=timeout)
    if done.returncode:
        raise RuntimeError(f"glassbox {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")


def prepare_run(tmp: Path) -> Path:
    """Train a small healthcare run into ``tmp`` and export it with int8; returns the run folder."""
    # No valuation and no explanations: they are most of the training time and the server needs neither.
    quick = ("valuation.method=none", "valuation.baselines=[]", "explain=null")
    _glassbox("train", "healthcare", "--out", str(tmp), *(a for q in quick for a in ("--set", q)))
    runs = [p for p in tmp.iterdir() if p.is_dir()]
    if len(runs) != 1:
        raise RuntimeError(f"expected one run folder in {tmp}, found {runs}")
    _glassbox("export", str(runs[0]), "--int8")
    return runs[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _request(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        raw = resp.read()
        try:
            return resp.status, json.loads(raw)
        except ValueError:
            return resp.status, raw.decode(errors="replace")
    finally:
        conn.close()


def _tail(log: Path, chars: int = 3000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else "(no log)"


def _wait_healthy(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + HEALTH_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}) before /health; log tail:\n{_tail(log)}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            status, body = _request(port, "GET", "/health")
            if status == 200 and isinstance(body, dict) and body.get("status") == "ok":
                return
        time.sleep(0.2)
    raise RuntimeError(f"server not healthy after {HEALTH_TIMEOUT_S:.0f} s; log tail:\n{_tail(log)}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    # SIGINT first so the server can shut down as after Ctrl-C; escalate if it does not.
    for sig, wait in ((signal.SIGINT, 5), (signal.SIGTERM, 3), (signal.SIGKILL, 3)):
        if proc.poll() is not None:
            return
        proc.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait)


def make_bodies(metadata: dict[str, Any], batch: int, count: int = 256, seed: int = 0) -> list[bytes]:
    """Request bodies of ``batch`` rows each: real breast-cancer rows when the feature names match."""
    schema = metadata.get("input_schema", {})
    names = schema.get("feature_names")
    rng = np.random.default_rng(seed)
    if not names:
        shape = [int(d) for d in schema.get("shape", [])[1:]]
        return [
            json.dumps({"inputs": rng.standard_normal((batch, *shape)).round(4).tolist()}).encode()
            for _ in range(count)
        ]
    from sklearn.datasets import load_breast_cancer

    bc = load_breast_cancer()
    known = [str(f) for f in bc.feature_names]
    if set(names) <= set(known):
        table = bc.data[:, [known.index(n) for n in names]]
    else:  # another dataset: the server's own scaling is not known here, so unit-scale values
        table = rng.standard_normal((512, len(names)))
    bodies = []
    for k in range(count):
        rows = table[np.arange(k * batch, (k + 1) * batch) % len(table)]
        rows_json = [dict(zip(names, map(float, r), strict=True)) for r in rows]
        bodies.append(json.dumps({"rows": rows_json}).encode())
    return bodies


def _wait_until(done: Any, deadline: float) -> None:
    while not done() and time.perf_counter() < deadline:
        time.sleep(0.01)


_Record = tuple[float, float, float, str]  # scheduled, taken by a worker, answered (perf_counter s), outcome


class _Pool:
    """Worker threads, each with one keep-alive connection, sending whatever the dispatcher queues."""

    def __init__(self, port: int, workers: int, timeout: float) -> None:
        self.port, self.timeout = port, timeout
        self.jobs: queue.Queue[tuple[float, bytes, list[_Record]] | None] = queue.Queue()
        self.threads = [threading.Thread(target=self._work, daemon=True) for _ in range(workers)]
        for t in self.threads:
            t.start()

    def _send(self, conn: http.client.HTTPConnection, body: bytes) -> str:
        conn.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        return "ok" if resp.status == 200 else f"http_{resp.status}"

    def _work(self) -> None:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=self.timeout)
        while (job := self.jobs.get()) is not None:
            scheduled, body, sink = job
            picked = time.perf_counter()
            try:
                try:
                    outcome = self._send(conn, body)
                except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                    # The server may close an idle keep-alive connection; one fresh try is what a
                    # real client does, and the reconnect time still counts in the latency.
                    conn.close()
                    outcome = self._send(conn, body)
            except TimeoutError:
                outcome = "timeout"
                conn.close()
            except (OSError, http.client.HTTPException) as e:
                outcome = type(e).__name__
                conn.close()
            sink.append((scheduled, picked, time.perf_counter(), outcome))
        conn.close()

    def step(self, bodies: list[bytes], rate: float, n: int) -> dict[str, Any]:
        sink: list[_Record] = []
        t0 = time.perf_counter() + 0.05
        for i in range(n):
            scheduled = t0 + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            self.jobs.put((scheduled, bodies[i % len(bodies)], sink))
        _wait_until(lambda: len(sink) >= n, t0 + n / rate + self.timeout + SLACK_S)
        dropped = 0  # still queued at the deadline: never sent, so they cannot delay the next step
        with contextlib.suppress(queue.Empty):
            while True:
                self.jobs.get_nowait()
                dropped += 1
        _wait_until(lambda: len(sink) + dropped >= n, time.perf_counter() + self.timeout + SLACK_S)
        done = list(sink)
        kinds = collections.Counter(outcome for *_, outcome in done if outcome != "ok")
        if n - len(done):
            kinds["unfinished"] += n - len(done)
        lat = np.array([(end - s) * 1000 for s, _, end, outcome in done if outcome == "ok"])
        # Scheduled time to a worker taking the request: large when all connections are busy (or the
        # client is short of CPU), i.e. the queueing happened on this side of the socket.
        lag = [(picked - s) * 1000 for s, picked, _, _ in done]
        wall = max([end for _, _, end, _ in done], default=t0 + n / rate) - t0
        pct = [round(float(np.percentile(lat, q)), 2) if lat.size else None for q in (50, 90, 99, 100)]
        out = {"rate": rate, "sent": n, "ok": int(lat.size), "errors": int(n - lat.size)}
        out |= {"error_kinds": dict(kinds), "throughput_rps": round(lat.size / max(wall, 1e-9), 1)}
        out["client_lag_p99_ms"] = round(float(np.percentile(lag, 99)), 2) if lag else None
        return out | dict(zip(("p50_ms", "p90_ms", "p99_ms", "max_ms"), pct, strict=True))

    def close(self) -> None:
        for _ in self.threads:
            self.jobs.put(None)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", type=Path, help="an exported run folder (default: train and export one)")
    p.add_argument("--rates", default="50,100,200,400,800", help="requests per second, comma-separated")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per rate step")
    p.add_argument("--batch", type=int, default=1, help="rows per request")
    p.add_argument("--workers", type=int, default=32)
    p.add_argument("--timeout", type=float, default=5.0, help="per-request timeout, seconds")
    p.add_argument("--warmup", type=int, default=50, help="requests sent (not counted) before measuring")
    p.add_argument("--no-int8", dest="int8", action="store_false", help="serve the float model")
    p.add_argument("--json", action="store_true", help="(always JSON; accepted for glassbox bench)")
    args = p.parse_args(argv)
    rates = [float(r) if "." in r else int(r) for r in args.rates.split(",") if r.strip()]
    with tempfile.TemporaryDirectory(prefix="glassbox-serve-load-") as tmp_name:
        tmp = Path(tmp_name)
        run = args.run or prepare_run(tmp / "runs")
        port, log = _free_port(), tmp / "server.log"
        cmd = [*GLASSBOX, "serve", str(run), "--port", str(port)]
        cmd += ["--int8"] if args.int8 else []
        machine: dict[str, Any] = {"cpus": os.cpu_count(), "loadavg_start": os.getloadavg()}
        machine |= {"python": platform.python_version(), "platform": platform.platform()}
        with log.open("wb") as log_file:
            proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT)
        pool = None
        try:
            _wait_healthy(port, proc, log)
            status, metadata = _request(port, "GET", "/metadata")
            if status != 200 or not isinstance(metadata, dict):
                raise RuntimeError(f"/metadata answered {status}: {str(metadata)[:500]}")
            bodies = make_bodies(metadata, args.batch)
            status, answer = _request(port, "POST", "/predict", bodies[0])
            got = len(answer.get("predictions", [])) if isinstance(answer, dict) else None
            if status != 200 or got != args.batch:  # fail loudly before measuring errors at every rate
                raise RuntimeError(f"/predict answered {status}: {str(answer)[:500]}")
            pool = _Pool(port, args.workers, args.timeout)
            warm = pool.step(bodies, rates[0], args.warmup) if args.warmup else None
            results = [pool.step(bodies, r, max(1, round(r * args.duration))) for r in rates]
        finally:
            if pool is not None:
                pool.close()
            _stop(proc)
        machine["loadavg_end"] = os.getloadavg()
        machine["server_log_tail"] = _tail(log, 1000)
    at_target = next((r for r in results if r["rate"] == TARGET_RATE), None)
    target = None
    if at_target is not None:
        target = at_target["errors"] == 0 and (at_target["p99_ms"] or float("inf")) < TARGET_P99_MS
    settings = {k: v for k, v in vars(args).items() if k != "json"}
    settings |= {"run": str(args.run or "(healthcare, trained for this benchmark)"), "rates": rates}
    settings["warmup_errors"] = warm and warm["errors"]
    return {
        "settings": settings,
        "machine": machine,
        "results": results,
        "targets": {f"{TARGET_RATE} rps with p99 < {TARGET_P99_MS:.0f} ms and no errors": target},
    }


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
