"""Flower ClientApp of a hospital site: unpack the round plan, train or evaluate, pack numbers + LoRA tensors.

Only LoRA tensors and the numeric metrics of ``common.wire`` leave the site. Errors are answered
with an error reply whose text fedcare wrote itself (file, row, reason; never record text);
unexpected exceptions are logged at the site and reported by class name only, because Flower
forwards exception text to the coordinator.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client import runtime
from client.state import load_ledger, save_ledger
from client.train import DPSettings, evaluate_loss, train_round
from common.adapters import adapter_arrays, is_lora_tensor_name, load_adapter_arrays
from common.config import SitePlan, plan_from_flat
from common.console import configure_logging
from common.errors import AdapterLayoutError, FedcareError
from common.privacy import PrivacyLedger
from common.wire import ARRAYS, EVAL_METRICS, METRICS, NUM_EXAMPLES, PLAN, TRAIN_METRICS, check_metrics

log = logging.getLogger("fedcare.site")

FEDCARE_ERROR = 1001  # error code of a refusal or validation error fedcare wrote itself
UNEXPECTED_ERROR = 1002  # error code of any other exception (text withheld)

app = ClientApp()
configure_logging()  # progress lines from simulation workers reach the driver's console


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the received global adapter for one round under the site's DP budget."""
    return _answer(msg, lambda: _train(msg, context))


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Held-out loss of the received global adapter on the site's evaluation split."""
    return _answer(msg, lambda: _evaluate(msg, context))


def site_index(context: Context) -> int:
    """The site's 0-based index: the simulation's partition id, or ``site-index`` of the node config."""
    for key in ("partition-id", "site-index"):
        if key in context.node_config:
            return int(context.node_config[key])
    raise FedcareError("site: node config has neither 'partition-id' nor 'site-index'")


def _train(msg: Message, context: Context) -> RecordDict:
    plan = plan_from_flat(dict(msg.content.config_records[PLAN]))
    index = site_index(context)
    model, tokenizer = runtime.model_for(plan.model, plan.lora, plan.seed)
    site = runtime.examples_for(plan, index, tokenizer)
    steps = plan.train.local_steps
    dp: DPSettings | None = None
    ledger: PrivacyLedger | None = None
    if plan.privacy.enabled:
        ledger = load_ledger(context) or PrivacyLedger.plan(
            target_epsilon=plan.privacy.target_epsilon, target_delta=plan.privacy.target_delta,
            num_records=len(site.train), batch_size=plan.train.batch_size,
            planned_steps=plan.num_rounds * steps, accountant=plan.privacy.accountant)
        ledger.check_round(plan.server_round, steps)  # raises PrivacyBudgetExceededError
        ledger.record(plan.server_round, steps)
        save_ledger(context, ledger)  # before training: a crash can never under-count epsilon
        dp = DPSettings(ledger.noise_multiplier, plan.privacy.max_grad_norm, ledger.sample_rate)
    load_adapter_arrays(model, _received_adapter(msg))

    def progress(step: int, total: int, loss: float) -> None:
        if step == total or step % max(1, total // 5) == 0:
            log.info("site %d round %d step %d/%d loss %.4f", index, plan.server_round, step, total, loss)

    result = train_round(model, site.train, plan.train, precision=plan.model.precision,
                         pad_id=tokenizer.pad_token_id, dp=dp,
                         rng=_sampling_rng(plan, index, dp is not None), progress=progress)
    epsilon = ledger.epsilon() if ledger else math.inf
    log.info("site %d (%s) round %d done: loss %.4f, epsilon %.3f/%s, %.1f s", index, site.name,
             plan.server_round, result.train_loss, epsilon,
             f"{ledger.target_epsilon:g}" if ledger else "inf (DP off)", result.seconds)
    metrics: dict[str, Any] = {
        NUM_EXAMPLES: len(site.train), "site_index": index,
        "train_loss": result.train_loss if math.isfinite(result.train_loss) else math.inf,
        "steps": result.steps, "examples_seen": result.examples_seen, "tokens": result.tokens,
        "seconds": result.seconds, "seconds_per_step": result.seconds / max(1, result.steps),
        "update_norm": result.update_norm, "dp_enabled": 1.0 if ledger else 0.0, "epsilon": epsilon,
        "target_epsilon": ledger.target_epsilon if ledger else math.inf,
        "delta": ledger.delta if ledger else 0.0,
        "noise_multiplier": ledger.noise_multiplier if ledger else 0.0,
        "sample_rate": ledger.sample_rate if ledger else plan.train.batch_size / len(site.train),
    }
    check_metrics(metrics, TRAIN_METRICS)
    arrays = adapter_arrays(model)
    return RecordDict({ARRAYS: ArrayRecord(array_dict={k: Array.from_numpy_ndarray(v) for k, v in arrays.items()}),
                       METRICS: MetricRecord(metrics)})


def _evaluate(msg: Message, context: Context) -> RecordDict:
    plan = plan_from_flat(dict(msg.content.config_records[PLAN]))
    index = site_index(context)
    model, tokenizer = runtime.model_for(plan.model, plan.lora, plan.seed)
    site = runtime.examples_for(plan, index, tokenizer)
    load_adapter_arrays(model, _received_adapter(msg))
    loss = evaluate_loss(model, site.eval, batch_size=plan.train.eval_batch_size,
                         precision=plan.model.precision, pad_id=tokenizer.pad_token_id)
    log.info("site %d round %d eval loss %.4f on %d held-out records", index, plan.server_round, loss,
             len(site.eval))
    metrics: dict[str, Any] = {NUM_EXAMPLES: len(site.eval), "site_index": index, "eval_loss": loss}
    check_metrics(metrics, EVAL_METRICS)
    return RecordDict({METRICS: MetricRecord(metrics)})


def _received_adapter(msg: Message) -> dict[str, np.ndarray]:
    record = msg.content.array_records[ARRAYS]
    names = list(record.keys())
    if not names or not all(is_lora_tensor_name(n) for n in names):
        raise AdapterLayoutError("round message: expected only LoRA adapter tensors")
    return {name: record[name].numpy() for name in names}


def _sampling_rng(plan: SitePlan, index: int, private: bool) -> np.random.Generator:
    # Under DP the batch sampling must be unpredictable (privacy amplification by subsampling
    # assumes a secret sample), so it draws from OS entropy; without DP it is reproducible.
    if private:
        return np.random.default_rng()
    return np.random.default_rng([plan.seed, index, plan.server_round])


def _answer(msg: Message, work: Callable[[], RecordDict]) -> Message:
    try:
        return Message(work(), reply_to=msg)
    except FedcareError as err:
        log.error("site refused the request: %s", err)
        return Message(Error(code=FEDCARE_ERROR, reason=str(err)), reply_to=msg)
    except Exception as err:  # noqa: BLE001 - anything else: keep details at the site
        log.exception("site failed")
        return Message(Error(code=UNEXPECTED_ERROR,
                             reason=f"{type(err).__name__} at the site; details are in the site's log"),
                       reply_to=msg)
