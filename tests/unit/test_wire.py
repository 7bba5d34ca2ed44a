"""Reply metrics: only allowed names, only numbers."""

from __future__ import annotations

import math

import pytest

from common.wire import EVAL_METRICS, TRAIN_METRICS, check_metrics


def test_check_metrics_accepts_numbers_and_inf() -> None:
    check_metrics({"num-examples": 3, "epsilon": math.inf, "train_loss": 1.5}, TRAIN_METRICS)


@pytest.mark.parametrize("value", ["Jane Roe", b"\x00", [1.0], True, math.nan])
def test_check_metrics_rejects_anything_but_a_number(value: object) -> None:
    with pytest.raises(ValueError, match="'eval_loss' is not a number") as info:
        check_metrics({"eval_loss": value}, EVAL_METRICS)
    assert "Jane" not in str(info.value)


def test_check_metrics_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="not an allowed metric"):
        check_metrics({"patient_name_length": 4.0}, EVAL_METRICS)
