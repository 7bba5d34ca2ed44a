"""The coordinator's round loop: FedAvg over LoRA tensors with federated evaluation each round.

Round 0 evaluates the initial adapter (lora_B = 0, i.e. the base model) so the run's first
``eval_loss`` is the baseline. Every reply is checked before use: only the global adapter's LoRA
tensor names, shapes and dtypes, and only the allowed numeric metrics. After each round the global
adapter is saved (and signed, with a signing key) and ``checkpoint.json`` records the loop's state,
so ``coordinator.resume=true`` continues from the last completed round.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from common.adapters import adapter_arrays, attach_lora, load_adapter_arrays
from common.aggregation import check_layout, nbytes, weighted_average, weighted_mean
from common.config import RunConfig, plan_for_round, plan_to_flat
from common.errors import FedcareError
from common.model import load_model_and_tokenizer
from common.wire import ARRAYS, EVAL_METRICS, METRICS, NUM_EXAMPLES, PLAN, TRAIN_METRICS, check_metrics
from server.run_dir import RunDirectory, per_site_round, site_entry

log = logging.getLogger("fedcare.coordinator")

Arrays = dict[str, np.ndarray]


@dataclass
class LoopState:
    """Everything the round loop carries between rounds; checkpointed after each completed round."""

    completed_round: int = 0
    eval_losses: list[float] = field(default_factory=list)
    sites: dict[str, dict[str, Any]] = field(default_factory=dict)
    bytes_up: list[int] = field(default_factory=list)
    bytes_down: list[int] = field(default_factory=list)
    rng_state: list[Any] = field(default_factory=list)
    seconds_before: float = 0.0  # wall seconds of earlier (interrupted) invocations


@dataclass
class RoundReplies:
    """Successful replies of one round's messages, keyed by node id, and the failures' reasons."""

    ok: dict[int, tuple[Arrays, dict[str, float]]] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)
    bytes_down: int = 0
    bytes_up: int = 0


def run_federation(grid: Grid, cfg: RunConfig, out: RunDirectory) -> dict[str, Any]:
    """Run (or resume) ``cfg.num_rounds`` rounds on the sites connected to ``grid``; returns the summary.

    Raises:
        FedcareError: when fewer than ``strategy.min_sites`` sites connect or answer a round, or a
            resume finds no checkpoint.
    """
    start = time.perf_counter()
    run_id = out.path.name
    base, _ = load_model_and_tokenizer(cfg.model)
    model = attach_lora(base, cfg.lora, seed=cfg.seed)
    rng = random.Random(cfg.seed)
    if cfg.coordinator.resume:
        state = _to_state(out.read_checkpoint())
        rng.setstate(_rng_from_json(state.rng_state))
        load_adapter_arrays(model, _load_adapter(out.adapter_dir(state.completed_round)))
        log.info("resuming %s after round %d of %d", out.path, state.completed_round, cfg.num_rounds)
    else:
        state = LoopState()
        out.save_adapter(model, 0, cfg.coordinator.signing_key)
    global_arrays = adapter_arrays(model)
    log.info("global adapter: %d LoRA tensors, %.2f MB", len(global_arrays), nbytes(global_arrays) / 1e6)
    nodes = _wait_for_nodes(grid, cfg.strategy.min_sites, cfg.num_sites, cfg.coordinator.node_wait_s)

    if not state.eval_losses:
        state.eval_losses.append(_evaluate(grid, cfg, run_id, 0, nodes, global_arrays).get("eval_loss", math.nan))
        log.info("round 0 (before training): eval loss %.4f", state.eval_losses[0])
        _checkpoint(out, state, rng, start)
    for server_round in range(state.completed_round + 1, cfg.num_rounds + 1):
        t0 = time.perf_counter()
        nodes = _wait_for_nodes(grid, cfg.strategy.min_sites, cfg.num_sites, cfg.coordinator.rejoin_wait_s)
        chosen = sorted(rng.sample(nodes, max(1, round(cfg.strategy.fraction_train * len(nodes)))))
        log.info("round %d/%d: training on %d sites", server_round, cfg.num_rounds, len(chosen))
        replies = _send(grid, cfg, run_id, server_round, chosen, global_arrays, MessageType.TRAIN)
        for node, reason in replies.failed.items():
            log.warning("round %d: site node %d did not train: %s", server_round, node, reason)
        if len(replies.ok) < cfg.strategy.min_sites:
            raise FedcareError(f"round {server_round}: {len(replies.ok)} sites trained, "
                               f"fewer than strategy.min_sites={cfg.strategy.min_sites}")
        for arrays, _ in replies.ok.values():
            check_layout(arrays, global_arrays, who=f"round {server_round} reply")
        global_arrays = weighted_mean([(a, m[NUM_EXAMPLES]) for a, m in replies.ok.values()])
        load_adapter_arrays(model, global_arrays)
        out.save_adapter(model, server_round, cfg.coordinator.signing_key)
        evaluation = _evaluate(grid, cfg, run_id, server_round, sorted(grid.get_node_ids()), global_arrays)
        state.eval_losses.append(evaluation.get("eval_loss", math.nan))
        trained = {int(m["site_index"]): m for _, m in replies.ok.values()}
        for idx, m in trained.items():
            state.sites[f"site-{idx}"] = site_entry(state.sites.get(f"site-{idx}"), m)
        state.bytes_up.append(replies.bytes_up)
        state.bytes_down.append(replies.bytes_down)
        train_loss = weighted_average([(m["train_loss"], m[NUM_EXAMPLES]) for m in trained.values()])
        seconds = time.perf_counter() - t0
        out.append_metrics({
            "round": server_round, "seconds": seconds, "sites_trained": len(replies.ok),
            "sites_failed": len(replies.failed), "bytes_up": replies.bytes_up, "bytes_down": replies.bytes_down,
            "eval_loss": state.eval_losses[-1], "eval_loss_by_site": evaluation.get("by_site", {}),
            "train_loss": train_loss, "sites": per_site_round(trained),
        })
        state.completed_round = server_round
        _checkpoint(out, state, rng, start)
        log.info("round %d/%d done in %.1f s: train loss %.4f, eval loss %.4f, max epsilon %.3f, %.2f MB up",
                 server_round, cfg.num_rounds, seconds, train_loss, state.eval_losses[-1],
                 max(m["epsilon"] for m in trained.values()), replies.bytes_up / 1e6)
    summary = {
        # What the sites did, not what was asked: a site daemon's own privacy settings win.
        "rounds": cfg.num_rounds, "dp_enabled": all(s["dp_enabled"] for s in state.sites.values()),
        "sites": [state.sites[k] for k in sorted(state.sites, key=lambda s: int(s.split("-")[1]))],
        "eval_loss_by_round": state.eval_losses, "bytes_up_per_round": state.bytes_up,
        "bytes_down_per_round": state.bytes_down, "adapter_dir": str(out.adapter_dir(cfg.num_rounds)),
        "run_dir": str(out.path), "signed": bool(cfg.coordinator.signing_key),
        "wall_seconds": state.seconds_before + time.perf_counter() - start,
    }
    out.write_summary(summary)
    return summary


def _load_adapter(adapter_dir: Path) -> Arrays:
    from safetensors.numpy import load_file

    return dict(load_file(str(adapter_dir / "adapter_model.safetensors")))


def _checkpoint(out: RunDirectory, state: LoopState, rng: random.Random, start: float) -> None:
    state.rng_state = _rng_to_json(rng.getstate())
    data = asdict(state)
    data["seconds_before"] = state.seconds_before + time.perf_counter() - start
    out.write_checkpoint(data)


def _to_state(raw: dict[str, Any]) -> LoopState:
    return LoopState(**raw)


def _rng_to_json(state: Any) -> list[Any]:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _rng_from_json(raw: list[Any]) -> Any:
    version, internal, gauss = raw
    return (version, tuple(internal), gauss)


def _wait_for_nodes(grid: Grid, min_sites: int, wanted: int, timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= wanted or (time.monotonic() > deadline and len(nodes) >= min_sites):
            return nodes
        if time.monotonic() > deadline:
            raise FedcareError(f"only {len(nodes)} sites connected within {timeout_s:.0f} s; "
                               f"strategy.min_sites={min_sites}")
        time.sleep(1.0)


def _send(grid: Grid, cfg: RunConfig, run_id: str, server_round: int, nodes: list[int], arrays: Arrays,
          message_type: str) -> RoundReplies:
    plan = ConfigRecord(plan_to_flat(plan_for_round(cfg, server_round, run_id)))
    record = ArrayRecord(array_dict={k: Array.from_numpy_ndarray(v) for k, v in arrays.items()})
    messages = [Message(RecordDict({ARRAYS: record, PLAN: plan}), dst_node_id=node, message_type=message_type,
                        group_id=str(server_round)) for node in nodes]
    out = RoundReplies(bytes_down=nbytes(arrays) * len(nodes))
    allowed = TRAIN_METRICS if message_type == MessageType.TRAIN else EVAL_METRICS
    timeout = cfg.coordinator.round_timeout_s or None
    replies = list(grid.send_and_receive(messages, timeout=timeout))
    # An error the SuperLink writes itself (e.g. "Node Unavailable") comes from the SuperLink's own
    # node id: map it back to the site through the message it answers.
    sent_to = {m.metadata.message_id: m.metadata.dst_node_id for m in messages if m.metadata.message_id}
    for reply in replies:
        node = sent_to.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)
        if reply.has_error():
            out.failed[node] = reply.error.reason or f"error code {reply.error.code}"
            continue
        metrics = dict(reply.content.metric_records[METRICS])
        check_metrics(metrics, allowed)
        received: Arrays = {}
        if message_type == MessageType.TRAIN:
            rec = reply.content.array_records[ARRAYS]
            received = {k: rec[k].numpy() for k in rec}
            out.bytes_up += nbytes(received)
        out.ok[node] = (received, metrics)
    for node in set(nodes) - set(out.ok) - set(out.failed):
        out.failed[node] = "no reply before the round timeout"
    return out


def _evaluate(grid: Grid, cfg: RunConfig, run_id: str, server_round: int, nodes: list[int],
              arrays: Arrays) -> dict[str, Any]:
    replies = _send(grid, cfg, run_id, server_round, nodes, arrays, MessageType.EVALUATE)
    for node, reason in replies.failed.items():
        log.warning("round %d: site node %d did not evaluate: %s", server_round, node, reason)
    if not replies.ok:
        return {}
    by_site = {f"site-{int(m['site_index'])}": m["eval_loss"] for _, m in replies.ok.values()}
    loss = weighted_average([(m["eval_loss"], m[NUM_EXAMPLES]) for _, m in replies.ok.values()])
    return {"eval_loss": loss, "by_site": dict(sorted(by_site.items()))}
