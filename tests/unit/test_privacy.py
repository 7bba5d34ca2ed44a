"""Privacy ledger: Opacus accounting values, calibration, budget refusal, composition over rounds."""

from __future__ import annotations

import pytest

from common.errors import ConfigError, PrivacyBudgetExceededError
from common.privacy import PrivacyLedger, calibrate_noise, compute_epsilon, default_delta, resolve_delta


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
    assert eps > target * 0.9  # and is not wastefully noisy


def test_default_delta_is_a_tenth_of_one_over_n() -> None:
    assert default_delta(40) == pytest.approx(1 / 400)
    assert resolve_delta(0.0, 40) == pytest.approx(1 / 400)
    assert resolve_delta(1e-4, 40) == 1e-4


def test_resolve_delta_rejects_delta_of_one_over_n_or_more() -> None:
    with pytest.raises(ConfigError, match="target_delta"):
        resolve_delta(0.05, 40)


def _ledger(planned_steps: int = 20, batch_size: int = 8) -> PrivacyLedger:
    ledger = PrivacyLedger.create(target_epsilon=4.0, target_delta=0.0, num_records=40)
    ledger.plan_run("run-a", num_records=40, batch_size=batch_size, planned_steps=planned_steps)
    return ledger


def test_calibration_matches_opacus_get_noise_multiplier() -> None:
    from opacus.accountants.utils import get_noise_multiplier

    ours = calibrate_noise(8.0, 1 / 380, 8 / 38, 20)
    theirs = get_noise_multiplier(target_epsilon=8.0, target_delta=1 / 380, sample_rate=8 / 38, steps=20,
                                  accountant="prv")
    assert ours == pytest.approx(theirs, rel=1e-3)


def test_ledger_plan_spends_at_most_the_target_over_all_planned_rounds() -> None:
    ledger = _ledger()
    assert ledger.runs["run-a"]["sample_rate"] == pytest.approx(0.2)
    assert ledger.delta == pytest.approx(1 / 400)
    for server_round in (1, 2):
        ledger.check_round("run-a", server_round, 10)
        ledger.record("run-a", server_round, 10)
    assert ledger.total_steps == 20
    assert 3.6 < ledger.epsilon() <= 4.0


def test_ledger_composes_epsilon_over_rounds() -> None:
    ledger = _ledger()
    ledger.record("run-a", 1, 10)
    after_one = ledger.epsilon()
    ledger.record("run-a", 2, 10)
    assert ledger.epsilon() > after_one > 0


def test_ledger_refuses_a_round_that_would_exceed_the_budget() -> None:
    ledger = _ledger()
    ledger.record("run-a", 1, 10)
    ledger.record("run-a", 2, 10)
    with pytest.raises(PrivacyBudgetExceededError, match="round 3 would raise epsilon"):
        ledger.check_round("run-a", 3, 10)
    assert ledger.total_steps == 20  # a refused round records nothing


def test_a_second_run_is_calibrated_against_what_the_first_spent() -> None:
    ledger = _ledger(planned_steps=10)
    ledger.record("run-a", 1, 5)  # half the first run's budget used
    sigma_b = ledger.plan_run("run-b", num_records=40, batch_size=8, planned_steps=10)["noise_multiplier"]
    assert sigma_b > ledger.runs["run-a"]["noise_multiplier"]  # less budget left: more noise
    ledger.record("run-b", 1, 10)
    assert ledger.epsilon() <= ledger.target_epsilon


def test_a_spent_budget_refuses_new_runs() -> None:
    ledger = _ledger(planned_steps=10)
    ledger.record("run-a", 1, 10)
    ledger.record("run-a", 1, 5)  # a crashed round retried: counted again, past the plan
    assert ledger.epsilon() > ledger.target_epsilon
    with pytest.raises(PrivacyBudgetExceededError, match="already spent"):
        ledger.plan_run("run-b", num_records=40, batch_size=8, planned_steps=10)


def test_ledger_round_trips_through_a_plain_dict() -> None:
    ledger = _ledger()
    ledger.record("run-a", 1, 10)
    again = PrivacyLedger.from_dict(ledger.to_dict())
    assert again == ledger
    assert again.epsilon() == pytest.approx(ledger.epsilon())


def test_ledger_rejects_a_batch_as_large_as_the_data() -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        _ledger(batch_size=40)


def test_unknown_accountant_fails_closed() -> None:
    with pytest.raises(ConfigError, match="accountant"):
        compute_epsilon(1.0, 0.1, 10, 1e-5, "gdp-guess")
