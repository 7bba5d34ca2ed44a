"""fedcare compare on the tiny model: every arm, every site, the verdict line, and the report's table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.test_simulation import run_cli

pytestmark = pytest.mark.slow


def test_compare_runs_every_arm_on_every_site(tmp_path: Path, cache_dir: Path) -> None:
    result = run_cli(
        # The pooled non-DP arm is tuned on its own: a learning rate of 1e-9 leaves it at the base model.
        # The federated arm on the in-process engine (no Ray start-up; Ray's runs: test_simulation.py).
        ["compare", "+experiment=smoke", "num_rounds=1", "simulation.engine=inprocess"]
        + [f"output_dir={tmp_path}", "run_name=cmp"]
        + ["--arm", "pooled:train.learning_rate=1e-9"],
        cache_dir,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert out["arms"] == ["base", "local", "federated", "pooled_dp", "pooled"]
    assert set(out["sites"]) == {"site-0", "site-1"} and out["metric"] == "accuracy"
    for row in out["sites"].values():
        assert all(row["loss"][a] > 0 for a in out["arms"])
        assert all(0.0 <= row["task"][a] <= 1.0 for a in out["arms"])
        assert row["gain_vs_local"] == pytest.approx(row["loss"]["local"] - row["loss"]["federated"])
        # Training moved every trained arm away from the base model, except the one tuned to lr 1e-9.
        assert all(row["loss"][a] != row["loss"]["base"] for a in ("local", "federated", "pooled_dp"))
        assert row["loss"]["pooled"] == pytest.approx(row["loss"]["base"], abs=1e-4)
    assert out["arm_overrides"] == {"local": [], "pooled_dp": [], "pooled": ["train.learning_rate=1e-9"]}
    assert "arm settings: pooled train.learning_rate=1e-9" in result.stdout
    verdict = "yes" if out["no_site_worse_off"] else "no"
    assert f"no site worse off than alone: {verdict}" in result.stdout
    assert out["worst_site"] in out["sites"]
    assert "Baselines: federated vs alone vs pooled" in (tmp_path / "cmp" / "report.html").read_text()
