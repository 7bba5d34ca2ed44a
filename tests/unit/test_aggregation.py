"""Checks on adapter updates before aggregation: layout, finiteness, norm outliers."""

from __future__ import annotations

import numpy as np
import pytest

from common.aggregation import check_layout, nbytes, non_finite, norm_outliers, update_norm, weighted_average
from common.errors import AdapterLayoutError


def _arrays(value: float) -> dict[str, np.ndarray]:
    return {
        "a.lora_A.weight": np.full((2, 3), value, np.float32),
        "a.lora_B.weight": np.full((3, 2), -value, np.float32),
    }


def test_check_layout_rejects_a_wrong_shape_or_dtype() -> None:
    bad = _arrays(1.0) | {"a.lora_A.weight": np.zeros((3, 3), np.float32)}
    with pytest.raises(AdapterLayoutError, match="lora_A"):
        check_layout(bad, _arrays(0.0))
    bad = _arrays(1.0) | {"a.lora_B.weight": np.zeros((3, 2), np.float64)}
    with pytest.raises(AdapterLayoutError, match="float64"):
        check_layout(bad, _arrays(0.0))


def test_check_layout_rejects_other_names() -> None:
    other = {"a.lora_A.weight": np.zeros((2, 3), np.float32), "evil.weight": np.zeros((3, 2), np.float32)}
    with pytest.raises(AdapterLayoutError, match="names differ"):
        check_layout(other, _arrays(1.0))


def test_non_finite_names_the_tensor_and_counts() -> None:
    assert non_finite(_arrays(1.0)) is None
    bad = _arrays(1.0)
    bad["a.lora_B.weight"][0, :] = [np.inf, np.nan]
    assert non_finite(bad) == "non-finite values (2 NaN/inf) in tensor 'a.lora_B.weight'"


def test_update_norm_is_the_l2_norm_of_the_difference() -> None:
    assert update_norm(_arrays(1.0), _arrays(0.0)) == pytest.approx(np.sqrt(12.0))


def test_norm_outliers_flags_only_updates_far_above_the_others() -> None:
    assert norm_outliers({"a": 1.0, "b": 1.5, "c": 40.0}, 10.0).keys() == {"c"}
    assert norm_outliers({"a": 1.0, "b": 9.0}, 10.0) == {}
    assert norm_outliers({"a": 1.0, "b": 11.0}, 10.0).keys() == {"b"}  # two sites: the large one only
    assert norm_outliers({"a": 0.001, "b": 1.0, "c": 1.2}, 10.0) == {}  # small updates cannot dominate
    assert norm_outliers({"a": 1.0, "b": 1e6}, 0.0) == {}  # off
    assert norm_outliers({"a": 1e6}, 10.0) == {}  # nothing to compare with


def test_weighted_average_and_nbytes() -> None:
    assert weighted_average([(1.0, 1), (3.0, 3)]) == pytest.approx(2.5)
    assert nbytes(_arrays(1.0)) == 2 * 6 * 4
    with pytest.raises(ValueError, match="positive"):
        weighted_average([(1.0, 0)])
