"""Typed config: every Hydra option composes into a valid RunConfig; bad values fail with the key named."""

from __future__ import annotations

import dataclasses

import pytest

from common.config import RunConfig, plan_for_round, plan_from_flat, plan_to_flat, run_config_from_dict
from common.errors import ConfigError
from server.compose import CONF_DIR, compose

GROUPS = ["model", "lora", "privacy", "train", "strategy", "data", "simulation", "limits"]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in GROUPS for o in _options(g)])
def test_every_option_of_every_group_composes(group: str, option: str) -> None:
    extra = ["data.paths=[a.jsonl,b.jsonl,c.jsonl]"] if (group, option) == ("data", "files") else []
    cfg, raw = compose([f"{group}={option}", *extra])
    assert isinstance(cfg, RunConfig)
    assert raw[group] == dataclasses.asdict(getattr(cfg, group)) | {
        k: list(v) for k, v in dataclasses.asdict(getattr(cfg, group)).items() if isinstance(v, tuple)
    }


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml")))
def test_every_experiment_composes(experiment: str) -> None:
    cfg, _ = compose([f"+experiment={experiment}"])
    assert isinstance(cfg, RunConfig)


def test_every_yaml_value_is_commented() -> None:
    for path in CONF_DIR.rglob("*.yaml"):
        for line in path.read_text().splitlines():
            bare = line.strip()
            if ":" in bare and not bare.startswith("#") and not bare.endswith(":") and not bare.startswith("-"):
                if path.parent.name == "experiment":
                    continue  # bundles of overrides, documented in their header
                assert "#" in line, f"{path.relative_to(CONF_DIR)}: uncommented value: {bare}"


def test_the_issue_example_overrides_apply() -> None:
    cfg, _ = compose(["num_sites=5", "num_rounds=3", "privacy.target_epsilon=4"])
    assert (cfg.num_sites, cfg.num_rounds, cfg.privacy.target_epsilon) == (5, 3, 4.0)
    assert cfg.privacy.enabled is True  # DP is on by default


def test_defaults_are_the_real_model_with_dp() -> None:
    cfg, _ = compose([])
    assert cfg.model.name_or_path == "smollm2-135m-instruct"
    assert cfg.privacy.enabled and cfg.data.kind == "synthetic"


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("privacy.target_epsilon=-1", "privacy.target_epsilon"),
        ("lora.target_modules=[embed_tokens]", "lora.target_modules"),
        ("train.batch_size=0", "train.batch_size"),
        ("model.precision=fp8", "model.precision"),
        ("+privacy.sigma=1.0", "privacy.sigma: unknown key"),
        ("num_sites=oops", "num_sites"),
        ("privacy.enabled=maybe", "privacy.enabled"),
    ],
)
def test_invalid_values_name_the_key(override: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        compose([override])


def test_files_need_one_path_per_site() -> None:
    with pytest.raises(ConfigError, match="one file per site"):
        compose(["data=files", "data.paths=[a.jsonl]", "num_sites=3"])


def test_site_plan_round_trips_through_flat_scalars() -> None:
    cfg, _ = compose([])
    plan = plan_for_round(cfg, 2)
    flat = plan_to_flat(plan)
    assert all(isinstance(v, (int, float, str, bool, list)) for v in flat.values())
    assert plan_from_flat(flat) == plan


def test_site_plan_rejects_missing_and_unknown_keys() -> None:
    flat = plan_to_flat(plan_for_round(run_config_from_dict({}), 1))
    with pytest.raises(ConfigError, match="missing keys"):
        plan_from_flat({k: v for k, v in flat.items() if k != "num_rounds"})
    with pytest.raises(ConfigError, match="unknown key"):
        plan_from_flat(flat | {"privacy.sigma": 0.0})


def test_site_plan_accepts_the_keys_flowers_strategies_add() -> None:
    cfg, _ = compose(["strategy=fedprox"])
    flat = plan_to_flat(plan_for_round(cfg, 2, "run-a"))
    plan = plan_from_flat(flat | {"server-round": 2, "proximal-mu": 0.01})
    assert plan.server_round == 2 and plan.proximal_mu == 0.01
    with pytest.raises(ConfigError, match="server-round"):
        plan_from_flat(flat | {"server-round": 3})


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["strategy.name=fedsgd"], "strategy.name"),
        (["strategy=bulyan", "num_sites=2"], "4 x strategy.num_malicious_nodes"),
        (["strategy=secagg", "strategy.name=fedmedian"], "secure_aggregation"),
        (["strategy=fedtrimmedavg", "strategy.trim_beta=0.5"], "strategy.trim_beta"),
    ],
)
def test_strategy_choices_are_validated(overrides: list[str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        compose(overrides)
