"""A run's directory: composed config, metrics.jsonl, one PEFT adapter per round, summary.json."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from common.adapters import save_adapter
from common.errors import FedcareError
from common.signing import sign_adapter
from common.wire import NUM_EXAMPLES

SITE_ROUND_KEYS = ("epsilon", "epsilon_remaining", "noise_multiplier", "steps", "update_norm")
FACT_KEYS = ("dp_enabled", "epsilon", "delta", "target_epsilon", "noise_multiplier", "egress_seq", "egress_head")
log = logging.getLogger("fedcare.coordinator")


def log_site_budgets(server_round: int, trained: Mapping[int, Mapping[str, float]]) -> None:
    """One console line per site: the epsilon it has spent and what its lifetime budget still allows."""
    for idx, m in sorted(trained.items()):
        if m.get("dp_enabled"):
            log.info(
                "round %d: site-%d epsilon %.3f of %g spent, %.3f left (noise multiplier %.2f)",
                server_round,
                idx,
                m["epsilon"],
                m["target_epsilon"],
                m["epsilon_remaining"],
                m["noise_multiplier"],
            )
        else:
            log.info("round %d: site-%d trained WITHOUT DP (its own choice)", server_round, idx)


def log_task_metrics(server_round: int, tasks: Mapping[str, Any] | None) -> None:
    """One console line: the sites' released task metric and the pooled one (DP-noised unless DP is off)."""
    if not tasks:
        log.info("round %d: no site released task metrics (none holds a task set)", server_round)
        return
    metric = tasks["metric"]
    sites = ", ".join(f"{s} {m[metric]:.3f}" for s, m in tasks["sites"].items())
    pooled = tasks["pooled"]
    extra = f", macro-F1 {pooled['macro_f1']:.3f}" if tasks["kind"] == "choice" else ""
    noise = (
        f"DP-noised: count noise std {max(m['noise_std'] for m in tasks['sites'].values()):.2f} per site"
        if tasks["dp_noised"]
        else "exact: DP off"
    )
    log.info(
        "round %d: task %s (%s) %s; pooled %.3f%s over %.0f units",
        server_round,
        metric,
        noise,
        sites,
        pooled[metric],
        extra,
        pooled["n"],
    )
    for site in tasks.get("skipped", []):
        log.warning(
            "round %d: %s released a different task kind or class count; left out of the pool", server_round, site
        )


def adapter_facts(run_id: str, server_round: int, strategy: str, sites: Mapping[str, Mapping[str, Any]]) -> dict:
    """What a global adapter's signature binds: run, round, strategy, each site's privacy and egress-log head."""
    return {
        "run_id": run_id,
        "round": server_round,
        "strategy": strategy,
        "sites": {sid: {k: _json_safe(site.get(k)) for k in FACT_KEYS} for sid, site in sorted(sites.items())},
    }


SITE_SUMMARY_KEYS = ("epsilon", "epsilon_remaining", "delta", "target_epsilon", "noise_multiplier")


def site_entry(
    previous: dict[str, Any] | None, metrics: Mapping[str, float], egress: tuple[int, str] | None = None
) -> dict[str, Any]:
    """A site's line in summary.json after a round it trained in (from its reply metrics and egress-log head).

    A site reports only what its release rule allows (``common.wire``): a number it did not send is
    absent here, not invented; ``dp_enabled`` is false only when the site said so.
    """
    site_id = f"site-{int(metrics['site_index'])}"
    entry: dict[str, Any] = {
        "site_id": site_id,
        "examples": int(metrics[NUM_EXAMPLES]),
        "dp_enabled": bool(metrics.get("dp_enabled", 1.0)),
        "precision": "bf16" if metrics.get("bf16") else "fp32",  # what the site's hardware chose
        "rounds_trained": (previous or {}).get("rounds_trained", 0) + 1,
    }
    entry.update({k: metrics[k] for k in SITE_SUMMARY_KEYS if k in metrics})
    if egress is not None:  # anchors the site's egress log outside the site (signed into the manifest)
        entry["egress_seq"], entry["egress_head"] = egress
    return entry


def per_site_round(trained: Mapping[int, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """The per-site part of a metrics.jsonl row: site id -> the round's numbers (those the site sent)."""
    return {f"site-{i}": {k: m[k] for k in SITE_ROUND_KEYS if k in m} for i, m in sorted(trained.items())}


class RunDirectory:
    """Writes a run's outputs under ``path`` (created if needed)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    def adapter_dir(self, server_round: int) -> Path:
        """Folder of the global adapter after ``server_round`` (0 = the initial adapter)."""
        return self.path / "adapters" / f"round-{server_round:03d}"

    def save_adapter(self, model: Any, server_round: int, signing_key: str = "", facts: dict | None = None) -> Path:
        """Save the global adapter of ``server_round`` in PEFT's format, signed (with ``facts``) when a key is given."""
        adapter_dir = save_adapter(model, self.adapter_dir(server_round))
        if signing_key:
            sign_adapter(
                adapter_dir, Path(signing_key), facts or adapter_facts(self.path.name, server_round, "initial", {})
            )
        return adapter_dir

    def write_config(self, composed: dict[str, Any]) -> None:
        _write_json(self.path / "config.json", composed)

    def append_metrics(self, row: dict[str, Any]) -> None:
        with (self.path / "metrics.jsonl").open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(_json_safe(row), sort_keys=True) + "\n")

    def write_summary(self, summary: dict[str, Any]) -> None:
        _write_json(self.path / "summary.json", summary)

    def write_checkpoint(self, state: dict[str, Any]) -> None:
        """The round loop's state after a completed round (the adapter is in ``adapter_dir``)."""
        _write_json(self.path / "checkpoint.json", state)

    def strategy_state_path(self, server_round: int) -> Path:
        """The Flower strategy's own state after ``server_round`` (server-optimizer moments, momentum)."""
        return self.path / "strategy" / f"round-{server_round:03d}.npz"

    def save_strategy_state(self, server_round: int, arrays: Mapping[str, Any]) -> None:
        path = self.strategy_state_path(server_round)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(path)

    def load_strategy_state(self, server_round: int) -> dict[str, Any]:
        """Raises FedcareError when the state of ``server_round`` was not saved."""
        path = self.strategy_state_path(server_round)
        if not path.exists():
            raise FedcareError(f"coordinator.resume: {path} does not exist; the run cannot resume exactly")
        with np.load(path) as npz:
            return {k: npz[k] for k in npz.files}

    def read_checkpoint(self) -> dict[str, Any]:
        """The last checkpoint; metrics.jsonl rows of rounds after it are dropped (they will rerun).

        Raises:
            FedcareError: when the run directory has no checkpoint.
        """
        path = self.path / "checkpoint.json"
        if not path.exists():
            raise FedcareError(f"coordinator.resume: {path} does not exist; nothing to resume")
        state: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        metrics = self.path / "metrics.jsonl"
        if metrics.exists():
            rows = [
                line
                for line in metrics.read_text(encoding="utf-8").splitlines()
                if line and json.loads(line)["round"] <= state["completed_round"]
            ]
            metrics.write_text("".join(row + "\n" for row in rows), encoding="utf-8")
        return state


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
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(_json_safe(data), indent=2, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)
