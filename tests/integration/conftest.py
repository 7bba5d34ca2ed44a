"""Fixtures for driving the real ClientApp with hand-built Messages and Contexts."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from common.adapters import adapter_arrays, attach_lora
from common.config import DataConfig, RunConfig, TrainConfig, plan_for_round, plan_to_flat
from common.site import write_simulated_sites
from common.wire import ARRAYS, PLAN

SECRET = "Jane Roe 555-0199"


@pytest.fixture(autouse=True)
def _task_identity() -> None:
    # A Message built outside a running app needs the task identity set first (flwr 1.41).
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1


@pytest.fixture
def site_log(caplog: pytest.LogCaptureFixture):  # noqa: ANN201
    """caplog, attached to fedcare's own logger (which does not propagate to the root logger)."""
    import logging

    logger = logging.getLogger("fedcare")
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.DEBUG, logger="fedcare")
    yield caplog
    logger.removeHandler(caplog.handler)


@pytest.fixture
def cfg(tiny) -> RunConfig:
    model_cfg, _, _ = tiny
    return RunConfig(
        num_sites=2,
        num_rounds=2,
        model=model_cfg,
        train=TrainConfig(local_steps=3, batch_size=4),
        data=DataConfig(records_per_site=20),
    )


@pytest.fixture
def initial(tiny, cfg: RunConfig) -> dict[str, np.ndarray]:
    _, model, _ = tiny
    return adapter_arrays(attach_lora(copy.deepcopy(model), cfg.lora, seed=cfg.seed))


def message(cfg: RunConfig, server_round: int, arrays: dict[str, np.ndarray], kind: str, run_id: str = "r") -> Message:
    content = RecordDict(
        {
            ARRAYS: ArrayRecord(array_dict={k: Array.from_numpy_ndarray(v) for k, v in arrays.items()}),
            PLAN: ConfigRecord(plan_to_flat(plan_for_round(cfg, server_round, run_id))),
        }
    )
    return Message(content, dst_node_id=7, message_type=kind)


def context(partition: int = 0, node_config: dict | None = None) -> Context:
    return Context(
        run_id=1,
        node_id=7,
        node_config=node_config or {"partition-id": partition, "num-partitions": 2},
        state=RecordDict(),
        run_config={},
    )


def site_node(cfg: RunConfig, root: Path, index: int = 0) -> dict[str, str]:
    """The node config of a site daemon whose site.yaml is the one a simulation of ``cfg`` writes for site ``index``."""
    paths = write_simulated_sites(cfg, Path(tempfile.mkdtemp(prefix="sites-", dir=root)))
    return {"site-config": str(paths[index])}
