"""Aggregation of adapter tensors: FedAvg's example-weighted mean over {name: ndarray} maps.

Caveat: FedAvg averages the LoRA factors A and B separately. The mean of products
mean(B_i A_i) is not mean(B_i) mean(A_i); the difference shrinks as sites start each round from the
same global factors and take few local steps, which is why this works well in practice, but it is
not the exact average of the sites' weight updates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from common.errors import AdapterLayoutError

Arrays = Mapping[str, npt.NDArray[np.generic]]


def check_layout(arrays: Arrays, reference: Arrays, who: str = "update") -> None:
    """Raise unless ``arrays`` has exactly the names, shapes and dtypes of ``reference``.

    Raises:
        AdapterLayoutError: naming the first mismatching tensor.
    """
    extra = sorted(set(arrays) - set(reference))
    missing = sorted(set(reference) - set(arrays))
    if extra or missing:
        raise AdapterLayoutError(
            f"{who}: tensor names differ from the adapter's ({len(extra)} unexpected, e.g. "
            f"{extra[:2]}; {len(missing)} missing, e.g. {missing[:2]})"
        )
    for name, ref in reference.items():
        got = arrays[name]
        if got.shape != ref.shape or got.dtype != ref.dtype:
            raise AdapterLayoutError(
                f"{who}: tensor {name!r} is {got.dtype}{list(got.shape)}, "
                f"expected {ref.dtype}{list(ref.shape)}"
            )


def weighted_mean(updates: Sequence[tuple[Arrays, float]]) -> dict[str, npt.NDArray[np.generic]]:
    """Example-weighted mean of adapter maps (FedAvg). Accumulates in float64.

    Args:
        updates: (arrays, weight) pairs; weights are the sites' training example counts.

    Returns:
        A new map with the first update's names and dtypes.

    Raises:
        ValueError: when there is no update or the weights do not sum to a positive number.
        AdapterLayoutError: when the updates do not share one layout.
    """
    if not updates:
        raise ValueError("weighted_mean: no updates to aggregate")
    weights = np.asarray([w for _, w in updates], dtype=np.float64)
    if np.any(weights < 0) or weights.sum() <= 0:
        raise ValueError(f"weighted_mean: weights must be >= 0 with a positive sum, got {weights.tolist()}")
    reference = updates[0][0]
    for i, (arrays, _) in enumerate(updates[1:], start=1):
        check_layout(arrays, reference, who=f"update {i}")
    weights = weights / weights.sum()
    out: dict[str, npt.NDArray[np.generic]] = {}
    for name, ref in reference.items():
        acc = np.zeros(ref.shape, dtype=np.float64)
        for (arrays, _), w in zip(updates, weights, strict=True):
            acc += w * arrays[name].astype(np.float64)
        out[name] = acc.astype(ref.dtype)
    return out


def weighted_average(values: Sequence[tuple[float, float]]) -> float:
    """Weighted mean of scalars given as (value, weight) pairs."""
    total = sum(w for _, w in values)
    if total <= 0:
        raise ValueError("weighted_average: weights must sum to a positive number")
    return sum(v * w for v, w in values) / total


def nbytes(arrays: Arrays) -> int:
    """Bytes of tensor data in an adapter map (what crosses the wire, before framing)."""
    return int(sum(a.nbytes for a in arrays.values()))
