"""A separate process training at one site (test helper): ``python -m tests.integration.site_worker SITE_YAML RUN``.

Runs every round of a 2-round plan through the real ClientApp with the site daemon's node config,
so two of these at once are two concurrent trainings at one site state dir.
"""

from __future__ import annotations

import sys

from flwr.app import MessageType
from flwr.supercore.task_identity import TaskIdentity

from client import client_app
from client.runtime import model_for
from common.adapters import adapter_arrays
from common.config import DataConfig, ModelConfig, PrivacyConfig, RunConfig, TrainConfig
from common.model import TINY_MODEL
from tests.integration.conftest import context, message


def main(site_yaml: str, run_id: str, cache: str) -> int:
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    # Each run asks for epsilon 3 of the site's lifetime 8, so both fit.
    cfg = RunConfig(
        num_sites=2,
        num_rounds=2,
        model=ModelConfig(name_or_path=TINY_MODEL, cache_dir=cache),
        privacy=PrivacyConfig(target_epsilon=3.0),
        train=TrainConfig(local_steps=3, batch_size=4),
        data=DataConfig(records_per_site=20),
    )
    model, _ = model_for(cfg.model, cfg.lora, cfg.seed)
    arrays = adapter_arrays(model)
    for server_round in (1, 2):
        reply = client_app.app(
            message(cfg, server_round, arrays, MessageType.TRAIN, run_id=run_id),
            context(node_config={"site-config": site_yaml}),
        )
        if reply.has_error():
            print(f"{run_id} round {server_round}: {reply.error.reason}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:]))
