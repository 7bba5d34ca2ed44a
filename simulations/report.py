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
    """Task metrics of the base model and the final adapter per site (``evaluation.json``): from the
    item scores the sites recorded in their own state dirs when every site scored its task in round 0
    and the last round (``coordinator.task_eval_every`` >= 0); else scored here, with every site's task."""
    import torch

    from common.console import quiet_third_party
    from common.evaluation import EvalSettings, evaluate_sites, site_evaluation, site_task
    from common.model import load_model_and_tokenizer

    tasks = {f"site-{i}": t for i in range(cfg.num_sites) if (t := site_task(cfg.data, i)) is not None}
    if not tasks:
        return None
    scores = _sites_task_scores(run_dir, tasks, cfg.num_rounds)
    if scores is not None:
        log.info("task metrics: base model vs final adapter at %d sites, from the sites' own records", len(tasks))
        result = site_evaluation(tasks, scores)
    else:
        log.info(
            "task metrics: base model vs final adapter on %d items over %d sites",
            sum(len(t.items) for t in tasks.values()),
            len(tasks),
        )
        quiet_third_party()
        if cfg.model.num_threads:
            torch.set_num_threads(cfg.model.num_threads)
        base, tokenizer = load_model_and_tokenizer(cfg.model)
        settings = EvalSettings.for_training_length(cfg.train.max_seq_len)
        result = evaluate_sites(base, tokenizer, tasks, adapter_dir, settings, progress=sys.stderr.isatty())
    (run_dir / "evaluation.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return result


def _sites_task_scores(run_dir: Path, tasks: dict[str, Any], last: int) -> dict[str, dict[str, list[Any]]] | None:
    """Each site's recorded item scores of round 0 (base) and round ``last`` (final), or None unless
    every site with a task recorded both for exactly its items."""
    from client.state import SiteState
    from common.evaluation import item_score

    out: dict[str, dict[str, list[Any]]] = {"base": {}, "final": {}}
    for site, task in tasks.items():
        records = SiteState(run_dir / "sites" / site).measured(run_dir.name)
        for which, r in (("base", 0), ("final", last)):
            kept = records.get(r, {}).get("task", {})
            if kept.get("name") != task.name or len(kept.get("scores", ())) != len(task.items):
                return None
            out[which][site] = [item_score(x) for x in kept["scores"]]
    return out


def exact_losses(cfg: RunConfig, run_dir: Path) -> dict[str, Any] | None:
    """Simulation only: the exact held-out loss of the base model and every round's global adapter at
    every site, written to ``exact_loss.json``. A deployed coordinator never sees these (it gets the
    sites' noised releases). Each site keeps what it measured in its own state dir (``measured.jsonl``),
    which a simulation's driver can read; where a round is missing there (a site failed to evaluate
    it), the driver measures every round itself, since it holds every site's data."""
    adapters = sorted((run_dir / "adapters").glob("round-*/adapter_model.safetensors"))
    if not cfg.simulation.exact_loss or not adapters:
        return None
    rounds = sorted({0, *(int(a.parent.name.split("-")[1]) for a in adapters)})
    result = _sites_measured(run_dir, cfg.num_sites, rounds) or _measure_losses(cfg, run_dir, adapters)
    (run_dir / "exact_loss.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return result


def _sites_measured(run_dir: Path, num_sites: int, rounds: list[int]) -> dict[str, Any] | None:
    """The held-out losses the simulated sites recorded in their state dirs, or None unless every site
    recorded every round."""
    from client.state import SiteState

    records = {f"site-{i}": SiteState(run_dir / "sites" / f"site-{i}").measured(run_dir.name) for i in range(num_sites)}
    if any(r not in by_round for by_round in records.values() for r in rounds):
        return None
    log.info("exact held-out loss: %d rounds at %d sites, from the sites' own records", len(rounds), num_sites)
    counts = {site: by_round[rounds[-1]]["eval_records"] for site, by_round in records.items()}
    by_round_out = []
    for r in rounds:
        losses = {site: float(by_round[r]["held_out_loss"]) for site, by_round in records.items()}
        by_round_out.append({"round": r, "sites": losses, "mean": _weighted_mean(losses, counts)})
    return {"by_round": by_round_out, "eval_records": counts}


def _weighted_mean(losses: dict[str, float], counts: dict[str, int]) -> float:
    return sum(losses[s] * counts[s] for s in losses) / max(1, sum(counts.values()))


def _measure_losses(cfg: RunConfig, run_dir: Path, adapters: list[Path]) -> dict[str, Any]:
    """Every round's held-out losses measured here, with every site's data."""
    from safetensors.numpy import load_file

    from client import runtime
    from client.train import evaluate_loss
    from common.adapters import adapter_arrays, load_adapter_arrays
    from common.config import plan_for_round

    plan = plan_for_round(cfg, 1, run_dir.name)
    model, tokenizer = runtime.model_for(cfg.model, cfg.lora, cfg.seed)
    precision = runtime.precision_for(cfg.model)
    sites = [runtime.examples_for(cfg.data, i, cfg.num_sites, plan, tokenizer) for i in range(cfg.num_sites)]
    initial = adapter_arrays(model)
    log.info("exact held-out loss: %d saved adapters at %d sites", len(adapters), len(sites))
    counts = {f"site-{i}": len(site.eval) for i, site in enumerate(sites)}
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
        by_round.append({"round": server_round, "sites": losses, "mean": _weighted_mean(losses, counts)})
    load_adapter_arrays(model, initial)
    return {"by_round": by_round, "eval_records": counts}


def gain_table(evaluation: dict[str, Any] | None, exact: dict[str, Any] | None) -> str:
    """The console table of what each site gained: held-out loss and task metrics (accuracy, macro
    precision/recall/F1 for a choice task; ROUGE-L and answer loss for a generation task) of the base
    model and the final federated adapter, per site and pooled, as the sites measured them exactly."""
    if not evaluation and not exact:
        return ""
    kind = evaluation["kind"] if evaluation else None
    keys = {
        "choice": [
            ("accuracy", "accuracy"),
            ("macro_precision", "macro-P"),
            ("macro_recall", "macro-R"),
            ("macro_f1", "macro-F1"),
        ],
        "generation": [("rouge_l", "ROUGE-L"), ("loss", "answer loss")],
    }.get(kind or "", [])
    columns = ([("held-out loss", None)] if exact else []) + [(label, key) for key, label in keys]
    head = f"{'':<8}" + "".join(f"{label:>22}" for label, _ in columns)
    sub = f"{'site':<8}" + f"{'base':>11}{'federated':>11}" * len(columns)
    sites = list((evaluation or {}).get("sites") or (exact["by_round"][-1]["sites"] if exact else {}))
    if exact:
        sites = sorted(set(sites) | set(exact["by_round"][-1]["sites"]))
    rows = []
    for site in [*sites, "pooled"]:
        cells = []
        for _, key in columns:
            if key is None:  # held-out loss from exact_loss.json (pooled: the records-weighted mean)
                ends = (exact["by_round"][0], exact["by_round"][-1])
                pair = tuple(r["mean"] if site == "pooled" else r["sites"].get(site) for r in ends)
            else:
                entry = evaluation["pooled"] if site == "pooled" else evaluation["sites"].get(site)
                pair = (entry["base"]["metrics"][key], entry["final"]["metrics"][key]) if entry else (None, None)
            cells.append("".join(f"{v:>11.3f}" if v is not None else f"{'-':>11}" for v in pair))
        rows.append(f"{site:<8}" + "".join(cells))
    title = "what each site gained: base model -> final federated adapter (exact, on each site's own data)"
    if evaluation:
        title += f"; task: {evaluation['task']}"
    if evaluation and evaluation.get("baselines"):  # what the pooled accuracy must beat to mean anything
        from common.evaluation import baselines_line

        rows.append("pooled " + baselines_line(evaluation["baselines"]))
    return "\n".join([title, head, sub, *rows])


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
