"""Canaries, exposure and membership AUC: known values, determinism, and planting into the training split."""

from __future__ import annotations

import math

import numpy as np
import pytest

from common.canaries import (
    Canary,
    candidate_records,
    exposure,
    make_canaries,
    membership_auc,
    sample_candidates,
)
from common.errors import ConfigError
from common.examples import split_indices
from common.synthetic import generate_site_records


def test_exposure_is_log2_of_sample_size_when_the_secret_ranks_first() -> None:
    assert exposure(0.1, [1.0 + i for i in range(99)], 10**6) == pytest.approx(math.log2(100))
    assert exposure(0.1, [1.0 + i for i in range(99)], 10**6) == pytest.approx(6.6439, abs=1e-4)


def test_exposure_is_zero_when_the_secret_ranks_last() -> None:
    assert exposure(200.0, [1.0 + i for i in range(99)], 10**6) == pytest.approx(0.0, abs=1e-12)


def test_exposure_known_middle_rank_and_ties() -> None:
    # 3 candidates lower, 1 tied, 4 higher: rank = 1 + 3 + 0.5 = 4.5 among 9 -> log2(9 / 4.5) = 1 bit.
    losses = [0.1, 0.2, 0.3, 0.5, 0.9, 1.0, 1.1, 1.2]
    assert exposure(0.5, losses, 10**6) == pytest.approx(1.0)
    # The space size cancels out of the sampled estimate.
    assert exposure(0.5, losses, 10**3) == pytest.approx(exposure(0.5, losses, 10**9))


def test_exposure_rejects_bad_input() -> None:
    with pytest.raises(ConfigError):
        exposure(0.1, [], 10**6)
    with pytest.raises(ConfigError):
        exposure(0.1, [0.2, 0.3], 2)  # two candidates plus the secret do not fit in a space of 2
    with pytest.raises(ConfigError):
        exposure(float("nan"), [0.2], 10**6)


def test_membership_auc_known_values() -> None:
    assert membership_auc([0.1, 0.2, 0.3], [0.5, 0.6]) == 1.0  # members all lower: perfect attack
    assert membership_auc([0.5, 0.6], [0.1, 0.2, 0.3]) == 0.0
    assert membership_auc([0.4, 0.4, 0.4], [0.4, 0.4]) == 0.5
    # Pairs (member, non-member): (1,2) win, (1,4) win, (3,2) loss, (3,4) win, (2,2) tie, (2,4) win
    # -> (4 + 0.5) / 6 = 0.75.
    assert membership_auc([1.0, 3.0, 2.0], [2.0, 4.0]) == pytest.approx(0.75)


def test_membership_auc_matches_pairwise_definition() -> None:
    rng = np.random.default_rng(3)
    members = np.round(rng.normal(1.0, 0.5, 40), 1)  # rounding makes ties
    others = np.round(rng.normal(1.2, 0.5, 30), 1)
    pairs = [(m < o) + 0.5 * (m == o) for m in members for o in others]
    assert membership_auc(members.tolist(), others.tolist()) == pytest.approx(np.mean(pairs))


def test_membership_auc_needs_both_groups() -> None:
    with pytest.raises(ConfigError):
        membership_auc([], [0.1])
    with pytest.raises(ConfigError):
        membership_auc([0.1], [float("inf")])


def test_make_canaries_is_deterministic_and_distinct() -> None:
    first = make_canaries(8, seed=7)
    assert first == make_canaries(8, seed=7)
    assert first != make_canaries(8, seed=8)
    assert len({c.name for c in first}) == 8 and len({c.secret for c in first}) == 8
    for canary in first:
        assert len(canary.secret) == 6 and canary.secret.isdigit()
        assert canary.name in canary.record.prompt[0][1]
        assert canary.record.completion.endswith(f"{canary.secret}.")
    assert len(make_canaries(3, seed=0, digits=4)[0].secret) == 4


def test_make_canaries_rejects_too_many() -> None:
    with pytest.raises(ConfigError):
        make_canaries(10_000, seed=0)


def test_candidates_are_distinct_and_exclude_the_secret() -> None:
    rng = np.random.default_rng(0)
    candidates = sample_candidates("000123", 500, rng=rng)
    assert len(candidates) == len(set(candidates)) == 500
    assert "000123" not in candidates
    assert all(len(c) == 6 and c.isdigit() for c in candidates)
    # A 1-digit space has exactly 9 other secrets: all of them, never the true one.
    assert sorted(sample_candidates("4", 9, rng=rng, digits=1)) == [str(d) for d in range(10) if d != 4]
    with pytest.raises(ConfigError):
        sample_candidates("4", 10, rng=rng, digits=1)
    with pytest.raises(ConfigError):
        sample_candidates("12a456", 5, rng=rng)


def test_candidate_records_change_only_the_secret() -> None:
    canary: Canary = make_canaries(1, seed=1)[0]
    records = candidate_records(canary, ["111111", "222222"])
    for record, candidate in zip(records, ["111111", "222222"], strict=True):
        assert record.prompt == canary.record.prompt
        assert record.completion == canary.record.completion.replace(canary.secret, candidate)
        assert record.completion != canary.record.completion


def test_planted_canaries_all_land_in_the_training_split() -> None:
    from simulations.canary_audit import plant_canaries

    canaries = make_canaries(3, seed=0)
    records = generate_site_records(0, 24)
    planted, slots = plant_canaries(records, canaries, 4, eval_fraction=0.2, split_seed=5, seed=0)
    assert len(planted) == 36
    train, _ = split_indices(36, 0.2, 5)
    assert set(slots) <= set(train.tolist())
    assert [i for i, r in enumerate(planted) if r in {c.record for c in canaries}] == slots
    # The displaced records are all still there, in their original order.
    assert [r for i, r in enumerate(planted) if i not in set(slots)] == records
    with pytest.raises(ConfigError):
        plant_canaries(records[:3], canaries, 4, eval_fraction=0.5, split_seed=0, seed=0)
