"""Flower ServerApp of the coordinator: compose the config, then run the federated rounds."""

from __future__ import annotations

import json
import shlex
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from common.config import RunConfig, run_config_from_dict
from common.console import configure_logging
from common.errors import FedcareError
from server.compose import compose
from server.federation import run_federation
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
    run_federation(grid, cfg, out)
