"""Non-IID splits of one dataset into N sites: Dirichlet label skew (Hsu et al., 2019).

For each label (e.g. MedQuAD's ``source``, or a specialty), the share of its records that goes to
each site is drawn from Dir(alpha, ..., alpha): a small alpha (0.1) puts most of a label at one or
two sites, a large alpha (100) gives every site nearly the global mix. The same scheme as
flwr-datasets' ``DirichletPartitioner``, as a pure function over a list of labels, because fedcare's
records come from its own loaders (``common/records.py``), not from Hugging Face datasets.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

from common.errors import ConfigError


def dirichlet_partition(
    labels: Sequence[Hashable],
    num_partitions: int,
    alpha: float,
    *,
    seed: int = 0,
    min_size: int = 1,
    max_tries: int = 100,
) -> list[list[int]]:
    """Disjoint index lists, one per partition, covering ``range(len(labels))``, label shares ~ Dir(alpha).

    Draws are redone (up to ``max_tries``) until every partition holds at least ``min_size`` items.

    Raises:
        ConfigError: on ``num_partitions < 1``, ``alpha <= 0``, too few items for ``min_size`` each, or
            no draw meeting ``min_size`` within ``max_tries``.
    """
    if num_partitions < 1:
        raise ConfigError(f"dirichlet partition: num_partitions must be >= 1, got {num_partitions}")
    if not alpha > 0:
        raise ConfigError(f"dirichlet partition: alpha must be > 0, got {alpha}")
    if len(labels) < num_partitions * min_size:
        raise ConfigError(
            f"dirichlet partition: {len(labels)} records cannot give {num_partitions} sites {min_size} records each"
        )
    by_label: dict[Hashable, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    rng = np.random.default_rng(seed)
    for _ in range(max_tries):
        parts: list[list[int]] = [[] for _ in range(num_partitions)]
        for label in sorted(by_label, key=str):
            idx = np.asarray(by_label[label])
            rng.shuffle(idx)
            shares = rng.dirichlet(np.full(num_partitions, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(idx)).round().astype(int)
            for part, chunk in zip(parts, np.split(idx, cuts), strict=True):
                part.extend(int(i) for i in chunk)
        if min(len(p) for p in parts) >= min_size:
            return [sorted(p) for p in parts]
    raise ConfigError(
        f"dirichlet partition: no draw in {max_tries} gave every one of {num_partitions} sites "
        f">= {min_size} records at alpha={alpha:g}; raise alpha or lower num_sites"
    )
