"""End to end on Flower's simulation engine: the real ClientApp and ServerApp, Ray workers, PEFT files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # every test here starts `fedcare simulate` (a subprocess running Ray)
ROOT = Path(__file__).resolve().parents[2]


def run_cli(args: list[str], cache: Path, cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    env = os.environ | {
        "FLWR_TELEMETRY_ENABLED": "0",
        "HF_HUB_OFFLINE": "1",
        "FEDCARE_CACHE": str(cache),
        "PYTHONPATH": str(ROOT),
    }
    return subprocess.run(
        [sys.executable, "-m", "simulations.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def check_run(run_dir: Path, *, sites: int, rounds: int, dp: bool) -> dict:
    """Assertions every finished run must satisfy; returns summary.json."""
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["rounds"] == rounds and summary["dp_enabled"] is dp
    assert len(summary["eval_loss_by_round"]) == rounds + 1
    assert [s["site_id"] for s in summary["sites"]] == [f"site-{i}" for i in range(sites)]
    for site in summary["sites"]:
        assert site["examples"] > 0
        if dp:
            assert 0 < site["epsilon"] <= site["target_epsilon"]
            assert 0 < site["delta"] <= min(1e-5, 1 / (10 * site["examples"])) + 1e-12
            assert site["epsilon_remaining"] == pytest.approx(site["target_epsilon"] - site["epsilon"])
        else:
            assert site["epsilon"] is None  # unbounded: written as null
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == list(range(1, rounds + 1))
    for row in rows:
        assert row["bytes_up"] > 0 and row["bytes_down"] > 0 and row["seconds"] > 0
        assert set(row["sites"]) == {f"site-{i}" for i in range(sites)}
    assert summary["bytes_up_per_round"] == [r["bytes_up"] for r in rows]
    assert (run_dir / "config.json").exists()
    for r in range(rounds + 1):
        adapter = run_dir / "adapters" / f"round-{r:03d}"
        assert (adapter / "adapter_config.json").exists() and (adapter / "adapter_model.safetensors").exists()
    assert Path(summary["adapter_dir"]) == run_dir / "adapters" / f"round-{rounds:03d}"
    return summary


def test_two_sites_two_rounds_on_the_tiny_model(tmp_path: Path, cache_dir: Path) -> None:
    result = run_cli(["simulate", "+experiment=smoke", f"output_dir={tmp_path}", "run_name=tiny"], cache_dir, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = check_run(tmp_path / "tiny", sites=2, rounds=2, dp=True)
    assert "round 1 step" in result.stderr  # live progress: round, site, step, loss
    # One worker serves both hospitals for both rounds and loads the base model once; every round's
    # exact held-out loss (exact_loss.json) comes from what the sites recorded, not from a second load.
    assert result.stderr.count("loaded base model") == 1
    assert "exact held-out loss: 3 rounds at 2 sites, from the sites' own records" in result.stderr
    assert "held-out loss by round" in result.stdout
    # Every tensor that went up is a LoRA tensor of the adapter: bytes up = sites x adapter bytes.
    from safetensors.numpy import load_file

    saved = load_file(str(Path(summary["adapter_dir"]) / "adapter_model.safetensors"))
    assert all(".lora_A." in k or ".lora_B." in k for k in saved)
    assert summary["bytes_up_per_round"] == [2 * sum(a.nbytes for a in saved.values())] * 2
    check_egress(tmp_path / "tiny", saved, sites=2, rounds=2)
    # Each virtual hospital is a site like a deployed one: its own site.yaml and a ledger file that
    # holds every release (2 trainings + 3 evaluation queries) and agrees with what it reported.
    from client.state import SiteState
    from common.site import load_site_config

    for site in summary["sites"]:
        folder = tmp_path / "tiny" / "sites" / site["site_id"]
        assert load_site_config(folder / "site.yaml").state_dir == str(folder)
        ledger = SiteState(folder).read_ledger()
        assert [e["kind"] for e in ledger.entries].count("evaluate") == 3
        assert ledger.epsilon() >= site["epsilon"]  # the final evaluation query was charged after training
    assert "left (noise multiplier" in result.stderr  # the coordinator's console shows each site's budget


def check_egress(run_dir: Path, adapter: dict, *, sites: int, rounds: int) -> None:
    """The whole run's egress logs: nothing but LoRA tensors and numbers left any site."""
    from common.audit import verify_log

    sent_up = 0
    for i in range(sites):
        log = run_dir / "sites" / f"site-{i}" / "egress.jsonl"
        assert verify_log(log) == 2 * rounds + 1  # evaluations of rounds 0..R and R trainings
        for line in log.read_text().splitlines():
            entry = json.loads(line)
            assert entry["error"] is None
            assert all(isinstance(v, (int, float)) or v is None for v in entry["metrics"].values())
            for tensor in entry["tensors"]:
                assert tensor["name"] in adapter and tensor["dtype"] == "float32"
                assert tuple(tensor["shape"]) == adapter[tensor["name"]].shape
            if entry["message_type"] == "train":
                assert len(entry["tensors"]) == len(adapter)
                sent_up += entry["tensor_bytes"]
            else:
                assert entry["tensors"] == []
    summary = json.loads((run_dir / "summary.json").read_text())
    assert sent_up == sum(summary["bytes_up_per_round"])  # the coordinator received exactly what was logged


# The in-process engine's run (the same run directory as Flower's engine writes, plus the exact held-out
# losses, no Ray) is checked in tests/e2e/test_report.py::test_smoke_run_report_renders_with_every_plot,
# which runs exactly that smoke run for its report.


def test_dp_off_is_recorded_in_the_run(tmp_path: Path, cache_dir: Path) -> None:
    result = run_cli(
        # The in-process engine (no Ray start-up): what is checked is the record of DP off, not the engine.
        ["simulate", "+experiment=smoke", "privacy=none", "simulation.engine=inprocess", "data.task_items_per_site=4"]
        + [f"output_dir={tmp_path}", "run_name=plain"],
        cache_dir,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    check_run(tmp_path / "plain", sites=2, rounds=2, dp=False)
    assert json.loads((tmp_path / "plain" / "config.json").read_text())["privacy"]["enabled"] is False


def test_medquad_one_hospital_per_source(tmp_path: Path, cache_dir: Path, medquad: Path) -> None:
    result = run_cli(
        [
            "simulate",
            "+experiment=smoke",
            "data=medquad",
            "simulation.engine=inprocess",  # the partition by source is checked, not the engine
            f"data.paths=[{medquad}]",
            "data.max_records_per_site=20",
            f"output_dir={tmp_path}",
            "run_name=mq",
        ],
        cache_dir,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    check_run(tmp_path / "mq", sites=2, rounds=2, dp=True)
    assert "GHR" in result.stderr and "GARD" in result.stderr  # the two largest sources became the sites


def test_smollm2_two_sites_learn_under_dp_and_the_adapter_generates(tmp_path: Path) -> None:
    # The real default model end to end; the engine is the in-process one (Ray's is checked on the tiny
    # model above): one model load in this run instead of the driver's plus a worker's.
    cache = Path(os.environ.get("FEDCARE_CACHE", Path.home() / ".cache" / "fedcare"))  # convert once per machine
    result = run_cli(
        [
            "simulate",
            "simulation.engine=inprocess",
            "num_sites=2",
            "num_rounds=1",  # multi-round federation: the tiny-model runs above; here, one round of the real model
            "train.local_steps=5",
            "train.batch_size=8",  # 29 training records: the sites cap the sampling rate at 0.5
            "data.records_per_site=32",
            "data.task_items_per_site=8",
            "privacy.noise_seed=3",  # reproducible DP noise and sampling (tests only): the learning check is not luck
            f"output_dir={tmp_path}",
            "run_name=smol",
        ],
        cache,
        tmp_path,
        timeout=1200,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = check_run(tmp_path / "smol", sites=2, rounds=1, dp=True)
    # The coordinator sees only noised held-out losses (the release rule); each site logs its exact
    # ones, which must show learning.
    import re

    exact = [(int(r), float(v)) for r, v in re.findall(r"round (\d+): held-out loss ([0-9.]+) exact", result.stderr)]
    first = [v for r, v in exact if r == 0]
    last = [v for r, v in exact if r == 1]
    print(f"\nexact held-out loss by (round, value): {exact}")
    assert len(first) == len(last) == 2 and sum(last) / len(last) < sum(first) / len(first), exact
    gen = run_cli(
        [
            "generate",
            summary["adapter_dir"],
            "Summarize: patient reports chest pain.",
            "--max-new-tokens",
            "16",
            "--no-verify",
        ],
        cache,
        tmp_path,
    )
    assert gen.returncode == 0, gen.stderr[-2000:]
    assert len(gen.stdout.strip()) > 0
