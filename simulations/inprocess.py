"""N hospitals in this process, no Ray: the real ServerApp loop and the real ClientApp over an in-process Grid.

Flower's simulation engine starts Ray workers (tens of seconds on two cores). For tests and short
benchmarks, :class:`InProcessGrid` delivers each Message to a ClientApp in the same process, one
call after another, with one persistent Context per site (its privacy ledger lives in
``context.state``, as on a SuperNode). Each delivery gets its own deep copy of the message, as a
real transport would serialize it. It is a research and test tool, not a deployment path.
"""

from __future__ import annotations

import copy
import os
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from flwr.app import Context, Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

from common.config import RunConfig
from common.errors import FedcareError
from common.site import write_simulated_sites
from server.compose import compose
from server.federation import EvaluateFn, federated_evaluation, run_federation
from server.run_dir import RunDirectory
from server.server_app import new_run_directory

ClientCall = Callable[[Message, Context], Message]
SERVER_NODE = 0


class InProcessGrid(Grid):
    """A Grid whose sites are ClientApp calls in this process (site i has partition id i)."""

    def __init__(
        self,
        client_app: ClientCall,
        num_sites: int,
        run_id: int = 1,
        node_config: Callable[[int], dict[str, Any]] | None = None,
    ) -> None:
        self.client_app = client_app
        self.run_id = run_id
        self.contexts = {
            1000 + i: Context(
                run_id=run_id,
                node_id=1000 + i,
                node_config=(node_config(i) if node_config else {"partition-id": i, "num-partitions": num_sites}),
                state=RecordDict(),
                run_config={},
            )
            for i in range(num_sites)
        }
        self._replies: dict[str, Message] = {}
        # Messages built here (by strategies) take their source identity from the task identity.
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = run_id, SERVER_NODE, 1

    def set_run(self, run: Any) -> None:  # noqa: D102 - nothing to bind
        pass

    @property
    def run(self) -> Any:  # noqa: D102
        raise NotImplementedError("InProcessGrid has no SuperLink run")

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,  # noqa: D102
        ttl: float | None = None,
    ) -> Message:
        return Message(content, dst_node_id=dst_node_id, message_type=message_type, group_id=group_id, ttl=ttl)

    def get_node_ids(self) -> Iterable[int]:  # noqa: D102
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Deliver each message to its site now; keep the reply for :meth:`pull_messages`."""
        ids = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = uuid.uuid4().hex
            delivered = copy.deepcopy(msg)
            reply = self.client_app(delivered, self.contexts[msg.metadata.dst_node_id])
            reply.metadata.__dict__["_message_id"] = uuid.uuid4().hex
            self._replies[msg.metadata.message_id] = reply
            ids.append(msg.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:  # noqa: D102
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """Push, then pull every reply (calls are synchronous: nothing is ever late)."""
        return self.pull_messages(self.push_messages(messages))


def site_calls(cfg: RunConfig, run_dir: Path) -> ClientCall:
    """The real ClientApp serving ``cfg``'s virtual hospitals, each with its own site.yaml under ``run_dir/sites``.

    The same path as ``fedcare simulate``: every site reads its data, limits, ledger file and egress
    log from its site.yaml (written here from the config).
    """
    from client.client_app import site_app

    sites_dir = (run_dir / "sites").resolve()
    write_simulated_sites(cfg, sites_dir)
    return site_app(sites_dir)


def simulate_inprocess(
    overrides: list[str], client_app: ClientCall | None = None, evaluate: EvaluateFn = federated_evaluation
) -> dict[str, Any]:
    """Compose the config and run it on :class:`InProcessGrid`; returns ``summary.json``'s contents.

    Raises:
        FedcareError: on secure aggregation (its protocol needs Flower's engine: use ``fedcare simulate``).
    """
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    cfg, raw = compose(overrides)
    return run_inprocess(cfg, raw, new_run_directory(cfg), client_app, evaluate)


def run_inprocess(
    cfg: RunConfig,
    raw: dict[str, Any],
    out: RunDirectory,
    client_app: ClientCall | None = None,
    evaluate: EvaluateFn = federated_evaluation,
) -> dict[str, Any]:
    """Run ``cfg`` into the run directory ``out`` on :class:`InProcessGrid`; returns the summary.

    Raises:
        FedcareError: on secure aggregation (its protocol needs Flower's engine: use ``fedcare simulate``).
    """
    if cfg.strategy.secure_aggregation:
        raise FedcareError(
            "strategy.secure_aggregation: the in-process engine has no SecAgg+; use simulation.engine=ray"
        )
    out.write_config(raw)
    sites = site_calls(cfg, out.path)
    return run_federation(InProcessGrid(client_app or sites, cfg.num_sites), cfg, out, evaluate)
