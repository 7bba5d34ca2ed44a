"""Privacy ledger: Opacus accounting values, calibration, budget refusal, composition over rounds."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from common.config import SiteLimits
from common.errors import ConfigError, PrivacyBudgetExceededError
from common.privacy import (
    PrivacyLedger,
    RunRequest,
    calibrate_noise,
    charge_query,
    charge_round,
    clip_contributions,
    compact_history,
    compute_epsilon,
    compute_history_epsilon,
    default_delta,
    joint_sensitivity,
    release_sums,
    resolve_delta,
)


def test_compute_epsilon_matches_opacus_prv_known_value() -> None:
    # Pinned from opacus 1.6 PRVAccountant: history [(1.0, 0.1, 100)], delta 1e-5 -> 7.057 (eps_error 0.01).
    assert compute_epsilon(1.0, 0.1, 100, 1e-5, "prv") == pytest.approx(7.057, abs=0.02)


def test_compute_epsilon_rdp_is_looser_than_prv() -> None:
    assert compute_epsilon(1.0, 0.1, 100, 1e-5, "rdp") > compute_epsilon(1.0, 0.1, 100, 1e-5, "prv")


def test_compute_epsilon_is_zero_without_steps_and_grows_with_steps() -> None:
    assert compute_epsilon(1.0, 0.2, 0, 1e-3) == 0.0
    assert compute_epsilon(1.0, 0.2, 10, 1e-3) < compute_epsilon(1.0, 0.2, 20, 1e-3)


@pytest.mark.parametrize(("target", "rate", "steps"), [(1.0, 0.2, 30), (4.0, 0.25, 20), (8.0, 0.1, 60)])
def test_calibrated_noise_never_overshoots_the_target(target: float, rate: float, steps: int) -> None:
    sigma = calibrate_noise(target, 1e-3, rate, steps)
    eps = compute_epsilon(sigma, rate, steps, 1e-3)
    assert eps <= target
    assert eps > target * 0.98  # and is not wastefully noisy


def test_default_delta_is_a_tenth_of_one_over_n_and_at_most_1e_5() -> None:
    assert default_delta(40) == pytest.approx(1e-5)  # 1/400 would be far too large for a small site
    assert default_delta(1_000_000) == pytest.approx(1e-7)
    assert resolve_delta(0.0, 40) == pytest.approx(1e-5)
    assert resolve_delta(1e-4, 40) == 1e-4


def test_resolve_delta_rejects_delta_of_one_over_n_or_more() -> None:
    with pytest.raises(ConfigError, match="target_delta"):
        resolve_delta(0.05, 40)


def test_calibration_matches_opacus_get_noise_multiplier() -> None:
    from opacus.accountants.utils import get_noise_multiplier

    ours = calibrate_noise(8.0, 1 / 380, 8 / 38, 20)
    theirs = get_noise_multiplier(
        target_epsilon=8.0, target_delta=1 / 380, sample_rate=8 / 38, steps=20, accountant="prv"
    )
    assert ours == pytest.approx(theirs, rel=0.02)  # both within their epsilon tolerance of the target
    assert compute_epsilon(ours, 8 / 38, 20, 1 / 380) <= 8.0


def test_compacting_a_history_is_exact() -> None:
    history = [(1.0, 0.2, 5), (1.0, 0.2, 5), (8.0, 1.0, 1), (8.0, 1.0, 1), (8.0, 1.0, 1), (8.0, 1.0, 1)]
    assert compact_history(history) == [(1.0, 0.2, 10), (4.0, 1.0, 1)]  # 4 Gaussians at 8 = one at 8/sqrt(4)
    with_steps = compute_epsilon(1.0, 0.2, 10, 1e-5) < compute_history_epsilon(history, 1e-5)
    assert with_steps


# (noise, rate, steps) histories as the ledgers hold them: a smoke run's rounds with its evaluation queries
# (sample rate 1), and two runs at other noise and rates (each Opacus PRV call costs ~0.5 s: kept to four).
OPACUS_HISTORIES = [
    [(1.1, 4 / 24, 8), (8.0, 1.0, 1), (8.0, 1.0, 1)],
    [(0.72, 8 / 380, 300), (1.9, 8 / 38, 20)],
]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # Opacus's log(1 - q) at rate 1, either way
@pytest.mark.parametrize("accountant", ["prv", "rdp"])
def test_epsilons_are_bit_identical_to_opacus_accountants(accountant: str) -> None:
    """The memoised RDP curves (common.privacy._rdp_per_step) give exactly Opacus's float64 epsilons."""
    from opacus.accountants import PRVAccountant, RDPAccountant

    from common.privacy import _epsilon

    def opacus(history: list[tuple[float, float, int]], delta: float) -> float:
        theirs = PRVAccountant() if accountant == "prv" else RDPAccountant()
        theirs.history = compact_history(history)
        return float(theirs.get_epsilon(delta))

    for history in OPACUS_HISTORIES:
        expected = opacus(history, 1e-5)
        # Twice: the second call reads the (noise, rate) curves the first one memoised.
        assert _epsilon(accountant, history, 1e-5) == expected, history
        assert _epsilon(accountant, history, 1e-5) == expected, history
        # The same (noise, rate) at other step counts and delta: warm curves times the new counts.
        longer = [(s, q, 3 * n + 1) for s, q, n in history]
        assert _epsilon(accountant, longer, 1 / 380) == opacus(longer, 1 / 380), longer


LIMITS = SiteLimits(max_eval_queries=2, min_noise_multiplier=0.3, max_noise_multiplier=20.0)


def _run(run_id: str = "run-a", planned_steps: int = 20, batch_size: int = 8, target: float = 4.0) -> RunRequest:
    return RunRequest(
        run_id=run_id,
        num_units=40,
        batch_size=batch_size,
        planned_steps=planned_steps,
        target_epsilon=target,
        eval_noise_multiplier=8.0,
    )


def _ledger(lifetime: float = 4.0) -> PrivacyLedger:
    # RDP: the same logic as PRV at a tenth of the cost per accountant call (PRV is pinned above).
    return PrivacyLedger.create(target_epsilon=lifetime, target_delta=0.0, num_records=40, accountant="rdp")


def test_charge_round_is_pure_and_spends_at_most_the_target_over_the_plan() -> None:
    empty = _ledger()
    ledger, first = charge_round(empty, _run(), 1, 10, LIMITS)
    assert empty.entries == [] and empty.runs == {}  # the input ledger is untouched
    ledger, second = charge_round(ledger, _run(), 2, 10, LIMITS)
    assert first.sample_rate == pytest.approx(0.2) and first.epsilon_before == 0.0
    assert 0 < first.epsilon_after < second.epsilon_after == pytest.approx(ledger.epsilon())
    assert ledger.total_steps == 20
    assert 3.0 < second.epsilon_after <= 4.0  # room is left for the 2 reserved evaluation queries
    ledger, query = charge_query(ledger, _run(), 2, LIMITS)
    ledger, _ = charge_query(ledger, _run(), 2, LIMITS)
    assert query.noise_multiplier == 8.0 and query.sample_rate == 1.0 and ledger.epsilon() <= 4.0
    with pytest.raises(PrivacyBudgetExceededError, match="limits.max_eval_queries"):
        charge_query(ledger, _run(), 2, LIMITS)


def test_a_round_past_the_run_cap_is_refused_and_records_nothing() -> None:
    ledger, _ = charge_round(_ledger(), _run(), 1, 10, LIMITS)
    ledger, _ = charge_round(ledger, _run(), 2, 10, LIMITS)
    with pytest.raises(PrivacyBudgetExceededError, match="round 3 training would raise the site's epsilon"):
        charge_round(ledger, _run(), 3, 10, LIMITS)
    assert ledger.total_steps == 20


def test_retries_are_charged_again_with_a_new_attempt_number() -> None:
    ledger, first = charge_round(_ledger(), _run(planned_steps=30), 1, 10, LIMITS)
    ledger, retry = charge_round(ledger, _run(planned_steps=30), 1, 10, LIMITS)
    assert (first.attempt, retry.attempt) == (0, 1) and ledger.total_steps == 20


def test_a_second_run_is_calibrated_against_what_the_first_spent_and_capped_per_run() -> None:
    ledger, first = charge_round(_ledger(3.5), _run(planned_steps=10, target=3.0), 1, 10, LIMITS)
    spent = ledger.epsilon()
    ledger, second = charge_round(ledger, _run("run-b", planned_steps=10, target=3.0), 1, 10, LIMITS)
    assert second.run_epsilon_cap == 3.0 and second.epsilon_after <= 3.5  # the lifetime budget binds here
    assert second.noise_multiplier > first.noise_multiplier and spent < second.epsilon_after
    with pytest.raises(PrivacyBudgetExceededError, match="limits.max_run_epsilon"):
        charge_round(ledger, _run("run-c", target=3.0), 1, 10, dataclasses.replace(LIMITS, max_run_epsilon=2.5))


def test_a_nearly_spent_budget_refuses_a_run_that_would_train_on_noise_and_says_what_is_left() -> None:
    ledger, _ = charge_round(_ledger(), _run(planned_steps=10), 1, 10, LIMITS)
    with pytest.raises(PrivacyBudgetExceededError, match=r"left; .*max_noise_multiplier=5.*to proceed"):
        charge_round(
            ledger, _run("run-b", planned_steps=10), 1, 10, dataclasses.replace(LIMITS, max_noise_multiplier=5.0)
        )


def test_the_minimum_noise_multiplier_wins_over_a_generous_budget() -> None:
    _, charge = charge_round(_ledger(1000.0), _run(target=1000.0), 1, 10, LIMITS)
    assert charge.noise_multiplier == LIMITS.min_noise_multiplier


def test_sampling_rates_above_the_site_cap_and_batches_as_large_as_the_data_are_refused() -> None:
    with pytest.raises(ConfigError, match="limits.max_sample_rate"):
        charge_round(_ledger(), _run(batch_size=30), 1, 10, LIMITS)
    with pytest.raises(ConfigError, match="batch_size"):
        charge_round(_ledger(), _run(batch_size=40), 1, 10, LIMITS)


def test_ledger_round_trips_through_a_plain_dict_and_refuses_another_accountant_or_unit() -> None:
    ledger, _ = charge_round(_ledger(), _run(), 1, 10, LIMITS)
    again = PrivacyLedger.from_dict(ledger.to_dict())
    assert again == ledger and again.epsilon() == pytest.approx(ledger.epsilon())
    with pytest.raises(ConfigError, match="privacy.accountant"):
        again.check_compatible(accountant="prv", unit="record")
    with pytest.raises(ConfigError, match="privacy.unit"):
        again.check_compatible(accountant="rdp", unit="patient")


def test_release_sums_adds_gaussian_noise_of_sigma_times_sensitivity() -> None:
    rng = np.random.default_rng(0)
    draws = np.array([release_sums({"s": np.array(10.0)}, 2.0, 3.0, rng)["s"] for _ in range(4000)])
    assert draws.mean() == pytest.approx(10.0, abs=0.3) and draws.std() == pytest.approx(6.0, rel=0.05)
    with pytest.raises(ConfigError, match="release_sums"):
        release_sums({"s": np.array(1.0)}, 1.0, 0.0, rng)
    clipped = clip_contributions(np.array([[3.0, 4.0], [0.3, 0.4]]), 1.0)
    np.testing.assert_allclose(np.linalg.norm(clipped, axis=1), [1.0, 0.5])
    assert joint_sensitivity({"loss": 3.0, "correct": 4.0}) == 5.0


def test_unknown_accountant_fails_closed() -> None:
    with pytest.raises(ConfigError, match="accountant"):
        compute_epsilon(1.0, 0.1, 10, 1e-5, "gdp-guess")
