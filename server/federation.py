"""The coordinator's rounds, driven through a Flower strategy (``server/strategies.py``).

Flower's ``Strategy.start`` always runs rounds 1..N and cannot resume, so this loop calls the
strategy's own ``configure_train`` / ``aggregate_train`` / ``configure_evaluate`` /
``aggregate_evaluate`` with ``Grid.send_and_receive`` per round: sampling and aggregation are
Flower's; fedcare adds

- round 0: federated evaluation of the initial adapter (lora_B = 0, i.e. the base model);
- the reply screening of :class:`server.strategies.Screened` (a bad update is dropped and named,
  the round goes on with at least ``strategy.min_sites``);
- the global adapter saved in PEFT format after every round (signed with a signing key);
- ``checkpoint.json`` plus the strategy's own state after every round, so ``coordinator.resume=true``
  continues from the last completed round and ends with the same adapter as an uninterrupted run.

Per-round evaluation is one function, :func:`federated_evaluation`, passed to :func:`run_federation`
as ``evaluate``: a caller may wrap it (e.g. to add task metrics every k rounds).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ConfigRecord
from flwr.serverapp import Grid

from common.adapters import adapter_arrays, attach_lora, load_adapter_arrays
from common.aggregation import nbytes
from common.config import RunConfig, plan_for_round, plan_to_flat
from common.errors import FedcareError
from common.evaluation import coordinator_task_labels
from common.model import load_model_and_tokenizer
from common.task_release import is_task_round, task_metrics
from server.run_dir import (
    RunDirectory,
    adapter_facts,
    log_site_budgets,
    log_task_metrics,
    per_site_round,
    site_entry,
)
from server.strategies import Evaluation, Screened, build_strategy, to_record

log = logging.getLogger("fedcare.coordinator")

Arrays = dict[str, np.ndarray]
# (grid, strategy, cfg, run_id, server_round, global adapter) -> the round's evaluation
EvaluateFn = Callable[[Grid, Screened, RunConfig, str, int, Arrays], Evaluation]


@dataclass
class LoopState:
    """Everything the round loop carries between rounds; checkpointed after each completed round."""

    completed_round: int = 0
    eval_losses: list[float] = field(default_factory=list)
    sites: dict[str, dict[str, Any]] = field(default_factory=dict)
    bytes_up: list[int] = field(default_factory=list)
    bytes_down: list[int] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)  # {"round", "site", "reason"}
    failed: list[dict[str, Any]] = field(default_factory=list)  # {"round", "site", "reason"}
    task_metrics: dict[str, Any] = field(default_factory=dict)  # str(round) -> common.task_release.task_metrics
    seconds_before: float = 0.0  # wall seconds of earlier (interrupted) invocations


def federated_evaluation(
    grid: Grid, strategy: Screened, cfg: RunConfig, run_id: str, server_round: int, arrays: Arrays
) -> Evaluation:
    """Held-out metrics of the global adapter ``arrays`` at every connected site (round 0: the initial one),
    with the sites' task metrics in the rounds ``coordinator.task_eval_every`` names."""
    score_tasks = is_task_round(cfg.coordinator.task_eval_every, server_round, cfg.num_rounds)
    # Only options the coordinator was given are imposed on the sites; the names also cover synthetic data.
    asked = cfg.coordinator.task_labels if score_tasks else ()
    site_plan = dataclasses.replace(
        plan_for_round(cfg, server_round, run_id), score_tasks=score_tasks, task_labels=asked
    )
    _seed_sampling(cfg, server_round, "evaluate")
    messages = strategy.configure_evaluate(server_round, to_record(arrays), ConfigRecord(plan_to_flat(site_plan)), grid)
    replies = grid.send_and_receive(messages, timeout=cfg.coordinator.round_timeout_s or None)
    strategy.aggregate_evaluate(server_round, replies)
    evaluation = strategy.last_evaluation
    if score_tasks:
        evaluation.tasks = task_metrics(evaluation.by_site, coordinator_task_labels(asked, cfg.data))
        log_task_metrics(server_round, evaluation.tasks)
    return evaluation


def run_federation(
    grid: Grid, cfg: RunConfig, out: RunDirectory, evaluate: EvaluateFn = federated_evaluation
) -> dict[str, Any]:
    """Run (or resume) ``cfg.num_rounds`` rounds on the sites connected to ``grid``; returns the summary.

    Raises:
        FedcareError: when fewer than ``strategy.min_sites`` sites connect or have their updates
            accepted in a round, or a resume finds no checkpoint.
    """
    start = time.perf_counter()
    run_id = out.path.name
    base, _ = load_model_and_tokenizer(cfg.model)
    model = attach_lora(base, cfg.lora, seed=cfg.seed)
    strategy = build_strategy(cfg)
    if cfg.coordinator.resume:
        state = _to_state(out.read_checkpoint())
        saved = _load_adapter(out.adapter_dir(state.completed_round))
        load_adapter_arrays(model, {k: saved[k] for k in adapter_arrays(model) if k in saved})
        if state.completed_round:
            strategy.load_state_arrays(out.load_strategy_state(state.completed_round))
        log.info("resuming %s after round %d of %d", out.path, state.completed_round, cfg.num_rounds)
    else:
        state = LoopState()
        out.save_adapter(model, 0, cfg.coordinator.signing_key)
    global_arrays = adapter_arrays(model)
    log.info(
        "global adapter: %d LoRA tensors, %.2f MB; strategy %s",
        len(global_arrays),
        nbytes(global_arrays) / 1e6,
        type(strategy).__name__.removeprefix("Screened"),
    )
    _wait_for_nodes(grid, cfg.strategy.min_sites, cfg.num_sites, cfg.coordinator.node_wait_s)

    if not state.eval_losses:
        evaluation = evaluate(grid, strategy, cfg, run_id, 0, global_arrays)
        state.eval_losses.append(evaluation.metrics.get("eval_loss", math.nan))
        if evaluation.tasks:
            state.task_metrics["0"] = evaluation.tasks
        log.info("round 0 (before training): eval loss %.4f", state.eval_losses[0])
        _checkpoint(out, state, start)
    for server_round in range(state.completed_round + 1, cfg.num_rounds + 1):
        t0 = time.perf_counter()
        _wait_for_nodes(grid, cfg.strategy.min_sites, cfg.num_sites, cfg.coordinator.rejoin_wait_s)
        plan = ConfigRecord(plan_to_flat(plan_for_round(cfg, server_round, run_id)))
        _seed_sampling(cfg, server_round, "train")
        messages = list(strategy.configure_train(server_round, to_record(global_arrays), plan, grid))
        log.info("round %d/%d: training on %d sites", server_round, cfg.num_rounds, len(messages))
        replies = grid.send_and_receive(messages, timeout=cfg.coordinator.round_timeout_s or None)
        record, _ = strategy.aggregate_train(server_round, replies)  # raises below strategy.min_sites
        assert record is not None  # Screened raises instead of returning no aggregate
        outcome = strategy.last_round
        global_arrays = {k: record[k].numpy() for k in global_arrays}
        load_adapter_arrays(model, global_arrays)
        trained = {int(m["site_index"]): m for m in outcome.accepted.values()}
        for idx, m in trained.items():
            site_id = f"site-{idx}"
            state.sites[site_id] = site_entry(state.sites.get(site_id), m, outcome.egress.get(site_id))
        # The signature binds what the adapter is: run, round, strategy, each site's privacy and log head.
        out.save_adapter(
            model,
            server_round,
            cfg.coordinator.signing_key,
            adapter_facts(run_id, server_round, cfg.strategy.name, state.sites),
        )
        evaluation = evaluate(grid, strategy, cfg, run_id, server_round, global_arrays)
        state.eval_losses.append(evaluation.metrics.get("eval_loss", math.nan))
        if evaluation.tasks:
            state.task_metrics[str(server_round)] = evaluation.tasks
        state.rejected += [{"round": server_round, "site": s, "reason": r} for s, r in outcome.rejected.items()]
        state.failed += [{"round": server_round, "site": s, "reason": r} for s, r in outcome.failed.items()]
        bytes_down = nbytes(global_arrays) * len(messages)
        state.bytes_up.append(outcome.bytes_up)
        state.bytes_down.append(bytes_down)
        seconds = time.perf_counter() - t0
        out.append_metrics(
            {
                "round": server_round,
                "seconds": seconds,
                "sites_trained": len(trained),
                "sites_failed": len(outcome.failed),
                "sites_rejected": len(outcome.rejected),
                "rejected": outcome.rejected,
                "bytes_up": outcome.bytes_up,
                "bytes_down": bytes_down,
                "eval_loss": state.eval_losses[-1],
                "eval_loss_by_site": _eval_losses(evaluation),
                "eval": evaluation.metrics,
                "sites": per_site_round(trained),
                **({"task_metrics": evaluation.tasks} if evaluation.tasks else {}),
            }
        )
        out.save_strategy_state(server_round, strategy.state_arrays())
        state.completed_round = server_round
        _checkpoint(out, state, start)
        epsilons = [m["epsilon"] for m in trained.values() if "epsilon" in m]
        log.info(
            "round %d/%d done in %.1f s: %d updates accepted, %d rejected; eval loss %.4f, "
            "max epsilon %.3f, %.2f MB up",
            server_round,
            cfg.num_rounds,
            seconds,
            len(trained),
            len(outcome.rejected),
            state.eval_losses[-1],
            max(epsilons, default=math.nan),
            outcome.bytes_up / 1e6,
        )
        log_site_budgets(server_round, trained)
    summary = {
        # What the sites did, not what was asked: a site daemon's own privacy settings win.
        "rounds": cfg.num_rounds,
        "strategy": cfg.strategy.name,
        "dp_enabled": all(s["dp_enabled"] for s in state.sites.values()),
        "sites": [state.sites[k] for k in sorted(state.sites, key=lambda s: int(s.split("-")[1]))],
        "eval_loss_by_round": state.eval_losses,
        "bytes_up_per_round": state.bytes_up,
        "bytes_down_per_round": state.bytes_down,
        "rejected_updates": state.rejected,
        "failed_sites": state.failed,
        # DP-noised releases of the sites' task counts, by round, and those of the last round that had them.
        "task_metrics_by_round": state.task_metrics,
        "task_metrics": state.task_metrics[max(state.task_metrics, key=int)] if state.task_metrics else None,
        "adapter_dir": str(out.adapter_dir(cfg.num_rounds)),
        "run_dir": str(out.path),
        "signed": bool(cfg.coordinator.signing_key),
        "wall_seconds": state.seconds_before + time.perf_counter() - start,
    }
    out.write_summary(summary)
    return summary


def _eval_losses(evaluation: Evaluation) -> dict[str, float]:
    return {site: m["eval_loss"] for site, m in evaluation.by_site.items() if "eval_loss" in m}


def _seed_sampling(cfg: RunConfig, server_round: int, kind: str) -> None:
    # Flower's strategies sample sites with the module-level `random`: seeding it per round makes the
    # choice reproducible and identical after a resume, with no generator state to checkpoint.
    random.seed(f"{cfg.seed}-{server_round}-{kind}")


def _load_adapter(adapter_dir: Path) -> Arrays:
    from safetensors.numpy import load_file

    return dict(load_file(str(adapter_dir / "adapter_model.safetensors")))


def _checkpoint(out: RunDirectory, state: LoopState, start: float) -> None:
    data = asdict(state)
    data["seconds_before"] = state.seconds_before + time.perf_counter() - start
    out.write_checkpoint(data)


def _to_state(raw: dict[str, Any]) -> LoopState:
    known = {f.name for f in dataclasses.fields(LoopState)}
    return LoopState(**{k: v for k, v in raw.items() if k in known})


def _wait_for_nodes(grid: Grid, min_sites: int, wanted: int, timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= wanted or (time.monotonic() > deadline and len(nodes) >= min_sites):
            return nodes
        if time.monotonic() > deadline:
            raise FedcareError(
                f"only {len(nodes)} sites connected within {timeout_s:.0f} s; strategy.min_sites={min_sites}"
            )
        time.sleep(1.0)
