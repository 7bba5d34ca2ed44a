"""Adapter updates on the coordinator: the checks before aggregation and the streaming weighted mean.

A site's reply is screened before any strategy sees it: the layout must be the global adapter's
(:func:`check_layout`), every value finite (:func:`non_finite`), and its update norm not far outside
the round's others (:func:`norm_outliers`). Each returns a reason naming the tensor or the numbers,
never values from a record.

The mean-based strategies (FedAvg and everything built on its weighted mean: FedProx, FedAvgM, the
server optimizers) average with :func:`weighted_mean`: float64 sums, one tensor at a time across
the updates, so each update is read once, the running sum stays in cache and the extra memory is
about one update (the result). The tensors are read in place from their serialized ``.npy`` bytes
(:func:`npy_view`, no copy); the robust strategies (median, trimmed mean, Krum, Bulyan) are
Flower's own code.

Caveat of plain LoRA: averaging the factors A and B separately is not the average of the sites'
updates, mean(B_i A_i) != mean(B_i) mean(A_i). With ``lora.freeze_a=true`` (FFA-LoRA) every site
shares the same fixed A, so averaging B is exactly averaging the updates B A.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt

from common.errors import AdapterLayoutError

Arrays = Mapping[str, npt.NDArray[np.generic]]

_NPY_MAGIC = b"\x93NUMPY"
_CHUNK = 1 << 14  # elements per step of the streaming loops: a float64 scratch of 128 KiB stays in cache


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
    """L2 norm of ``arrays - reference`` over all tensors; not finite when an update holds NaN/inf.

    The differences are taken in float32 cache-sized blocks (float64 for wider dtypes) and their
    squares summed in float64; a block whose float32 sum overflows is redone in float64.
    """
    total = 0.0
    scratch: dict[type, npt.NDArray[np.floating]] = {}
    for name, ref in reference.items():
        got, want = arrays[name].reshape(-1), ref.reshape(-1)
        wide = np.float64 if got.dtype.itemsize > 4 or want.dtype.itemsize > 4 else np.float32
        if wide not in scratch:
            scratch[wide] = np.empty(_CHUNK, wide)
        for start in range(0, got.size, _CHUNK):
            stop = min(start + _CHUNK, got.size)
            block = scratch[wide][: stop - start]
            with np.errstate(over="ignore", invalid="ignore"):  # NaN/inf or float32 overflow: handled below
                np.subtract(got[start:stop], want[start:stop], out=block, casting="unsafe")
                square = float(np.dot(block, block))
            if not math.isfinite(square) and wide is np.float32:
                with np.errstate(over="ignore", invalid="ignore"):
                    exact = np.subtract(got[start:stop], want[start:stop], dtype=np.float64)
                    square = float(np.dot(exact, exact))
            total += square
    return math.sqrt(total)


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


def weighted_mean(updates: Sequence[tuple[Arrays, float]]) -> dict[str, npt.NDArray[np.generic]]:
    """:func:`weighted_means` as a dict."""
    return dict(weighted_means(updates))


def weighted_means(updates: Sequence[tuple[Arrays, float]]) -> Iterator[tuple[str, npt.NDArray[np.generic]]]:
    """Weighted mean of named arrays, ``sum_i w_i x_i / sum_i w_i``, summed in float64 one tensor at a time.

    Same result as Flower's ``aggregate_arrayrecords`` to float rounding, with its output dtypes (a
    float tensor keeps its dtype, an integer one becomes float64). For each tensor (in cache-sized
    blocks) ``acc += w_i * x_i`` runs over the updates into one float64 buffer, so every update is read
    once and the extra memory is that buffer plus the result; the updates may be lazy mappings (e.g.
    views decoded from the replies' bytes on access). Yields ``(name, mean)`` tensor by tensor, so a
    caller can serialize each one before the next is computed.

    Raises:
        ValueError: no updates, a non-finite or negative weight, weights summing to zero, or an update
            whose tensor names or shapes differ from the first one's (named).
    """
    if not updates:
        raise ValueError("weighted_mean: no updates")
    weights = [float(w) for _, w in updates]
    for index, weight in enumerate(weights):
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"weighted_mean: update {index} has weight {weight}, expected a finite number >= 0")
    total = math.fsum(weights)
    if total <= 0:
        raise ValueError("weighted_mean: the weights sum to zero")
    first = updates[0][0]
    names = set(first)
    for index, (arrays, _) in enumerate(updates):
        if set(arrays) != names:
            raise ValueError(f"weighted_mean: update {index} has other tensor names than the first update")
    for name in first:
        reference = first[name]
        shape = reference.shape
        flats = []
        for index, (arrays, _) in enumerate(updates):
            x = arrays[name]
            if x.shape != shape:
                raise ValueError(
                    f"weighted_mean: tensor {name!r} of update {index} is {list(x.shape)}, expected {list(shape)}"
                )
            flats.append(x.reshape(-1))
        out = np.empty(shape, np.result_type(reference.dtype, 1.0))
        size = out.size
        acc, scratch = np.empty(min(size, _CHUNK), np.float64), np.empty(min(size, _CHUNK), np.float64)
        for start in range(0, size, _CHUNK):
            stop = min(start + _CHUNK, size)
            block, term = acc[: stop - start], scratch[: stop - start]
            block.fill(0.0)
            for flat, weight in zip(flats, weights, strict=True):
                np.multiply(flat[start:stop], weight, out=term, dtype=np.float64)
                block += term
            block /= total
            out.reshape(-1)[start:stop] = block
        yield name, out


_Layout = tuple[np.dtype, tuple[int, ...], int, Literal["C", "F"]]
_HEADERS: dict[bytes, _Layout] = {}  # .npy header -> layout (bounded)


def _npy_header(head: bytes) -> _Layout:
    fp = io.BytesIO(head)
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
    else:
        raise ValueError(f"unsupported .npy format version {version}")
    if dtype.hasobject:
        raise ValueError("object arrays are refused")
    return dtype, tuple(shape), math.prod(shape), "F" if fortran else "C"


def npy_view(data: bytes) -> npt.NDArray[np.generic]:
    """The array that ``np.save`` wrote into ``data`` (what a Flower ``Array`` holds), as a read-only view
    of those bytes: no copy, and the header is parsed once per distinct layout. Never unpickles.

    Raises:
        ValueError: ``data`` is not a .npy buffer of format 1.0/2.0, holds objects, or is too short.
    """
    if data[:6] != _NPY_MAGIC or len(data) < 12:
        raise ValueError("not a .npy buffer")
    end = 10 + int.from_bytes(data[8:10], "little") if data[6] == 1 else 12 + int.from_bytes(data[8:12], "little")
    head = data[:end]
    layout = _HEADERS.get(head)
    if layout is None:
        layout = _npy_header(head)
        if len(_HEADERS) < 4096:
            _HEADERS[head] = layout
    dtype, shape, count, order = layout
    return np.frombuffer(data, dtype=dtype, count=count, offset=end).reshape(shape, order=order)
