"""The UI's background worker: runs ``glassbox`` commands one at a time, each in its own process.

A run started from the browser is the same ``glassbox train RECIPE --set
...`` a user would type, in a child process, so the web server never
trains in its own process and a crash there cannot take the UI down. Jobs
wait in a queue (``workers`` at a time, one by default); cancel sends
SIGTERM, which the CLI turns into a run folder marked failed. The run
folders themselves are the record: a restarted UI lists them from disk.

>>> q = JobQueue("/tmp/glassbox-doc-runs", workers=1)
>>> q.jobs()
[]
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Job:
    id: str
    argv: list[str]  # after "glassbox"
    name: str  # the run's recipe name; its folder is <runs>/<time>-<name>
    after: list[list[str]] = field(default_factory=list)  # commands on the finished run ("{run}" replaced)
    status: str = "queued"  # queued, running, done, failed, cancelled
    returncode: int | None = None
    started: float | None = None
    ended: float | None = None
    process: subprocess.Popen | None = None
    log: Path | None = None

    def public(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("id", "name", "status", "returncode", "started", "ended")}


def slug(text: str) -> str:
    """A run name safe in a folder name: letters, digits, dash; at most 40 characters."""
    s = re.sub(r"[^A-Za-z0-9-]+", "-", text).strip("-")[:40]
    return s or "run"


class JobQueue:
    """Runs jobs in order in ``workers`` threads, each job a ``python -m glassbox`` child process."""

    def __init__(self, runs: str | Path, workers: int = 1) -> None:
        self.runs = Path(runs)
        self.workers = workers
        self._jobs: dict[str, Job] = {}
        self._order: list[str] = []
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for i in range(self.workers):
            t = threading.Thread(target=self._loop, name=f"glassbox-ui-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def submit(self, argv: list[str], name: str, after: list[list[str]] | None = None) -> Job:
        job = Job(uuid.uuid4().hex[:8], list(argv), name, after or [])
        with self._wake:
            self._jobs[job.id] = job
            self._order.append(job.id)
            self._wake.notify()
        return job

    def jobs(self) -> list[Job]:
        with self._lock:
            return [self._jobs[i] for i in self._order]

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def run_folder(self, job: Job) -> Path | None:
        """The job's run folder once the child has made it (the newest folder with the job's name)."""
        found = sorted(self.runs.glob(f"*-{job.name}"))
        return found[-1] if found else None

    def cancel(self, job_id: str) -> bool:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.status not in ("queued", "running"):
                return False
            if job.status == "queued":
                job.status = "cancelled"
                return True
            proc = job.process
        if proc is not None and proc.poll() is None:
            # SIGTERM, which the CLI turns into its KeyboardInterrupt path (the run folder is marked
            # failed). Not SIGINT: a process started in the background with SIGINT ignored passes
            # that on, and Python then never raises KeyboardInterrupt.
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        with self._lock:
            job.status = "cancelled"
        return True

    # -- the worker loop -------------------------------------------------------------------
    def _next(self) -> Job:
        with self._wake:
            while True:
                for i in self._order:
                    if self._jobs[i].status == "queued":
                        self._jobs[i].status = "running"
                        return self._jobs[i]
                self._wake.wait()

    def _loop(self) -> None:
        while True:
            job = self._next()
            self._run(job)

    def _run(self, job: Job) -> None:
        logs = self.runs / ".ui" / "jobs"
        logs.mkdir(parents=True, exist_ok=True)
        job.log = logs / f"{job.id}.log"
        job.started = time.time()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with job.log.open("w") as out:
            for argv in [job.argv, *job.after]:
                run = self.run_folder(job)
                argv = [a.replace("{run}", str(run)) for a in argv]
                out.write(f"$ glassbox {' '.join(argv)}\n")
                out.flush()
                proc = subprocess.Popen(
                    [sys.executable, "-m", "glassbox", *argv], stdout=out, stderr=subprocess.STDOUT, env=env
                )
                job.process = proc
                code = proc.wait()
                job.returncode = code
                if code != 0 or job.status == "cancelled":
                    break
        job.ended = time.time()
        with self._lock:
            if job.status != "cancelled":
                job.status = "done" if job.returncode == 0 else "failed"
            job.process = None
