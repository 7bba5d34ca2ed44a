"""``fedcare plan``: which batch size and step count let DP-SGD learn at a site, from real Opacus accounting.

For each (expected batch B, local steps per round) choice, the noise multiplier sigma is calibrated
(``common.privacy.calibrate_noise``, the same PRV/RDP accountant the sites use) so that all
``rounds x local_steps`` steps at sample rate q = B / records spend the target epsilon. Two ratios
say how much noise the model sees, in units of the clipping bound C:

- ``noise_per_step`` = sigma / B: per-coordinate noise std of one averaged, noised gradient, relative
  to the largest per-example signal C (the averaged clipped gradient has norm <= C).
- ``noise_per_run`` = sigma / (B sqrt(T)) over all T steps: noise adds up as sqrt(T), signal as T, so
  this is the noise-to-signal of the whole run's summed update. Lower is better.

The recommendation is the lowest ``noise_per_run`` whose compute (B x T examples) fits the budget
(by default what the configuration already spends: the same time on the same machine); ties go to
less compute. In the regime where sigma grows linearly in q sqrt(T), every choice with the
same compute has the same ``noise_per_run``; sigma cannot fall much below ~0.5, so small batches waste
budget, which is why the recommendation favours large expected batches and few steps.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from common.errors import ConfigError
from common.privacy import calibrate_noise, resolve_delta

BATCH_CHOICES = (8, 16, 32, 64, 128)
STEP_CHOICES = (5, 10, 20)


@dataclass(frozen=True)
class PlanOption:
    """One (batch, steps) choice and what DP-SGD costs with it."""

    batch_size: int  # expected (Poisson) batch
    local_steps: int  # steps per round
    sample_rate: float  # q = batch_size / records
    noise_multiplier: float  # sigma calibrated to the target over all rounds
    noise_per_step: float  # sigma / batch_size
    noise_per_run: float  # sigma / (batch_size sqrt(total steps))
    examples: int  # batch_size x total steps: the compute (examples processed)
    epochs: float  # examples / records


def plan_options(
    records: int,
    target_epsilon: float,
    num_rounds: int,
    *,
    target_delta: float = 0.0,
    accountant: str = "prv",
    batch_choices: tuple[int, ...] = BATCH_CHOICES,
    step_choices: tuple[int, ...] = STEP_CHOICES,
) -> list[PlanOption]:
    """Every (batch, steps) choice with batch <= records / 2, calibrated with the site's accountant.

    Raises:
        ConfigError: when ``records`` is too small for any batch choice, or a value is out of range.
    """
    if records < 4:
        raise ConfigError(f"plan: records: expected >= 4 training records, got {records}")
    if target_epsilon <= 0 or num_rounds < 1:
        raise ConfigError(f"plan: expected epsilon > 0 and rounds >= 1, got {target_epsilon} and {num_rounds}")
    delta = resolve_delta(target_delta, records)
    out = []
    for batch in batch_choices:
        if batch > records / 2:
            continue
        q = batch / records
        for steps in step_choices:
            total = steps * num_rounds
            sigma = calibrate_noise(target_epsilon, delta, q, total, accountant)
            out.append(
                PlanOption(
                    batch,
                    steps,
                    q,
                    sigma,
                    sigma / batch,
                    sigma / (batch * math.sqrt(total)),
                    batch * total,
                    batch * total / records,
                )
            )
    if not out:
        raise ConfigError(f"plan: records: {records} is too few for a batch of {min(batch_choices)}")
    return out


def recommend(options: list[PlanOption], max_examples: int) -> PlanOption:
    """Lowest whole-run noise-to-signal within ``max_examples`` of compute (else the cheapest option)."""
    fitting = [o for o in options if o.examples <= max_examples] or [min(options, key=lambda o: o.examples)]
    return min(fitting, key=lambda o: (round(o.noise_per_run, 6), o.examples))


def format_plan(
    options: list[PlanOption],
    chosen: PlanOption,
    records: int,
    target_epsilon: float,
    num_rounds: int,
    max_examples: int,
) -> str:
    """The console table, with the recommended row marked."""
    lines = [
        f"{records} training records per site, epsilon {target_epsilon:g} over {num_rounds} rounds; "
        f"compute budget {max_examples} examples per site",
        f"{'batch':>6} {'steps/rnd':>9} {'q':>7} {'sigma':>7} {'sigma/B':>8} {'run noise':>9} "
        f"{'examples':>8} {'epochs':>6}",
    ]
    for o in sorted(options, key=lambda o: (o.batch_size, o.local_steps)):
        mark = "  <- recommended" if o == chosen else ("" if o.examples <= max_examples else "  (over budget)")
        lines.append(
            f"{o.batch_size:>6} {o.local_steps:>9} {o.sample_rate:>7.4f} {o.noise_multiplier:>7.3f} "
            f"{o.noise_per_step:>8.4f} {o.noise_per_run:>9.5f} {o.examples:>8} {o.epochs:>6.2f}{mark}"
        )
    lines.append(
        f"recommended: train.batch_size={chosen.batch_size} train.local_steps={chosen.local_steps} "
        f"(noise multiplier {chosen.noise_multiplier:.3f}, sigma/B {chosen.noise_per_step:.4f})"
    )
    return "\n".join(lines)


def plan_to_dict(options: list[PlanOption], chosen: PlanOption) -> dict[str, Any]:
    return {"options": [asdict(o) for o in options], "recommended": asdict(chosen)}
