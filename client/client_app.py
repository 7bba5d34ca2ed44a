"""Flower ClientApp of a hospital site: unpack the message, call the site logic, pack the reply.

The site logic (plan limits, privacy ledger, DP-SGD, noised evaluation) is in ``client/rounds.py``;
this module only turns Messages into calls and Releases into replies. Every reply is checked
against ``common.wire``'s release rule before it leaves, and recorded in the site's egress log.
Errors are answered with an error reply whose text fedcare wrote itself (file, row, key, reason;
never record text); unexpected exceptions are logged at the site and reported by class name only,
because Flower forwards exception text to the coordinator.

``app`` is the deployed site's app: its node config names its ``site-config`` (``fedcare site
start`` passes it). :func:`site_app` with a ``sites_dir`` serves a simulation, whose virtual
hospital ``partition-id`` reads ``sites_dir/site-N/site.yaml`` written by the simulation.
"""

from __future__ import annotations

import logging
import math
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Error, Message, MessageType, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client import rounds
from common.adapters import is_lora_tensor_name
from common.config import SitePlan, plan_from_flat
from common.console import configure_logging
from common.errors import AdapterLayoutError, FedcareError
from common.wire import ARRAYS, EGRESS, EVAL_METRICS, METRICS, PLAN, TRAIN_METRICS, check_egress, check_metrics

log = logging.getLogger("fedcare.site")

FEDCARE_ERROR = 1001  # error code of a refusal or validation error fedcare wrote itself
UNEXPECTED_ERROR = 1002  # error code of any other exception (text withheld)

Work = Callable[[rounds.Site, SitePlan, dict[str, np.ndarray]], rounds.Release]
configure_logging()  # progress lines from simulation workers reach the driver's console


def site_app(sites_dir: Path | None = None) -> ClientApp:
    """A ClientApp serving the site(s) named by each node's config (see the module docstring)."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        """Train the received global adapter for one round under the site's DP budget."""
        return answer(msg, context, rounds.train, sites_dir)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        """Held-out loss of the received global adapter, released under the site's budget."""
        return answer(msg, context, rounds.evaluate, sites_dir)

    return app


app = site_app()


def answer(msg: Message, context: Context, work: Work, sites_dir: Path | None = None) -> Message:
    """Run ``work`` for ``msg`` and pack its Release, or an error reply that carries no record text."""
    site: rounds.Site | None = None
    server_round = -1
    run_id: str | None = None
    kind = msg.metadata.message_type
    try:
        plan = plan_from_flat(dict(msg.content.config_records[PLAN]))
        server_round, run_id = plan.server_round, plan.run_id
        site = rounds.resolve_site(context.node_config, sites_dir)
        release = work(site, plan, received_adapter(msg))
        check_metrics(release.metrics, TRAIN_METRICS if kind == MessageType.TRAIN else EVAL_METRICS)
        epsilon = release.metrics.get("epsilon", math.inf)
        entry = site.egress.append(
            message_type=kind,
            server_round=server_round,
            tensors=release.arrays,
            metrics=release.metrics,
            epsilon=epsilon if math.isfinite(epsilon) else None,
            run_id=plan.run_id,
        )
        head = {"seq": int(entry["seq"]), "head": str(entry["hash"])}  # anchors the log outside the site
        check_egress(head)
        content = RecordDict({METRICS: MetricRecord(release.metrics), EGRESS: ConfigRecord(head)})
        if release.arrays is not None:
            tensors = {k: Array.from_numpy_ndarray(v) for k, v in release.arrays.items()}
            content[ARRAYS] = ArrayRecord(array_dict=tensors)
        return Message(content, reply_to=msg)
    except FedcareError as err:
        log.error("site refused the request: %s", err)
        reason = str(err)
        code = FEDCARE_ERROR
    except Exception as err:  # noqa: BLE001 - anything else: keep details at the site
        # The message of a foreign exception may quote a record (a tokenizer or parser echoing its
        # input): log where it happened, never what it said.
        log.error(
            "site failed with %s (message withheld: it may quote records); stack:\n%s",
            type(err).__name__,
            "".join(traceback.format_tb(err.__traceback__)),
        )
        reason = f"{type(err).__name__} at the site; details are in the site's log"
        code = UNEXPECTED_ERROR
    if site is not None:
        site.egress.append(
            message_type=kind,
            server_round=max(0, server_round),
            tensors=None,
            metrics={},
            epsilon=None,
            error=reason,
            run_id=run_id,
        )
    return Message(Error(code=code, reason=reason), reply_to=msg)


def received_adapter(msg: Message) -> dict[str, np.ndarray]:
    """The global adapter of a round message: LoRA tensors only.

    Raises:
        AdapterLayoutError: when the message holds anything else.
    """
    record = msg.content.array_records[ARRAYS]
    names = list(record.keys())
    if not names or not all(is_lora_tensor_name(n) for n in names):
        raise AdapterLayoutError("round message: expected only LoRA adapter tensors")
    return {name: record[name].numpy() for name in names}
