"""After a run: task metrics of the base model vs the final adapter per site (``evaluation.json``), and
``fedcare report RUN_DIR`` / ``fedcare report --sweep DIR`` to (re)build the HTML reports.

In a simulation the driver holds every virtual site's task set (synthetic or ``data.task_paths``), so
it scores them itself after the last round; nothing here runs at a real site.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from common.config import RunConfig
from common.errors import FedcareError

log = logging.getLogger("fedcare.report")


def evaluate_run(cfg: RunConfig, run_dir: Path, adapter_dir: str | Path) -> dict[str, Any] | None:
    """Score each site's task set with the base model and the final adapter; write ``evaluation.json``."""
    import torch

    from common.console import quiet_third_party
    from common.evaluation import EvalSettings, evaluate_sites, site_task
    from common.model import load_model_and_tokenizer

    quiet_third_party()
    tasks = {f"site-{i}": t for i in range(cfg.num_sites) if (t := site_task(cfg.data, i)) is not None}
    if not tasks:
        return None
    log.info(
        "task metrics: base model vs final adapter on %d items over %d sites",
        sum(len(t.items) for t in tasks.values()),
        len(tasks),
    )
    if cfg.model.num_threads:
        torch.set_num_threads(cfg.model.num_threads)
    base, tokenizer = load_model_and_tokenizer(cfg.model)
    settings = EvalSettings.for_training_length(cfg.train.max_seq_len)
    result = evaluate_sites(base, tokenizer, tasks, adapter_dir, settings, progress=sys.stderr.isatty())
    (run_dir / "evaluation.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return result


def exact_losses(cfg: RunConfig, run_dir: Path) -> dict[str, Any] | None:
    """Simulation only: the exact held-out loss of the base model and every round's global adapter at
    every site, written to ``exact_loss.json``. A deployed coordinator never sees these (it gets the
    sites' noised releases); the simulation driver holds every site's data, so it can measure them."""
    from safetensors.numpy import load_file

    from client import runtime
    from client.train import evaluate_loss
    from common.adapters import adapter_arrays, load_adapter_arrays
    from common.config import plan_for_round

    adapters = sorted((run_dir / "adapters").glob("round-*/adapter_model.safetensors"))
    if not cfg.simulation.exact_loss or not adapters:
        return None
    plan = plan_for_round(cfg, 1, run_dir.name)
    model, tokenizer = runtime.model_for(cfg.model, cfg.lora, cfg.seed)
    precision = runtime.precision_for(cfg.model)
    sites = [runtime.examples_for(cfg.data, i, cfg.num_sites, plan, tokenizer) for i in range(cfg.num_sites)]
    initial = adapter_arrays(model)
    log.info("exact held-out loss: %d saved adapters at %d sites", len(adapters), len(sites))
    by_round = []
    saved = [(int(a.parent.name.split("-")[1]), dict(load_file(str(a)))) for a in adapters]
    for server_round, arrays in saved if saved[0][0] == 0 else [(0, initial), *saved]:  # 000: before training
        load_adapter_arrays(model, arrays)
        losses = {
            f"site-{i}": evaluate_loss(
                model,
                site.eval,
                batch_size=cfg.train.eval_batch_size,
                precision=precision,
                pad_id=tokenizer.pad_token_id,
            )
            for i, site in enumerate(sites)
        }
        counts = [len(site.eval) for site in sites]
        mean = sum(losses[f"site-{i}"] * n for i, n in enumerate(counts)) / max(1, sum(counts))
        by_round.append({"round": server_round, "sites": losses, "mean": mean})
    load_adapter_arrays(model, initial)
    result = {"by_round": by_round, "eval_records": {f"site-{i}": len(s.eval) for i, s in enumerate(sites)}}
    (run_dir / "exact_loss.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return result


def task_line(evaluation: dict[str, Any]) -> str:
    """One console line: the pooled task metric, base -> final, and the same per site."""
    metric = evaluation["metric"]
    pooled = evaluation["pooled"]
    sites = ", ".join(
        f"{s} {e['base']['metrics'][metric]:.3f}->{e['final']['metrics'][metric]:.3f}"
        for s, e in evaluation["sites"].items()
    )
    extra = ""
    if evaluation["kind"] == "choice":
        extra = (
            f" (macro-F1 {pooled['base']['metrics']['macro_f1']:.3f} -> {pooled['final']['metrics']['macro_f1']:.3f})"
        )
    return (
        f"task {metric} base -> final: {pooled['base']['metrics'][metric]:.3f} -> "
        f"{pooled['final']['metrics'][metric]:.3f}{extra}; {sites}"
    )


def released_task_line(tasks: dict[str, Any]) -> str:
    """One console line: the pooled task metric the sites released, per site, and how noisy it is."""
    metric = tasks["metric"]
    sites = ", ".join(f"{s} {m[metric]:.3f}" for s, m in tasks["sites"].items())
    noise = (
        f"DP-noised counts, noise std {tasks['pooled']['noise_std']:.1f} pooled over {tasks['pooled']['n']:.0f} units"
        if tasks["dp_noised"]
        else "exact: DP off"
    )
    return f"task {metric} released by the sites ({noise}): pooled {tasks['pooled'][metric]:.3f}; {sites}"


def build_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("run_dir", nargs="?", help="a run directory (with summary.json)")
    parser.add_argument("--sweep", metavar="DIR", help="a multirun folder: draw its privacy-utility curve")
    return parser


def main(args: argparse.Namespace) -> int:
    from common.report import write_report, write_sweep_report

    try:
        if args.sweep:
            print(write_sweep_report(args.sweep))
            return 0
        if not args.run_dir:
            raise FedcareError("report: pass a run directory, or --sweep DIR")
        print(write_report(args.run_dir))
    except FedcareError:
        raise
    except OSError as err:  # e.g. a read-only run directory: name the file, not a traceback
        raise FedcareError(
            f"report: {err.strerror or type(err).__name__}: {err.filename or args.sweep or args.run_dir}"
        ) from None
    return 0
