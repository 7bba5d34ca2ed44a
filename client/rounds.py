"""What a site does with one round message: check the plan, charge the ledger, train or evaluate, release.

Every site, simulated or deployed, resolves the same way (:func:`resolve_site`): a ``site.yaml`` (the
daemon's own, named by ``site-config`` in its node config, or the one the simulation wrote for
virtual hospital ``partition-id`` into the run directory), its state dir (ledger, released updates)
and its egress log. What leaves follows the release rule of ``common.wire``: LoRA tensors trained
under the site's DP budget, data-independent numbers, and held-out metrics only as a clipped,
Gaussian-noised sum charged to the same ledger.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from client import runtime
from client.state import SiteState
from client.train import DPSettings, evaluate_example_losses, train_round
from common.adapters import adapter_arrays, load_adapter_arrays
from common.audit import EgressLog
from common.config import PrivacyConfig, SitePlan
from common.errors import ConfigError, FedcareError
from common.evaluation import EvalSettings, item_record, score_task, site_task, summarize_scores, task_sums
from common.privacy import Charge, RunRequest, charge_query, charge_round, joint_sensitivity, release_sums
from common.site import SITE_FILE, SiteConfig, check_plan, load_site_config, site_model
from common.task_release import TaskSums, release_metrics
from common.wire import NUM_EXAMPLES

log = logging.getLogger("fedcare.site")

Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class Site:
    """One site: its own configuration, state dir and egress log."""

    config: SiteConfig
    state: SiteState
    egress: EgressLog

    @property
    def index(self) -> int:
        return self.config.site_index


@dataclass(frozen=True)
class Release:
    """What a site sends for one message: tensors (train only) and numbers."""

    arrays: Arrays | None
    metrics: dict[str, Any]


@functools.lru_cache(maxsize=64)
def _site_config(path: str, mtime_ns: int) -> SiteConfig:  # re-read when the operator edits site.yaml
    return load_site_config(path)


def resolve_site(node_config: Mapping[str, Any], sites_dir: Path | None = None) -> Site:
    """The site of this node, from its site.yaml (the only source of site-local values).

    Raises:
        FedcareError: when the node config names no site.yaml and no simulated site.
    """
    if "site-config" in node_config:
        path = Path(str(node_config["site-config"]))
    elif sites_dir is not None and "partition-id" in node_config:
        path = sites_dir / f"site-{int(node_config['partition-id'])}" / SITE_FILE
    else:
        raise FedcareError("site: node config names no 'site-config' (a site daemon's site.yaml)")
    try:
        mtime = path.stat().st_mtime_ns
    except OSError as err:
        raise FedcareError(f"site: cannot read {path} ({type(err).__name__})") from None
    cfg = _site_config(str(path.resolve()), mtime)
    state = SiteState(cfg.state_dir)
    return Site(cfg, state, EgressLog(state.egress_path))


def train(site: Site, plan: SitePlan, received: Arrays) -> Release:
    """One DP-SGD round on the site's records from the received global adapter."""
    cfg = site.config
    check_plan(plan, cfg)
    model, tokenizer = runtime.model_for(site_model(plan, cfg), plan.lora, plan.seed)
    data = runtime.examples_for(cfg.data, cfg.data_slot, cfg.data_sites, plan, tokenizer)
    received_sha = _sha256(received)
    privacy = cfg.privacy
    units = _units(privacy, data.train_units)
    num_units = len(set(units)) if units is not None else len(data.train)
    dp: DPSettings | None = None
    charge: Charge | None = None
    if privacy.enabled:
        run = _run_request(plan, privacy, num_units)

        def plan_check_record(ledger):  # noqa: ANN001, ANN202 - under the ledger's lock
            if (
                ledger.was_released(plan.run_id, plan.server_round, received_sha)
                and site.state.find_released(plan.run_id, plan.server_round, received_sha) is not None
            ):
                return ledger, None
            return charge_round(ledger, run, plan.server_round, plan.train.local_steps, cfg.limits)

        charge = site.state.update_ledger(privacy, num_units, plan_check_record)
        if charge is None:
            arrays, metrics = site.state.find_released(plan.run_id, plan.server_round, received_sha)  # type: ignore[misc]
            log.info(
                "site %d round %d: asked again after a coordinator restart; re-sending the update "
                "already released (no new privacy cost)",
                site.index,
                plan.server_round,
            )
            return Release(arrays, _typed(metrics))
        log.info(
            "site %d run %s round %d: noise multiplier %.3f, epsilon %.3f -> %.3f of lifetime %g "
            "(%.3f left after this round)",
            site.index,
            plan.run_id,
            plan.server_round,
            charge.noise_multiplier,
            charge.epsilon_before,
            charge.epsilon_after,
            charge.target_epsilon,
            charge.remaining,
        )
        dp = DPSettings(
            charge.noise_multiplier,
            privacy.max_grad_norm,
            charge.sample_rate,
            noise_seed=_seed(privacy, plan, site.index, "train", charge.attempt),
        )
    load_adapter_arrays(model, received)

    def progress(step: int, total: int, loss: float) -> None:
        if step == total or step % max(1, total // 5) == 0:
            log.info("site %d round %d step %d/%d loss %.4f", site.index, plan.server_round, step, total, loss)

    rng_seed = (
        _seed(privacy, plan, site.index, "sample", charge.attempt)
        if charge
        else plan.seed * 1_000_003 + site.index * 1009 + plan.server_round
    )
    precision = runtime.precision_for(plan.model)
    result = train_round(
        model,
        data.train,
        plan.train,
        precision=precision,
        pad_id=tokenizer.pad_token_id,
        dp=dp,
        rng=np.random.default_rng(rng_seed),
        progress=progress,
        units=units,
        proximal_mu=plan.proximal_mu,
    )
    # Record-dependent numbers (loss of the secret batches, tokens, examples, time, identifiers
    # scrubbed) stay in the site's log: they are not covered by the budget (common.wire).
    log.info(
        "site %d (%s) round %d done: train loss %.4f, %d examples, %d tokens, %.1f s, %d identifiers scrubbed",
        site.index,
        data.name,
        plan.server_round,
        result.train_loss,
        result.examples_seen,
        result.tokens,
        result.seconds,
        sum(data.phi_counts.values()),
    )
    metrics: dict[str, Any] = {
        NUM_EXAMPLES: len(data.train),
        "site_index": site.index,
        "steps": result.steps,
        "update_norm": result.update_norm,
        "sample_rate": dp.sample_rate if dp else min(1.0, plan.train.batch_size / num_units),
        "bf16": 1.0 if precision == "bf16" else 0.0,
        **_budget(charge),
    }
    arrays = adapter_arrays(model)
    if charge is not None:
        site.state.keep_released(plan.run_id, plan.server_round, received_sha, arrays, metrics)

        def mark(ledger):  # noqa: ANN001, ANN202
            ledger.mark_released(plan.run_id, plan.server_round, received_sha)
            return ledger, None

        site.state.update_ledger(privacy, num_units, mark)
    return Release(arrays, metrics)


def evaluate(site: Site, plan: SitePlan, received: Arrays) -> Release:
    """Held-out loss of the received adapter (and, when the plan asks, the site's task counts): per-unit
    bounded sums released in ONE Gaussian query charged to the ledger (DP on), exact otherwise."""
    cfg = site.config
    check_plan(plan, cfg)
    model, tokenizer = runtime.model_for(site_model(plan, cfg), plan.lora, plan.seed)
    data = runtime.examples_for(cfg.data, cfg.data_slot, cfg.data_sites, plan, tokenizer)
    load_adapter_arrays(model, received)
    losses = evaluate_example_losses(
        model,
        data.eval,
        batch_size=plan.train.eval_batch_size,
        precision=runtime.precision_for(plan.model),
        pad_id=tokenizer.pad_token_id,
    )
    privacy = cfg.privacy
    tasks, task_exact = _task_sums(site, plan, model, tokenizer) if plan.score_tasks else (None, None)
    exact = float(np.mean(losses))
    charge: Charge | None = None
    clip = privacy.eval_loss_clip
    per_unit = unit_means(np.clip(losses, 0.0, clip), _units(privacy, data.eval_units))
    # Every sum scaled to a per-unit bound of 1: one unit moves all of them together by at most sqrt(#sums).
    sums = {"held_out_loss": np.array(per_unit.sum() / clip)}
    if tasks is not None:
        assert not set(tasks.sums) & set(sums)  # one release, distinct sums: none may replace another
        sums |= tasks.sums
    sensitivity = joint_sensitivity(dict.fromkeys(sums, 1.0))
    if privacy.enabled:
        train_units = _units(privacy, data.train_units)
        num_train = len(set(train_units)) if train_units is not None else len(data.train)
        run = _run_request(plan, privacy, num_train)
        charge = site.state.update_ledger(
            privacy, num_train, lambda ledger: charge_query(ledger, run, plan.server_round, cfg.limits)
        )
        seed = _seed(privacy, plan, site.index, "evaluate", charge.attempt)
        released = release_sums(sums, sensitivity, charge.noise_multiplier, np.random.default_rng(seed))
        noise_std = charge.noise_multiplier * sensitivity
        # Clamping to the clip range is post-processing of the released value: free, and never negative.
        eval_loss = min(max(float(released["held_out_loss"]) * clip / len(per_unit), 0.0), clip)
        log.info(
            "site %d round %d: held-out loss %.4f exact (stays here), released %.4f with noise std %.4f "
            "(epsilon %.3f -> %.3f)",
            site.index,
            plan.server_round,
            exact,
            eval_loss,
            noise_std * clip / len(per_unit),
            charge.epsilon_before,
            charge.epsilon_after,
        )
    else:
        released, noise_std, eval_loss = sums, 0.0, exact
        log.info(
            "site %d round %d eval loss %.4f on %d held-out records (DP off: exact)",
            site.index,
            plan.server_round,
            exact,
            len(data.eval),
        )
    metrics: dict[str, Any] = {
        NUM_EXAMPLES: len(data.eval),
        "site_index": site.index,
        "eval_loss": eval_loss,
        **_budget(charge),
    }
    if tasks is not None:
        metrics.update(release_metrics(tasks, released, noise_std))
    measured: dict[str, Any] = {"held_out_loss": exact, "eval_records": len(data.eval)}
    site.state.record_measured(plan.run_id, plan.server_round, measured | ({"task": task_exact} if task_exact else {}))
    return Release(None, metrics)


def _task_sums(site: Site, plan: SitePlan, model: Any, tokenizer: Any) -> tuple[TaskSums | None, dict[str, Any] | None]:
    """The site's own task set scored with the loaded adapter, as bounded sums, and the exact summary
    (for the site's log and its own record only)."""
    cfg = site.config
    by_unit = cfg.privacy.unit == "patient"
    if by_unit and not cfg.data.patient_field:
        raise ConfigError("privacy.unit=patient: the site's task rows carry no patient id (set data.patient_field)")
    task = site_task(cfg.data, cfg.data_slot, plan.task_labels, cfg.data.patient_field if by_unit else "")
    if task is None:
        return None, None
    scores = score_task(
        model, tokenizer, task, EvalSettings.for_training_length(plan.train.max_seq_len), progress=False
    )
    summary = summarize_scores(task, scores)
    exact = summary["metrics"]
    log.info(
        "site %d round %d: task %s (%s, %d items) %s exact (stays here)",
        site.index,
        plan.server_round,
        task.name,
        task.kind,
        len(task.items),
        ", ".join(f"{k} {exact[k]:.4f}" for k in _TASK_LOG[task.kind]),
    )
    sums = task_sums(task, scores, loss_clip=cfg.privacy.eval_loss_clip, by_unit=by_unit)
    return sums, {
        "name": task.name,
        "kind": task.kind,
        "scores": [item_record(task.kind, s) for s in scores],
        **summary,
    }


_TASK_LOG = {"choice": ("accuracy", "macro_f1"), "generation": ("rouge_l", "loss")}


def unit_means(values: np.ndarray, units: Sequence[int] | None) -> np.ndarray:
    """One value per privacy unit: the mean over its examples (each example its own unit when ``units`` is None)."""
    if units is None:
        return np.asarray(values, dtype=np.float64)
    order = {u: n for n, u in enumerate(dict.fromkeys(units))}
    index = np.array([order[u] for u in units])
    return np.bincount(index, weights=values, minlength=len(order)) / np.bincount(index, minlength=len(order))


def _budget(charge: Charge | None) -> dict[str, float]:
    if charge is None:
        return {
            "dp_enabled": 0.0,
            "epsilon": math.inf,
            "target_epsilon": math.inf,
            "epsilon_remaining": math.inf,
            "delta": 0.0,
            "noise_multiplier": 0.0,
        }
    return {
        "dp_enabled": 1.0,
        "epsilon": charge.epsilon_after,
        "target_epsilon": charge.target_epsilon,
        "epsilon_remaining": charge.remaining,
        "delta": charge.delta,
        "noise_multiplier": charge.noise_multiplier,
    }


def _run_request(plan: SitePlan, privacy: PrivacyConfig, num_units: int) -> RunRequest:
    return RunRequest(
        run_id=plan.run_id,
        num_units=num_units,
        batch_size=plan.train.batch_size,
        planned_steps=plan.num_rounds * plan.train.local_steps,
        target_epsilon=plan.privacy.target_epsilon,
        eval_noise_multiplier=privacy.eval_noise_multiplier,
    )


def _units(privacy: PrivacyConfig, units: list[int] | None) -> list[int] | None:
    if privacy.unit != "patient":
        return None
    if units is None:
        raise ConfigError("privacy.unit=patient: the site's records carry no patient id (set data.patient_field)")
    return units


def _sha256(arrays: Arrays) -> str:
    digest = hashlib.sha256()
    for name in sorted(arrays):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(arrays[name]).tobytes())
    return digest.hexdigest()


def _typed(metrics: dict[str, Any]) -> dict[str, Any]:
    for key in (NUM_EXAMPLES, "site_index", "steps"):
        if key in metrics:
            metrics[key] = int(metrics[key])
    return metrics


def _seed(privacy: PrivacyConfig, plan: SitePlan, index: int, kind: str, attempt: int) -> int | None:
    # Under DP, noise and batch sampling must be unpredictable (amplification by subsampling assumes
    # a secret sample): OS entropy unless a test pins privacy.noise_seed (site.yaml refuses it outside
    # tests). A pinned seed still differs per run, site, round, use and retry.
    if privacy.noise_seed == 0:
        return None
    text = f"{privacy.noise_seed}|{plan.run_id}|{index}|{plan.server_round}|{kind}|{attempt}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
