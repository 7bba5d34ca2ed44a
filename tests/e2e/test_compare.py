"""fedcare demo, then the fedcare compare it prints, on the tiny model: every arm, every site, the verdict
line, and the report's table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.test_simulation import run_cli

pytestmark = pytest.mark.slow


def test_demo_then_compare_runs_every_arm_on_every_site(tmp_path: Path, cache_dir: Path) -> None:
    # The federated arm on the in-process engine (no Ray start-up; Ray's runs: test_simulation.py).
    overrides = ["+experiment=smoke", "num_rounds=1", "simulation.engine=inprocess", f"output_dir={tmp_path}"]
    demo = run_cli(["demo", *overrides, "run_name=cmp"], cache_dir, tmp_path)
    assert demo.returncode == 0, demo.stderr[-3000:]
    first = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert first["arms"] == ["base", "local", "federated"] and first["federated_share_of_pooled_gain"] is None
    assert all(set(row["loss"]) == {"base", "local", "federated"} for row in first["sites"].values())
    # The federated arm's own console end (it ran here, not reused), then the table, then the way on.
    assert demo.stdout.index("held-out loss by round:") < demo.stdout.index("no site worse off than alone:")
    assert "pooled" not in demo.stdout.split("held-out loss (lower is better)")[1].split("the other arms")[0]
    hint = next(line for line in demo.stdout.splitlines() if line.startswith("the other arms, pooled_dp, pooled ("))
    command = hint.split("): ", 1)[1].split()
    report = (tmp_path / "cmp" / "report.html").read_text()
    assert "Baselines: federated vs alone</h2>" in report
    assert command[:3] == ["fedcare", "compare", "--reuse-run"]

    # The printed command, on this very run (its settings are the run's, so the run is accepted as the
    # federated arm). The pooled non-DP arm is tuned on its own: a learning rate of 1e-9 leaves it at the base.
    result = run_cli([*command[1:], "--arm", "pooled:train.learning_rate=1e-9"], cache_dir, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "held-out loss by round:" not in result.stdout  # reused, not run again
    out = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert out["arms"] == ["base", "local", "federated", "pooled_dp", "pooled"]
    assert set(out["sites"]) == {"site-0", "site-1"} and out["metric"] == "accuracy"
    for site, row in out["sites"].items():
        assert row["loss"]["federated"] == first["sites"][site]["loss"]["federated"]
        assert all(row["loss"][a] > 0 for a in out["arms"])
        assert all(0.0 <= row["task"][a] <= 1.0 for a in out["arms"])
        assert row["gain_vs_local"] == pytest.approx(row["loss"]["local"] - row["loss"]["federated"])
        # Training moved every trained arm away from the base model, except the one tuned to lr 1e-9.
        assert all(row["loss"][a] != row["loss"]["base"] for a in ("local", "federated", "pooled_dp"))
        assert row["loss"]["pooled"] == pytest.approx(row["loss"]["base"], abs=1e-4)
    assert out["arm_overrides"] == {"local": [], "pooled_dp": [], "pooled": ["train.learning_rate=1e-9"]}
    assert "arm settings: pooled train.learning_rate=1e-9" in result.stdout
    assert "of the pooled non-DP loss gain" in result.stdout or "did not improve on the base model" in result.stdout
    verdict = "yes" if out["no_site_worse_off"] else "no"
    assert f"no site worse off than alone: {verdict}" in result.stdout
    assert out["worst_site"] in out["sites"]
    assert "Baselines: federated vs alone vs pooled" in (tmp_path / "cmp" / "report.html").read_text()
