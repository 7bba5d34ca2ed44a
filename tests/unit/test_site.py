"""site.yaml: written and read back alike, its limits win over any plan, test-only seeds, run id checks."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from common.config import DataConfig, ModelConfig, RunConfig, SiteLimits, TrainConfig, plan_for_round
from common.errors import ConfigError, PlanRefusedError
from common.site import SiteConfig, check_plan, load_site_config, write_simulated_sites

CFG = RunConfig(num_sites=2, num_rounds=3, data=DataConfig(records_per_site=20))


def _site(tmp_path: Path, **limits: object) -> SiteConfig:
    path = write_simulated_sites(dataclasses.replace(CFG, limits=SiteLimits(**limits)), tmp_path)[1]
    return load_site_config(path)


def test_simulated_site_yaml_reads_back_to_the_config_it_was_written_from(tmp_path: Path) -> None:
    site = _site(tmp_path)
    assert (site.site_index, site.data_slot, site.data_sites) == (1, 1, 2)
    assert site.data == CFG.data and site.privacy == CFG.privacy and site.limits == CFG.limits
    assert site.state_dir == str((tmp_path / "site-1").resolve())


@pytest.mark.parametrize(
    ("change", "key", "asked", "cap"),
    [
        ({"num_rounds": 9}, "num_rounds", 9, "max_rounds"),
        ({"train": TrainConfig(local_steps=50)}, "train.local_steps", 50, "max_local_steps"),
        ({"train": TrainConfig(batch_size=33)}, "train.batch_size", 33, "max_batch_size"),
        ({"train": TrainConfig(max_seq_len=999)}, "train.max_seq_len", 999, "max_seq_len"),
        ({"train": TrainConfig(eval_batch_size=99)}, "train.eval_batch_size", 99, "max_eval_batch_size"),
        ({"model": ModelConfig(num_threads=16)}, "model.num_threads", 16, "max_threads"),
    ],
)
def test_a_plan_over_a_site_cap_is_refused_naming_key_asked_value_and_cap(
    tmp_path: Path, change: dict, key: str, asked: int, cap: str
) -> None:
    site = _site(
        tmp_path,
        max_rounds=5,
        max_local_steps=20,
        max_batch_size=32,
        max_seq_len=512,
        max_eval_batch_size=32,
        max_threads=4,
    )
    check_plan(plan_for_round(CFG, 1), site)  # the plan within the caps is fine
    plan = plan_for_round(dataclasses.replace(CFG, **change), 1)
    with pytest.raises(PlanRefusedError) as err:
        check_plan(plan, site)
    cap_value = getattr(site.limits, cap)
    assert str(err.value).startswith(f"{key}: the plan asks {asked}, above the site's cap {cap_value}")
    assert f"limits.{cap}" in str(err.value)


@pytest.mark.parametrize("model", ["HuggingFaceTB/SmolLM2-1.7B", "/etc", "../models/other"])
def test_a_plan_may_not_pick_a_model_or_a_folder_the_site_did_not_list(tmp_path: Path, model: str) -> None:
    site = _site(tmp_path)
    plan = plan_for_round(dataclasses.replace(CFG, model=ModelConfig(name_or_path=model)), 1)
    with pytest.raises(PlanRefusedError, match=r"model.name_or_path: the plan asks .* not one of the site's models"):
        check_plan(plan, site)
    sneaky = plan_for_round(dataclasses.replace(CFG, model=ModelConfig(cache_dir="/tmp/evil-cache")), 1)
    with pytest.raises(PlanRefusedError, match="model.cache_dir"):
        check_plan(sneaky, site)


def test_noise_seed_in_a_site_yaml_is_refused_outside_tests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "site.yaml"
    (tmp_path / "d.jsonl").write_text("")
    path.write_text("site_id: a\nsite_index: 0\nstate_dir: s\ndata:\n  paths: [d.jsonl]\nprivacy:\n  noise_seed: 7\n")
    assert load_site_config(path).privacy.noise_seed == 7  # the test suite sets FEDCARE_TEST_SEEDS=1
    monkeypatch.delenv("FEDCARE_TEST_SEEDS")
    with pytest.raises(ConfigError, match="site.privacy.noise_seed: must be 0"):
        load_site_config(path)


@pytest.mark.parametrize("run_id", ["../etc", "a/b", "..", "x" * 65, "", ".hidden", "run\\1", "a..b"])
def test_a_run_id_that_could_name_another_file_is_refused(run_id: str) -> None:
    with pytest.raises(ConfigError, match="run_id"):
        plan_for_round(CFG, 1, run_id)


def test_ordinary_run_ids_are_accepted() -> None:
    for run_id in ("20261201-091500", "trial_3.b", "r"):
        assert plan_for_round(CFG, 1, run_id).run_id == run_id
