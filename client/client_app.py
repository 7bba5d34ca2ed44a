"""Flower ClientApp of a hospital site: unpack the round plan, train or evaluate, pack numbers + LoRA tensors.

Only LoRA tensors and the numeric metrics of ``common.wire`` leave the site. Errors are answered
with an error reply whose text fedcare wrote itself (file, row, reason; never record text);
unexpected exceptions are logged at the site and reported by class name only, because Flower
forwards exception text to the coordinator.

A site daemon (``fedcare site start``) passes ``site-config`` in the node config: its data, its
privacy budget (which wins over the plan's), an on-disk ledger and an egress log. In simulation the
node config's ``partition-id`` picks the site and the ledger lives in ``context.state``.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Error, Message, MessageType, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client import runtime
from client.state import ContextLedgerStore, FileLedgerStore, LedgerStore
from client.train import DPSettings, evaluate_loss, train_round
from common.adapters import adapter_arrays, is_lora_tensor_name, load_adapter_arrays
from common.audit import EgressLog
from common.config import DataConfig, PrivacyConfig, SitePlan, plan_from_flat
from common.console import configure_logging
from common.errors import AdapterLayoutError, ConfigError, FedcareError
from common.privacy import PrivacyLedger
from common.site import SiteConfig, load_site_config
from common.wire import ARRAYS, EVAL_METRICS, METRICS, NUM_EXAMPLES, PLAN, TRAIN_METRICS, check_metrics

log = logging.getLogger("fedcare.site")

EGRESS_DIR_ENV = "FEDCARE_EGRESS_DIR"  # simulation only: folder for the virtual sites' egress logs
FEDCARE_ERROR = 1001  # error code of a refusal or validation error fedcare wrote itself
UNEXPECTED_ERROR = 1002  # error code of any other exception (text withheld)

app = ClientApp()
configure_logging()  # progress lines from simulation workers reach the driver's console


@dataclass(frozen=True)
class Site:
    """Where this call's site-local values come from (site.yaml, or the simulation's plan)."""

    index: int  # reported with the metrics (site.yaml's site_index, or the partition id)
    data_slot: int  # which site of ``data`` this is (0 for a site's own single file)
    num_sites: int
    data: DataConfig
    privacy: PrivacyConfig
    ledger: LedgerStore
    egress: EgressLog | None
    released_dir: Path | None = None  # updates already sent, kept to answer a retried round at no privacy cost


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the received global adapter for one round under the site's DP budget."""
    return _answer(msg, context, _train)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Held-out loss of the received global adapter on the site's evaluation split."""
    return _answer(msg, context, _evaluate)


@functools.lru_cache(maxsize=4)
def _site_config(path: str) -> SiteConfig:
    return load_site_config(path)


def resolve_site(context: Context, plan: SitePlan) -> Site:
    """The site of this node: its own site.yaml when it has one, else the simulation partition."""
    if "site-config" in context.node_config:
        cfg = _site_config(str(context.node_config["site-config"]))
        return Site(cfg.site_index, 0, 1, cfg.data, cfg.privacy, FileLedgerStore(cfg.ledger_path),
                    EgressLog(cfg.egress_log_path), Path(cfg.state_dir) / "released")
    if "partition-id" not in context.node_config:
        raise FedcareError("site: node config has neither 'site-config' nor 'partition-id'")
    index = int(context.node_config["partition-id"])
    # A simulation keeps each virtual site's egress log in the run directory (set by `fedcare simulate`).
    egress_dir = os.environ.get(EGRESS_DIR_ENV)
    egress = EgressLog(Path(egress_dir) / f"site-{index}" / "egress.jsonl") if egress_dir else None
    return Site(index, index, plan.num_sites, plan.data, plan.privacy, ContextLedgerStore(context), egress)


def _train(msg: Message, plan: SitePlan, site: Site) -> RecordDict:
    model, tokenizer = runtime.model_for(plan.model, plan.lora, plan.seed)
    data = runtime.examples_for(site.data, site.data_slot, site.num_sites, plan, tokenizer)
    received = _received_adapter(msg)
    received_sha = _sha256(received)
    steps = plan.train.local_steps
    dp: DPSettings | None = None
    ledger: PrivacyLedger | None = None
    privacy = site.privacy
    units = None
    if privacy.unit == "patient":
        if data.train_units is None:
            raise ConfigError("privacy.unit=patient: the site's records carry no patient id (set data.patient_field)")
        units = data.train_units
    num_units = len(set(units)) if units is not None else len(data.train)
    if privacy.enabled:
        ledger = site.ledger.load() or PrivacyLedger.create(
            target_epsilon=privacy.target_epsilon, target_delta=privacy.target_delta,
            num_records=num_units, accountant=privacy.accountant)
        ledger.target_epsilon = privacy.target_epsilon  # the site's current budget wins (delta stays fixed)
        cached = _released_reply(site, plan, received_sha)
        if cached is not None and ledger.was_released(plan.run_id, plan.server_round, received_sha):
            log.info("site %d round %d: asked again after a coordinator restart; re-sending the update "
                     "already released (no new privacy cost)", site.index, plan.server_round)
            return _reply(site, plan, *cached)
        calibration = ledger.plan_run(plan.run_id, num_records=num_units, batch_size=plan.train.batch_size,
                                      planned_steps=plan.num_rounds * steps)
        ledger.check_round(plan.run_id, plan.server_round, steps)  # raises PrivacyBudgetExceededError
        ledger.record(plan.run_id, plan.server_round, steps)
        site.ledger.save(ledger)  # before training: a crash can never under-count epsilon
        dp = DPSettings(calibration["noise_multiplier"], privacy.max_grad_norm, calibration["sample_rate"],
                        noise_seed=_seed(privacy, plan, site.index))
    load_adapter_arrays(model, received)

    def progress(step: int, total: int, loss: float) -> None:
        if step == total or step % max(1, total // 5) == 0:
            log.info("site %d round %d step %d/%d loss %.4f", site.index, plan.server_round, step, total, loss)

    rng_seed = _seed(privacy, plan, site.index) if dp else plan.seed * 1_000_003 + site.index * 1009 + plan.server_round
    precision = runtime.precision_for(plan.model)
    result = train_round(model, data.train, plan.train, precision=precision,
                         pad_id=tokenizer.pad_token_id, dp=dp, rng=np.random.default_rng(rng_seed), progress=progress,
                         units=units, proximal_mu=plan.proximal_mu)
    epsilon = ledger.epsilon() if ledger else math.inf
    log.info("site %d (%s) round %d done: loss %.4f, epsilon %.3f/%s, %.1f s", site.index, data.name,
             plan.server_round, result.train_loss, epsilon,
             f"{ledger.target_epsilon:g}" if ledger else "inf (DP off)", result.seconds)
    metrics: dict[str, Any] = {
        NUM_EXAMPLES: len(data.train), "site_index": site.index,
        "train_loss": result.train_loss if math.isfinite(result.train_loss) else math.inf,
        "steps": result.steps, "examples_seen": result.examples_seen, "tokens": result.tokens,
        "seconds": result.seconds, "seconds_per_step": result.seconds / max(1, result.steps),
        "update_norm": result.update_norm, "dp_enabled": 1.0 if dp else 0.0, "epsilon": epsilon,
        "target_epsilon": ledger.target_epsilon if ledger else math.inf,
        "delta": ledger.delta if ledger else 0.0,
        "noise_multiplier": dp.noise_multiplier if dp else 0.0,
        "sample_rate": dp.sample_rate if dp else min(1.0, plan.train.batch_size / num_units),
        "phi_removed": sum(data.phi_counts.values()),
        "bf16": 1.0 if precision == "bf16" else 0.0,
    }
    check_metrics(metrics, TRAIN_METRICS)
    arrays = adapter_arrays(model)
    if ledger is not None and site.released_dir is not None:
        _keep_released(site, plan, received_sha, arrays, metrics)
        ledger.mark_released(plan.run_id, plan.server_round, received_sha)
        site.ledger.save(ledger)
    return _reply(site, plan, arrays, metrics)


def _reply(site: Site, plan: SitePlan, arrays: dict[str, np.ndarray], metrics: dict[str, Any]) -> RecordDict:
    if site.egress:
        site.egress.append(message_type=MessageType.TRAIN, server_round=plan.server_round, tensors=arrays,
                           metrics=metrics, epsilon=metrics["epsilon"] if math.isfinite(metrics["epsilon"]) else None)
    return RecordDict({ARRAYS: ArrayRecord(array_dict={k: Array.from_numpy_ndarray(v) for k, v in arrays.items()}),
                       METRICS: MetricRecord(metrics)})


def _sha256(arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(arrays):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(arrays[name]).tobytes())
    return digest.hexdigest()


def _released_path(site: Site, plan: SitePlan, received_sha: str) -> Path | None:
    if site.released_dir is None:
        return None
    return site.released_dir / f"{plan.run_id}-round-{plan.server_round:03d}-{received_sha[:16]}.npz"


def _keep_released(site: Site, plan: SitePlan, received_sha: str, arrays: dict[str, np.ndarray],
                   metrics: dict[str, Any]) -> None:
    path = _released_path(site, plan, received_sha)
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **{f"a:{k}": v for k, v in arrays.items()},
             **{f"m:{k}": np.asarray(v, dtype=np.float64) for k, v in metrics.items()})
    os.replace(tmp, path)


def _released_reply(site: Site, plan: SitePlan, received_sha: str) -> tuple[Arrays, dict[str, Any]] | None:
    path = _released_path(site, plan, received_sha)
    if path is None or not path.exists():
        return None
    with np.load(path) as npz:
        arrays = {k[2:]: npz[k] for k in npz.files if k.startswith("a:")}
        metrics: dict[str, Any] = {k[2:]: float(npz[k]) for k in npz.files if k.startswith("m:")}
    for key in ("num-examples", "site_index", "steps", "examples_seen", "tokens"):
        metrics[key] = int(metrics[key])
    return arrays, metrics


def _evaluate(msg: Message, plan: SitePlan, site: Site) -> RecordDict:
    model, tokenizer = runtime.model_for(plan.model, plan.lora, plan.seed)
    data = runtime.examples_for(site.data, site.data_slot, site.num_sites, plan, tokenizer)
    load_adapter_arrays(model, _received_adapter(msg))
    loss = evaluate_loss(model, data.eval, batch_size=plan.train.eval_batch_size,
                         precision=runtime.precision_for(plan.model), pad_id=tokenizer.pad_token_id)
    log.info("site %d round %d eval loss %.4f on %d held-out records", site.index, plan.server_round, loss,
             len(data.eval))
    metrics: dict[str, Any] = {NUM_EXAMPLES: len(data.eval), "site_index": site.index, "eval_loss": loss}
    check_metrics(metrics, EVAL_METRICS)
    if site.egress:
        site.egress.append(message_type=MessageType.EVALUATE, server_round=plan.server_round, tensors=None,
                           metrics=metrics, epsilon=None)
    return RecordDict({METRICS: MetricRecord(metrics)})


def _received_adapter(msg: Message) -> dict[str, np.ndarray]:
    record = msg.content.array_records[ARRAYS]
    names = list(record.keys())
    if not names or not all(is_lora_tensor_name(n) for n in names):
        raise AdapterLayoutError("round message: expected only LoRA adapter tensors")
    return {name: record[name].numpy() for name in names}


def _seed(privacy: PrivacyConfig, plan: SitePlan, index: int) -> int | None:
    # Under DP, noise and batch sampling must be unpredictable (amplification by subsampling assumes
    # a secret sample): OS entropy unless a test pins privacy.noise_seed.
    if privacy.noise_seed == 0:
        return None
    return privacy.noise_seed * 1_000_003 + index * 1009 + plan.server_round


Work = Callable[[Message, SitePlan, Site], RecordDict]
Arrays = dict[str, np.ndarray]


def _answer(msg: Message, context: Context, work: Work) -> Message:
    site: Site | None = None
    server_round = -1
    try:
        plan = plan_from_flat(dict(msg.content.config_records[PLAN]))
        server_round = plan.server_round
        site = resolve_site(context, plan)
        return Message(work(msg, plan, site), reply_to=msg)
    except FedcareError as err:
        log.error("site refused the request: %s", err)
        reason = str(err)
        code = FEDCARE_ERROR
    except Exception as err:  # noqa: BLE001 - anything else: keep details at the site
        # The message of a foreign exception may quote a record (a tokenizer or parser echoing its
        # input): log where it happened, never what it said.
        log.error("site failed with %s (message withheld: it may quote records); stack:\n%s",
                  type(err).__name__, "".join(traceback.format_tb(err.__traceback__)))
        reason = f"{type(err).__name__} at the site; details are in the site's log"
        code = UNEXPECTED_ERROR
    if site is not None and site.egress is not None:
        site.egress.append(message_type=msg.metadata.message_type, server_round=server_round, tensors=None,
                           metrics={}, epsilon=None, error=reason)
    return Message(Error(code=code, reason=reason), reply_to=msg)
