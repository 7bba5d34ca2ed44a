"""A run's directory: composed config, metrics.jsonl, one PEFT adapter per round, summary.json."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


class RunDirectory:
    """Writes a run's outputs under ``path`` (created if needed)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    def adapter_dir(self, server_round: int) -> Path:
        """Folder of the global adapter after ``server_round`` (0 = the initial adapter)."""
        return self.path / "adapters" / f"round-{server_round:03d}"

    def write_config(self, composed: dict[str, Any]) -> None:
        _write_json(self.path / "config.json", composed)

    def append_metrics(self, row: dict[str, Any]) -> None:
        with (self.path / "metrics.jsonl").open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(_json_safe(row), sort_keys=True) + "\n")

    def write_summary(self, summary: dict[str, Any]) -> None:
        _write_json(self.path / "summary.json", summary)


def _json_safe(value: Any) -> Any:
    """inf/nan are not JSON: write them as null (epsilon without DP is unbounded)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(_json_safe(data), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)
