"""The coordinator on Flower's strategies: the real ServerApp loop and the real ClientApp over an in-process Grid.

No Ray: :class:`simulations.inprocess.InProcessGrid` calls the real ClientApp with real Messages in
this process, so bad replies can be injected into real reply Messages and a killed coordinator can
resume against the same (still running) sites.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Context, Message, RecordDict
from safetensors.numpy import load_file

from common.config import (
    STRATEGIES,
    CoordinatorConfig,
    DataConfig,
    PrivacyConfig,
    RunConfig,
    StrategyConfig,
    TrainConfig,
)
from common.errors import FedcareError
from common.wire import ARRAYS, METRICS
from server.federation import run_federation
from server.run_dir import RunDirectory
from simulations.inprocess import InProcessGrid, simulate_inprocess, site_calls

# Each test trains the tiny model for real at every site (tens of seconds on two shared cores).
pytestmark = pytest.mark.slow
# What is checked here is the coordinator, not the task evaluation: each site scores 4 triage items per
# evaluation (the smoke plan's 16, DataConfig's 40 cost most of a run's time; tests/e2e check the task).
TASK_ITEMS = 4


def _adapter(run_dir: Path, server_round: int) -> dict[str, np.ndarray]:
    return dict(load_file(str(run_dir / "adapters" / f"round-{server_round:03d}" / "adapter_model.safetensors")))


def _max_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    assert a.keys() == b.keys()
    return max(float(np.max(np.abs(a[k].astype(np.float64) - b[k]))) for k in a)


@pytest.mark.parametrize("name", STRATEGIES)
def test_every_strategy_runs_two_tiny_sites_for_two_rounds(name: str, tmp_path: Path, cache_dir: Path) -> None:
    sites = 3 if name == "bulyan" else 2  # Flower's Bulyan needs 4 f + 3 updates (f = 0: 3 sites)
    summary = simulate_inprocess(
        [
            "+experiment=smoke",
            f"strategy={name}",
            f"num_sites={sites}",
            f"data.task_items_per_site={TASK_ITEMS}",
            f"model.cache_dir={cache_dir}",
            f"output_dir={tmp_path}",
            "run_name=r",
        ]
    )
    run = tmp_path / "r"
    assert summary["strategy"] == name and summary["rounds"] == 2
    assert len(summary["eval_loss_by_round"]) == 3 and all(np.isfinite(summary["eval_loss_by_round"]))
    assert [s["rounds_trained"] for s in summary["sites"]] == [2] * sites
    assert summary["rejected_updates"] == [] and summary["failed_sites"] == []
    assert _max_diff(_adapter(run, 2), _adapter(run, 0)) > 0  # the global adapter moved


def _cfg(tiny, tmp_path: Path, name: str, **kw) -> RunConfig:
    model_cfg, _, _ = tiny
    return RunConfig(
        num_sites=kw.pop("num_sites", 2),
        num_rounds=kw.pop("num_rounds", 2),
        model=model_cfg,
        output_dir=str(tmp_path),
        train=TrainConfig(local_steps=2, batch_size=4),
        data=DataConfig(records_per_site=16, task_items_per_site=TASK_ITEMS),
        privacy=PrivacyConfig(noise_seed=7),
        strategy=StrategyConfig(name=name, **kw.pop("strategy", {})),
        **kw,
    )


class Killed(RuntimeError):
    """The coordinator process dying mid-round (test only)."""


class KilledAfter(InProcessGrid):
    """Raises when the train messages of ``round`` are about to be sent (the sites keep running)."""

    kill_round: int = 0

    def send_and_receive(self, messages, *, timeout=None):  # noqa: ANN001, ANN201
        messages = list(messages)
        if messages and messages[0].metadata.message_type == "train":
            plan = messages[0].content.config_records["config"]
            if plan["server_round"] == self.kill_round:
                self.kill_round = 0
                raise Killed(f"killed before round {plan['server_round']}")
        return super().send_and_receive(messages, timeout=timeout)


@pytest.mark.parametrize("name", ["fedavg", "fedadam"])
def test_a_coordinator_killed_after_round_one_resumes_to_the_same_adapter(name: str, tiny, tmp_path: Path) -> None:
    # Same run name (the run id pins the test noise seeds) in two folders: uninterrupted vs killed + resumed.
    full_dir, cut_dir = tmp_path / "full" / "run", tmp_path / "cut" / "run"
    full = _cfg(tiny, tmp_path / "full", name, run_name="run")
    run_federation(InProcessGrid(site_calls(full, full_dir), 2), full, RunDirectory(full_dir))

    cut = dataclasses.replace(full, output_dir=str(tmp_path / "cut"))
    grid = KilledAfter(site_calls(cut, cut_dir), 2)  # the same sites (ledgers, state) before and after the kill
    grid.kill_round = 2
    with pytest.raises(Killed):
        run_federation(grid, cut, RunDirectory(cut_dir))
    assert json.loads((cut_dir / "checkpoint.json").read_text())["completed_round"] == 1
    resumed = dataclasses.replace(cut, coordinator=CoordinatorConfig(resume=True))
    summary = run_federation(grid, resumed, RunDirectory(cut_dir))

    diff = _max_diff(_adapter(cut_dir, 2), _adapter(full_dir, 2))
    print(f"\n{name}: resumed vs uninterrupted adapter after round 2: max abs diff {diff:.3e}")
    assert diff < 1e-6
    assert _max_diff(_adapter(cut_dir, 2), _adapter(cut_dir, 1)) > 1e-4  # round 2 did train
    assert len(summary["eval_loss_by_round"]) == 3
    rows = [json.loads(line) for line in (cut_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2]


def _corrupting(cfg: RunConfig, run_dir: Path, bad: dict[tuple[int, int], str]):  # noqa: ANN202
    """The real ClientApp, whose train reply of (site, round) in ``bad`` is corrupted after the site built it."""
    sites = site_calls(cfg, run_dir)

    def call(msg: Message, context: Context) -> Message:
        reply = sites(msg, context)
        site = int(context.node_config["partition-id"])
        kind = bad.get((site, int(msg.content.config_records["config"]["server_round"])))
        if kind is None or msg.metadata.message_type != "train" or reply.has_error():
            return reply
        arrays = {k: v.numpy() for k, v in reply.content.array_records[ARRAYS].items()}
        first = sorted(arrays)[0]
        if kind == "nan":
            arrays[first] = arrays[first].copy()
            arrays[first][0, 0] = np.nan
        elif kind == "shape":
            arrays[first] = np.zeros((arrays[first].shape[0] + 1, *arrays[first].shape[1:]), np.float32)
        elif kind == "huge":
            arrays = {k: v * 1000.0 for k, v in arrays.items()}
        reply.content = RecordDict(
            {
                ARRAYS: ArrayRecord({k: Array(v) for k, v in arrays.items()}),
                METRICS: reply.content.metric_records[METRICS],
            }
        )
        return reply

    return call


def test_bad_updates_are_rejected_named_and_the_rounds_complete(tiny, tmp_path: Path) -> None:
    cfg = _cfg(tiny, tmp_path, "fedavg", num_sites=3, run_name="bad")
    grid = InProcessGrid(_corrupting(cfg, tmp_path / "bad", {(1, 1): "nan", (2, 1): "shape", (1, 2): "huge"}), 3)
    summary = run_federation(grid, cfg, RunDirectory(tmp_path / "bad"))

    rejected = {(r["round"], r["site"]): r["reason"] for r in summary["rejected_updates"]}
    assert set(rejected) == {(1, "site-1"), (1, "site-2"), (2, "site-1")}
    assert "non-finite" in rejected[(1, "site-1")]
    assert "wrong layout" in rejected[(1, "site-2")] and "lora_A" in rejected[(1, "site-2")]
    assert "norm_outlier_factor" in rejected[(2, "site-1")]
    rows = [json.loads(line) for line in (tmp_path / "bad" / "metrics.jsonl").read_text().splitlines()]
    assert [sorted(r["sites"]) for r in rows] == [["site-0"], ["site-0", "site-2"]]
    assert [r["sites_rejected"] for r in rows] == [2, 1]
    assert all(np.isfinite(summary["eval_loss_by_round"]))
    assert all(np.isfinite(v).all() for v in _adapter(tmp_path / "bad", 2).values())


def test_a_round_with_fewer_accepted_updates_than_min_sites_stops_the_run(tiny, tmp_path: Path) -> None:
    cfg = _cfg(tiny, tmp_path, "fedavg", num_rounds=1, run_name="few", strategy={"min_sites": 2})
    grid = InProcessGrid(_corrupting(cfg, tmp_path / "few", {(0, 1): "nan"}), 2)
    with pytest.raises(FedcareError, match=r"1 site updates accepted, fewer than strategy.min_sites=2.*site-0"):
        run_federation(grid, cfg, RunDirectory(tmp_path / "few"))


def test_ffa_lora_sends_only_lora_b_and_keeps_lora_a_fixed(tmp_path: Path, cache_dir: Path) -> None:
    runs = {}
    for freeze in (False, True):
        runs[freeze] = simulate_inprocess(
            [
                "+experiment=smoke",
                f"lora.freeze_a={str(freeze).lower()}",
                f"data.task_items_per_site={TASK_ITEMS}",
                f"model.cache_dir={cache_dir}",
                f"output_dir={tmp_path}",
                f"run_name=ffa-{freeze}",
            ]
        )
    plain, ffa = _adapter(tmp_path / "ffa-False", 0), _adapter(tmp_path / "ffa-True", 2)
    b_bytes = sum(v.nbytes for k, v in plain.items() if ".lora_B." in k)
    assert runs[True]["bytes_up_per_round"] == [2 * b_bytes] * 2  # 2 sites, lora_B only
    assert runs[True]["bytes_up_per_round"][0] <= runs[False]["bytes_up_per_round"][0] / 2
    assert all(np.array_equal(ffa[k], plain[k]) for k in plain if ".lora_A." in k)  # A: the shared seeded init
    assert any(not np.array_equal(ffa[k], plain[k]) for k in plain if ".lora_B." in k)
