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

# Above this noise multiplier an update is pure noise: a budget that needs more counts as spent.
MAX_NOISE_MULTIPLIER = 100.0


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
    target_epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str = "prv",
    prior: list[tuple[float, float, int]] | None = None, epsilon_tolerance: float = 0.01,
) -> float:
    """Smallest noise multiplier whose epsilon, over ``prior`` steps plus ``steps`` more, is within target.

    Bisection on the accountant, as Opacus's ``get_noise_multiplier`` does, but composing with the
    steps a site has already taken (``prior``: (noise_multiplier, sample_rate, steps) entries), so a
    site's budget holds over its whole life, not just one run.

    Raises:
        PrivacyBudgetExceededError: when ``prior`` alone leaves no room for ``steps`` more.
    """
    history = list(prior or [])

    def eps(sigma: float) -> float:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(_accountant(accountant, [*history, (sigma, sample_rate, steps)]).get_epsilon(delta))

    low, high = 0.0, 10.0
    while eps(high) > target_epsilon:
        high *= 2
        if high > MAX_NOISE_MULTIPLIER:
            spent = compute_history_epsilon(history, delta, accountant)
            raise PrivacyBudgetExceededError(
                f"privacy budget: {spent:.3f} of the site's epsilon {target_epsilon:g} is already spent; "
                f"no noise level allows {steps} more steps"
            )
    while True:
        mid = (low + high) / 2
        value = eps(mid)
        if value < target_epsilon:
            high = mid
            if value > target_epsilon - epsilon_tolerance:
                return high
        else:
            low = mid
        if high - low < 1e-4:  # the tolerance band is narrower than the accountant's resolution
            return high


def compute_history_epsilon(history: list[tuple[float, float, int]], delta: float, accountant: str = "prv") -> float:
    """Epsilon of a whole DP-SGD history of (noise_multiplier, sample_rate, steps) entries."""
    history = [h for h in history if h[2] > 0]
    if not history:
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(_accountant(accountant, history).get_epsilon(delta))


@dataclass
class PrivacyLedger:
    """A site's DP-SGD history over its whole life; epsilon is always recomputed from all of it.

    Each run is calibrated once (``plan_run``): its noise multiplier makes the site's previous
    history plus the run's planned steps spend at most ``target_epsilon``. Rounds are recorded
    before they train.
    """

    target_epsilon: float
    delta: float
    accountant: str = "prv"
    runs: dict[str, dict[str, float]] = field(default_factory=dict)  # run id -> calibration
    rounds: list[dict[str, Any]] = field(default_factory=list)  # {"run", "server_round", "steps"}

    @classmethod
    def create(cls, *, target_epsilon: float, target_delta: float, num_records: int,
               accountant: str = "prv") -> PrivacyLedger:
        """A new, empty ledger; delta is fixed for the site's life (see :func:`resolve_delta`)."""
        return cls(target_epsilon=target_epsilon, delta=resolve_delta(target_delta, num_records),
                   accountant=accountant)

    def plan_run(self, run_id: str, *, num_records: int, batch_size: int, planned_steps: int) -> dict[str, float]:
        """The run's calibration (noise multiplier, sample rate), computed on first use.

        Raises:
            ConfigError: when the batch is not smaller than the data (Poisson sampling needs q < 1).
            PrivacyBudgetExceededError: when earlier runs left no budget for this one.
        """
        if run_id not in self.runs:
            if batch_size >= num_records:
                raise ConfigError(
                    f"train.batch_size: expected < training records at the site ({num_records}) for "
                    f"DP-SGD with Poisson sampling, got {batch_size}"
                )
            sample_rate = batch_size / num_records
            sigma = calibrate_noise(self.target_epsilon, self.delta, sample_rate, planned_steps, self.accountant,
                                    prior=self.history())
            self.runs[run_id] = {"noise_multiplier": sigma, "sample_rate": sample_rate,
                                 "planned_steps": float(planned_steps)}
        return self.runs[run_id]

    def history(self) -> list[tuple[float, float, int]]:
        """Recorded steps as accountant history entries."""
        out: list[tuple[float, float, int]] = []
        for r in self.rounds:
            cal = self.runs[r["run"]]
            out.append((cal["noise_multiplier"], cal["sample_rate"], int(r["steps"])))
        return out

    @property
    def total_steps(self) -> int:
        return sum(int(r["steps"]) for r in self.rounds)

    def epsilon(self, run_id: str | None = None, extra_steps: int = 0) -> float:
        """Epsilon spent by all recorded steps, plus ``extra_steps`` more of run ``run_id``."""
        history = self.history()
        if extra_steps:
            cal = self.runs[run_id or ""]
            history.append((cal["noise_multiplier"], cal["sample_rate"], extra_steps))
        return compute_history_epsilon(history, self.delta, self.accountant)

    def check_round(self, run_id: str, server_round: int, steps: int) -> float:
        """Epsilon after a round of ``steps`` more; raises if it would exceed the target.

        Raises:
            PrivacyBudgetExceededError: when the round would overshoot ``target_epsilon``.
        """
        before = self.epsilon()
        after = self.epsilon(run_id, steps)
        if after > self.target_epsilon:
            raise PrivacyBudgetExceededError(
                f"privacy budget: round {server_round} would raise epsilon from {before:.3f} to {after:.3f}, "
                f"above the site's target {self.target_epsilon:g} (delta={self.delta:.3g}); the site refuses to train"
            )
        return after

    def record(self, run_id: str, server_round: int, steps: int) -> None:
        """Record a round's steps; call BEFORE training so a crash can never under-count."""
        self.rounds.append({"run": run_id, "server_round": server_round, "steps": steps, "released": ""})

    def mark_released(self, run_id: str, server_round: int, input_sha256: str) -> None:
        """Note that the last attempt at this round released its update, trained from ``input_sha256``."""
        for entry in reversed(self.rounds):
            if entry["run"] == run_id and entry["server_round"] == server_round:
                entry["released"] = input_sha256
                return
        raise KeyError(f"round {server_round} of run {run_id} was never recorded")

    def was_released(self, run_id: str, server_round: int, input_sha256: str) -> bool:
        """True when this round, started from the same global adapter, already released an update.

        Sending that same update again is post-processing of a released output: no new privacy cost.
        """
        return any(e["run"] == run_id and e["server_round"] == server_round and e.get("released") == input_sha256
                   for e in self.rounds)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> PrivacyLedger:
        return cls(target_epsilon=float(raw["target_epsilon"]), delta=float(raw["delta"]),
                   accountant=str(raw["accountant"]),
                   runs={str(k): {kk: float(vv) for kk, vv in v.items()} for k, v in dict(raw["runs"]).items()},
                   rounds=[dict(r) for r in raw["rounds"]])
