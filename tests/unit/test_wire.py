"""Reply metrics: only allowed names, only numbers."""

from __future__ import annotations

import math

import pytest

from common.wire import ACCOUNTED, DERIVED, EVAL_METRICS, PUBLIC, TRAIN_METRICS, check_metrics


def test_check_metrics_accepts_numbers_and_inf() -> None:
    check_metrics({"num-examples": 3, "epsilon": math.inf, "update_norm": 1.5}, TRAIN_METRICS)


@pytest.mark.parametrize("name", ["train_loss", "tokens", "examples_seen", "seconds", "phi_removed"])
def test_record_dependent_training_numbers_may_not_leave(name: str) -> None:
    with pytest.raises(ValueError, match="not an allowed metric"):
        check_metrics({name: 1.0}, TRAIN_METRICS)


def test_every_allowed_metric_states_why_it_may_leave() -> None:
    for allowed in (TRAIN_METRICS, EVAL_METRICS):
        assert set(allowed.values()) <= {PUBLIC, DERIVED, ACCOUNTED}
    assert EVAL_METRICS["eval_loss"] == ACCOUNTED


@pytest.mark.parametrize("value", ["Jane Roe", b"\x00", [1.0], True, math.nan])
def test_check_metrics_rejects_anything_but_a_number(value: object) -> None:
    with pytest.raises(ValueError, match="'eval_loss' is not a number") as info:
        check_metrics({"eval_loss": value}, EVAL_METRICS)
    assert "Jane" not in str(info.value)


def test_check_metrics_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="not an allowed metric"):
        check_metrics({"patient_name_length": 4.0}, EVAL_METRICS)
