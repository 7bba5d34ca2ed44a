"""The strategy table: every Flower strategy on MedQuAD split by source, DP on, same steps and seed.

    python -m benchmarks.strategies                 # all strategies + FFA-LoRA, tiny model (minutes)
    python -m benchmarks.strategies --model smollm2 --steps 10 --records 200   # the real model (long)

Each run is a real federation on the in-process engine (``simulations/inprocess.py``: the real
ServerApp loop and ClientApp, no Ray): ``--sites`` hospitals, one per MedQuAD source (largest
first), DP-SGD at epsilon ``--epsilon`` over all rounds, identical data, steps, seed and pinned DP
noise (``privacy.noise_seed``: reproducible comparisons; never pin it in a deployment). The table
gives the held-out loss of the final global adapter at each site, their mean and the worst site,
the tensor bytes the sites sent per round, and the coordinator's wall seconds per round (training
included; on a shared machine compare rows of one table only). The second row is FFA-LoRA
(``lora.freeze_a=true``) under FedAvg, same DP budget as the first (plain LoRA). The table file is
rewritten after every row.

Skips (exit 0) when ../shared/data/medquad is absent.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import SHARED_DATA
from common.config import STRATEGIES

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = SHARED_DATA / "medquad" / "medquad.jsonl"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "strategies.md"


def rows_to_run(only: list[str]) -> list[tuple[str, list[str]]]:
    """(label, extra overrides) of each table row, in order."""
    rows = [(name, [f"strategy={name}"]) for name in STRATEGIES]
    rows.insert(1, ("fedavg + FFA-LoRA", ["strategy=fedavg", "lora.freeze_a=true"]))  # next to plain LoRA
    return [r for r in rows if not only or r[0].split(" ")[0] in only or r[0] in only]


def run_row(label: str, extra: list[str], base: list[str], out_dir: Path) -> dict[str, Any]:
    """Run one federation; returns its table row."""
    from simulations.inprocess import simulate_inprocess

    name = label.replace(" ", "").replace("+", "-")
    start = time.perf_counter()
    summary = simulate_inprocess([*base, *extra, f"output_dir={out_dir}", f"run_name={name}"])
    wall = time.perf_counter() - start
    metrics = [json.loads(line) for line in (out_dir / name / "metrics.jsonl").read_text().splitlines()]
    by_site = metrics[-1]["eval_loss_by_site"]
    return {
        "label": label,
        "by_site": by_site,
        "mean": sum(by_site.values()) / len(by_site),
        "worst": max(by_site.items(), key=lambda kv: kv[1]),
        "round0": summary["eval_loss_by_round"][0],
        "bytes_up": sum(summary["bytes_up_per_round"]) / len(summary["bytes_up_per_round"]),
        "seconds": sum(m["seconds"] for m in metrics) / len(metrics),
        "wall": wall,
        "rejected": len(summary["rejected_updates"]),
        "epsilon": max(s.get("epsilon", 0.0) or 0.0 for s in summary["sites"]),
    }


def table(rows: list[dict[str, Any]], sites: list[str]) -> str:
    """The markdown table."""
    head = ["strategy", *[f"{s} loss" for s in sites], "mean", "worst site", "bytes up / round", "s / round"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [
            r["label"],
            *[f"{r['by_site'].get(s, float('nan')):.4f}" for s in sites],
            f"{r['mean']:.4f}",
            f"{r['worst'][0]} ({r['worst'][1]:.4f})",
            f"{r['bytes_up']:,.0f}",
            f"{r['seconds']:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _document(args: argparse.Namespace, results: list[dict[str, Any]]) -> str:
    sites = sorted({s for r in results for s in r["by_site"]}, key=lambda s: int(s.split("-")[1]))
    return (
        f"Strategy table: MedQuAD by source, {args.sites} sites x {args.rounds} rounds x {args.steps} DP-SGD "
        f"steps, {args.records} records per site, model={args.model}, epsilon {args.epsilon:g} per site "
        f"(max spent {max(r['epsilon'] for r in results):.2f}), seed {args.seed}, pinned DP noise. Held-out "
        f"loss (nats/token) of the final global adapter; before training: {results[0]['round0']:.4f}.\n\n"
        + table(results, sites)
        + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.strategies", description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="MedQuAD JSONL with a `source` field")
    parser.add_argument("--model", default="tiny", help="model option: tiny (default) or smollm2")
    parser.add_argument("--sites", type=int, default=3, help="hospitals: the largest sources (Bulyan needs 3)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4, help="DP-SGD steps per site per round")
    parser.add_argument("--records", type=int, default=40, help="records per site (first N of each source)")
    parser.add_argument("--epsilon", type=float, default=8.0, help="per-site epsilon over all rounds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", default=[], help="strategy names to run (default: all)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="markdown file for the table")
    args = parser.parse_args(argv)
    data = Path(args.data)
    if not data.exists():
        print(f"skipped: {data} not found (the shared MedQuAD copy); nothing measured")
        return 0
    logging.getLogger("fedcare").setLevel(logging.WARNING)
    logging.getLogger("flwr").setLevel(logging.WARNING)
    base = [
        "data=medquad",
        f"data.paths=[{data.resolve()}]",
        f"model={args.model}",
        f"num_sites={args.sites}",
        f"num_rounds={args.rounds}",
        f"train.local_steps={args.steps}",
        f"data.max_records_per_site={args.records}",
        "privacy=dp",
        f"privacy.target_epsilon={args.epsilon}",
        "privacy.noise_seed=1",
        f"seed={args.seed}",
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="fedcare-strategies-") as tmp:
        for label, extra in rows_to_run(args.only):
            row = run_row(label, extra, base, Path(tmp))
            results.append(row)
            print(
                f"{label}: mean held-out loss {row['mean']:.4f} (round 0: {row['round0']:.4f}), worst "
                f"{row['worst'][0]}, {row['bytes_up']:,.0f} B up/round, {row['seconds']:.1f} s/round",
                flush=True,
            )
            out.write_text(_document(args, results), encoding="utf-8")  # after every row: partial runs keep theirs
    print("\n" + _document(args, results) + f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
