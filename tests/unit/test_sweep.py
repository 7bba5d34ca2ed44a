"""`fedcare simulate --multirun`: Hydra's sweep syntax expands into one override list per job."""

from __future__ import annotations

import pytest

from common.errors import ConfigError
from simulations.run import sweep_jobs


def test_sweep_jobs_expand_comma_lists_as_a_cartesian_product() -> None:
    jobs = sweep_jobs(["privacy.target_epsilon=1,4,8,16", "+experiment=smoke", "seed=0,1"])
    assert len(jobs) == 8
    assert jobs[0] == ["privacy.target_epsilon=1", "+experiment=smoke", "seed=0"]
    assert {j[0] for j in jobs} == {f"privacy.target_epsilon={e}" for e in (1, 4, 8, 16)}
    assert sweep_jobs(["num_rounds=2"]) == [["num_rounds=2"]]


def test_sweep_jobs_reject_unparsable_overrides() -> None:
    with pytest.raises(ConfigError, match="config overrides"):
        sweep_jobs(["privacy.target_epsilon=[1,"])
