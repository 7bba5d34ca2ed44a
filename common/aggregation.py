"""Checks on adapter updates before aggregation (the aggregation itself is Flower's strategies).

A site's reply is screened before any strategy sees it: the layout must be the global adapter's
(:func:`check_layout`), every value finite (:func:`non_finite`), and its update norm not far outside
the round's others (:func:`norm_outliers`). Each returns a reason naming the tensor or the numbers,
never values from a record.

Caveat of plain LoRA: averaging the factors A and B separately is not the average of the sites'
updates, mean(B_i A_i) != mean(B_i) mean(A_i). With ``lora.freeze_a=true`` (FFA-LoRA) every site
shares the same fixed A, so averaging B is exactly averaging the updates B A.
"""

from __future__ import annotations

import math
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
                f"{who}: tensor {name!r} is {got.dtype}{list(got.shape)}, expected {ref.dtype}{list(ref.shape)}"
            )


def non_finite(arrays: Arrays) -> str | None:
    """A reason naming the first tensor holding NaN or inf values, or None when all are finite."""
    for name in sorted(arrays):
        bad = int(np.size(arrays[name]) - np.count_nonzero(np.isfinite(arrays[name])))
        if bad:
            return f"non-finite values ({bad} NaN/inf) in tensor {name!r}"
    return None


def update_norm(arrays: Arrays, reference: Arrays) -> float:
    """L2 norm of ``arrays - reference`` over all tensors (float64 accumulation)."""
    return math.sqrt(
        sum(float(np.sum((arrays[k].astype(np.float64) - reference[k].astype(np.float64)) ** 2)) for k in reference)
    )


def norm_outliers(norms: Mapping[str, float], factor: float) -> dict[str, str]:
    """Updates whose norm exceeds ``factor`` times the median of the OTHER updates' norms.

    Only overly large updates are outliers (a small update cannot dominate an average). With fewer
    than two updates, or ``factor <= 0``, nothing is an outlier.

    Returns:
        ``{key: reason}`` for each outlier.
    """
    if factor <= 0 or len(norms) < 2:
        return {}
    out: dict[str, str] = {}
    for key, norm in norms.items():
        others = float(np.median([n for k, n in norms.items() if k != key]))
        if norm > factor * others:
            out[key] = (
                f"update norm {norm:.4g} is more than strategy.norm_outlier_factor={factor:g} x the "
                f"median of the round's other updates ({others:.4g})"
            )
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
