"""Checks on adapter updates before aggregation (layout, finiteness, norm outliers), the streaming
weighted mean and the in-place .npy reader."""

from __future__ import annotations

import io
import tracemalloc

import numpy as np
import pytest

from common import aggregation
from common.aggregation import (
    Reference,
    check_layout,
    nbytes,
    non_finite,
    norm_outliers,
    norms_and_mean,
    npy_view,
    pack,
    update_norm,
    weighted_average,
    weighted_mean,
)
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


def test_update_norm_is_exact_for_big_tensors_and_overflow_and_not_finite_for_nan() -> None:
    rng = np.random.default_rng(1)
    ref = {"big": rng.standard_normal((70_000,), dtype=np.float32), "m": rng.standard_normal((3, 5), dtype=np.float32)}
    got = {k: v + rng.standard_normal(v.shape, dtype=np.float32) for k, v in ref.items()}
    exact = np.sqrt(sum(np.sum((got[k].astype(np.float64) - ref[k]) ** 2) for k in ref))
    assert update_norm(got, ref) == pytest.approx(exact, rel=1e-5)
    huge = {"big": np.full(70_000, 3e38, np.float32), "m": -ref["m"]}  # float32 squares overflow; float64 does not
    exact = np.sqrt(sum(np.sum((huge[k].astype(np.float64) - ref[k]) ** 2) for k in ref))
    assert update_norm(huge, ref) == pytest.approx(exact, rel=1e-6)
    got["big"][50_000] = np.nan
    assert not np.isfinite(update_norm(got, ref))


def _updates(
    rng: np.random.Generator, count: int, dtype: type = np.float32
) -> list[tuple[dict[str, np.ndarray], float]]:
    return [
        (
            {
                "a": rng.standard_normal((7, 3)).astype(dtype),
                "big": rng.standard_normal(40_000).astype(dtype),  # several cache blocks
                "s": np.asarray(rng.standard_normal(), dtype),  # 0-d
            },
            float(rng.integers(1, 50)),
        )
        for _ in range(count)
    ]


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
def test_weighted_mean_is_the_float64_weighted_mean_in_the_updates_dtype(dtype: type) -> None:
    updates = _updates(np.random.default_rng(2), 25, dtype)
    got = weighted_mean(updates)
    total = sum(w for _, w in updates)
    for name in ("a", "big", "s"):
        want = sum(a[name].astype(np.float64) * w for a, w in updates) / total
        assert got[name].dtype == dtype and got[name].shape == want.shape
        assert np.allclose(got[name], want, rtol=np.finfo(dtype).eps * 4, atol=np.finfo(dtype).eps * 4)


def test_weighted_mean_of_integers_is_float64_like_flower() -> None:
    got = weighted_mean([({"n": np.array([1, 2], np.int32)}, 1.0), ({"n": np.array([2, 4], np.int32)}, 3.0)])
    assert got["n"].dtype == np.float64 and np.allclose(got["n"], [1.75, 3.5])


def test_weighted_mean_refuses_mismatches_and_bad_weights() -> None:
    one = {"a": np.zeros((2, 2), np.float32)}
    with pytest.raises(ValueError, match="no updates"):
        weighted_mean([])
    with pytest.raises(ValueError, match="other tensor names"):
        weighted_mean([(one, 1.0), ({"b": np.zeros((2, 2), np.float32)}, 1.0)])
    with pytest.raises(ValueError, match=r"tensor 'a' of update 1 is \[4\]"):
        weighted_mean([(one, 1.0), ({"a": np.zeros(4, np.float32)}, 1.0)])
    with pytest.raises(ValueError, match="weight nan"):
        weighted_mean([(one, float("nan"))])
    with pytest.raises(ValueError, match="sum to zero"):
        weighted_mean([(one, 0.0), (one, 0.0)])


def test_weighted_mean_holds_about_one_update_of_extra_memory() -> None:
    rng = np.random.default_rng(3)
    updates = [({f"t{j}": rng.standard_normal(5_000, dtype=np.float32) for j in range(20)}, 1.0) for _ in range(40)]
    update_bytes = 20 * 5_000 * 4
    tracemalloc.start()
    mean = weighted_mean(updates)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert nbytes(mean) == update_bytes
    block_bytes = 4 * aggregation._BLOCK  # one stacked block of float32 values
    assert peak < update_bytes + 4 * block_bytes  # the result plus block scratch (~1 MB), not a stack of 40 updates


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12, dtype=np.float32).reshape(3, 4),
        np.asfortranarray(np.arange(12, dtype=np.float64).reshape(3, 4)),
        np.asarray(2.5, np.float16),
        np.zeros((0, 3), np.float32),
        np.array([True, False]),
        np.arange(5, dtype=">i4"),
    ],
)
def test_npy_view_reads_what_np_save_wrote_without_copying(array: np.ndarray) -> None:
    data = _npy(array)
    view = npy_view(data)
    assert view.dtype == array.dtype and view.shape == array.shape and np.array_equal(view, array)
    assert not view.flags.writeable  # a view of the immutable bytes
    assert npy_view(data).shape == array.shape  # the cached header gives the same layout


def test_npy_view_refuses_pickles_garbage_and_short_buffers() -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="object"):
        npy_view(buffer.getvalue())
    with pytest.raises(ValueError, match="not a .npy"):
        npy_view(b"PK\x03\x04 not numpy at all")
    with pytest.raises(ValueError):
        npy_view(_npy(np.arange(10, dtype=np.float32))[:-4])  # truncated data


def test_reference_takes_a_buffer_with_its_header_as_is_and_copies_only_a_fortran_ordered_one() -> None:
    ref = {"m": np.arange(12, dtype=np.float32).reshape(3, 4), "v": np.zeros(5, np.float32)}
    reference = Reference({k: _npy(v) for k, v in ref.items()})
    same = {k: _npy(v + 1) for k, v in ref.items()}
    packed = reference.pack(same)
    assert all(b is same[k] for k, b in zip(ref, packed.buffers, strict=True))  # the reply's own bytes
    fortran = {"m": _npy(np.asfortranarray(ref["m"] + 1)), "v": same["v"]}
    assert np.array_equal(reference.unpack(reference.pack(fortran))["m"], ref["m"] + 1)  # C order again
    with pytest.raises(AdapterLayoutError, match=r"'m' is float32\[4, 3\]"):
        reference.pack({"m": _npy(np.zeros((4, 3), np.float32)), "v": same["v"]})
    with pytest.raises(ValueError, match="'v' is not a numpy array without pickles"):
        reference.pack({"m": same["m"], "v": b"garbage"})


def test_one_pass_gives_norms_and_the_float64_mean_over_chunks_and_blocks() -> None:
    rng = np.random.default_rng(4)
    shapes = {"small": (7, 3), "big": (3 * aggregation._COLS + 5,), "s": ()}  # several column chunks and row blocks
    ref = {k: rng.standard_normal(v).astype(np.float32) for k, v in shapes.items()}
    updates = [{k: (v + rng.standard_normal(v.shape)).astype(np.float32) for k, v in ref.items()} for _ in range(70)]
    weights = [float(w) for w in rng.integers(1, 400, len(updates))]
    norms, mean = norms_and_mean([pack(u, list(ref)) for u in updates], ref, weights)
    assert norms is not None and mean is not None
    want_norms = [np.sqrt(sum(np.sum((u[k].astype(np.float64) - ref[k]) ** 2) for k in ref)) for u in updates]
    assert np.allclose(norms, want_norms, rtol=1e-5)
    for k in ref:
        want = sum(u[k].astype(np.float64) * w for u, w in zip(updates, weights, strict=True)) / sum(weights)
        assert mean[k].dtype == np.float32 and mean[k].shape == shapes[k]
        # float32 within a block of at most 32 updates, float64 across blocks: within 2 float32 ulps of float64
        assert np.max(np.abs(mean[k] - want)) <= 2 * np.finfo(np.float32).eps * np.max(np.abs(want))


def test_norm_outliers_is_the_median_of_the_others_definition_with_ties() -> None:
    rng = np.random.default_rng(6)
    for count in (2, 3, 4, 9, 50):
        values = np.round(rng.lognormal(0, 1.5, count), 1)  # rounded: ties
        norms = {f"s{i}": float(v) for i, v in enumerate(values)}
        for factor in (1.0, 2.0, 5.0):
            want = {
                k for k, v in norms.items() if v > factor * float(np.median([n for j, n in norms.items() if j != k]))
            }
            assert set(norm_outliers(norms, factor)) == want
