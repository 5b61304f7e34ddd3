"""The Flower App end to end: every registered strategy, the guard, the ledger, the engines.

Most tests drive the real ServerApp logic, strategies and ClientApp through
``LocalGrid`` (in-process, seconds). One test runs Flower's Simulation
Engine; the loopback deployment (a SuperLink and two SuperNodes, ~3 min
here because every message starts a fresh ClientApp process) is slow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("flwr")

from glassbox.config import load_recipe
from glassbox.errors import UserError
from glassbox.federated import task
from glassbox.federated.launch import check_federated, federate, flower_processes
from glassbox.federated.local import run_local
from glassbox.federated.strategies import STRATEGIES
from glassbox.federated.updates import state_digest
from glassbox.ledger.verify import verify_run
from glassbox.nn import load_model

SMALL = [
    "data.source=iris",
    "federated.clients=3",
    "federated.rounds=2",
    "federated.partition.scheme=iid",
    "model.dim=16",
    "model.depth=1",
    "report.enabled=false",
]
SGD = [
    "train.optimizer=sgd",
    "train.momentum=0",
    "train.weight_decay=0",
    "train.grad_clip=null",
    "train.lr=0.1",
]


def _entries(folder: Path, kind: str) -> list[dict]:
    lines = (folder / "ledger.jsonl").read_text().splitlines()
    entries = [e for e in map(json.loads, lines) if e["kind"] == kind]
    return [{**e, "data": e.get("data") or {}} for e in entries]


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_every_strategy_runs_and_its_rounds_are_in_the_ledger(strategy, tmp_path):
    over = [*SMALL, f"federated.strategy={strategy}", "federated.byzantine=0", *SGD]
    run = run_local(load_recipe(None, over), tmp_path)
    assert run.meta()["status"] == "completed", run.meta().get("error")
    rounds = [m for m in run.metrics() if m.get("split") == "round"]
    assert [m["round"] for m in rounds] == [0, 1, 2]
    assert all(m["accepted"] == 3 and m["dropped"] == 0 for m in rounds[1:])
    # One federated-update entry per accepted client update, one federated-round per round (and round 0).
    updates, heads = _entries(run.path, "federated-update"), _entries(run.path, "federated-round")
    assert len(updates) == 6 and {u["data"]["round"] for u in updates} == {1, 2}
    per_round = [e for e in heads if "round" in e["data"]]
    assert [e["data"]["round"] for e in per_round] == [0, 1, 2]
    # The saved model is the last round's aggregate: its digest is the one the ledger holds.
    model = load_model(run.path)
    assert state_digest(model.state_dict()) == per_round[-1]["data"]["model_sha256"]
    assert verify_run(run.path).ok


def test_the_guard_drops_failing_nan_and_misshapen_clients_with_reasons(tmp_path):
    over = [*SMALL, "federated.clients=5", "federated.partition.min_size=5", "federated.faults.fail=[0]"]
    over += ["federated.faults.nan=[1]", "federated.faults.wrong_shape=[2]"]
    run = run_local(load_recipe(None, over), tmp_path)
    assert run.meta()["status"] == "completed"
    summary = json.loads((run.path / "federated.json").read_text())
    reasons = {d["partition"] if "partition" in d else None: d["reason"] for d in summary["dropped"]}
    assert "NaN" in reasons[1] and "shape" in reasons[2]
    assert any("fault drill" in d["reason"] for d in summary["dropped"])  # client 0 raised
    assert all(r["accepted"] == 2 for r in summary["per_round"])
    accepted = {u["data"]["partition"] for u in _entries(run.path, "federated-update")}
    assert accepted == {3, 4}


def test_too_few_good_updates_keep_the_previous_model(tmp_path):
    over = [*SMALL, "federated.min_clients=3", "federated.faults.nan=[0]", "federated.rounds=1"]
    run = run_local(load_recipe(None, over), tmp_path)
    summary = json.loads((run.path / "federated.json").read_text())
    assert "fewer than federated.min_clients=3" in summary["kept_previous"]["1"]
    heads = [e["data"] for e in _entries(run.path, "federated-round") if "round" in e["data"]]
    assert heads[0]["model_sha256"] == heads[1]["model_sha256"]  # round 1 kept round 0's model


def test_pooled_statistics_equal_those_of_all_client_rows():
    recipe = load_recipe(
        None, [*SMALL, "federated.partition.scheme=dirichlet", "federated.partition.alpha=0.5"]
    )
    data = task.load_data(recipe)
    trains = [task.client_data(recipe, data, k)[0] for k in range(3)]
    pooled = task.pooled_stats([task.client_stats(recipe, t) for t in trains])
    every = torch.cat([t.X for t in trains]).double()
    assert torch.allclose(pooled["tokenizer.mean"], every.mean(0), atol=1e-9)
    assert torch.allclose(pooled["tokenizer.std"], every.std(0, unbiased=False), atol=1e-9)


def test_central_dp_reports_epsilon_every_round(tmp_path):
    over = [*SMALL, "federated.privacy.mode=central", "federated.privacy.noise_multiplier=1.0"]
    run = run_local(load_recipe(None, over), tmp_path)
    eps = [m["epsilon"] for m in run.metrics() if m.get("split") == "round" and m["round"] > 0]
    assert len(eps) == 2 and 0 < eps[0] < eps[1]


@pytest.mark.parametrize(
    ("over", "needle"),
    [
        (["federated.strategy=scaffold"], "SCAFFOLD needs plain SGD"),
        (
            ["federated.strategy=krum", "federated.privacy.mode=central"],
            "central DP runs with strategy fedavg",
        ),
        (["federated.faults.nan=[7]"], "only 3"),
        (["federated.min_clients=4"], "more than the 3 clients"),
    ],
)
def test_unrunnable_recipes_are_refused_with_the_fix(over, needle):
    recipe = load_recipe(None, [*SMALL, *over])
    with pytest.raises(UserError, match=needle):
        check_federated(recipe, 3)


def test_simulation_engine_runs_the_app_and_leaves_no_process(tmp_path):
    recipe = load_recipe(None, [*SMALL, "federated.clients=2", "federated.rounds=1"])
    run = federate(recipe, tmp_path, engine="simulation")
    assert run.meta()["status"] == "completed", run.meta().get("error")
    assert verify_run(run.path).ok
    assert (run.path / "flower.log").stat().st_size > 0
    from glassbox.federated.launch import _alive

    def leftover() -> list[int]:
        found = subprocess.run(
            ["pgrep", "-f", "flower-superlink|flwr-simulation|flower-superexec"],
            capture_output=True,
            text=True,
        ).stdout.split()
        return [int(p) for p in found if _alive(int(p))]  # a zombie awaiting its reaper is gone already

    assert leftover() == []


@pytest.mark.slow
def test_loopback_deployment_two_supernodes_two_rounds(tmp_path):
    bin_ = Path(sys.executable).parent
    env = {
        **os.environ,
        "FLWR_HOME": str(tmp_path / "home"),
        "PATH": f"{bin_}{os.pathsep}{os.environ['PATH']}",
    }
    env["FLWR_DISABLE_UPDATE_CHECK"] = "1"
    port = 18000 + os.getpid() % 1000
    procs = [
        subprocess.Popen(
            [
                str(bin_ / "flower-superlink"),
                "--insecure",
                "--disable-runtime-dependency-installation",
                *("--host", "127.0.0.1", "--port", str(port)),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    ]
    try:
        time.sleep(4)
        for i in range(2):
            node = [str(bin_ / "flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{port}"]
            node += ["--port", str(port + 100 + i), "--node-config", f"partition-id={i} num-partitions=2"]
            procs.append(
                subprocess.Popen(
                    node,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
        recipe = load_recipe(None, [*SMALL, "federated.clients=2", "federated.rounds=2"])
        run = federate(recipe, tmp_path / "runs", engine="deployment", superlink=f"127.0.0.1:{port}")
        assert run.meta()["status"] == "completed", run.meta().get("error")
        assert len(_entries(run.path, "federated-update")) == 4
        assert verify_run(run.path).ok
    finally:
        from glassbox.federated.launch import kill_all

        kill_all([p.pid for p in procs] + flower_processes(tmp_path / "home"))
    assert not flower_processes(tmp_path / "home")


def test_scaffold_client_keeps_its_control_variate_only_when_the_server_used_its_update(tmp_path):
    from glassbox.federated.client_app import C_I
    from glassbox.federated.client_app import app as client_app
    from glassbox.federated.launch import create_run
    from glassbox.federated.local import LocalGrid, run_config
    from glassbox.federated.server import serve

    over = [*SMALL, *SGD, "federated.strategy=scaffold", "federated.faults.nan=[1]", "federated.rounds=3"]
    recipe = load_recipe(None, over)
    run = create_run(recipe, tmp_path)
    grid = LocalGrid(client_app, 3, run_config(recipe, run.path))
    serve(grid, recipe, run.path)
    kept = {ctx.node_config["partition-id"]: C_I in ctx.state for ctx in grid.contexts.values()}
    assert kept == {0: True, 1: False, 2: True}  # client 1's NaN updates were dropped every round


def test_federate_cli_refuses_bad_recipes_with_one_line_and_no_folder(tmp_path, capsys):
    from glassbox.cli.main import main

    out = str(tmp_path / "runs")
    assert main(["federate", "digits", "--out", out]) == 2
    assert "no federated: section" in capsys.readouterr().err
    assert main(["federate", "federated", "--set", "train.optimizer=adamw", "--out", out]) == 2
    err = capsys.readouterr().err
    assert "SCAFFOLD needs plain SGD" in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.slow
def test_shipped_federated_recipe_learns(tmp_path):
    from glassbox.cli.common import shipped_recipes

    run = run_local(load_recipe(shipped_recipes()["federated"], ["report.enabled=false"]), tmp_path)
    assert run.meta()["results"]["test_accuracy"] > 0.85


def test_central_dp_with_a_dropped_client_releases_nothing_and_says_why(tmp_path):
    over = [*SMALL, "federated.privacy.mode=central", "federated.faults.nan=[0]", "federated.rounds=1"]
    run = run_local(load_recipe(None, over), tmp_path)
    summary = json.loads((run.path / "federated.json").read_text())
    assert "central DP" in summary["kept_previous"]["1"]
    assert summary["epsilon"] == 0.0


def test_a_client_that_never_answers_is_dropped_as_timed_out(tmp_path):
    from glassbox.federated.client_app import app as client_app
    from glassbox.federated.launch import create_run
    from glassbox.federated.local import LocalGrid, run_config
    from glassbox.federated.server import serve

    class Silent(LocalGrid):  # node 2 never replies to training, as if past the round's timeout
        def pull_messages(self, message_ids):
            got = list(super().pull_messages(message_ids))
            return [
                m for m in got if not (m.metadata.src_node_id == 2 and m.metadata.message_type == "train")
            ]

    recipe = load_recipe(None, [*SMALL, "federated.rounds=1"])
    run = create_run(recipe, tmp_path)
    serve(Silent(client_app, 3, run_config(recipe, run.path)), recipe, run.path)
    summary = json.loads((run.path / "federated.json").read_text())
    assert [d["reason"] for d in summary["dropped"]] == ["no reply within the round's timeout"]
    assert summary["per_round"][0]["accepted"] == 2


def test_krum_leaves_out_a_client_that_scales_its_update(tmp_path):
    over = [*SMALL, "federated.clients=5", "federated.partition.min_size=5", "federated.strategy=multikrum"]
    over += ["federated.byzantine=1", "federated.faults.scale=[3]", "federated.rounds=1"]
    run = run_local(load_recipe(None, over), tmp_path)
    good = run_local(load_recipe(None, [o for o in over if "faults" not in o]), tmp_path / "clean")
    # MultiKrum (f = 1) keeps 4 of the 5 updates and should leave out the x100 one: its model stays
    # near the clean run's, while FedAvg, which averages the x100 update in, is dragged far away.
    fedavg = run_local(load_recipe(None, [*over, "federated.strategy=fedavg"]), tmp_path / "avg")
    dist = {}
    for name, r in {"multikrum": run, "fedavg": fedavg}.items():
        a, b = load_model(r.path).state_dict(), load_model(good.path).state_dict()
        dist[name] = sum(float((a[k] - b[k]).norm()) for k in a)
    assert dist["multikrum"] < dist["fedavg"] / 10


def test_model_card_says_the_model_was_trained_federated(tmp_path):
    run = run_local(load_recipe(None, [o for o in SMALL if o != "report.enabled=false"]), tmp_path)
    card = json.loads((run.path / "model_card.json").read_text())
    assert card["limitations"][0].startswith("Trained federated (fedavg, 3 clients, 2 rounds)")
    assert "without differential privacy" in card["limitations"][0]


def test_a_rerun_gives_the_same_model_bit_for_bit(tmp_path):
    # Flower samples (and so orders) nodes at random; the server seeds that and aggregates in
    # partition order, so a rerun of the recipe is the same run.
    over = [*SMALL, "federated.clients=4", "federated.fraction=0.5", "federated.min_clients=1"]
    a = run_local(load_recipe(None, over), tmp_path / "a")
    b = run_local(load_recipe(None, over), tmp_path / "b")
    digest = [json.loads((r.path / "federated.json").read_text())["final_model_sha256"] for r in (a, b)]
    assert digest[0] == digest[1]
