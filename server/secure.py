"""The coordinator under secure aggregation: Flower's own SecAgg+ (legacy workflow) writing fedcare's run directory.

``strategy.secure_aggregation=true`` runs Flower's ``DefaultWorkflow(fit_workflow=SecAggPlusWorkflow)``
with :class:`SecureFedAvg`. Each site (``client/secure_app.py``) quantizes its example-weighted
adapter, masks it with pairwise and private masks and uploads only the masked vector; the workflow
sums the vectors, removes the masks (reconstructing a dropped site's mask key from the others'
Shamir shares) and hands the strategy the example-weighted mean. The coordinator therefore never
holds a single site's adapter; it still receives each site's numeric metrics (epsilon, losses).
Each SecAgg+ reply carries the site's egress-log head after it (``common.wire.EGRESS``); the head
after a site's unmask reply is signed into the round's manifest, so a site's log is anchored as
under the Message-API strategies.

Differences from ``server/federation.py``: evaluation of the initial adapter (round 0) runs as one
plain federated evaluation before the first SecAgg+ round (legacy centralized evaluation would need
data at the coordinator); there is no checkpoint or resume; ``bytes_up`` is measured from the masked
vectors the coordinator received (int64 per LoRA value, i.e. twice the float32 adapter), with the key
exchange and secret-share traffic reported separately as ``bytes_up_protocol``.

Caveat (Flower 1.41, not fixed here: no home-made crypto): ``pseudo_rand_gen`` folds each 32-byte
mask seed into a 32-bit seed for numpy's RandomState, so each mask has at most 2^32 possible values.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import Context, Message, MessageType
from flwr.common import (
    EvaluateRes,
    FitRes,
    Parameters,
    Scalar,
    bytes_to_ndarray,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.common.secure_aggregation.secaggplus_constants import Key as SecAggKey
from flwr.server import LegacyContext, ServerConfig
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.server.workflow.default_workflows import default_evaluate_workflow
from flwr.serverapp import Grid, ServerApp

from common.adapters import adapter_arrays, attach_lora, load_adapter_arrays
from common.aggregation import check_layout, nbytes, weighted_average
from common.config import RunConfig, plan_for_round, plan_to_flat
from common.console import configure_logging
from common.errors import FedcareError
from common.model import load_model_and_tokenizer
from common.wire import EGRESS, EVAL_METRICS, NUM_EXAMPLES, PLAN, TRAIN_METRICS, check_egress, check_metrics
from server.grids import ForwardingGrid
from server.run_dir import RunDirectory, adapter_facts, log_site_budgets, per_site_round, site_entry

log = logging.getLogger("fedcare.coordinator")

Arrays = dict[str, np.ndarray]


@dataclass
class Traffic:
    """Tensor bytes of one round's SecAgg+ (train) messages, as the coordinator sent and received them."""

    down: int = 0  # float32 adapter tensors sent to the sites with the fit instructions
    masked_up: int = 0  # masked vectors received (int64 per value, plus one weight factor per site)
    protocol_up: int = 0  # public keys, encrypted key shares and unmasking shares received
    egress: dict[int, tuple[int, str]] = field(default_factory=dict)  # node id -> its egress log's last (seq, head)


class MeteredGrid(ForwardingGrid):
    """A Grid that forwards everything, counts the tensor bytes of SecAgg+ (train) messages and notes the
    egress-log head each site's reply reports (``common.wire.EGRESS``)."""

    def __init__(self, grid: Grid) -> None:
        super().__init__(grid)
        self.traffic = Traffic()

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """Forward to the wrapped grid; count train traffic both ways."""
        messages = list(messages)
        for msg in messages:
            if msg.metadata.message_type == MessageType.TRAIN:
                for record in msg.content.array_records.values():
                    self.traffic.down += sum(record[k].numpy().nbytes for k in record)
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        for reply in replies:
            if reply.metadata.message_type != MessageType.TRAIN or reply.has_error():
                continue
            if EGRESS in reply.content.config_records:
                try:
                    head = check_egress(dict(reply.content.config_records[EGRESS]))
                except ValueError as err:
                    log.warning(
                        "node %d: its SecAgg+ reply's egress head is not anchored: %s", reply.metadata.src_node_id, err
                    )
                else:
                    self.traffic.egress[reply.metadata.src_node_id] = head
            configs = reply.content.config_records.get(RECORD_KEY_CONFIGS, {})
            for key, value in configs.items():
                if key == SecAggKey.MASKED_PARAMETERS:
                    self.traffic.masked_up += sum(bytes_to_ndarray(b).nbytes for b in value)
                elif isinstance(value, bytes):
                    self.traffic.protocol_up += len(value)
                elif isinstance(value, list):
                    self.traffic.protocol_up += sum(len(v) for v in value if isinstance(v, bytes))
        return replies


@dataclass
class RoundLog:
    """What the strategy learned in a round, until its evaluation completes the metrics row."""

    server_round: int
    started: float
    traffic: Traffic
    trained: dict[int, dict[str, Any]] = field(default_factory=dict)
    egress: dict[int, tuple[int, str]] = field(default_factory=dict)  # site index -> its egress head after unmask
    sampled: int = 0  # sites asked to train
    failures: int = 0  # sites asked that are not in the sum
    aggregated: bool = False


class SecureFedAvg(FedAvg):
    """Legacy FedAvg for the SecAgg+ workflow: it only ever receives the already unmasked weighted mean.

    The SecAgg+ workflow calls :meth:`aggregate_fit` with one ``FitRes`` per surviving site, every one
    carrying the SAME ``Parameters`` object (the aggregate) plus that site's numeric metrics; the
    masked vectors themselves never reach the strategy.
    """

    def __init__(self, cfg: RunConfig, out: RunDirectory, model: Any, run_id: str) -> None:
        self.cfg = cfg
        self.out = out
        self.model = model
        self.run_id = run_id
        self.global_arrays = adapter_arrays(model)
        self.names = sorted(self.global_arrays)
        self.eval_losses: list[float] = []
        self.sites: dict[str, dict[str, Any]] = {}
        self.bytes_up: list[int] = []
        self.bytes_down: list[int] = []
        self.current: RoundLog | None = None
        super().__init__(
            fraction_fit=cfg.strategy.fraction_train,
            fraction_evaluate=1.0,
            # SecAgg+ needs at least 2 sites; every site must be connected before the first round.
            min_fit_clients=max(2, cfg.strategy.min_sites),
            min_evaluate_clients=1,
            min_available_clients=cfg.num_sites,
            accept_failures=True,
            initial_parameters=ndarrays_to_parameters([self.global_arrays[n] for n in self.names]),
            on_fit_config_fn=self.plan_config,
            on_evaluate_config_fn=self.plan_config,
        )

    def plan_config(self, server_round: int) -> dict[str, Scalar]:
        """The round plan as one JSON string (legacy configs hold scalars only)."""
        return {PLAN: json.dumps(plan_to_flat(plan_for_round(self.cfg, server_round, self.run_id)))}

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: Any
    ) -> list[tuple[ClientProxy, Any]]:
        """FedAvg's sampling; remembers how many sites were asked (SecAgg+ lists a failure more than once)."""
        instructions = super().configure_fit(server_round, parameters, client_manager)
        if self.current is not None:
            self.current.sampled = len(instructions)
        return instructions

    def aggregate_fit(
        self, server_round: int, results: list[tuple[ClientProxy, FitRes]], failures: list[Any]
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        """Take the workflow's unmasked aggregate, save it as the round's global adapter, note each site's metrics.

        Raises:
            FedcareError: when the results do not all carry one aggregate (not the SecAgg+ workflow),
                or fewer than ``strategy.min_sites`` sites are in the sum.
        """
        current = self.current
        assert current is not None and current.server_round == server_round  # set by SecureRounds
        if len({id(res.parameters) for _, res in results}) != 1:
            raise FedcareError(
                f"round {server_round}: expected the SecAgg+ workflow's single aggregate, got "
                f"{len(results)} separate updates"
            )
        dropped = max(0, current.sampled - len(results))
        if dropped:
            # Flower's SecAgg+ workflow records a failed reply twice; log each reason once.
            log.warning(
                "round %d: %d of %d sites dropped out of secure aggregation (%s)",
                server_round,
                dropped,
                current.sampled,
                "; ".join(sorted({str(f) for f in failures})),
            )
        if len(results) < self.cfg.strategy.min_sites:
            raise FedcareError(
                f"round {server_round}: {len(results)} sites in the secure sum, "
                f"fewer than strategy.min_sites={self.cfg.strategy.min_sites}"
            )
        aggregate = parameters_to_ndarrays(results[0][1].parameters)
        if len(aggregate) != len(self.names):
            raise FedcareError(
                f"round {server_round}: the aggregate has {len(aggregate)} tensors, the adapter {len(self.names)}"
            )
        # Dequantization yields float64; the adapter (and the next round's message) is float32.
        arrays = {
            name: np.asarray(a, dtype=self.global_arrays[name].dtype)
            for name, a in zip(self.names, aggregate, strict=True)
        }
        check_layout(arrays, self.global_arrays, who=f"round {server_round} aggregate")
        self.global_arrays = arrays
        load_adapter_arrays(self.model, arrays)
        for proxy, res in results:
            metrics = dict(res.metrics)
            check_metrics(metrics, TRAIN_METRICS)
            index = int(metrics["site_index"])
            current.trained[index] = metrics
            if proxy.node_id in current.traffic.egress:  # the head after its unmask reply: anchors the site's log
                current.egress[index] = current.traffic.egress[proxy.node_id]
        sites = {
            **self.sites,
            **{
                f"site-{i}": site_entry(self.sites.get(f"site-{i}"), m, current.egress.get(i))
                for i, m in current.trained.items()
            },
        }
        self.out.save_adapter(
            self.model,
            server_round,
            self.cfg.coordinator.signing_key,
            adapter_facts(self.run_id, server_round, "secagg", sites),
        )
        current.failures = dropped
        current.aggregated = True
        return ndarrays_to_parameters([arrays[n] for n in self.names]), {}

    def aggregate_evaluate(
        self, server_round: int, results: list[tuple[ClientProxy, EvaluateRes]], failures: list[Any]
    ) -> tuple[float | None, dict[str, Scalar]]:
        """Example-weighted held-out loss; completes the round's metrics row (round 0: the initial adapter)."""
        for failure in failures:
            log.warning("round %d: a site did not evaluate: %s", server_round, failure)
        by_site: dict[str, float] = {}
        pairs: list[tuple[float, float]] = []
        for _, res in results:
            metrics = dict(res.metrics)
            check_metrics(metrics, EVAL_METRICS)
            by_site[f"site-{int(metrics['site_index'])}"] = float(metrics["eval_loss"])
            pairs.append((float(metrics["eval_loss"]), float(metrics[NUM_EXAMPLES])))
        loss = weighted_average(pairs) if pairs else math.nan
        self.eval_losses.append(loss)
        if server_round == 0:
            log.info("round 0 (before training): eval loss %.4f", loss)
        else:
            self._finish_round(loss, dict(sorted(by_site.items())))
        return loss, {}

    def summary(self, wall_seconds: float) -> dict[str, Any]:
        """summary.json: the keys of ``server/federation.py`` plus ``secure_aggregation``."""
        return {
            "rounds": self.cfg.num_rounds,
            "dp_enabled": all(s["dp_enabled"] for s in self.sites.values()),
            "sites": [self.sites[k] for k in sorted(self.sites, key=lambda s: int(s.split("-")[1]))],
            "eval_loss_by_round": self.eval_losses,
            "bytes_up_per_round": self.bytes_up,
            "bytes_down_per_round": self.bytes_down,
            "adapter_dir": str(self.out.adapter_dir(self.cfg.num_rounds)),
            "run_dir": str(self.out.path),
            "signed": bool(self.cfg.coordinator.signing_key),
            "wall_seconds": wall_seconds,
            "secure_aggregation": True,
        }

    def _finish_round(self, eval_loss: float, by_site: dict[str, float]) -> None:
        current = self.current
        assert current is not None and current.aggregated
        r, trained = current.server_round, current.trained
        for idx, m in trained.items():
            self.sites[f"site-{idx}"] = site_entry(self.sites.get(f"site-{idx}"), m, current.egress.get(idx))
        traffic = current.traffic
        self.bytes_up.append(traffic.masked_up)
        self.bytes_down.append(traffic.down)
        seconds = time.perf_counter() - current.started
        self.out.append_metrics(
            {
                "round": r,
                "seconds": seconds,
                "sites_trained": len(trained),
                "sites_failed": current.failures,
                "bytes_up": traffic.masked_up,
                "bytes_up_protocol": traffic.protocol_up,
                "bytes_down": traffic.down,
                "eval_loss": eval_loss,
                "eval_loss_by_site": by_site,
                "secure_aggregation": True,
                "sites": per_site_round(trained),
            }
        )
        log.info(
            "round %d/%d done in %.1f s (SecAgg+, %d sites in the sum): eval loss %.4f, "
            "max epsilon %.3f, %.2f MB masked up",
            r,
            self.cfg.num_rounds,
            seconds,
            len(trained),
            eval_loss,
            max(m["epsilon"] for m in trained.values()),
            traffic.masked_up / 1e6,
        )
        log_site_budgets(r, trained)


class SecureRounds:
    """DefaultWorkflow's fit step: evaluate the initial adapter before round 1, then SecAgg+, checked to finish."""

    def __init__(self, secagg: SecAggPlusWorkflow, strategy: SecureFedAvg, grid: MeteredGrid) -> None:
        self.secagg = secagg
        self.strategy = strategy
        self.grid = grid

    def __call__(self, grid: Grid, context: Context) -> None:
        """Run one round's fit step on ``context`` (a LegacyContext).

        Raises:
            FedcareError: when SecAgg+ halted (fewer sites answered than its reconstruction threshold).
        """
        assert isinstance(context, LegacyContext)
        cfg = context.state.config_records[MAIN_CONFIGS_RECORD]
        server_round = int(cfg[WorkflowKey.CURRENT_ROUND])
        if server_round == 1 and not self.strategy.eval_losses:
            cfg[WorkflowKey.CURRENT_ROUND] = 0  # the sites see round 0: evaluation of the initial adapter
            try:
                default_evaluate_workflow(grid, context)
            finally:
                cfg[WorkflowKey.CURRENT_ROUND] = server_round
        log.info(
            "round %d/%d: secure aggregation (SecAgg+) over the sites' adapters",
            server_round,
            self.strategy.cfg.num_rounds,
        )
        self.grid.traffic = Traffic()
        self.strategy.current = RoundLog(server_round, time.perf_counter(), self.grid.traffic)
        self.secagg(grid, context)
        if not self.strategy.current.aggregated:
            threshold = self.strategy.cfg.strategy.secagg_threshold
            raise FedcareError(
                f"round {server_round}: secure aggregation halted: too few sites answered to "
                f"unmask the sum (strategy.secagg_threshold={threshold})"
            )


def secagg_workflow(cfg: RunConfig) -> SecAggPlusWorkflow:
    """Flower's SecAgg+ workflow configured from ``cfg.strategy``."""
    s = cfg.strategy
    return SecAggPlusWorkflow(
        num_shares=s.secagg_num_shares,
        reconstruction_threshold=s.secagg_threshold,
        max_weight=s.secagg_max_weight,
        clipping_range=s.secagg_clipping_range,
        quantization_range=s.secagg_quantization_range,
        timeout=cfg.coordinator.round_timeout_s or None,
    )


def run_secure_federation(
    grid: Grid, context: Context, cfg: RunConfig, out: RunDirectory, strategy_cls: type[SecureFedAvg] = SecureFedAvg
) -> dict[str, Any]:
    """Run ``cfg.num_rounds`` SecAgg+ rounds on the sites connected to ``grid``; writes and returns the summary."""
    start = time.perf_counter()
    base, _ = load_model_and_tokenizer(cfg.model)
    model = attach_lora(base, cfg.lora, seed=cfg.seed)
    strategy = strategy_cls(cfg, out, model, out.path.name)
    out.save_adapter(strategy.model, 0, cfg.coordinator.signing_key)
    log.info(
        "global adapter: %d LoRA tensors, %.2f MB; secure aggregation (SecAgg+) on",
        len(strategy.names),
        nbytes(strategy.global_arrays) / 1e6,
    )
    metered = MeteredGrid(grid)
    legacy = LegacyContext(context, config=ServerConfig(num_rounds=cfg.num_rounds), strategy=strategy)
    DefaultWorkflow(fit_workflow=SecureRounds(secagg_workflow(cfg), strategy, metered))(metered, legacy)
    summary = strategy.summary(time.perf_counter() - start)
    out.write_summary(summary)
    return summary


def make_secure_server_app(
    cfg: RunConfig, raw: dict[str, Any], out: RunDirectory, strategy_cls: type[SecureFedAvg] = SecureFedAvg
) -> ServerApp:
    """A ServerApp bound to an already composed config (``fedcare simulate`` with secure aggregation).

    Args:
        cfg: the composed run configuration (``cfg.strategy.secure_aggregation`` is expected true).
        raw: the composed plain dict, written to ``config.json``.
        out: the run directory.
        strategy_cls: the strategy class (tests pass a subclass that records what it receives).
    """
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        configure_logging()
        out.write_config(raw)
        run_secure_federation(grid, context, cfg, out, strategy_cls)

    return app
