"""Flower ServerApp of the coordinator: compose the config, then run the federated rounds."""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flwr.app import Context, Message
from flwr.serverapp import Grid, ServerApp

from common.config import RunConfig, run_config_from_dict
from common.console import configure_logging
from common.errors import FedcareError
from server.compose import compose
from server.federation import run_federation
from server.grids import ForwardingGrid
from server.run_dir import RunDirectory


def new_run_directory(cfg: RunConfig) -> RunDirectory:
    """``output_dir/run_name`` (a UTC timestamp when run_name is empty)."""
    name = cfg.run_name or datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return RunDirectory(Path(cfg.output_dir) / name)


def make_server_app(cfg: RunConfig, raw: dict[str, Any], out: RunDirectory) -> ServerApp:
    """A ServerApp bound to an already composed config (used by ``fedcare simulate``)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        configure_logging()
        out.write_config(raw)
        run_federation(grid, cfg, out)

    return app


def _refuse(cfg: RunConfig) -> None:
    if cfg.strategy.secure_aggregation:
        # The deployed ClientApp is the Message-API site (client.client_app:app), which has no SecAgg+
        # masking: plain rounds would show the coordinator every site's adapter while the config says
        # secure aggregation is on. Refuse before any message is sent.
        raise FedcareError(
            "strategy.secure_aggregation=true is not available under flwr run / fedcare coordinator "
            "run (the deployed sites have no SecAgg+ masking); refusing rather than running plain "
            "FedAvg. Use fedcare simulate for SecAgg+, or another strategy"
        )


def refuse_unsupported(overrides: list[str]) -> None:
    """Raise FedcareError when the composed config asks for what the deployed coordinator cannot do."""
    cfg, _ = compose(overrides)
    _refuse(cfg)


class PromptGrid(ForwardingGrid):
    """The deployed coordinator's Grid, collecting each wave's replies within ``pull_interval_s`` of the last one.

    Flower's deployment Grid sleeps a fixed 3 s between two pulls in ``send_and_receive``, so every train and
    evaluate wave of a round waited 0-3 s after its last site had answered. This one pushes and pulls
    through the wrapped Grid (same messages, same ``timeout``); only the pause between pulls is shorter.
    """

    def __init__(self, grid: Grid, pull_interval_s: float = 0.2) -> None:
        super().__init__(grid)
        self.pull_interval_s = pull_interval_s

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """Push ``messages``, then pull until every reply is in or ``timeout`` seconds have passed."""
        pending = set(self.push_messages(messages))
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        while pending:
            got = list(self.pull_messages(pending))
            replies += got
            pending -= {m.metadata.reply_to_message_id for m in got}
            if not pending or (deadline is not None and time.monotonic() >= deadline):
                break
            time.sleep(self.pull_interval_s)
        return replies


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Entry point under ``flwr run``: Hydra overrides come as one string in run config ``overrides``."""
    configure_logging()
    cfg, raw = compose(shlex.split(str(context.run_config.get("overrides", ""))))
    out = new_run_directory(cfg)
    if cfg.coordinator.resume:  # a resumed run keeps its original configuration, whatever was passed now
        raw = json.loads((out.path / "config.json").read_text(encoding="utf-8"))
        raw["coordinator"]["resume"] = True
        cfg = run_config_from_dict(raw)
    _refuse(cfg)
    out.write_config(raw)
    run_federation(PromptGrid(grid), cfg, out)
