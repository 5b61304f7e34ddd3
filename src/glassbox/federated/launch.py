"""Starting a federated run: check the recipe, make the run folder, run Flower, clean up after it.

``federate(recipe, out, engine=...)`` is what ``glassbox federate`` calls.

- ``simulation``: Flower's Simulation Engine on this machine. glassbox
  starts its own SuperLink in simulation mode (on free loopback ports, with
  its own ``FLWR_HOME`` so the user's Flower config is never touched, and
  runtime dependency installation off so Flower never installs a torch of
  its own), submits the app with ``flwr run``, waits for it to end, and
  stops the SuperLink's whole process group. One CPU per client, torch
  threads 1.
- ``deployment``: a SuperLink the user runs (``--superlink HOST:PORT``, its
  HTTP API, port 8000 by default) with one SuperNode per client; see the README. The
  ServerApp writes the run folder where the SuperLink runs it, so the path
  must be one that machine can write (the same machine, or a shared disk).

The run folder is made here, before Flower starts, with the recipe, the
provenance entries and the partition; the ServerApp continues the same
ledger (``Run.open``) and marks the run completed. If Flower ends without
that, the run is marked failed here with the tail of Flower's log.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from glassbox.config import Recipe
from glassbox.errors import UserError

PARTITION = "partition.json"
FLOWER_LOG = "flower.log"
APP_PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "glassbox-federated"
version = "0.1.0"
description = "glassbox's Flower App (its code is the installed glassbox package)"
dependencies = []

[tool.flwr.app]
publisher = "glassbox"

[tool.flwr.app.components]
serverapp = "glassbox.federated.server_app:app"
clientapp = "glassbox.federated.client_app:app"

[tool.flwr.app.config]
run-dir = ""
recipe = ""
"""


def check_federated(recipe: Recipe, n_clients: int) -> None:
    """Refuse, with the fix, a federated recipe that cannot run as written (before any folder exists)."""
    from glassbox.federated.algorithms import check_scaffold_config
    from glassbox.federated.task import fed

    cfg = fed(recipe)
    if cfg.strategy == "scaffold":
        check_scaffold_config(recipe.train)
    if cfg.min_clients > n_clients:
        raise UserError(
            f"federated.min_clients={cfg.min_clients} is more than the {n_clients} clients; lower it"
        )
    bad = sorted(
        {*cfg.faults.fail, *cfg.faults.nan, *cfg.faults.wrong_shape, *cfg.faults.scale}
        - set(range(n_clients))
    )
    if bad:
        raise UserError(
            f"federated.faults names clients {bad}, but there are only {n_clients} (ids 0..{n_clients - 1})"
        )
    if cfg.privacy is not None and cfg.privacy.mode == "central" and cfg.strategy != "fedavg":
        raise UserError(
            f"central DP runs with strategy fedavg only (Flower's accountant needs FedAvg's uniform mean),"
            f" got federated.strategy={cfg.strategy}; set federated.strategy=fedavg or privacy.mode=local"
        )
    if cfg.privacy is not None and cfg.privacy.mode == "local" and cfg.strategy == "scaffold":
        raise UserError("local DP and SCAFFOLD do not combine (DP-SGD's noise breaks option II); pick one")
    if recipe.valuation.method != "none":
        raise UserError("valuation does not run in a federated run; set valuation.method=none")


def create_run(recipe: Recipe, out: str | Path) -> Any:
    """The run folder of a federated run, with config, provenance and the partition; left running."""
    from glassbox.config import render
    from glassbox.data.partition import partition_summary
    from glassbox.federated import task
    from glassbox.pipeline import record_provenance
    from glassbox.run import Run

    data = task.load_data(recipe)  # bad data fails here, before any folder exists
    n = task.client_count(recipe, data)
    check_federated(recipe, n)
    run = Run.create(out, recipe.name, seed=recipe.seed, recipe=recipe.name, kind="federated")
    run.write_text("config.yaml", render(recipe))
    record_provenance(run, recipe, data)
    summary = partition_summary(data["train"], data["parts"])
    summary["clients"] = [
        {"partition": k, "train": len(tr), "val": len(va)}
        for k, (tr, va) in enumerate(task.client_data(recipe, data, k) for k in range(n))
    ]
    cfg = task.fed(recipe).partition
    run.write_json(PARTITION, {"scheme": cfg.scheme, "alpha": cfg.alpha, **summary}, kind="dataset")
    run.seal()
    return run


# -- engines -------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bin(name: str) -> str:
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise UserError(
            f"{name} not found beside {sys.executable}; install the federated extra:"
            " pip install 'glassbox[federated]'"
        )
    return str(path)


def _flower_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "FLWR_HOME": str(home),
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",  # else Flower uv-installs a CUDA torch
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "FLWR_TELEMETRY_ENABLED": "0",
            "OMP_NUM_THREADS": "1",
            "RAY_DEDUP_LOGS": "0",
            # The SuperLink starts flower-superexec and flwr-simulation by name.
            "PATH": str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", ""),
        }
    )
    return env


def flower_processes(home: Path, address: str | None = None) -> list[int]:
    """Process ids of everything started for this run: all carry its private FLWR_HOME.

    Flower detaches what it starts (``start_new_session``), so killing the
    SuperLink's process group misses its SuperExec and the simulation's Ray
    workers; the environment marker finds them, and ``address`` (the
    SuperLink's, on a port chosen for this run) those started with a clean
    environment, which name it on their command line.
    """
    marker = f"FLWR_HOME={home}".encode()
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if int(proc.name) == os.getpid():
                continue
            env = (proc / "environ").read_bytes().split(b"\0")
            cmd = (proc / "cmdline").read_bytes()
            if marker in env or (address is not None and address.encode() in cmd):
                found.append(int(proc.name))
        except (OSError, ValueError):
            continue
    return found


def kill_all(pids: list[int], grace: float = 10.0) -> list[int]:
    """SIGTERM, then SIGKILL what is left; returns the ids that would not die."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            pids = [p for p in pids if _alive(p)]
            if not pids:
                return []
            time.sleep(0.2)
    return pids


def _alive(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"  # a zombie is dead, only not yet reaped


def _connection_toml(name: str, address: str, n_clients: int | None) -> str:
    lines = [
        "[superlink]",
        f'default = "{name}"',
        "",
        f"[superlink.{name}]",
        f'address = "{address}"',
        "insecure = true",
    ]
    if n_clients is not None:
        lines += [
            f"options.num-supernodes = {n_clients}",
            # Flower's default is 2 CPUs a client: only half the clients would run at once.
            "options.backend.client-resources.num-cpus = 1",
            "options.backend.client-resources.num-gpus = 0.0",
        ]
    return "\n".join(lines) + "\n"


def _wait_http(port: int, proc: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"flower-superlink exited with code {proc.returncode}; see {log}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"flower-superlink did not answer within {timeout:.0f} s; see {log}")


def _flwr_run(
    app: Path, connection: str, overrides: Path, env: dict[str, str], log: Path, timeout: float
) -> int:
    cmd = [_bin("flwr"), "run", str(app), connection, "--run-config", str(overrides), "--stream"]
    with open(log, "ab") as f:
        proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return 124
        finally:
            if proc.poll() is None:  # timed out; what it started carries FLWR_HOME and is stopped after
                kill_all([proc.pid])


def _toml_str(s: str) -> str:
    return '"""' + s.replace("\\", "\\\\").replace('"""', '\\"""') + '"""'


def federate(
    recipe: Recipe,
    out: str | Path = "runs",
    *,
    engine: str = "simulation",
    superlink: str | None = None,
    timeout: float | None = None,
) -> Any:
    """Run the recipe's federation on Flower (``simulation`` here, or ``deployment`` on a SuperLink)."""
    from glassbox.federated import task
    from glassbox.federated.local import run_config
    from glassbox.run import Run

    if engine not in ("simulation", "deployment"):
        raise UserError(f"unknown engine '{engine}': choose simulation or deployment")
    if engine == "deployment" and not superlink:
        raise UserError(
            "--engine deployment needs --superlink HOST:PORT (the SuperLink's HTTP API, default port 8000)"
        )
    run = create_run(recipe, out)
    n = task.client_count(recipe, task.load_data(recipe))
    cfg = task.fed(recipe)
    limit = timeout if timeout is not None else cfg.timeout * (cfg.rounds + 2) + 300
    log = run.path.parent / f".{run.path.name}.{FLOWER_LOG}"  # outside the folder until it is recorded
    superlink_proc = None
    address = ""
    with tempfile.TemporaryDirectory(prefix="glassbox-flower-") as tmp:
        home, app = Path(tmp) / "home", Path(tmp) / "app"
        home.mkdir()
        app.mkdir()
        (app / "pyproject.toml").write_text(APP_PYPROJECT)
        env = _flower_env(home)
        try:
            if engine == "simulation":
                http = _free_port()  # Flower 1.42 serves every API over this one HTTP port
                cmd = [
                    _bin("flower-superlink"),
                    "--insecure",
                    "--simulation",
                    "--disable-runtime-dependency-installation",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(http),
                ]
                with open(log, "ab") as f:
                    superlink_proc = subprocess.Popen(
                        cmd, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True
                    )
                _wait_http(http, superlink_proc, log)
                address, clients = f"127.0.0.1:{http}", n
            else:
                address, clients = str(superlink), None
            (home / "config.toml").write_text(_connection_toml("glassbox", address, clients))
            overrides = Path(tmp) / "run-config.toml"
            rc = run_config(recipe, run.path)
            overrides.write_text("".join(f"{k} = {_toml_str(v)}\n" for k, v in rc.items()))
            code = _flwr_run(app, "glassbox", overrides, env, log, limit)
        finally:
            # Everything started for this run, the SuperLink included, carries its FLWR_HOME.
            left = kill_all(flower_processes(home, address if engine == "simulation" else None))
            if left:
                print(f"warning: Flower processes {left} would not stop; kill them by hand", file=sys.stderr)
    status = Run(run.path).meta().get("status")
    with Run.open(run.path) as reopened:
        reopened.write_bytes(FLOWER_LOG, log.read_bytes() if log.exists() else b"", kind="artifact")
        log.unlink(missing_ok=True)
        if status == "running":  # the ServerApp never got to mark it
            tail = (reopened.path / FLOWER_LOG).read_text(errors="replace").strip().splitlines()[-5:]
            why = "timed out" if code == 124 else f"flwr run exited with {code}"
            reopened.finish("failed", error=f"{why}: " + " | ".join(tail))
    return Run(run.path)
