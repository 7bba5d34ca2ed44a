"""A site's privacy ledger: every DP release so far and the epsilon it costs (Opacus accountants).

The ledger composes over the site's WHOLE life: each run's noise multiplier is calibrated once for
all its planned rounds (and the evaluation queries it may make), every release is recorded before it
happens, and epsilon is always recomputed from the full history. Two kinds of release share it:

* a DP-SGD round: ``steps`` Poisson-sampled Gaussian steps (noise_multiplier, sample_rate);
* a Gaussian-mechanism query (held-out metrics): one step with sample_rate 1, i.e. the clipped
  sums of :func:`release_sums` with noise ``noise_multiplier x sensitivity``.

Opacus's accountants compose both kinds exactly as they compose DP-SGD steps.
:func:`charge_round` and :func:`charge_query` are pure: plan, check against the site's limits,
record, and return a new ledger (the caller saves it under a lock, see ``client/state.py``).
(Flower's Opacus example builds a new PrivacyEngine per round, so its epsilon covers one round only.)
"""

from __future__ import annotations

import copy
import functools
import math
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from common.config import SiteLimits
from common.errors import ConfigError, PrivacyBudgetExceededError

# Above this noise multiplier an update is pure noise: a budget that needs more counts as spent.
MAX_NOISE_MULTIPLIER = 100.0


DEFAULT_MAX_DELTA = 1e-5  # the automatic delta never exceeds this, however few records a site has


def default_delta(num_records: int) -> float:
    """delta = min(1e-5, 1 / (10 x records)): well below 1/n, and never above 1e-5."""
    if num_records < 1:
        raise ConfigError("privacy: a site needs at least one training record to set delta")
    return min(DEFAULT_MAX_DELTA, 1.0 / (10.0 * num_records))


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


def compact_history(history: list[tuple[float, float, int]]) -> list[tuple[float, float, int]]:
    """An equivalent, shorter history: equal (noise_multiplier, sample_rate) entries merged by summing steps,
    and all sample-rate-1 Gaussian queries merged into one with noise (sum of sigma^-2)^-1/2.

    Both are exact: composing k identical mechanisms is the mechanism with k steps, and k Gaussian
    mechanisms with noise sigma_i compose to one Gaussian mechanism with 1/sigma^2 = sum 1/sigma_i^2.
    Each distinct entry costs the PRV accountant about a second, so this keeps epsilon() fast.
    """
    merged: dict[tuple[float, float], int] = {}
    inverse_var = 0.0
    for sigma, rate, steps in history:
        if steps <= 0:
            continue
        if rate >= 1.0:
            inverse_var += steps / (sigma * sigma)
        else:
            merged[(sigma, rate)] = merged.get((sigma, rate), 0) + steps
    out = [(sigma, rate, steps) for (sigma, rate), steps in merged.items()]
    if inverse_var > 0:
        out.append((1.0 / math.sqrt(inverse_var), 1.0, 1))
    return out


def _epsilon(accountant: str, history: list[tuple[float, float, int]], delta: float) -> float:
    """Opacus's epsilon of ``history`` with its PRV or RDP accountant (the same float64 value, computed faster)."""
    if accountant not in ("prv", "rdp"):
        raise ConfigError(f"privacy.accountant: expected 'prv' or 'rdp', got {accountant!r}")
    history = compact_history(history)
    if not history:
        return 0.0
    if accountant == "rdp":
        return _rdp_epsilon(history, delta)
    acc = _memoised_prv_accountant()()
    acc.history = history
    return float(acc.get_epsilon(delta))


@functools.cache
def _memoised_prv_accountant() -> type:
    """Opacus's ``PRVAccountant`` whose discretization domain is sized from memoised RDP curves.

    Opacus sizes the domain with RDP epsilons (``compute_safe_domain_size``): the per-step RDP curve of
    each (noise, rate) in the history at ``RDPAccountant.DEFAULT_ALPHAS``, in pure Python, twice per
    call; that is ~80% of an epsilon's cost. The curve depends on (noise, rate) only, and N steps
    multiply it by N, so :func:`_rdp_per_step` computes it once per process; the rest is Opacus's own
    code and arithmetic in the same order: the same float64 epsilons (tests/unit/test_privacy.py
    compares them with ``PRVAccountant`` and ``RDPAccountant``). Imported here: opacus pulls in torch,
    and ledgers are also read by light tools.
    """
    import opacus
    from opacus.accountants import PRVAccountant
    from opacus.accountants.analysis.prv import Domain

    if not opacus.__version__.startswith("1.6."):  # the override below copies opacus 1.6's _get_domain
        return PRVAccountant  # any other version: Opacus's own accountant, unchanged

    class MemoisedPRVAccountant(PRVAccountant):  # type: ignore[misc]
        def _get_domain(  # opacus 1.6's, with compute_safe_domain_size's RDP epsilons from _rdp_epsilon
            self, prvs: list[Any], num_self_compositions: list[int], eps_error: float, delta_error: float
        ) -> Any:
            total = sum(num_self_compositions)
            entries = [(p.noise_multiplier, p.sample_rate, n) for p, n in zip(prvs, num_self_compositions, strict=True)]
            size = _rdp_epsilon(entries, delta_error / 4)
            for sigma, rate, _ in entries:
                size = max(size, _rdp_epsilon([(sigma, rate, 1)], delta_error / (8 * total)))
            size = max(size, eps_error) + 3
            mesh = eps_error / np.sqrt(total * np.log(12 / delta_error) / 2)
            return Domain.create_aligned(-size, size, mesh)

    return MemoisedPRVAccountant


@functools.lru_cache(maxsize=1024)
def _rdp_per_step(noise_multiplier: float, sample_rate: float) -> np.ndarray:
    """Opacus's RDP curve of one Poisson-sampled Gaussian step at ``RDPAccountant.DEFAULT_ALPHAS`` (read-only)."""
    from opacus.accountants import RDPAccountant
    from opacus.accountants.analysis import rdp

    curve = rdp.compute_rdp(
        q=sample_rate, noise_multiplier=noise_multiplier, steps=1, orders=RDPAccountant.DEFAULT_ALPHAS
    )
    curve.setflags(write=False)
    return curve


def _rdp_epsilon(history: list[tuple[float, float, int]], delta: float) -> float:
    """``RDPAccountant`` with ``history``: ``get_epsilon(delta)``, from memoised curves (``x * 1 * n == x * n``)."""
    from opacus.accountants import RDPAccountant
    from opacus.accountants.analysis import rdp

    curve = sum([_rdp_per_step(sigma, rate) * steps for sigma, rate, steps in history])
    eps, _ = rdp.get_privacy_spent(orders=RDPAccountant.DEFAULT_ALPHAS, rdp=curve, delta=delta)
    return float(eps)


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
    return _history_epsilon(((float(noise_multiplier), float(sample_rate), int(steps)),), delta, accountant)


def calibrate_noise(
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: str = "prv",
    prior: list[tuple[float, float, int]] | None = None,
    epsilon_tolerance: float = 0.01,
    max_noise_multiplier: float = MAX_NOISE_MULTIPLIER,
) -> float:
    """Smallest noise multiplier whose epsilon, over ``prior`` steps plus ``steps`` more, is within target.

    Like Opacus's ``get_noise_multiplier``, but composing with the releases a site has already made
    (``prior``: (noise_multiplier, sample_rate, steps) entries), so a site's budget holds over its whole
    life, not just one run. A root search (Illinois regula falsi on log sigma vs log epsilon, bracketed
    first) needs about a third of bisection's accountant calls, which cost ~1 s each for PRV.
    The result's epsilon is in [target - tolerance, target], tolerance = max(epsilon_tolerance, 0.2% of target).

    Raises:
        PrivacyBudgetExceededError: when no noise multiplier up to ``max_noise_multiplier`` allows ``steps`` more.
    """
    history = tuple((float(s), float(q), int(n)) for s, q, n in (prior or []) if n > 0)
    tolerance = max(epsilon_tolerance, 0.002 * target_epsilon)

    def eps(sigma: float) -> float:  # memoised: the same plan at the same site calibrates to the same sigmas
        return _history_epsilon((*history, (float(sigma), float(sample_rate), int(steps))), delta, accountant)

    def refuse() -> PrivacyBudgetExceededError:
        spent = compute_history_epsilon(list(history), delta, accountant)
        return PrivacyBudgetExceededError(
            f"privacy budget: {spent:.3f} of epsilon {target_epsilon:g} is already spent or reserved; no noise "
            f"multiplier up to {max_noise_multiplier:g} allows {steps} more steps"
        )

    high = min(2.0, max_noise_multiplier)
    e_high = eps(high)
    while e_high > target_epsilon:  # bracket from above: eps(high) <= target
        if high >= max_noise_multiplier:
            raise refuse()
        high = min(2 * high, max_noise_multiplier)
        e_high = eps(high)
    if e_high >= target_epsilon - tolerance:
        return high
    low = high / 2
    e_low = eps(low)
    while e_low <= target_epsilon:  # bracket from below: eps(low) > target
        if e_low >= target_epsilon - tolerance:
            return low
        high, e_high = low, e_low
        low /= 2
        e_low = eps(low)
    # Illinois regula falsi on f(x) = log eps(e^x) - log target, which is close to linear in x.
    x_lo, x_hi = math.log(low), math.log(high)
    f_lo, f_hi = math.log(e_low / target_epsilon), math.log(e_high / target_epsilon)
    side = 0
    for _ in range(40):
        x = (x_lo * f_hi - x_hi * f_lo) / (f_hi - f_lo)
        value = eps(math.exp(x))
        if target_epsilon - tolerance <= value <= target_epsilon:
            return math.exp(x)
        f = math.log(value / target_epsilon)
        if f > 0:
            x_lo, f_lo = x, f
            if side == -1:
                f_hi /= 2
            side = -1
        else:
            x_hi, f_hi = x, f
            if side == 1:
                f_lo /= 2
            side = 1
        if x_hi - x_lo < 1e-5:  # the tolerance band is narrower than the accountant's resolution
            break
    return math.exp(x_hi)


def compute_history_epsilon(history: list[tuple[float, float, int]], delta: float, accountant: str = "prv") -> float:
    """Epsilon of a whole history of (noise_multiplier, sample_rate, steps) entries."""
    return _history_epsilon(tuple(sorted(compact_history(history))), delta, accountant)


@functools.lru_cache(maxsize=4096)
def _history_epsilon(history: tuple[tuple[float, float, int], ...], delta: float, accountant: str) -> float:
    # A pure function of its arguments, memoised per process: each PRV/RDP evaluation costs 0.1-1 s.
    if not history:
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Opacus warns about secure RNG; not a privacy issue here
        return _epsilon(accountant, list(history), delta)


@dataclass(frozen=True)
class RunRequest:
    """What the coordinator's plan asks of the site for one run (validated against the site's limits)."""

    run_id: str
    num_units: int  # privacy units at the site (training records, or patients)
    batch_size: int  # expected batch size (units per Poisson batch)
    planned_steps: int  # DP-SGD steps over all the run's rounds
    target_epsilon: float  # epsilon the plan asks the run to spend (capped by max_run_epsilon)
    eval_noise_multiplier: float  # noise multiplier of each evaluation query (the site's setting)


@dataclass(frozen=True)
class Charge:
    """One accepted release: what it costs and what the site's budget still allows afterwards."""

    run_id: str
    server_round: int
    kind: str  # "train" (DP-SGD round) or "evaluate" (Gaussian query)
    noise_multiplier: float
    sample_rate: float
    steps: int
    attempt: int  # 0 for the first charge of this (run, round, kind), 1 for a retry, ...
    epsilon_before: float
    epsilon_after: float
    target_epsilon: float  # the site's lifetime budget
    run_epsilon_cap: float  # the most this run's own releases may spend
    delta: float

    @property
    def remaining(self) -> float:
        """Lifetime epsilon left after this release."""
        return max(0.0, self.target_epsilon - self.epsilon_after)


@dataclass
class PrivacyLedger:
    """A site's DP history over its whole life; epsilon is always recomputed from all of it.

    ``entries`` hold every release as accountant parameters (noise_multiplier, sample_rate, steps),
    so ``epsilon()`` needs nothing else. ``runs`` hold each run's calibration, fixed on first use.
    """

    target_epsilon: float  # the site's lifetime budget (its site.yaml wins; may be lowered or raised there)
    delta: float  # fixed for the site's life when the ledger is created
    accountant: str = "prv"
    unit: str = "record"  # privacy unit the history was accounted in; fixed for life
    runs: dict[str, dict[str, float]] = field(default_factory=dict)  # run id -> calibration
    entries: list[dict[str, Any]] = field(default_factory=list)  # one per release, see Charge

    @classmethod
    def create(
        cls,
        *,
        target_epsilon: float,
        target_delta: float,
        num_records: int,
        accountant: str = "prv",
        unit: str = "record",
    ) -> PrivacyLedger:
        """A new, empty ledger; delta is fixed for the site's life (see :func:`resolve_delta`)."""
        return cls(
            target_epsilon=target_epsilon,
            delta=resolve_delta(target_delta, num_records),
            accountant=accountant,
            unit=unit,
        )

    def history(self) -> list[tuple[float, float, int]]:
        """Recorded releases as accountant history entries."""
        return [(float(e["noise_multiplier"]), float(e["sample_rate"]), int(e["steps"])) for e in self.entries]

    @property
    def total_steps(self) -> int:
        """DP-SGD steps over the site's life (queries not counted)."""
        return sum(int(e["steps"]) for e in self.entries if e["kind"] == "train")

    def epsilon(self) -> float:
        """Epsilon spent by everything recorded."""
        return compute_history_epsilon(self.history(), self.delta, self.accountant)

    def queries(self, run_id: str) -> int:
        """Evaluation queries charged to ``run_id`` so far."""
        return sum(1 for e in self.entries if e["run"] == run_id and e["kind"] == "evaluate")

    def check_compatible(self, *, accountant: str, unit: str) -> None:
        """Refuse to account with another accountant or privacy unit than the history was kept in.

        Raises:
            ConfigError: naming the setting, the ledger's value and the configured one.
        """
        for key, have, want in (("accountant", self.accountant, accountant), ("unit", self.unit, unit)):
            if have != want:
                raise ConfigError(
                    f"privacy.{key}: the site's ledger was kept with {key} {have!r}, the site now asks {want!r}; "
                    f"epsilon cannot be composed across them: set privacy.{key}: {have} again, or start a new "
                    "state_dir (a new budget only if your privacy officer agrees)"
                )

    def mark_released(self, run_id: str, server_round: int, input_sha256: str) -> None:
        """Note that the last attempt at this round released its update, trained from ``input_sha256``."""
        for entry in reversed(self.entries):
            if entry["run"] == run_id and entry["server_round"] == server_round and entry["kind"] == "train":
                entry["released"] = input_sha256
                return
        raise KeyError(f"round {server_round} of run {run_id} was never recorded")

    def was_released(self, run_id: str, server_round: int, input_sha256: str) -> bool:
        """True when this round, started from the same global adapter, already released an update.

        Sending that same update again is post-processing of a released output: no new privacy cost.
        """
        return any(
            e["run"] == run_id
            and e["server_round"] == server_round
            and e["kind"] == "train"
            and e.get("released") == input_sha256
            for e in self.entries
        )

    def to_dict(self) -> dict[str, Any]:
        return {"version": LEDGER_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> PrivacyLedger:
        """Inverse of :meth:`to_dict`.

        Raises:
            KeyError, TypeError, ValueError: on a malformed ledger (the caller names the file).
        """
        if int(raw.get("version", 0)) != LEDGER_VERSION:
            raise ValueError(f"ledger version {raw.get('version')!r}, expected {LEDGER_VERSION}")
        entries = [dict(e) for e in raw["entries"]]
        for e in entries:
            for key in ("noise_multiplier", "sample_rate"):
                e[key] = float(e[key])
            e["steps"] = int(e["steps"])
            if e["kind"] not in ("train", "evaluate"):
                raise ValueError(f"ledger entry kind {e['kind']!r}")
        ledger = cls(
            target_epsilon=float(raw["target_epsilon"]),
            delta=float(raw["delta"]),
            accountant=str(raw["accountant"]),
            unit=str(raw["unit"]),
            runs={str(k): {kk: float(vv) for kk, vv in v.items()} for k, v in dict(raw["runs"]).items()},
            entries=entries,
        )
        if not (0.0 < ledger.delta < 1.0 and ledger.target_epsilon > 0):
            raise ValueError("ledger delta or target_epsilon out of range")
        return ledger


LEDGER_VERSION = 2  # 2: every entry carries its own accountant parameters and kind


def _calibrate_run(ledger: PrivacyLedger, run: RunRequest, limits: SiteLimits) -> dict[str, float]:
    """Fix a run's DP-SGD noise at its first release; refuse a run the site's limits do not allow."""
    if limits.max_run_epsilon and run.target_epsilon > limits.max_run_epsilon:
        raise PrivacyBudgetExceededError(
            f"privacy.target_epsilon: the plan asks {run.target_epsilon:g} for this run, above the site's cap "
            f"limits.max_run_epsilon={limits.max_run_epsilon:g}"
        )
    if run.batch_size >= run.num_units:
        raise ConfigError(
            f"train.batch_size: expected < training units at the site ({run.num_units}) for "
            f"DP-SGD with Poisson sampling, got {run.batch_size}"
        )
    sample_rate = run.batch_size / run.num_units
    if sample_rate > limits.max_sample_rate:
        raise ConfigError(
            f"train.batch_size: the plan asks {run.batch_size}, a sampling rate of {sample_rate:.3f} over the site's "
            f"{run.num_units} units, above the site's cap limits.max_sample_rate={limits.max_sample_rate:g} "
            f"(batch_size <= {int(limits.max_sample_rate * run.num_units)})"
        )
    prior = ledger.history()
    spent = compute_history_epsilon(prior, ledger.delta, ledger.accountant)
    reserve = [(run.eval_noise_multiplier, 1.0, limits.max_eval_queries)] if limits.max_eval_queries else []
    left = (
        f"{spent:.3f} of the site's lifetime epsilon {ledger.target_epsilon:g} is spent, "
        f"{max(0.0, ledger.target_epsilon - spent):.3f} left"
    )
    how = (
        "to proceed: the site may raise privacy.target_epsilon in its site.yaml (its privacy officer's call), "
        "or the coordinator may plan fewer rounds or local steps"
    )
    # Two caps: the run's own releases spend at most what the plan asks for it, and the site's whole
    # history at most its lifetime budget. Each is checked on its own at every charge, so runs that
    # train at the same site at once cannot push each other over their run caps.
    try:
        sigma = calibrate_noise(
            min(run.target_epsilon, ledger.target_epsilon),
            ledger.delta,
            sample_rate,
            run.planned_steps,
            ledger.accountant,
            prior=reserve,
            max_noise_multiplier=limits.max_noise_multiplier,
        )
        if spent > 0 and spent + run.target_epsilon > ledger.target_epsilon:  # the lifetime cap binds too
            sigma = max(
                sigma,
                calibrate_noise(
                    ledger.target_epsilon,
                    ledger.delta,
                    sample_rate,
                    run.planned_steps,
                    ledger.accountant,
                    prior=prior + reserve,
                    max_noise_multiplier=limits.max_noise_multiplier,
                ),
            )
    except PrivacyBudgetExceededError:
        raise PrivacyBudgetExceededError(
            f"privacy budget: {left}; {run.planned_steps} steps (and {limits.max_eval_queries} evaluation queries "
            f"reserved) would need a noise multiplier above the site's cap limits.max_noise_multiplier="
            f"{limits.max_noise_multiplier:g}: training would learn only noise; {how}"
        ) from None
    sigma = max(sigma, limits.min_noise_multiplier)
    return {
        "noise_multiplier": sigma,
        "sample_rate": sample_rate,
        "planned_steps": float(run.planned_steps),
        "target_epsilon": min(run.target_epsilon, ledger.target_epsilon),
        "epsilon_at_start": spent,
        "eval_noise_multiplier": run.eval_noise_multiplier,
    }


def _charge(
    ledger: PrivacyLedger, run: RunRequest, server_round: int, kind: str, limits: SiteLimits, steps: int
) -> tuple[PrivacyLedger, Charge]:
    new = copy.deepcopy(ledger)
    if run.run_id not in new.runs:
        new.runs[run.run_id] = _calibrate_run(new, run, limits)
    cal = new.runs[run.run_id]
    if kind == "train":
        noise, rate = cal["noise_multiplier"], cal["sample_rate"]
    else:  # a Gaussian query: one step at sample rate 1, with the noise fixed when the run was calibrated
        noise, rate, steps = cal["eval_noise_multiplier"], 1.0, 1
    release = (noise, rate, steps)
    before = new.epsilon()
    after = compute_history_epsilon([*new.history(), release], new.delta, new.accountant)
    own = [(e["noise_multiplier"], e["sample_rate"], e["steps"]) for e in new.entries if e["run"] == run.run_id]
    run_after = compute_history_epsilon([*own, release], new.delta, new.accountant)
    cap = cal["target_epsilon"]
    what = f"round {server_round} {'training' if kind == 'train' else 'evaluation'}"
    if after > new.target_epsilon + 1e-9:
        raise PrivacyBudgetExceededError(
            f"privacy budget: {what} would raise the site's epsilon from {before:.3f} to {after:.3f}, above its "
            f"lifetime budget {new.target_epsilon:g} (delta={new.delta:.3g}); the site refuses it"
        )
    if run_after > cap + 1e-9:
        raise PrivacyBudgetExceededError(
            f"privacy budget: {what} would raise run {run.run_id!r}'s epsilon to {run_after:.3f}, above the "
            f"{cap:g} this run may spend; the site refuses it"
        )
    attempt = sum(
        1 for e in new.entries if e["run"] == run.run_id and e["server_round"] == server_round and e["kind"] == kind
    )
    new.entries.append(
        {
            "run": run.run_id,
            "server_round": server_round,
            "kind": kind,
            "noise_multiplier": noise,
            "sample_rate": rate,
            "steps": steps,
            "released": "",
        }
    )
    return new, Charge(
        run.run_id, server_round, kind, noise, rate, steps, attempt, before, after, new.target_epsilon, cap, new.delta
    )


def charge_round(
    ledger: PrivacyLedger, run: RunRequest, server_round: int, steps: int, limits: SiteLimits
) -> tuple[PrivacyLedger, Charge]:
    """Plan, check and record one DP-SGD round; pure (returns a new ledger, ``ledger`` is untouched).

    The run is calibrated on its first release (training or evaluation): the smallest noise multiplier
    such that the run's planned steps plus its reserved evaluation queries spend at most
    ``run.target_epsilon`` and, composed with the site's history, at most its lifetime budget; then
    raised to ``limits.min_noise_multiplier`` if below. Every charge checks both caps again.

    Raises:
        PrivacyBudgetExceededError: the run asks more than ``limits.max_run_epsilon``, needs noise above
            ``limits.max_noise_multiplier``, or this round would pass the run's cap. The message says what
            is left and how to proceed.
        ConfigError: the batch is not smaller than the data, or samples above ``limits.max_sample_rate``.
    """
    if steps < 1:
        raise ConfigError(f"train.local_steps: expected >= 1, got {steps}")
    return _charge(ledger, run, server_round, "train", limits, steps)


def charge_query(
    ledger: PrivacyLedger, run: RunRequest, server_round: int, limits: SiteLimits
) -> tuple[PrivacyLedger, Charge]:
    """Plan, check and record one Gaussian-mechanism query (an evaluate reply); pure.

    The query releases sums through :func:`release_sums` with the returned ``Charge.noise_multiplier``
    (the run's ``eval_noise_multiplier``, fixed at calibration); to the accountant it is one step at
    sample rate 1.

    Raises:
        PrivacyBudgetExceededError: past ``limits.max_eval_queries`` queries in this run, or past the run's cap.
    """
    if ledger.queries(run.run_id) >= limits.max_eval_queries:
        raise PrivacyBudgetExceededError(
            f"limits.max_eval_queries: the coordinator asked for evaluation query "
            f"{ledger.queries(run.run_id) + 1} of run {run.run_id!r}, above the site's cap of "
            f"{limits.max_eval_queries} per run"
        )
    return _charge(ledger, run, server_round, "evaluate", limits, 1)


def clip_contributions(values: np.ndarray, bound: float) -> np.ndarray:
    """Scale each row of ``values`` (one privacy unit's contribution, shape [units, ...]) to L2 norm <= bound."""
    values = np.asarray(values, dtype=np.float64)
    flat = values.reshape(len(values), -1)
    norms = np.linalg.norm(flat, axis=1, keepdims=True)
    scale = np.minimum(1.0, bound / np.maximum(norms, 1e-12))
    return (flat * scale).reshape(values.shape)


def joint_sensitivity(bounds: Mapping[str, float]) -> float:
    """L2 sensitivity of several sums released together, each unit adding at most ``bounds[k]`` to sum k."""
    return float(math.sqrt(sum(b * b for b in bounds.values())))


def release_sums(
    sums: Mapping[str, np.ndarray], sensitivity: float, noise_multiplier: float, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """The Gaussian mechanism: each sum plus N(0, (noise_multiplier x sensitivity)^2) per coordinate.

    ``sensitivity`` must bound the L2 norm of ONE privacy unit's contribution to all of ``sums``
    jointly (clip first: :func:`clip_contributions`; for several sums :func:`joint_sensitivity`).
    Released this way, ``sums`` cost the site one accountant step (noise_multiplier, sample rate 1):
    charge it with :func:`charge_query` BEFORE calling this. Counts (correct answers, confusion-matrix
    cells) are sums with a per-unit bound of 1 (a unit adds one to one cell).

    Raises:
        ConfigError: on a non-positive sensitivity or noise multiplier (a release must be noised).
    """
    if not sensitivity > 0 or not noise_multiplier > 0:
        raise ConfigError(
            f"release_sums: sensitivity and noise_multiplier must be > 0, got {sensitivity!r} and {noise_multiplier!r}"
        )
    std = noise_multiplier * sensitivity
    return {k: np.asarray(v, dtype=np.float64) + rng.normal(0.0, std, size=np.shape(v)) for k, v in sums.items()}
