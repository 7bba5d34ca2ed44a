"""What each DP-SGD lever buys: one site trained alone under DP, one lever changed per row.

    python -m benchmarks.levers data=files 'data.paths=[a.csv,b.csv,c.csv]' data.prompt_column=dialogue \\
        data.completion_column=section_text train.max_seq_len=256
    python -m benchmarks.levers +experiment=smoke --rows default no_dp lr_high     # seconds, tiny model

Every row trains site ``--site``'s training split in this process with the site's own code
(``client.train.train_round`` through ``simulations.compare.train_arm``): the run's
``num_rounds x local_steps`` DP-SGD steps, noise calibrated to the run's epsilon, the same seed and
LoRA init for rows that share a LoRA shape. It then measures the exact answer-token loss on the
site's held-out split (nothing is released: this is a research tool on data you hold). The table
gives held-out loss before and after, the gain, the row's share of the non-DP row's gain, the noise
multiplier and the seconds of training. Rows are overrides on top of the given ones, so a lever's
effect is read against the ``default`` row of the same table.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

ROWS: dict[str, list[str]] = {
    "default": [],
    "no_dp": ["privacy=none"],
    "lr_low": ["train.learning_rate=0.0005"],
    "lr_high": ["train.learning_rate=0.01"],
    "lr_3e-2": ["train.learning_rate=0.03"],
    "no_dp_lr_high": ["privacy=none", "train.learning_rate=0.01"],
    "no_dp_lr_3e-2": ["privacy=none", "train.learning_rate=0.03"],
    "batch_x3": ["train.batch_size=48"],
    "batch_48_steps_2": ["train.batch_size=48", "train.local_steps=2"],
    "batch_48_steps_2_lr_3e-2": ["train.batch_size=48", "train.local_steps=2", "train.learning_rate=0.03"],
    "clip_0.1": ["privacy.max_grad_norm=0.1"],
    "clip_10": ["privacy.max_grad_norm=10.0"],
    "rank_2": ["lora.rank=2", "lora.alpha=4"],
    "rank_32": ["lora.rank=32", "lora.alpha=64"],
    "qkvo": ["lora.target_modules=[q_proj,k_proj,v_proj,o_proj]"],
    "ffa_lora": ["lora.freeze_a=true"],
    "ffa_lora_lr_3e-2": ["lora.freeze_a=true", "train.learning_rate=0.03"],
    "top_8": ["lora.top_layers=8"],
    "top_4": ["lora.top_layers=4"],
    "no_dp_top_8": ["privacy=none", "lora.top_layers=8"],
}
DESCRIPTION = {
    "default": "the given config",
    "no_dp": "no DP (the ceiling)",
    "lr_low": "learning rate 5e-4",
    "lr_high": "learning rate 1e-2",
    "lr_3e-2": "learning rate 3e-2",
    "no_dp_lr_high": "no DP, learning rate 1e-2",
    "no_dp_lr_3e-2": "no DP, learning rate 3e-2",
    "batch_x3": "expected batch 48 (3x compute)",
    "batch_48_steps_2": "expected batch 48, 2 steps a round",
    "batch_48_steps_2_lr_3e-2": "expected batch 48, 2 steps a round, learning rate 3e-2",
    "clip_0.1": "clipping bound C = 0.1",
    "clip_10": "clipping bound C = 10",
    "rank_2": "LoRA rank 2",
    "rank_32": "LoRA rank 32",
    "qkvo": "LoRA on q, k, v, o",
    "ffa_lora": "FFA-LoRA (A frozen)",
    "ffa_lora_lr_3e-2": "FFA-LoRA, learning rate 3e-2",
    "top_8": "LoRA on the last 8 layers",
    "top_4": "LoRA on the last 4 layers",
    "no_dp_top_8": "no DP, last 8 layers",
}


def run_row(name: str, base: list[str], site: int, cache: dict[Any, float]) -> dict[str, Any]:
    """Train one row; returns its measurements."""
    import numpy as np

    from client import runtime
    from client.train import evaluate_loss
    from common.adapters import adapter_arrays, load_adapter_arrays
    from common.config import plan_for_round
    from server.compose import compose
    from simulations.compare import arm_dp, train_arm

    cfg, _ = compose([*base, *ROWS[name]])
    plan = plan_for_round(cfg, 1, "levers")
    model, tokenizer = runtime.model_for(cfg.model, cfg.lora, cfg.seed, initial=True)
    examples = runtime.examples_for(cfg.data, site, cfg.num_sites, plan, tokenizer)
    precision = runtime.precision_for(cfg.model)
    pad = tokenizer.pad_token_id
    initial = adapter_arrays(model)
    key = (cfg.model, cfg.lora, cfg.seed, cfg.data, cfg.train.max_seq_len)
    if key not in cache:  # the untrained adapter's numbers (LoRA B starts at zero: the base model's)
        cache[key] = evaluate_loss(
            model, examples.eval, batch_size=cfg.train.eval_batch_size, precision=precision, pad_id=pad
        )
        cache[(key, "task")] = _task_metrics(model, tokenizer, cfg, site)
    steps = cfg.num_rounds * cfg.train.local_steps
    dp = arm_dp(cfg, len(examples.train), cfg.train.batch_size)
    sigma = dp.noise_multiplier if dp else 0.0
    start = time.perf_counter()
    arrays = train_arm(
        model,
        initial,
        examples.train,
        cfg,
        batch=cfg.train.batch_size,
        dp=dp,
        seed=cfg.seed,
        precision=precision,
        pad_id=pad,
    )
    seconds = time.perf_counter() - start
    load_adapter_arrays(model, arrays)
    after = evaluate_loss(model, examples.eval, batch_size=cfg.train.eval_batch_size, precision=precision, pad_id=pad)
    task_after = _task_metrics(model, tokenizer, cfg, site)
    load_adapter_arrays(model, initial)
    before = cache[key]
    return {
        "row": name,
        "lever": DESCRIPTION[name],
        "overrides": ROWS[name],
        "before": before,
        "after": after,
        "gain": before - after,
        "noise_multiplier": sigma,
        "batch": cfg.train.batch_size,
        "steps": steps,
        "records": len(examples.train),
        "trainable": int(sum(np.asarray(a).size for a in arrays.values())),
        "seconds": seconds,
        "epsilon": cfg.privacy.target_epsilon if cfg.privacy.enabled else None,
        "task_before": cache[(key, "task")],
        "task_after": task_after,
    }


def _task_metrics(model: Any, tokenizer: Any, cfg: Any, site: int) -> dict[str, float] | None:
    """The site's task set (data.task_paths, or the synthetic triage items) scored exactly: its primary
    metric, and macro-F1 for a choice task; None when the site has none."""
    from common.evaluation import EvalSettings, primary_metric, score_task, site_task, summarize_scores

    task = site_task(cfg.data, site)
    if task is None:
        return None
    scores = score_task(model, tokenizer, task, EvalSettings.for_training_length(cfg.train.max_seq_len), progress=False)
    metrics = summarize_scores(task, scores)["metrics"]
    keys = (primary_metric(task.kind), "macro_f1") if task.kind == "choice" else (primary_metric(task.kind),)
    return {k: float(metrics[k]) for k in keys}


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one line per row, the share of the no-DP row's gain when there is one."""
    ceiling = next((r["gain"] for r in rows if r["row"] == "no_dp"), None)
    head = (
        "| lever | held-out loss before -> after | gain | share of no-DP gain | task before -> after | sigma "
        "| batch x steps | trainable | s |"
    )
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        share = f"{r['gain'] / ceiling:.0%}" if ceiling and ceiling > 0 else "-"
        lines.append(
            f"| {r['lever']} | {r['before']:.4f} -> {r['after']:.4f} | {r['gain']:+.4f} | {share} | {_task_cell(r)} | "
            f"{r['noise_multiplier']:.3f} | {r['batch']} x {r['steps']} | {r['trainable']:,} | {r['seconds']:.0f} |"
        )
    return "\n".join(lines)


def _task_cell(row: dict[str, Any]) -> str:
    before, after = row.get("task_before"), row.get("task_after")
    if not before or not after:
        return "-"
    return ", ".join(f"{k} {before[k]:.3f} -> {after[k]:.3f}" for k in before)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.levers", description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of every row, as for `fedcare simulate`")
    parser.add_argument("--site", type=int, default=0, help="the site trained alone")
    parser.add_argument("--rows", nargs="*", default=list(ROWS), choices=list(ROWS), help="rows to run, in order")
    parser.add_argument("--json", type=Path, help="write the rows here too (rewritten after every row)")
    args = parser.parse_args(argv)
    from common.console import quiet_third_party

    quiet_third_party()
    logging.getLogger("fedcare").setLevel(logging.WARNING)
    rows: list[dict[str, Any]] = []
    cache: dict[Any, float] = {}
    for name in args.rows:
        row = run_row(name, list(args.overrides), args.site, cache)
        rows.append(row)
        print(
            f"{row['lever']}: held-out loss {row['before']:.4f} -> {row['after']:.4f} "
            f"(sigma {row['noise_multiplier']:.3f}, {row['seconds']:.0f} s); task {_task_cell(row)}",
            flush=True,
        )
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    print("\n" + table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
