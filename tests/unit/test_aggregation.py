"""FedAvg over adapter maps: weighted means, layout checks."""

from __future__ import annotations

import numpy as np
import pytest

from common.aggregation import check_layout, nbytes, weighted_average, weighted_mean
from common.errors import AdapterLayoutError


def _arrays(value: float) -> dict[str, np.ndarray]:
    return {"a.lora_A.weight": np.full((2, 3), value, np.float32),
            "a.lora_B.weight": np.full((3, 2), -value, np.float32)}


def test_weighted_mean_weights_by_examples() -> None:
    out = weighted_mean([(_arrays(1.0), 10), (_arrays(4.0), 30)])
    assert out["a.lora_A.weight"] == pytest.approx(np.full((2, 3), 3.25))
    assert out["a.lora_B.weight"] == pytest.approx(np.full((3, 2), -3.25))
    assert out["a.lora_A.weight"].dtype == np.float32


def test_weighted_mean_of_one_update_is_that_update() -> None:
    only = _arrays(2.5)
    out = weighted_mean([(only, 7)])
    assert all(np.array_equal(out[k], only[k]) for k in only)


def test_weighted_mean_rejects_mismatched_keys() -> None:
    other = {"a.lora_A.weight": np.zeros((2, 3), np.float32), "evil.weight": np.zeros((3, 2), np.float32)}
    with pytest.raises(AdapterLayoutError, match="names differ"):
        weighted_mean([(_arrays(1.0), 1), (other, 1)])


def test_check_layout_rejects_a_wrong_shape_or_dtype() -> None:
    bad = _arrays(1.0) | {"a.lora_A.weight": np.zeros((3, 3), np.float32)}
    with pytest.raises(AdapterLayoutError, match="lora_A"):
        check_layout(bad, _arrays(0.0))
    bad = _arrays(1.0) | {"a.lora_B.weight": np.zeros((3, 2), np.float64)}
    with pytest.raises(AdapterLayoutError, match="float64"):
        check_layout(bad, _arrays(0.0))


def test_weighted_mean_rejects_no_updates_and_zero_weights() -> None:
    with pytest.raises(ValueError, match="no updates"):
        weighted_mean([])
    with pytest.raises(ValueError, match="positive sum"):
        weighted_mean([(_arrays(1.0), 0)])


def test_weighted_average_and_nbytes() -> None:
    assert weighted_average([(1.0, 1), (3.0, 3)]) == pytest.approx(2.5)
    assert nbytes(_arrays(1.0)) == 2 * 6 * 4
