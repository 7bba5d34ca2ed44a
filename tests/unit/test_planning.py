"""fedcare plan: calibrated noise per choice (real Opacus accounting) and the recommendation rule."""

from __future__ import annotations

import math

import pytest

from common.errors import ConfigError
from common.planning import plan_options, recommend
from common.privacy import compute_epsilon, resolve_delta


def test_plan_options_spend_the_target_and_favour_large_batches() -> None:
    options = plan_options(320, 8.0, 3, accountant="rdp", batch_choices=(8, 64, 256), step_choices=(5,))
    assert [(o.batch_size, o.local_steps) for o in options] == [(8, 5), (64, 5)]  # 256 > half the records
    delta = resolve_delta(0.0, 320)
    for o in options:
        spent = compute_epsilon(o.noise_multiplier, o.sample_rate, o.local_steps * 3, delta, "rdp")
        assert 7.9 < spent <= 8.0  # calibrated to the budget, never over it
        assert o.noise_per_run == pytest.approx(o.noise_multiplier / (o.batch_size * math.sqrt(o.local_steps * 3)))
    assert options[1].noise_per_run < options[0].noise_per_run  # sigma has a floor: larger batches win
    chosen = recommend(options, 960)
    assert (chosen.batch_size, chosen.examples) == (64, 960)
    assert recommend(options, 240).batch_size == 8  # the compute budget rules the large batch out


def test_plan_rejects_too_few_records() -> None:
    with pytest.raises(ConfigError, match="records"):
        plan_options(3, 8.0, 3)
    with pytest.raises(ConfigError, match="too few"):
        plan_options(10, 8.0, 3, batch_choices=(8,))
