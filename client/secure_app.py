"""Flower legacy ClientApp of a hospital site under SecAgg+: the same site logic, only masked updates leave.

Flower 1.41 implements SecAgg+ only for its legacy API, so this app is a ``NumPyClient`` behind
Flower's ``secaggplus_mod``. Each call is handed to the Message-API site logic
(``client_app.answer`` with ``rounds.train`` / ``rounds.evaluate``): the same site resolution,
privacy ledger, DP-SGD, de-identification, egress log and error policy. The mod then quantizes the
site's example-weighted adapter, adds the pairwise and private masks and sends only that masked
vector; the plain tensors never leave the site.

Wire format: the adapter travels as a list of arrays in the order of its sorted PEFT tensor names,
which both sides derive from the same model and LoRA config. The round plan travels as one JSON
string under the config key ``common.wire.PLAN`` (legacy configs hold scalars only, no lists).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Error, Message, MessageType, RecordDict
from flwr.client import ClientApp, NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Stage
from flwr.common.secure_aggregation.secaggplus_constants import Key as SecAggKey

from client import rounds, runtime
from client.client_app import Work, answer
from common.adapters import adapter_arrays
from common.config import SitePlan, plan_from_flat
from common.console import configure_logging
from common.errors import AdapterLayoutError, FedcareError
from common.site import check_plan, site_model
from common.wire import ARRAYS, EGRESS, METRICS, NUM_EXAMPLES, PLAN, check_egress

log = logging.getLogger("fedcare.site")

configure_logging()  # progress lines from simulation workers reach the driver's console

# The legacy handler gives client_fn only the Context; the site logic needs a Message to reply to.
_incoming: ContextVar[Message | None] = ContextVar("fedcare_secagg_incoming", default=None)
_train, _evaluate = rounds.train, rounds.evaluate


class SiteError(FedcareError):
    """A site refused or failed a call; the text is the one the Message-API app would have replied."""


def ordered_names(plan: SitePlan) -> list[str]:
    """The adapter's tensor names in wire order (sorted), from the model and LoRA config of the plan."""
    model, _ = runtime.model_for(plan.model, plan.lora, plan.seed)
    return sorted(adapter_arrays(model))


class SecureSite(NumPyClient):
    """One call of a site: unpack the list-encoded adapter and JSON plan, run the site logic, repack."""

    def __init__(self, context: Context, sites_dir: Path | None = None) -> None:
        self.site_context = context
        self.sites_dir = sites_dir  # simulation: where the virtual hospitals' site.yaml files are

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> tuple[list[np.ndarray], int, dict]:
        """Train the received global adapter for one round; secaggplus_mod masks what this returns."""
        content = self._call(parameters, config, "train")
        record = content.array_records[ARRAYS]
        metrics = dict(content.metric_records[METRICS])
        return [record[name].numpy() for name in sorted(record)], int(metrics[NUM_EXAMPLES]), metrics

    def evaluate(self, parameters: list[np.ndarray], config: dict[str, Any]) -> tuple[float, int, dict]:
        """Held-out loss of the received global adapter (evaluation is not masked: it sends numbers only)."""
        metrics = dict(self._call(parameters, config, "evaluate").metric_records[METRICS])
        return float(metrics["eval_loss"]), int(metrics[NUM_EXAMPLES]), metrics

    def _call(self, parameters: list[np.ndarray], config: dict[str, Any], kind: str) -> RecordDict:
        incoming = _incoming.get()
        if incoming is None:
            raise SiteError("secure site: called outside its ClientApp (no incoming message)")
        try:
            flat = json.loads(str(config[PLAN]))
        except (KeyError, ValueError):
            raise SiteError(f"secure site: the round config has no JSON plan under {PLAN!r}") from None
        try:  # the site's limits are checked before its model is loaded to name the tensors
            plan = plan_from_flat(flat)
            site = rounds.resolve_site(self.site_context.node_config, self.sites_dir)
            check_plan(plan, site.config)
            names = ordered_names(dataclasses.replace(plan, model=site_model(plan, site.config)))
        except FedcareError as err:
            raise SiteError(str(err)) from None
        if len(parameters) != len(names):
            raise SiteError(
                str(AdapterLayoutError(f"round message: {len(parameters)} tensors, the adapter has {len(names)}"))
            ) from None
        content = RecordDict(
            {
                ARRAYS: ArrayRecord(
                    array_dict={
                        name: Array.from_numpy_ndarray(np.asarray(a)) for name, a in zip(names, parameters, strict=True)
                    }
                ),
                PLAN: ConfigRecord(flat),
            }
        )
        # A reply-shaped Message needs no task identity (simulation workers have none); only its
        # content and message type are read by the site logic.
        work: Work = _train if kind == "train" else _evaluate
        reply = answer(Message(content, reply_to=incoming), self.site_context, work, self.sites_dir)
        if reply.has_error():
            # Flower forwards an exception's text to the coordinator: raise only the text the site
            # logic already chose to send (fedcare's own words, or the exception's class name).
            raise SiteError(reply.error.reason) from None
        return reply.content


def _remember_message(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    token = _incoming.set(msg)
    try:
        return call_next(msg, context)
    finally:
        _incoming.reset(token)


SECAGG_REFUSED = 1003  # error code of SecAgg+ instructions a site refuses


def secagg_guard(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Refuse SecAgg+ instructions that would let the coordinator unmask one site's update.

    Flower's ``secaggplus_mod`` follows the coordinator's word on who took part. A dishonest
    coordinator could (a) list a node as both active and dropped at the unmask stage, collecting both
    its private-mask share and its pairwise-key share (together: that node's plain update), (b) set
    a reconstruction threshold at or below half the shares, so two disjoint groups could each unmask,
    or (c) run the protocol with fewer than 3 sites, where the sum of the others reveals the third.
    """
    if msg.metadata.message_type != MessageType.TRAIN or RECORD_KEY_CONFIGS not in msg.content.config_records:
        return call_next(msg, context)
    configs = msg.content.config_records[RECORD_KEY_CONFIGS]
    stage = configs.get(SecAggKey.STAGE)
    reason = ""
    if stage == Stage.SETUP:
        sites, shares, threshold = (
            int(configs.get(k, 0))
            for k in (  # type: ignore[call-overload]
                SecAggKey.SAMPLE_NUMBER,
                SecAggKey.SHARE_NUMBER,
                SecAggKey.THRESHOLD,
            )
        )
        if sites < 3:
            reason = f"secure aggregation over {sites} sites (fewer than 3 reveals the others' sum)"
        elif not shares / 2 < threshold <= shares:
            reason = f"secure aggregation threshold {threshold} of {shares} shares is not above half"
    elif stage == Stage.UNMASK:
        active = list(configs.get(SecAggKey.ACTIVE_NODE_ID_LIST, []))  # type: ignore[call-overload]
        dropped = list(configs.get(SecAggKey.DEAD_NODE_ID_LIST, []))  # type: ignore[call-overload]
        if set(active) & set(dropped):
            reason = "secure aggregation: a node is listed both as active and as dropped out"
        elif len(set(active)) != len(active) or len(set(dropped)) != len(dropped):
            reason = "secure aggregation: a node is listed twice"
        elif msg.metadata.dst_node_id in dropped:
            reason = "secure aggregation: this site is listed as dropped out"
    if reason:
        log.error("site refused SecAgg+ instructions: %s", reason)
        return Message(Error(code=SECAGG_REFUSED, reason=f"site refused: {reason}"), reply_to=msg)
    return call_next(msg, context)


def _protocol_values(content: RecordDict) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """What a SecAgg+ stage reply carries, for the egress log: its protocol values as byte/int arrays (public keys,
    encrypted shares, the masked vector, unmask shares; the log keeps names, shapes and SHA-256, never values),
    and the numbers of any other record (the legacy fit metrics that travel beside the masked vector)."""
    tensors: dict[str, np.ndarray] = {}
    numbers: dict[str, float] = {}
    for record_name, record in content.config_records.items():
        for key, value in record.items():
            items = value if isinstance(value, list) else [value]
            if record_name == RECORD_KEY_CONFIGS or any(isinstance(v, bytes) for v in items):
                for i, item in enumerate(items):
                    name = f"{key}.{i}" if isinstance(value, list) else key
                    if isinstance(item, bytes):
                        tensors[name] = np.frombuffer(item, dtype=np.uint8)
                    elif isinstance(item, (int, float)) and not isinstance(item, bool):
                        tensors[name] = np.asarray([item])
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                numbers[f"{record_name}.{key}"] = value
    for record_name, metrics in content.metric_records.items():
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                numbers[f"{record_name}.{key}"] = value
    return tensors, numbers


def _egress_of_protocol(sites_dir: Path | None) -> Any:
    """A mod that records every SecAgg+ stage reply in the site's egress log: what actually leaves under
    secure aggregation (the site logic's own "train" entry records the plain update, which leaves only masked).
    Outermost, so the guard's refusals are recorded too. Each reply then carries the log's head after its own
    entry (ConfigRecord ``common.wire.EGRESS``, as Message-API replies do), which the coordinator signs into
    the round's manifest (``server/secure.py``)."""

    def mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        configs = msg.content.config_records.get(RECORD_KEY_CONFIGS) if msg.has_content() else None
        if msg.metadata.message_type != MessageType.TRAIN or configs is None:
            return call_next(msg, context)
        stage = str(configs.get(SecAggKey.STAGE, "unknown"))  # read first: secaggplus_mod pops it
        reply = call_next(msg, context)
        group = msg.metadata.group_id
        try:
            site = rounds.resolve_site(context.node_config, sites_dir)
            if reply.has_error():
                tensors, numbers, error = None, {}, reply.error.reason
            else:
                (tensors, numbers), error = _protocol_values(reply.content), None
            entry = site.egress.append(
                message_type=f"secagg-{stage}",
                server_round=int(group) if group.isdigit() else 0,
                tensors=tensors,
                metrics=numbers,
                epsilon=None,
                error=error,
                run_id=f"flwr-{msg.metadata.run_id}",  # the fedcare run id travels in the fit stage's plan only
            )
        except FedcareError as err:  # the site's log must hold what left: refuse to send unlogged
            log.error("site could not log its SecAgg+ %s reply: %s", stage, err)
            return Message(Error(code=SECAGG_REFUSED, reason=f"site refused: {err}"), reply_to=msg)
        if not reply.has_error():  # the log's head after this reply: anchored in the coordinator's manifest
            head = {"seq": int(entry["seq"]), "head": str(entry["hash"])}
            check_egress(head)
            reply.content.config_records[EGRESS] = ConfigRecord(head)
        return reply

    return mod


def secure_site_app(sites_dir: Path | None = None) -> ClientApp:
    """The SecAgg+ ClientApp; with ``sites_dir``, for a simulation's virtual hospitals (see client_app)."""

    def client_fn(context: Context) -> Any:
        """Flower's legacy client factory: one SecureSite per call, bound to the node's Context."""
        return SecureSite(context, sites_dir).to_client()

    # The egress mod is outermost: it logs every SecAgg+ reply as it leaves (refusals included); secagg_guard
    # refuses inconsistent instructions before Flower's secaggplus_mod acts on them; secaggplus_mod runs the
    # key exchange and masks the fit reply; the inner mod hands the incoming Message to SecureSite.
    return ClientApp(
        client_fn=client_fn,
        mods=[_egress_of_protocol(sites_dir), secagg_guard, secaggplus_mod, _remember_message],
    )


app = secure_site_app()
