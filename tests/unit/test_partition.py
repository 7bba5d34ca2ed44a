"""Dirichlet label-skew partitions: disjoint, complete, and as skewed as alpha says."""

from __future__ import annotations

import numpy as np
import pytest

from common.errors import ConfigError
from common.partition import dirichlet_partition

LABELS = [f"source-{i % 6}" for i in range(1800)]  # 6 labels x 300 records


def _shares(parts: list[list[int]]) -> np.ndarray:
    """[label, partition] share of each label's records."""
    names = sorted(set(LABELS))
    counts = np.array([[sum(LABELS[i] == n for i in p) for p in parts] for n in names], dtype=float)
    return counts / counts.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("alpha", [0.1, 1.0, 100.0])
def test_partitions_are_disjoint_and_cover_everything(alpha: float) -> None:
    parts = dirichlet_partition(LABELS, 5, alpha, seed=1)
    flat = [i for p in parts for i in p]
    assert len(parts) == 5 and all(parts)
    assert sorted(flat) == list(range(len(LABELS)))  # every record exactly once


def test_small_alpha_concentrates_each_label_large_alpha_spreads_it() -> None:
    skewed = _shares(dirichlet_partition(LABELS, 5, 0.1, seed=2))
    mixed = _shares(dirichlet_partition(LABELS, 5, 100.0, seed=2))
    assert skewed.max(axis=1).mean() > 0.6  # most of a label at one site
    assert np.abs(mixed - 0.2).max() < 0.1  # close to 1/5 everywhere


def test_label_shares_follow_the_dirichlet_mean_and_variance() -> None:
    # Dir(alpha 1_N): each share has mean 1/N and variance (N-1) / (N^2 (N alpha + 1)).
    n, alpha = 4, 0.5
    shares = np.concatenate(
        [_shares(dirichlet_partition(LABELS, n, alpha, seed=s, min_size=0)).ravel() for s in range(40)]
    )
    assert shares.mean() == pytest.approx(1 / n, abs=0.01)
    assert shares.var() == pytest.approx((n - 1) / (n**2 * (n * alpha + 1)), rel=0.2)


def test_same_seed_same_split_and_bad_arguments_are_refused() -> None:
    assert dirichlet_partition(LABELS, 3, 0.5, seed=9) == dirichlet_partition(LABELS, 3, 0.5, seed=9)
    assert dirichlet_partition(LABELS, 3, 0.5, seed=9) != dirichlet_partition(LABELS, 3, 0.5, seed=10)
    with pytest.raises(ConfigError, match="alpha"):
        dirichlet_partition(LABELS, 3, 0.0)
    with pytest.raises(ConfigError, match="cannot give"):
        dirichlet_partition(LABELS[:4], 3, 1.0, min_size=2)
    with pytest.raises(ConfigError, match="no draw"):
        dirichlet_partition(["a"] * 10, 5, 0.001, min_size=2, max_tries=3)


def test_one_file_splits_into_num_sites_by_dirichlet(tmp_path) -> None:
    import json

    from common.config import DataConfig, RunConfig
    from common.datasets import load_site_data

    path = tmp_path / "all.jsonl"
    rows = [{"question": f"q{i}?", "answer": f"a{i}.", "source": f"S{i % 3}"} for i in range(90)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = DataConfig(kind="files", paths=(str(path),), partition_field="source", dirichlet_alpha=0.3, deid="off")
    RunConfig(num_sites=4, data=data)  # one file for four sites is a valid config
    sites = [load_site_data(data, i, 4) for i in range(4)]
    answers = [r.completion for s in sites for r in s.records]
    assert sorted(answers) == sorted(r["answer"] for r in rows)  # disjoint and complete
    assert all(len(s.records) >= 2 for s in sites)
    assert [s.records for s in sites] == [load_site_data(data, i, 4).records for i in range(4)]  # deterministic
    with pytest.raises(ConfigError, match="dirichlet_alpha"):
        DataConfig(kind="files", paths=("a.jsonl", "b.jsonl"), dirichlet_alpha=0.3)
