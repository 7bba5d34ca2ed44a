"""Flower's strategies (``flwr.serverapp.strategy``) with what fedcare adds: reply screening and resumable state.

:func:`build_strategy` returns the Flower strategy named by ``strategy.name``, subclassed with
:class:`Screened`, which sits in front of Flower's own ``configure_train`` / ``aggregate_train`` /
``aggregate_evaluate``:

- every train reply is screened before the strategy sees it (``common.wire`` metrics, the global
  adapter's layout, finite values, update norm against the round's others); a bad reply is dropped
  with its site and reason in :attr:`Screened.last_round`, and the round goes on when at least
  ``strategy.min_sites`` replies remain;
- the strategy receives only the checked tensors and the example count, so Flower's own
  aggregation (median, trimmed mean, Krum, Bulyan, server optimizers) does the arithmetic; the
  weighted mean under FedAvg, FedProx, FedAvgM and FedAdam/Yogi/Adagrad is Flower's
  ``FedAvg.aggregate_train`` with its ``aggregate_arrayrecords`` streamed (:class:`StreamingMean`:
  the same weights and result, float64 sums tensor by tensor, tensors read in place);
- :meth:`Screened.state_arrays` / :meth:`Screened.load_state_arrays` save and restore the
  strategy's own state (FedOpt's ``current_arrays``, ``m_t``, ``v_t``; FedAvgM's ``current_arrays``
  and ``momentum_vector``), so a resumed run continues exactly; round numbers come from the
  coordinator's loop (FedAdam's bias correction reads them).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.constant import SType
from flwr.serverapp import Grid
from flwr.serverapp import strategy as flwr_strategy

from common.aggregation import (
    Packed,
    Reference,
    check_layout,
    non_finite,
    norm_outliers,
    norms_and_mean,
    npy_view,
    weighted_average,
)
from common.config import RunConfig, StrategyConfig
from common.errors import AdapterLayoutError, FedcareError
from common.wire import (
    ARRAYS,
    EGRESS,
    EVAL_METRICS,
    METRICS,
    NUM_EXAMPLES,
    PLAN,
    TASK_PREFIX,
    TRAIN_METRICS,
    check_egress,
    check_metrics,
)

log = logging.getLogger("fedcare.coordinator")

Arrays = dict[str, np.ndarray]

# Attributes of Flower's strategies that carry state from round to round (checkpointed for resume).
STATE_ATTRS = ("current_arrays", "m_t", "v_t", "momentum_vector")

# Strategies whose aggregation starts from FedAvg's weighted mean (streamed by StreamingMean).
MEAN_BASED = ("fedavg", "fedprox", "fedavgm", "fedadam", "fedyogi", "fedadagrad")


@dataclass
class RoundOutcome:
    """What the screening of one round's train replies found, keyed by site name."""

    accepted: dict[str, dict[str, float]] = field(default_factory=dict)  # site -> its reply metrics
    rejected: dict[str, str] = field(default_factory=dict)  # site -> why its update was dropped
    failed: dict[str, str] = field(default_factory=dict)  # site -> its error reply, or no reply
    bytes_up: int = 0  # tensor bytes received (accepted and rejected replies)
    egress: dict[str, tuple[int, str]] = field(default_factory=dict)  # site -> its egress log's (seq, head)


@dataclass
class Evaluation:
    """One federated evaluation: example-weighted means over the sites, and each site's numbers."""

    metrics: dict[str, float] = field(default_factory=dict)  # e.g. {"eval_loss": 2.31}
    by_site: dict[str, dict[str, float]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    tasks: dict[str, Any] | None = None  # per-site and pooled task metrics (common.task_release.task_metrics)


class Screened(flwr_strategy.FedAvg):
    """Mixin in front of a Flower strategy (``class X(Screened, flwr.FedProx)``): screening and state."""

    min_sites: int = 1
    norm_outlier_factor: float = 0.0

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Flower's sampling and messages; remembers the global adapter and the messages sent."""
        self.reference = Reference({k: a.data for k, a in arrays.items()})
        self.sent: list[Message] = list(super().configure_train(server_round, arrays, config, grid))
        return self.sent

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Flower's sampling and messages; remembers the messages sent (to name non-answering sites)."""
        self.sent_eval: list[Message] = list(super().configure_evaluate(server_round, arrays, config, grid))
        return self.sent_eval

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Screen the replies, hand the accepted ones to the Flower strategy, check its aggregate.

        Raises:
            FedcareError: when fewer than ``strategy.min_sites`` replies are accepted, or the strategy
                produced no aggregate.
        """
        replies = list(replies)
        mean_based = isinstance(self, StreamingMean)
        outcome, clean, self.premean = screen_train_replies(
            server_round, replies, self.sent, self.reference, self.norm_outlier_factor, with_mean=mean_based
        )
        self.last_round = outcome
        for site, reason in outcome.failed.items():
            log.warning("round %d: %s did not train: %s", server_round, site, reason)
        for site, reason in outcome.rejected.items():
            log.warning("round %d: rejected the update of %s: %s", server_round, site, reason)
        if len(clean) < self.min_sites:
            raise FedcareError(
                f"round {server_round}: {len(clean)} site updates accepted, fewer than "
                f"strategy.min_sites={self.min_sites} (rejected: {outcome.rejected or 'none'}; "
                f"failed: {outcome.failed or 'none'})"
            )
        arrays, _ = super().aggregate_train(server_round, clean)
        if arrays is None:
            raise FedcareError(
                f"round {server_round}: {type(self).__name__} produced no aggregate from {len(clean)} updates"
            )
        # Server optimizers compute in float64 or float32 depending on numpy's promotion: the global
        # adapter keeps its own dtype (the aggregate is re-encoded only when a dtype or the order differs).
        reference = self.reference.arrays
        out = {k: npy_view(arrays[k].data) for k in reference if k in arrays}
        same = list(arrays) == list(reference) and all(v.dtype == reference[k].dtype for k, v in out.items())
        if not same:
            out = {k: np.asarray(v, dtype=reference[k].dtype) for k, v in out.items()}
        check_layout(out, reference, who=f"round {server_round} aggregate")
        if non_finite(out):
            raise FedcareError(f"round {server_round}: the aggregate has {non_finite(out)}")
        return (arrays if same else to_record(out)), MetricRecord()

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Example-weighted mean of each allowed eval metric over the sites that sent it."""
        evaluation = screen_eval_replies(list(replies), getattr(self, "sent_eval", []))
        self.last_evaluation = evaluation
        for site, reason in evaluation.failed.items():
            log.warning("round %d: %s did not evaluate: %s", server_round, site, reason)
        return MetricRecord(evaluation.metrics) if evaluation.metrics else None

    def state_arrays(self) -> Arrays:
        """The strategy's round-to-round state as flat named arrays (for ``np.savez``)."""
        flat: Arrays = {}
        for attr in STATE_ATTRS:
            value = getattr(self, attr, None)
            if isinstance(value, ArrayRecord):
                flat.update({f"{attr}/r/{k}": a.numpy() for k, a in value.items()})
            elif isinstance(value, Mapping):
                flat.update({f"{attr}/d/{k}": np.asarray(a) for k, a in value.items()})
            elif isinstance(value, list):
                flat.update({f"{attr}/l/{i:06d}": np.asarray(a) for i, a in enumerate(value)})
        return flat

    def load_state_arrays(self, flat: Mapping[str, np.ndarray]) -> None:
        """Inverse of :meth:`state_arrays` (attributes absent from ``flat`` stay as they are)."""
        for attr in STATE_ATTRS:
            if not hasattr(self, attr):
                continue
            # np.savez keeps the order written: an ArrayRecord's order (FedAvgM zips it with a list) survives.
            named = [(k.split("/", 2), np.asarray(v)) for k, v in flat.items() if k.split("/", 1)[0] == attr]
            if not named:
                continue
            kind = named[0][0][1]
            if kind == "r":
                setattr(self, attr, ArrayRecord({parts[2]: Array(v) for parts, v in named}))
            elif kind == "d":
                setattr(self, attr, {parts[2]: v for parts, v in named})
            else:
                setattr(self, attr, [v for _, v in sorted(named, key=lambda item: item[0][2])])


@dataclass
class Premean:
    """The weighted mean the screening computed in its pass over the updates, and of exactly which ones: the
    RecordDicts it reduced the accepted replies to (one ArrayRecord, one MetricRecord of ``key`` = weight)."""

    contents: list[RecordDict]
    key: str
    weights: list[float]
    mean: dict[str, np.ndarray]


class StreamingMean(flwr_strategy.FedAvg):
    """Flower's ``FedAvg.aggregate_train`` with its ``aggregate_arrayrecords`` computed in one streaming pass.

    Placed right before ``FedAvg`` in a strategy's MRO (:func:`build_strategy`), so FedProx, FedAvgM
    and FedAdam/Yogi/Adagrad reach it through their own ``super().aggregate_train``. Flower's reply
    checks, weights (the ``weighted_by_key`` metric of each reply's MetricRecord) and metric
    aggregation are kept; the mean is :func:`common.aggregation.norms_and_mean` over the tensors read in
    place from the replies' bytes, or the one the screening already computed in the same pass as the
    update norms (:attr:`premean`, used only when it is of exactly these replies and weights).
    """

    premean: Premean | None = None

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Flower's FedAvg aggregation, with the weighted mean streamed (one pass, float64 across blocks)."""
        premean, self.premean = self.premean, None
        valid_replies, _ = self._check_and_log_replies(replies, is_train=True)
        if not valid_replies:
            return None, None
        contents = [msg.content for msg in valid_replies]
        return stream_arrayrecords(contents, self.weighted_by_key, premean), self.train_metrics_aggr_fn(
            contents, self.weighted_by_key
        )


def stream_arrayrecords(
    records: list[RecordDict], weighting_metric_name: str, premean: Premean | None = None
) -> ArrayRecord:
    """What Flower's ``strategy_utils.aggregate_arrayrecords`` returns, in one pass over tensors read in place
    from the records' bytes (``premean``, when it is of exactly these RecordDicts and weighting key, is the
    result: Flower's records API builds a new dict at every ``metric_records``/``array_records`` access)."""
    if (
        premean is not None
        and premean.key == weighting_metric_name
        and len(premean.contents) == len(records)
        and all(p is r for p, r in zip(premean.contents, records, strict=True))
    ):
        mean = premean.mean
    else:
        weights, tensors = [], []
        for record in records:
            # Flower's weight: the first (only) MetricRecord's weighted_by_key value; all ArrayRecords' tensors.
            weights.append(float(next(iter(record.metric_records.values()))[weighting_metric_name]))  # type: ignore[arg-type]
            tensors.append(list(record.array_records.values()))
        buffers = [{k: a.data for r in t for k, a in r.items()} for t in tensors]
        reference = Reference(buffers[0])
        packs = [reference.pack(b) for b in buffers]
        _, computed = norms_and_mean(packs, reference.arrays, weights, norms=False)
        assert computed is not None
        mean = computed
    out = ArrayRecord()
    for name in list(mean):  # serialized tensor by tensor, each freed once serialized: the result is the only copy
        out[name] = Array(mean.pop(name))
    return out


def _flower_classes() -> dict[str, type[flwr_strategy.FedAvg]]:
    s = flwr_strategy
    return {
        "fedavg": s.FedAvg,
        "fedprox": s.FedProx,
        "fedadam": s.FedAdam,
        "fedyogi": s.FedYogi,
        "fedadagrad": s.FedAdagrad,
        "fedavgm": s.FedAvgM,
        "fedmedian": s.FedMedian,
        "fedtrimmedavg": s.FedTrimmedAvg,
        "krum": s.Krum,
        "multikrum": s.MultiKrum,
        "bulyan": s.Bulyan,
    }


def _parameters(s: StrategyConfig) -> dict[str, Any]:
    """The Flower constructor arguments that ``strategy.name`` takes from fedcare's config."""
    return {
        "fedprox": {"proximal_mu": s.proximal_mu},
        "fedadam": {"eta": s.eta, "beta_1": s.beta_1, "beta_2": s.beta_2, "tau": s.tau},
        "fedyogi": {"eta": s.eta, "beta_1": s.beta_1, "beta_2": s.beta_2, "tau": s.tau},
        "fedadagrad": {"eta": s.eta, "tau": s.tau},
        "fedavgm": {"server_learning_rate": s.server_learning_rate, "server_momentum": s.server_momentum},
        "fedtrimmedavg": {"beta": s.trim_beta},
        "krum": {"num_malicious_nodes": s.num_malicious_nodes},
        "multikrum": {"num_malicious_nodes": s.num_malicious_nodes, "num_nodes_to_select": s.num_nodes_to_select},
        "bulyan": {"num_malicious_nodes": s.num_malicious_nodes},
    }.get(s.name, {})


def build_strategy(cfg: RunConfig) -> Screened:
    """The Flower strategy of ``cfg.strategy.name`` behind fedcare's screening, sampling every connected site
    with ``strategy.fraction_train`` and evaluating on all of them."""
    s = cfg.strategy
    base = _flower_classes()[s.name]
    if s.name not in MEAN_BASED:
        bases: tuple[type, ...] = (Screened, base)
    else:  # StreamingMean goes right before FedAvg in the MRO: the base's own aggregate_train reaches it
        bases = (Screened, StreamingMean) if base is flwr_strategy.FedAvg else (Screened, base, StreamingMean)
    cls = type(f"Screened{base.__name__}", bases, {})
    strategy: Screened = cls(
        fraction_train=s.fraction_train,
        fraction_evaluate=1.0,
        min_train_nodes=s.min_sites,
        min_evaluate_nodes=1,
        min_available_nodes=s.min_sites,
        weighted_by_key=NUM_EXAMPLES,
        arrayrecord_key=ARRAYS,
        configrecord_key=PLAN,
        train_metrics_aggr_fn=_no_train_metrics,
        **_parameters(s),
    )
    strategy.min_sites = s.min_sites
    strategy.norm_outlier_factor = s.norm_outlier_factor
    return strategy


def _no_train_metrics(records: list[RecordDict], weighting_metric_name: str) -> MetricRecord:
    """Flower's train-metrics mean, skipped: the strategy sees replies reduced to tensors and weight (the
    screening's), and fedcare reports each site's own metrics itself (:attr:`RoundOutcome.accepted`)."""
    return MetricRecord()


def to_record(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    """An ArrayRecord of named numpy arrays."""
    return ArrayRecord(array_dict={k: Array.from_numpy_ndarray(np.ascontiguousarray(v)) for k, v in arrays.items()})


def _site_name(metrics: Mapping[str, Any] | None, node: int) -> str:
    index = (metrics or {}).get("site_index")
    if isinstance(index, (int, float)) and not isinstance(index, bool) and math.isfinite(index) and index >= 0:
        return f"site-{int(index)}"
    return f"node-{node}"


def _senders(sent: list[Message]) -> dict[str, int]:
    # An error the SuperLink writes itself (e.g. "Node Unavailable") comes from the SuperLink's own
    # node id: map a reply back to its site through the message it answers.
    return {m.metadata.message_id: m.metadata.dst_node_id for m in sent if m.metadata.message_id}


def screen_train_replies(
    server_round: int,
    replies: list[Message],
    sent: list[Message],
    reference: Reference,
    norm_outlier_factor: float,
    *,
    with_mean: bool = False,
) -> tuple[RoundOutcome, list[Message], Premean | None]:
    """Check each train reply; returns the outcome, the accepted replies (reduced to tensors + weight) and,
    ``with_mean``, their weighted mean when the pass that took the update norms could compute it (every
    update finite and accepted; otherwise None and the strategy computes the mean of the accepted ones)."""
    outcome = RoundOutcome()
    senders = _senders(sent)
    candidates: dict[str, tuple[Message, ArrayRecord, dict[str, float], Packed, Mapping[str, ConfigRecord]]] = {}
    answered: set[int] = set()
    for reply in replies:
        node = senders.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)
        answered.add(node)
        if reply.has_error():
            outcome.failed[f"node-{node}"] = reply.error.reason or f"error code {reply.error.code}"
            continue
        content = reply.content
        records = content.metric_records, content.array_records, content.config_records  # each access builds a dict
        metrics = dict(records[0][METRICS]) if METRICS in records[0] else None
        site = _site_name(metrics, node)
        record = records[1].get(ARRAYS)
        packed, reason = _read_tensors(record, reference, site)
        outcome.bytes_up += _payload_bytes(record, packed, reference)
        reason = _reply_problem(records, metrics) or reason
        if reason is None and site in candidates:
            reason = f"a second reply claiming {site} in the same round"
        if reason is not None:
            outcome.rejected[f"{site} (node {node})" if site in candidates else site] = reason
            continue
        assert metrics is not None and record is not None and packed is not None
        candidates[site] = (reply, record, metrics, packed, records[2])
    for node in {m.metadata.dst_node_id for m in sent} - answered:
        outcome.failed[f"node-{node}"] = "no reply before the round timeout"
    # One pass over the candidates' values: the update norms (a NaN/inf value makes one non-finite) and,
    # for the mean-based strategies, the weighted mean (valid if every candidate is accepted).
    order = sorted(candidates)
    weights = [float(candidates[site][2][NUM_EXAMPLES]) for site in order]
    norms_, mean = (
        norms_and_mean([candidates[site][3] for site in order], reference.arrays, weights if with_mean else None)
        if order
        else (None, None)
    )
    norms: dict[str, float] = {}
    for site, norm in zip(order, [] if norms_ is None else norms_.tolist(), strict=True):
        if math.isfinite(norm):
            norms[site] = norm
        else:
            outcome.rejected[site] = non_finite(reference.unpack(candidates[site][3])) or "the update norm overflows"
    outcome.rejected.update(norm_outliers(norms, norm_outlier_factor))
    clean: list[Message] = []
    for site in order:
        if site in outcome.rejected:
            continue
        reply, record, metrics, _, config_records = candidates[site]
        outcome.accepted[site] = metrics
        egress = config_records.get(EGRESS)
        if egress is not None:
            outcome.egress[site] = check_egress(dict(egress))
        # The strategy sees only the checked tensors (the reply's own Arrays, in the global adapter's
        # order) and the weight (Flower requires identical metric keys across replies; fedcare reports
        # the sites' own metrics itself).
        if list(record) != list(reference.arrays):
            ordered = ArrayRecord()
            for name in reference.arrays:
                ordered[name] = record[name]
            record = ordered
        reply.content = RecordDict({ARRAYS: record, METRICS: MetricRecord({NUM_EXAMPLES: metrics[NUM_EXAMPLES]})})
        clean.append(reply)
    premean = None
    if mean is not None and len(clean) == len(order):
        premean = Premean([m.content for m in clean], NUM_EXAMPLES, weights, mean)
    return outcome, clean, premean


def _read_tensors(record: ArrayRecord | None, reference: Reference, site: str) -> tuple[Packed | None, str | None]:
    """A reply's tensors as buffers read in place (checked against the global adapter), or why they cannot be."""
    if record is None:
        return None, f"expected one ArrayRecord {ARRAYS!r} and one MetricRecord {METRICS!r}"
    buffers = {}
    for name, array in record.items():
        if array.stype != SType.NUMPY:
            return None, f"tensor {name!r} is not a numpy array without pickles"
        buffers[name] = array.data
    try:
        packed = reference.pack(buffers, who=f"{site}'s update")
    except AdapterLayoutError as err:
        return None, f"wrong layout: {err}"
    except ValueError as err:
        return None, str(err)
    if packed.offsets is reference.offsets:  # the reply's own buffers, as they are: read them from the record
        return Packed(_RecordBuffers(record, reference.names), packed.offsets), None
    return packed, None


class _RecordBuffers(Sequence[bytes]):
    """An ArrayRecord's ``.npy`` buffers in ``names`` order, looked up on access: a screened reply holds no
    list of its tensors (120 references a reply: a megabyte per 1,000 replies, most of the round's extra memory
    beside the mean)."""

    __slots__ = ("names", "record")

    def __init__(self, record: ArrayRecord, names: list[str]) -> None:
        self.record, self.names = record, names

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> bytes:  # type: ignore[override]  # no slices: Packed is read by index
        return self.record[self.names[index]].data


def _payload_bytes(record: ArrayRecord | None, packed: Packed | None, reference: Reference) -> int:
    """Tensor bytes a reply carried (without the .npy headers)."""
    if packed is not None:
        return reference.payload_bytes(packed)
    total = 0
    for array in (record or {}).values():
        try:
            total += npy_view(array.data).nbytes
        except ValueError:
            continue
    return total


def _reply_problem(
    records: tuple[Mapping[str, MetricRecord], Mapping[str, ArrayRecord], Mapping[str, ConfigRecord]],
    metrics: dict[str, Any] | None,
) -> str | None:
    """Why a train reply's records (metric, array, config) or metrics make it unusable, or None (its
    tensors: :func:`_read_tensors`)."""
    metric_records, array_records, config_records = records
    if metrics is None or set(metric_records) != {METRICS} or set(array_records) != {ARRAYS}:
        return f"expected one ArrayRecord {ARRAYS!r} and one MetricRecord {METRICS!r}"
    if set(config_records) - {EGRESS}:
        return f"a train reply may carry no ConfigRecord but {EGRESS!r}"
    if EGRESS in config_records:
        try:
            check_egress(dict(config_records[EGRESS]))
        except ValueError as err:
            return str(err)
    try:
        check_metrics(metrics, TRAIN_METRICS)
    except ValueError as err:
        return str(err)
    weight = metrics.get(NUM_EXAMPLES)
    if not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight <= 0:
        return f"metric {NUM_EXAMPLES!r} must be a positive number"
    return None


def screen_eval_replies(replies: list[Message], sent: list[Message]) -> Evaluation:
    """Each site's allowed eval metrics and the example-weighted mean of each over the sites reporting it."""
    evaluation = Evaluation()
    senders = _senders(sent)
    weights: dict[str, float] = {}
    answered: set[int] = set()
    for reply in replies:
        node = senders.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)
        answered.add(node)
        if reply.has_error():
            evaluation.failed[f"node-{node}"] = reply.error.reason or f"error code {reply.error.code}"
            continue
        records = reply.content.metric_records
        metrics = dict(records[METRICS]) if METRICS in records else {}
        site = _site_name(metrics, node)
        try:
            check_metrics(metrics, EVAL_METRICS)
            weight = float(metrics[NUM_EXAMPLES])
        except (KeyError, ValueError) as err:
            evaluation.failed[site] = f"unusable evaluation reply: {err}"
            continue
        evaluation.by_site[site] = {k: float(v) for k, v in metrics.items() if k not in (NUM_EXAMPLES, "site_index")}
        weights[site] = weight
    for node in {m.metadata.dst_node_id for m in sent} - answered:
        evaluation.failed[f"node-{node}"] = "no reply before the round timeout"
    # Task sums are not averaged: common.task_release turns them into per-site and pooled metrics.
    names = sorted({k for values in evaluation.by_site.values() for k in values if not k.startswith(TASK_PREFIX)})
    for name in names:
        pairs = [(v[name], weights[s]) for s, v in evaluation.by_site.items() if name in v and math.isfinite(v[name])]
        if pairs and sum(w for _, w in pairs) > 0:
            evaluation.metrics[name] = weighted_average(pairs)
    evaluation.by_site = dict(sorted(evaluation.by_site.items(), key=lambda kv: _site_order(kv[0])))
    return evaluation


def _site_order(name: str) -> tuple[int, str]:
    prefix, _, number = name.partition("-")
    return (int(number) if number.isdigit() else 1 << 30, prefix)
