"""A site's privacy ledger: DP-SGD steps taken so far and the epsilon they cost (Opacus accountants).

The ledger composes over the WHOLE run: the noise multiplier is calibrated once for all planned
rounds, every round's steps are recorded before that round trains, and epsilon is always computed
from the full history. (Flower's Opacus example builds a new PrivacyEngine per round, so its epsilon
covers one round only.)
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

from common.errors import ConfigError, PrivacyBudgetExceededError


def default_delta(num_records: int) -> float:
    """delta = 1 / (10 x records): a small multiple below 1/n, the usual recommendation."""
    if num_records < 1:
        raise ConfigError("privacy: a site needs at least one training record to set delta")
    return 1.0 / (10.0 * num_records)


def resolve_delta(target_delta: float, num_records: int) -> float:
    """The delta a site uses: the configured one, or :func:`default_delta` when it is 0.

    Raises:
        ConfigError: when the configured delta is >= 1/num_records, which would allow
            releasing a whole record with non-negligible probability.
    """
    if target_delta == 0.0:
        return default_delta(num_records)
    if target_delta >= 1.0 / num_records:
        raise ConfigError(
            f"privacy.target_delta: expected < 1/records = {1.0 / num_records:.3g} "
            f"for a site with {num_records} training records, got {target_delta!r}"
        )
    return target_delta


def _accountant(name: str, history: list[tuple[float, float, int]]) -> Any:
    # Imported here: opacus pulls in torch, and ledgers are also read by light tools.
    from opacus.accountants import PRVAccountant, RDPAccountant

    if name == "prv":
        acc: Any = PRVAccountant()
    elif name == "rdp":
        acc = RDPAccountant()
    else:
        raise ConfigError(f"privacy.accountant: expected 'prv' or 'rdp', got {name!r}")
    acc.history = list(history)
    return acc


def compute_epsilon(
    noise_multiplier: float, sample_rate: float, steps: int, delta: float, accountant: str = "prv"
) -> float:
    """Epsilon of ``steps`` Poisson-sampled Gaussian steps (an upper bound for PRV).

    Returns 0.0 for zero steps.
    """
    if steps == 0:
        return 0.0
    if noise_multiplier <= 0:
        return math.inf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Opacus warns about secure RNG; not a privacy issue here
        eps = _accountant(accountant, [(noise_multiplier, sample_rate, steps)]).get_epsilon(delta)
    return float(eps)


def calibrate_noise(
    target_epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str = "prv"
) -> float:
    """Smallest noise multiplier (to Opacus's tolerance) whose epsilon over ``steps`` is within target.

    Raises:
        ConfigError: when Opacus cannot reach the target (e.g. sample_rate too high).
    """
    from opacus.accountants.utils import get_noise_multiplier

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sigma = get_noise_multiplier(target_epsilon=target_epsilon, target_delta=delta,
                                         sample_rate=sample_rate, steps=steps, accountant=accountant)
    except ValueError as err:
        raise ConfigError(f"privacy: cannot calibrate noise for epsilon={target_epsilon}: {err}") from err
    return float(sigma)


@dataclass
class PrivacyLedger:
    """DP-SGD history of one site; epsilon is always recomputed from the full history."""

    noise_multiplier: float
    sample_rate: float
    delta: float
    target_epsilon: float
    planned_steps: int
    accountant: str = "prv"
    rounds: list[int] = field(default_factory=list)  # server_round of each recorded round
    steps: list[int] = field(default_factory=list)  # DP-SGD steps of each recorded round

    @classmethod
    def plan(cls, *, target_epsilon: float, target_delta: float, num_records: int, batch_size: int,
             planned_steps: int, accountant: str = "prv") -> PrivacyLedger:
        """Calibrate a new ledger so ``planned_steps`` steps spend at most ``target_epsilon``."""
        if batch_size >= num_records:
            raise ConfigError(
                f"train.batch_size: expected < training records at the site ({num_records}) for "
                f"DP-SGD with Poisson sampling, got {batch_size}"
            )
        delta = resolve_delta(target_delta, num_records)
        sample_rate = batch_size / num_records
        sigma = calibrate_noise(target_epsilon, delta, sample_rate, planned_steps, accountant)
        return cls(noise_multiplier=sigma, sample_rate=sample_rate, delta=delta,
                   target_epsilon=target_epsilon, planned_steps=planned_steps, accountant=accountant)

    @property
    def total_steps(self) -> int:
        return sum(self.steps)

    def epsilon(self, extra_steps: int = 0) -> float:
        """Epsilon spent by all recorded steps plus ``extra_steps`` more."""
        return compute_epsilon(self.noise_multiplier, self.sample_rate, self.total_steps + extra_steps,
                               self.delta, self.accountant)

    def check_round(self, server_round: int, steps: int) -> float:
        """Epsilon after a round of ``steps`` more; raises if it would exceed the target.

        Raises:
            PrivacyBudgetExceededError: when the round would overshoot ``target_epsilon``.
        """
        after = self.epsilon(steps)
        if after > self.target_epsilon:
            raise PrivacyBudgetExceededError(
                f"privacy budget: round {server_round} would raise epsilon from "
                f"{self.epsilon():.3f} to {after:.3f}, above the site's target {self.target_epsilon:g} "
                f"(delta={self.delta:.3g}); the site refuses to train"
            )
        return after

    def record(self, server_round: int, steps: int) -> None:
        """Record a round's steps; call BEFORE training so a crash can never under-count."""
        self.rounds.append(server_round)
        self.steps.append(steps)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> PrivacyLedger:
        return cls(**{**raw, "rounds": list(raw["rounds"]), "steps": list(raw["steps"])})
