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

import bisect
import io
import math
from collections.abc import Mapping, Sequence
from typing import Literal, NamedTuple

import numpy as np
import numpy.typing as npt

from common.errors import AdapterLayoutError

Arrays = Mapping[str, npt.NDArray[np.generic]]

_NPY_MAGIC = b"\x93NUMPY"
_COLS = 1 << 14  # values of one tensor per chunk (norms_and_mean)
_BLOCK = 1 << 16  # values of a stacked block (256 KiB of float32: it and its differences stay in L2)
_ROWS = 32  # at most this many updates per block: a float32 sum of at most 32 terms before float64


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
    """L2 norm of ``arrays - reference`` over all tensors (:func:`norms_and_mean`); not finite when an update
    holds NaN/inf."""
    norms, _ = norms_and_mean([pack(arrays, list(reference))], reference)
    assert norms is not None
    return float(norms[0])


def norm_outliers(norms: Mapping[str, float], factor: float) -> dict[str, str]:
    """Updates whose norm exceeds ``factor`` times the median of the OTHER updates' norms.

    Only overly large updates are outliers (a small update cannot dominate an average). With fewer
    than two updates, or ``factor <= 0``, nothing is an outlier.

    Returns:
        ``{key: reason}`` for each outlier.
    """
    if factor <= 0 or len(norms) < 2:
        return {}
    ordered = sorted(norms.values())
    others = len(ordered) - 1
    out: dict[str, str] = {}
    for key, norm in norms.items():
        # The median of the others from the sorted norms without one copy of this norm: O(n log n), not O(n^2).
        rank = bisect.bisect_left(ordered, norm)

        def other(i: int, rank: int = rank) -> float:
            return ordered[i] if i < rank else ordered[i + 1]

        median = other(others // 2) if others % 2 else (other(others // 2 - 1) + other(others // 2)) / 2
        if norm > factor * median:
            out[key] = (
                f"update norm {norm:.4g} is more than strategy.norm_outlier_factor={factor:g} x the "
                f"median of the round's other updates ({median:.4g})"
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


class Packed(NamedTuple):
    """An update as buffers holding its tensors' C-ordered values, in the reference's tensor order.

    ``buffers[j]`` holds tensor ``j``'s values from byte ``offsets[j]`` on: the ``.npy`` bytes a Flower
    ``Array`` carries (the offset skips the header: nothing is copied) or a byte view of an array.
    Build one with :meth:`Reference.pack` (checked ``.npy`` bytes) or :func:`pack` (arrays).
    """

    buffers: Sequence[bytes | memoryview]
    offsets: Sequence[int]


def pack(arrays: Arrays, order: Sequence[str]) -> Packed:
    """``arrays`` (in ``order``) as a :class:`Packed` update: views, a copy only of a non-C-ordered array."""
    buffers = [np.ascontiguousarray(arrays[name]).reshape(-1).view(np.uint8).data for name in order]
    return Packed(buffers, [0] * len(buffers))


class Reference:
    """The global adapter of a round, as ``.npy`` buffers (Flower ``Array.data``): what each update is read
    and checked against (:meth:`pack`) and what its norm is taken relative to (:attr:`arrays`)."""

    def __init__(self, buffers: Mapping[str, bytes]) -> None:
        self.buffers = dict(buffers)
        self.names = list(self.buffers)  # the tensors' order (one list, shared by every update packed against it)
        self.arrays: dict[str, npt.NDArray[np.generic]] = {k: npy_view(v) for k, v in self.buffers.items()}
        self.headers = [v[: _header_end(v)] for v in self.buffers.values()]
        self.offsets = [len(h) for h in self.headers]
        c_ordered = all(a.flags.c_contiguous for a in self.arrays.values())
        self.lengths = [len(v) if c_ordered else -1 for v in self.buffers.values()]  # -1: never the fast path
        self._payload = sum(a.nbytes for a in self.arrays.values())

    def pack(self, buffers: Mapping[str, bytes], who: str = "update") -> Packed:
        """An update's ``.npy`` buffers (name -> bytes) as a :class:`Packed` in the reference's order.

        A buffer with exactly the reference's header and length is taken as it is (one bytes comparison
        per tensor, no decoding); any other is decoded (:func:`npy_view`) and its layout checked, and
        copied only when it is not C-ordered (e.g. ``np.save`` of a Fortran-ordered array).

        Raises:
            ValueError: a tensor that is not a ``.npy`` buffer of a plain (pickle-free) array, named.
            AdapterLayoutError: tensor names, shapes or dtypes other than the reference's, named.
        """
        if len(buffers) == len(self.buffers):
            out, fast = [], True
            for (name, _), header, length in zip(self.buffers.items(), self.headers, self.lengths, strict=True):
                data = buffers.get(name)
                if data is None or len(data) != length or not data.startswith(header):
                    fast = False
                    break
                out.append(data)
            if fast:
                return Packed(out, self.offsets)
        views = {}
        for name, data in buffers.items():
            try:
                views[name] = npy_view(data)
            except ValueError:
                raise ValueError(f"tensor {name!r} is not a numpy array without pickles") from None
        check_layout(views, self.arrays, who)
        return pack(views, list(self.buffers))

    def payload_bytes(self, packed: Packed) -> int:
        """Bytes of tensor values ``packed`` holds (without ``.npy`` headers); the fast path's are the reference's."""
        if packed.offsets is self.offsets:  # taken as is by :meth:`pack`: the reference's headers and lengths
            return self._payload
        return sum(len(b) - o for b, o in zip(packed.buffers, packed.offsets, strict=True))

    def unpack(self, packed: Packed) -> dict[str, npt.NDArray[np.generic]]:
        """A packed update's tensors as read-only views, by name (e.g. to name the tensor holding NaN)."""
        return {
            name: np.frombuffer(buffer, ref.dtype, ref.size, offset).reshape(ref.shape)
            for (name, ref), buffer, offset in zip(self.arrays.items(), packed.buffers, packed.offsets, strict=True)
        }


def weighted_mean(updates: Sequence[tuple[Arrays, float]]) -> dict[str, npt.NDArray[np.generic]]:
    """Weighted mean of named arrays, ``sum_i w_i x_i / sum_i w_i`` (:func:`norms_and_mean` without norms).

    Raises:
        ValueError: no updates, bad weights (see :func:`norms_and_mean`), or an update whose tensor names or
            shapes differ from the first one's (named).
    """
    if not updates:
        raise ValueError("weighted_mean: no updates")
    first = updates[0][0]
    order = list(first)
    packs = []
    for index, (arrays, _) in enumerate(updates):
        if set(arrays) != set(order):
            raise ValueError(f"weighted_mean: update {index} has other tensor names than the first update")
        for name in order:
            if arrays[name].shape != first[name].shape:
                raise ValueError(
                    f"weighted_mean: tensor {name!r} of update {index} is {list(arrays[name].shape)}, "
                    f"expected {list(first[name].shape)}"
                )
        packs.append(pack({k: np.asarray(v, first[k].dtype) for k, v in arrays.items()}, order))
    _, mean = norms_and_mean(packs, {k: first[k] for k in order}, [w for _, w in updates], norms=False)
    assert mean is not None
    return mean


def norms_and_mean(
    updates: Sequence[Packed], reference: Arrays, weights: Sequence[float] | None = None, *, norms: bool = True
) -> tuple[npt.NDArray[np.float64] | None, dict[str, npt.NDArray[np.generic]] | None]:
    """In one pass over the updates' values: each update's L2 distance to ``reference`` and/or their weighted
    mean ``sum_i w_i x_i / sum_i w_i`` (with ``weights``), as Flower's ``aggregate_arrayrecords`` computes it.

    The updates hold ``reference``'s tensors (names, shapes, dtypes; :class:`Packed`). Tensor by tensor,
    in column chunks of ``_COLS`` values, the values of up to ``_ROWS`` updates are stacked into one block
    (``bytearray.join`` of the buffers' slices: the only copy, about 256 KiB, so it stays in L2); while it is
    in cache the block's weighted sum (BLAS gemv) and then, in place, its differences to the reference and
    their squares (BLAS dot per row) are taken. Float tensors of up to 32 bits are summed in float32 within
    a block (at most ``_ROWS`` terms) and in float64 across blocks, other dtypes in float64; a chunk whose
    float32 sum or squares overflow is redone in float64. An update holding NaN/inf gets a non-finite norm
    (and makes the mean non-finite). Extra memory: the mean plus one block.

    Returns:
        ``(norms, mean)``: ``norms`` (float64, one per update) or None with ``norms=False``; ``mean`` (name
        -> array, a float tensor keeps its dtype, an integer one becomes float64, like Flower's) or None
        without ``weights``.

    Raises:
        ValueError: no updates, a non-finite or negative weight, or weights summing to zero.
    """
    if not updates:
        raise ValueError("weighted_mean: no updates")
    wv: npt.NDArray[np.float64] | None = None
    if weights is not None:
        for index, weight in enumerate(weights):
            if not math.isfinite(weight) or weight < 0:
                raise ValueError(f"weighted_mean: update {index} has weight {weight}, expected a finite number >= 0")
        total = math.fsum(weights)
        if total <= 0:
            raise ValueError("weighted_mean: the weights sum to zero")
        wv = np.asarray(weights, np.float64) / total
    squares = np.zeros(len(updates)) if norms else None
    mean: dict[str, npt.NDArray[np.generic]] | None = {} if wv is not None else None
    with np.errstate(over="ignore", invalid="ignore"):  # NaN/inf and float32 overflow: handled below
        for index, (name, ref) in enumerate(reference.items()):
            flat = np.ascontiguousarray(ref).reshape(-1)
            # Each update's buffer of this tensor and the byte offset of its first value (read in place, no copy).
            values = [u.buffers[index] for u in updates], [u.offsets[index] for u in updates]
            out = np.empty(flat.size, np.result_type(ref.dtype, 1.0)) if mean is not None else None
            for start in range(0, flat.size, _COLS):
                stop = min(start + _COLS, flat.size)
                before = squares.copy() if squares is not None else None
                acc = _chunk(values, flat, start, stop, wv, squares)
                if squares is not None and before is not None and not np.isfinite(squares).all():
                    _exact_squares(values, flat, start, stop, squares, before)
                if acc is not None and out is not None:
                    if not np.isfinite(acc).all() and flat.dtype.kind == "f" and flat.dtype.itemsize <= 4:
                        acc = _chunk(values, flat, start, stop, wv, None, np.float64)
                    out[start:stop] = acc
            if mean is not None and out is not None:
                mean[name] = out.reshape(ref.shape)
    return (np.sqrt(squares) if squares is not None else None), mean


def _chunk(
    values: tuple[list[bytes | memoryview], list[int]],
    flat_ref: npt.NDArray[np.generic],
    start: int,
    stop: int,
    wv: npt.NDArray[np.float64] | None,
    squares: npt.NDArray[np.float64] | None,
    work: type[np.floating] | None = None,
) -> npt.NDArray[np.float64] | None:
    """Values ``start:stop`` of one tensor over all updates: adds each update's squared distance to the
    reference to ``squares`` (when given) and returns the weighted sum (float64) when ``wv`` is given."""
    dtype = flat_ref.dtype
    if work is None:
        work = np.float32 if dtype.kind == "f" and dtype.itemsize <= 4 else np.float64
    ref = flat_ref[start:stop].astype(work, copy=False)
    first, last, cols = start * dtype.itemsize, stop * dtype.itemsize, stop - start
    rows = max(1, min(_ROWS, _BLOCK // cols))
    weights = wv.astype(work) if wv is not None else None
    acc = np.zeros(cols) if weights is not None else None
    buffers, offsets = values
    for top in range(0, len(buffers), rows):
        block = zip(buffers[top : top + rows], offsets[top : top + rows], strict=True)
        raw = bytearray().join([memoryview(b)[o + first : o + last] for b, o in block])
        x = np.frombuffer(raw, dtype).reshape(-1, cols)
        if x.dtype != work:
            x = x.astype(work)
        if acc is not None and weights is not None:
            acc += weights[top : top + len(x)] @ x
        if squares is not None:
            np.subtract(x, ref, out=x)  # in place: the block is this loop's own copy
            squares[top : top + len(x)] += np.matmul(x[:, None, :], x[:, :, None]).reshape(-1)
        del raw, x  # before the next block is joined: one block in memory
    return acc


def _exact_squares(
    values: tuple[list[bytes | memoryview], list[int]],
    flat_ref: npt.NDArray[np.generic],
    start: int,
    stop: int,
    squares: npt.NDArray[np.float64],
    before: npt.NDArray[np.float64],
) -> None:
    """Redo in float64 the squares of this chunk for the updates whose float32 squares overflowed (an update
    already non-finite before the chunk stays so)."""
    for row in np.flatnonzero(~np.isfinite(squares) & np.isfinite(before)):
        x = np.frombuffer(
            values[0][row], flat_ref.dtype, stop - start, values[1][row] + start * flat_ref.dtype.itemsize
        )
        wide = np.subtract(x, flat_ref[start:stop], dtype=np.float64)
        squares[row] = before[row] + float(np.dot(wide, wide))


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


def _header_end(data: bytes) -> int:
    if data[:6] != _NPY_MAGIC or len(data) < 12:
        raise ValueError("not a .npy buffer")
    return 10 + int.from_bytes(data[8:10], "little") if data[6] == 1 else 12 + int.from_bytes(data[8:12], "little")


def npy_view(data: bytes) -> npt.NDArray[np.generic]:
    """The array that ``np.save`` wrote into ``data`` (what a Flower ``Array`` holds), as a read-only view
    of those bytes: no copy, and the header is parsed once per distinct layout. Never unpickles.

    Raises:
        ValueError: ``data`` is not a .npy buffer of format 1.0/2.0, holds objects, or is too short.
    """
    end = _header_end(data)
    head = data[:end]
    layout = _HEADERS.get(head)
    if layout is None:
        layout = _npy_header(head)
        if len(_HEADERS) < 4096:
            _HEADERS[head] = layout
    dtype, shape, count, order = layout
    return np.frombuffer(data, dtype=dtype, count=count, offset=end).reshape(shape, order=order)
