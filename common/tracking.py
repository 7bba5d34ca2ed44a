"""Opt-in TensorBoard / MLflow logging of a finished run, from its own files (metrics.jsonl, summary, evaluation).

Trackers read what the run directory already holds, so a tracker can never see more than the run
report does, and ``fedcare report`` and the trackers always agree.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common.config import TrackingConfig
from common.errors import ConfigError


def run_scalars(run_dir: str | Path) -> Iterator[tuple[str, float, int]]:
    """(tag, value, round) of every number the trackers get: losses, epsilon, bytes, task metrics."""
    run_dir = Path(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    for r, loss in enumerate(summary.get("eval_loss_by_round") or []):
        if loss is not None:
            yield "eval_loss/all_sites", float(loss), r
    metrics = run_dir / "metrics.jsonl"
    for line in metrics.read_text(encoding="utf-8").splitlines() if metrics.exists() else []:
        row = json.loads(line)
        r = int(row["round"])
        for site, loss in (row.get("eval_loss_by_site") or {}).items():
            yield f"eval_loss/{site}", float(loss), r
        for site, values in (row.get("sites") or {}).items():
            for key in ("epsilon", "train_loss"):
                if values.get(key) is not None:
                    yield f"{key}/{site}", float(values[key]), r
        for key in ("bytes_up", "bytes_down"):
            if row.get(key) is not None:
                yield f"traffic/{key}", float(row[key]), r
    evaluation = run_dir / "evaluation.json"
    if evaluation.exists():
        ev = json.loads(evaluation.read_text(encoding="utf-8"))
        last = int(summary.get("rounds", 0))
        for which, step in (("base", 0), ("final", last)):
            for key, value in ev["pooled"][which]["metrics"].items():
                if isinstance(value, (int, float)) and key != "n":
                    yield f"task/{key}", float(value), step


def log_run(run_dir: str | Path, cfg: TrackingConfig) -> list[str]:
    """Send the run's numbers to the enabled trackers; returns where they went.

    Raises:
        ConfigError: when a tracker is enabled but its package is not installed.
    """
    run_dir = Path(run_dir)
    written = []
    scalars = list(run_scalars(run_dir)) if (cfg.tensorboard or cfg.mlflow_uri) else []
    if cfg.tensorboard:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                "tracking.tensorboard: the 'tensorboard' package is not installed (pip install tensorboard)"
            ) from None
        writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        for tag, value, step in scalars:
            writer.add_scalar(tag, value, step)
        writer.close()
        written.append(str(run_dir / "tensorboard"))
    if cfg.mlflow_uri:
        try:
            import mlflow
        except ImportError:
            raise ConfigError(
                "tracking.mlflow_uri: the 'mlflow' package is not installed (pip install mlflow)"
            ) from None
        mlflow.set_tracking_uri(cfg.mlflow_uri)
        with mlflow.start_run(run_name=run_dir.name):
            config: dict[str, Any] = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
            mlflow.log_params(
                {
                    f"{k}.{kk}": vv
                    for k, v in config.items()
                    if isinstance(v, dict)
                    for kk, vv in v.items()
                    if isinstance(vv, (int, float, str, bool))
                }
            )
            for tag, value, step in scalars:
                mlflow.log_metric(tag.replace("/", "."), value, step=step)
        written.append(cfg.mlflow_uri)
    return written
