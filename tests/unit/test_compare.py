"""``fedcare compare --arm`` / ``--arms``: which settings an arm may tune on its own, which arms run."""

from __future__ import annotations

import pytest

from common.errors import ConfigError
from simulations.compare import ARMS, format_compare, parse_arm_overrides, parse_arms


def test_arm_overrides_group_by_arm() -> None:
    got = parse_arm_overrides(
        ["local:train.learning_rate=0.01", "pooled:train.learning_rate=0.002", "local:privacy.max_grad_norm=0.5"]
    )
    assert got == {
        "local": ["train.learning_rate=0.01", "privacy.max_grad_norm=0.5"],
        "pooled": ["train.learning_rate=0.002"],
    }


@pytest.mark.parametrize(
    "item",
    [
        "federated:train.learning_rate=0.01",  # the federated arm is the run itself: its overrides are the run's
        "base:train.learning_rate=0.01",
        "local",
        "local:train.learning_rate",
        "local:train.local_steps=20",  # same steps for every arm
        "pooled_dp:privacy.target_epsilon=16",  # same budget
        "pooled:data.eval_fraction=0.5",  # same data
        "pooled:lora.rank=4",  # same adapter shape
    ],
)
def test_arm_overrides_refuse_what_must_stay_the_same(item: str) -> None:
    with pytest.raises(ConfigError, match="--arm"):
        parse_arm_overrides([item])


def test_the_table_names_tuned_arms() -> None:
    row = {
        "loss": dict.fromkeys(("base", "local", "federated", "pooled_dp", "pooled"), 1.0),
        "task": {},
        "gain_vs_local": 0.0,
    }
    result = {
        "arms": ["base", "local", "federated", "pooled_dp", "pooled"],
        "metric": None,
        "sites": {"site-0": row},
        "worst_site": "site-0",
        "no_site_worse_off": True,
        "federated_share_of_pooled_gain": 0.5,
        "arm_overrides": {"local": ["train.learning_rate=0.01"], "pooled_dp": [], "pooled": []},
    }
    text = format_compare(result)
    assert "arm settings: local train.learning_rate=0.01" in text and "pooled_dp" not in text.split("arm settings")[1]
    assert "captures 50% of the pooled non-DP loss gain" in text
    nothing = format_compare(result | {"federated_share_of_pooled_gain": float("nan")})
    assert "nan" not in nothing and "did not improve on the base model" in nothing


def test_reuse_run_takes_a_finished_run_made_with_the_same_settings(tmp_path) -> None:  # noqa: ANN001
    import json

    from common.errors import RunDirectoryError
    from server.compose import compose
    from simulations.compare import reused_run

    _, raw = compose(["+experiment=smoke"])
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(RunDirectoryError, match="not a finished run"):
        reused_run(run, raw)
    (run / "summary.json").write_text(json.dumps({"adapter_dir": str(run / "adapters" / "round-002")}))
    (run / "config.json").write_text(json.dumps({**raw, "run_name": "other", "output_dir": "elsewhere"}))
    summary = reused_run(run, raw)  # where it was written does not matter
    assert summary["run_dir"] == str(run) and summary["evaluation"] is None
    (run / "evaluation.json").write_text(json.dumps({"task": "t"}))
    assert reused_run(run, raw)["evaluation"] == {"task": "t"}
    _, other = compose(["+experiment=smoke", "privacy.target_epsilon=4"])
    with pytest.raises(RunDirectoryError, match=r"other settings \(privacy\)"):
        reused_run(run, other)


def test_arms_come_back_in_table_order_and_the_verdict_arms_always_run() -> None:
    assert parse_arms("pooled, federated,local,base") == ("base", "local", "federated", "pooled")
    assert parse_arms(",".join(ARMS)) == ARMS
    with pytest.raises(ConfigError, match="unknown arm centralized"):
        parse_arms("base,local,federated,centralized")
    with pytest.raises(ConfigError, match="local must run too"):
        parse_arms("base,federated,pooled")


def test_without_the_pooled_arm_the_table_gives_no_share_of_its_gain() -> None:
    arms = ["base", "local", "federated"]
    row = {"loss": dict.fromkeys(arms, 1.0), "task": {}, "gain_vs_local": -0.01}
    result = {
        "arms": arms,
        "metric": None,
        "sites": {"site-0": row},
        "worst_site": "site-0",
        "no_site_worse_off": False,
        "federated_share_of_pooled_gain": None,
        "arm_overrides": {},
    }
    text = format_compare(result)
    assert "pooled" not in text and "no site worse off than alone: no" in text
