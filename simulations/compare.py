"""``fedcare compare``: federated DP against each site alone, all data pooled (with and without DP), and the base model.

    fedcare compare                      # the demo's sites, every arm
    fedcare compare +experiment=smoke    # seconds, tiny model
    fedcare demo                         # the default demo: base, each site alone, federated (no pooled arms)

The federated arm is a real ``fedcare simulate`` run (Flower's simulation engine). The other arms
train in this process with the same site code (``client.train.train_round``, Opacus DP-SGD on the
same LoRA init, the same seed) and the same budget:

- ``local``: each site alone, ``num_rounds x local_steps`` DP-SGD steps on its own training split at
  q = batch_size / its records, noise calibrated to the same target epsilon.
- ``pooled_dp``: every site's training split in one place, the same number of steps with an
  expected batch of ``batch_size x num_sites`` (what a federated step processes over all sites),
  noise calibrated to the same epsilon over the pooled records.
- ``pooled``: the same without DP (the utility ceiling).
- ``base``: the base model, no training.

Every arm is then scored on every site's held-out split (answer-token loss) and its task set
(``data.task_paths`` or the synthetic triage task). ``compare.json`` lands in the federated run's
directory and its ``report.html`` gets the table.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("fedcare.compare")

ARMS = ("base", "local", "federated", "pooled_dp", "pooled")
REQUIRED_ARMS = ("base", "local", "federated")  # what the per-site verdict (federated vs alone) needs
DEMO_ARMS = REQUIRED_ARMS  # `fedcare demo`: what a hospital gains over the base model and over training alone


# What an in-process arm may tune differently from the federated run; steps, budget, data and model stay the same.
TUNABLE = (
    "train.learning_rate",
    "train.weight_decay",
    "train.batch_size",
    "train.max_physical_batch",
    "privacy.max_grad_norm",
)


def build_parser(parser: argparse.ArgumentParser, arms: tuple[str, ...] = ARMS) -> argparse.ArgumentParser:
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for `fedcare simulate`")
    parser.add_argument(
        "--arms",
        default=",".join(arms),
        help=f"comma-separated arms to run, in any order; {', '.join(REQUIRED_ARMS)} always run "
        f"(default: {','.join(arms)})",
    )
    parser.add_argument(
        "--arm",
        action="append",
        default=[],
        metavar="ARM:OVERRIDE",
        help="tune one in-process arm (local, pooled_dp, pooled) on top of the run's settings, e.g. "
        f"`--arm pooled:train.learning_rate=0.002`; one of {', '.join(TUNABLE)}; repeatable",
    )
    parser.add_argument(
        "--reuse-run",
        metavar="RUN_DIR",
        help="take the federated arm from this finished `fedcare simulate` run (same overrides) instead of running it",
    )
    parser.add_argument(
        "--no-decode",
        action="store_true",
        help="generation tasks: score the in-process arms by answer-token loss on the task set, without "
        "decoding (no ROUGE-L for them; on a CPU decoding takes most of the time)",
    )
    return parser


def parse_arm_overrides(items: list[str]) -> dict[str, list[str]]:
    """``["local:train.learning_rate=0.01", ...]`` -> ``{"local": ["train.learning_rate=0.01"], ...}``."""
    from common.errors import ConfigError

    out: dict[str, list[str]] = {}
    for item in items:
        arm, sep, override = item.partition(":")
        if not sep or arm not in ("local", "pooled_dp", "pooled") or "=" not in override:
            raise ConfigError(f"--arm {item!r}: expected ARM:KEY=VALUE with ARM one of local, pooled_dp, pooled")
        if override.split("=", 1)[0] not in TUNABLE:
            raise ConfigError(f"--arm {item!r}: an arm may only tune {', '.join(TUNABLE)} (same steps, budget, data)")
        out.setdefault(arm, []).append(override)
    return out


def parse_arms(text: str) -> tuple[str, ...]:
    """``"base,local,federated,pooled"`` -> the arms in :data:`ARMS` order; refused (one line) when one is
    unknown or one of :data:`REQUIRED_ARMS` is missing."""
    from common.errors import ConfigError

    asked = {a.strip() for a in text.split(",") if a.strip()}
    unknown = sorted(asked - set(ARMS))
    if unknown:
        raise ConfigError(f"--arms: unknown arm {', '.join(unknown)} (arms: {', '.join(ARMS)})")
    missing = [a for a in REQUIRED_ARMS if a not in asked]
    if missing:
        raise ConfigError(f"--arms: {', '.join(missing)} must run too (the verdict compares federated with alone)")
    return tuple(a for a in ARMS if a in asked)


def arm_dp(cfg: Any, records: int, batch: int) -> Any:
    """DP-SGD settings of an in-process arm: the run's ``num_rounds x local_steps`` steps at
    q = batch / records, noise calibrated to the run's epsilon; None when the run has DP off."""
    from client.train import DPSettings
    from common.privacy import calibrate_noise, resolve_delta

    if not cfg.privacy.enabled:
        return None
    q = batch / records
    total_steps = cfg.num_rounds * cfg.train.local_steps
    delta = resolve_delta(cfg.privacy.target_delta, records)
    sigma = calibrate_noise(cfg.privacy.target_epsilon, delta, q, total_steps, cfg.privacy.accountant)
    return DPSettings(sigma, cfg.privacy.max_grad_norm, q)


def train_arm(
    model: Any,
    initial: dict[str, np.ndarray],
    examples: list[Any],
    cfg: Any,
    *,
    batch: int,
    dp: Any,
    seed: int,
    precision: str,
    pad_id: int,
    label: str = "arm",
) -> dict[str, np.ndarray]:
    """Train ``model`` from the adapter ``initial`` on ``examples`` in this process: all of the run's
    ``num_rounds x local_steps`` steps in one go, DP-SGD with ``dp`` (:func:`arm_dp`; None = no DP);
    returns the trained adapter arrays."""
    from client.train import train_round
    from common.adapters import adapter_arrays, load_adapter_arrays

    load_adapter_arrays(model, initial)
    train_cfg = replace(cfg.train, local_steps=cfg.num_rounds * cfg.train.local_steps, batch_size=batch)
    every = max(1, train_cfg.local_steps // 4)

    def progress(step: int, steps: int, loss: float) -> None:
        if step % every == 0 or step == steps:
            log.info("compare: %s step %d/%d loss %.4f", label, step, steps, loss)

    train_round(
        model,
        examples,
        train_cfg,
        precision=precision,
        pad_id=pad_id,
        dp=dp,
        rng=np.random.default_rng(seed),
        progress=progress,
    )
    return adapter_arrays(model)


def reused_run(run_dir: str | Path, raw: dict[str, Any]) -> dict[str, Any]:
    """The summary of a finished run to take as the federated arm, refused (one line) when its
    ``config.json`` is not the configuration ``raw`` composes (output_dir and run_name aside)."""
    from common.errors import RunDirectoryError

    path = Path(run_dir)
    files = {name: path / name for name in ("summary.json", "config.json")}
    missing = [name for name, f in files.items() if not f.exists()]
    if missing:
        raise RunDirectoryError(f"--reuse-run {path}: not a finished run (no {', '.join(missing)})")
    run_cfg = json.loads(files["config.json"].read_text(encoding="utf-8"))
    ignore = {"output_dir", "run_name"}
    differ = sorted(k for k in set(run_cfg) | set(raw) if k not in ignore and run_cfg.get(k) != raw.get(k))
    if differ:
        raise RunDirectoryError(f"--reuse-run {path}: the run was made with other settings ({', '.join(differ)})")
    summary: dict[str, Any] = json.loads(files["summary.json"].read_text(encoding="utf-8"))
    evaluation = path / "evaluation.json"
    summary["evaluation"] = json.loads(evaluation.read_text(encoding="utf-8")) if evaluation.exists() else None
    summary["run_dir"] = str(path)
    return summary


def compare(
    overrides: list[str],
    arm_overrides: dict[str, list[str]] | None = None,
    *,
    reuse_run: str | Path | None = None,
    decode: bool = True,
    arms: tuple[str, ...] = ARMS,
) -> dict[str, Any]:
    """Run ``arms`` (every arm by default; :func:`parse_arms`); returns (and writes) ``compare.json``.
    ``arm_overrides`` tunes an in-process arm (:func:`parse_arm_overrides`): its :data:`TUNABLE` settings on
    top of ``overrides``. ``reuse_run`` takes the federated arm from a finished run; ``decode=False`` scores
    the in-process arms' generation tasks by answer-token loss only."""
    from client import runtime
    from client.train import evaluate_loss
    from common.adapters import adapter_arrays, load_adapter_arrays
    from common.config import plan_for_round
    from common.console import configure_logging
    from common.evaluation import EvalSettings, answer_loss, primary_metric, score_task, site_task, summarize_scores
    from common.report import write_report
    from server.compose import compose
    from simulations.run import print_summary, simulate

    configure_logging()  # fedcare's lines, also when the federated arm is reused (no simulate to set it up)
    arm_overrides = arm_overrides or {}
    cfg, raw = compose(overrides)
    arm_cfg = {arm: compose([*overrides, *arm_overrides.get(arm, [])])[0] for arm in ("local", "pooled_dp", "pooled")}
    if reuse_run:
        summary = reused_run(reuse_run, raw)
    else:
        summary = simulate(overrides)
        print_summary(summary)  # the federated arm's own console end: losses by round, epsilon, base vs final
    run_dir = Path(summary["run_dir"])
    plan = plan_for_round(cfg, 1, run_dir.name)
    # The seeded init the federated run started from (an in-process run's sites trained this very model).
    model, tokenizer = runtime.model_for(cfg.model, cfg.lora, cfg.seed, initial=True)
    initial = adapter_arrays(model)
    sites = [runtime.examples_for(cfg.data, i, cfg.num_sites, plan, tokenizer) for i in range(cfg.num_sites)]
    tasks = {f"site-{i}": site_task(cfg.data, i) for i in range(cfg.num_sites)}
    settings = EvalSettings.for_training_length(cfg.train.max_seq_len)
    total_steps = cfg.num_rounds * cfg.train.local_steps
    pad = tokenizer.pad_token_id
    precision = runtime.precision_for(cfg.model)  # "auto" resolved as the sites resolve it

    def train(arm: str, examples: list[Any], batch: int, seed: int, label: str) -> dict[str, np.ndarray]:
        own = arm_cfg[arm]
        if not own.train.max_physical_batch:  # a pooled batch runs in parts of a site's batch: a site's memory
            own = replace(own, train=replace(own.train, max_physical_batch=own.train.batch_size))
        settings = arm_dp(own, len(examples), batch) if arm != "pooled" else None
        return train_arm(
            model,
            initial,
            examples,
            own,
            batch=batch,
            dp=settings,
            seed=seed,
            precision=precision,
            pad_id=pad,
            label=label,
        )

    evaluation = summary.get("evaluation") or {}
    exact_path = run_dir / "exact_loss.json"  # the run's own exact held-out losses (simulation.exact_loss)
    exact = json.loads(exact_path.read_text()) if exact_path.exists() else None
    measured = {"base": exact["by_round"][0]["sites"], "final": exact["by_round"][-1]["sites"]} if exact else {}

    def score(
        arrays: dict[str, np.ndarray], scored_by_run: str = "", only: int | None = None
    ) -> dict[str, dict[str, Any]]:
        """Held-out loss and task metric of ``arrays`` at every site (or at site ``only``); for the base
        model and the final adapter (``scored_by_run``) they come from the run's own ``exact_loss.json``
        and ``evaluation.json``."""
        load_adapter_arrays(model, arrays)
        out = {}
        scored: list[tuple[Any, Any]] = []  # sites sharing one task file are scored once per adapter
        for i, site in enumerate(sites):
            if only is not None and i != only:
                continue
            key = f"site-{i}"
            loss = measured.get(scored_by_run, {}).get(key)
            if loss is None:
                loss = evaluate_loss(
                    model, site.eval, batch_size=cfg.train.eval_batch_size, precision=precision, pad_id=pad
                )
            task = tasks[key]
            metrics: dict[str, Any] = {}
            done = evaluation.get("sites", {}).get(key, {}).get(scored_by_run)
            if task is not None and done is not None:
                metrics = done["metrics"]
            elif task is not None:
                metrics = next((m for t, m in scored if t == task), {})
                if not metrics and task.kind == "generation" and not decode:
                    per_item = [answer_loss(model, tokenizer, item, settings.max_seq_len)[0] for item in task.items]
                    metrics = {"loss": float(np.mean(per_item))}  # the answer loss of summarize_scores, no ROUGE-L
                elif not metrics:
                    metrics = summarize_scores(task, score_task(model, tokenizer, task, settings, progress=False))[
                        "metrics"
                    ]
                scored.append((task, metrics))
            out[key] = {
                "loss": loss,
                "task": metrics.get(primary_metric(task.kind)) if task is not None else None,
                "task_loss": metrics.get("loss") if task is not None and task.kind == "generation" else None,
            }
        return out

    from safetensors.numpy import load_file

    results: dict[str, dict[str, dict[str, Any]]] = {}
    log.info("compare: scoring the base model")
    results["base"] = score(initial, "base")
    log.info("compare: scoring the federated adapter %s", summary["adapter_dir"])
    results["federated"] = score(
        dict(load_file(str(Path(summary["adapter_dir"]) / "adapter_model.safetensors"))), "final"
    )
    local: dict[str, dict[str, Any]] = {}
    for i, site in enumerate(sites):
        log.info("compare: site-%d alone (%d records, %d DP-SGD steps)", i, len(site.train), total_steps)
        arrays = train("local", site.train, arm_cfg["local"].train.batch_size, cfg.seed * 1009 + i, f"site-{i} alone")
        local[f"site-{i}"] = score(arrays, only=i)[f"site-{i}"]  # a site alone is judged on its own data
    results["local"] = local
    pooled = [e for site in sites for e in site.train]
    for arm, dp, seed in (("pooled_dp", "with", 101), ("pooled", "without", 202)):
        if arm not in arms:
            continue
        batch = min(arm_cfg[arm].train.batch_size * cfg.num_sites, len(pooled) - 1)
        log.info("compare: all %d records pooled, %s DP (expected batch %d)", len(pooled), dp, batch)
        results[arm] = score(train(arm, pooled, batch, cfg.seed * 1009 + seed, arm))
    load_adapter_arrays(model, initial)

    metric = next((primary_metric(t.kind) for t in tasks.values() if t is not None), None)
    table: dict[str, Any] = {}
    for i in range(cfg.num_sites):
        key = f"site-{i}"
        row = {field: {a: results[a][key][field] for a in arms} for field in ("loss", "task", "task_loss")}
        row["gain_vs_local"] = row["loss"]["local"] - row["loss"]["federated"]  # > 0: federated beats alone
        table[key] = row
    worst = min(table, key=lambda k: table[k]["gain_vs_local"])
    base_l = {k: r["loss"]["base"] for k, r in table.items()}
    gain = {a: float(np.mean([base_l[k] - table[k]["loss"][a] for k in table])) for a in arms}
    pooled_gain = gain.get("pooled")
    out = {
        "arms": list(arms),
        "metric": metric,
        "sites": table,
        "worst_site": worst,
        "no_site_worse_off": all(r["gain_vs_local"] >= 0 for r in table.values()),
        "mean_loss_gain_over_base": gain,
        # None: the pooled non-DP arm did not run; NaN: it ran and did not improve on the base model
        "federated_share_of_pooled_gain": None
        if pooled_gain is None
        else gain["federated"] / pooled_gain
        if pooled_gain > 0
        else math.nan,
        "steps": total_steps,
        "arm_overrides": {arm: arm_overrides.get(arm, []) for arm in ("local", "pooled_dp", "pooled")},
        "run_dir": str(run_dir),
    }
    (run_dir / "compare.json").write_text(json.dumps(out, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    write_report(run_dir)
    return out


def format_compare(result: dict[str, Any]) -> str:
    """The per-site table: held-out loss (and task metric) per arm, gain of federated over alone."""
    arms = result["arms"]
    metric = result["metric"]
    head = f"{'site':<8}" + "".join(f"{a:>11}" for a in arms) + f"{'fed-local':>11}"
    lines = ["held-out loss (lower is better)", head]
    for site, row in result["sites"].items():
        lines.append(
            f"{site:<8}" + "".join(f"{row['loss'][a]:>11.4f}" for a in arms) + f"{row['gain_vs_local']:>+11.4f}"
        )

    def cell(value: float | None) -> str:
        return f"{value:>11.4f}" if value is not None else f"{'-':>11}"

    if metric:
        lines += [f"\ntask {metric} (higher is better)", f"{'site':<8}" + "".join(f"{a:>11}" for a in arms)]
        for site, row in result["sites"].items():
            lines.append(f"{site:<8}" + "".join(cell(row["task"][a]) for a in arms))
    if any(v is not None for row in result["sites"].values() for v in row.get("task_loss", {}).values()):
        lines += ["\ntask answer-token loss (lower is better)", f"{'site':<8}" + "".join(f"{a:>11}" for a in arms)]
        for site, row in result["sites"].items():
            lines.append(f"{site:<8}" + "".join(cell(row["task_loss"].get(a)) for a in arms))
    share = result["federated_share_of_pooled_gain"]
    lines.append(
        f"\nworst site (federated vs alone): {result['worst_site']}; "
        f"no site worse off than alone: {'yes' if result['no_site_worse_off'] else 'no'}"
    )
    if share is not None:
        lines.append(
            f"federated DP captures {share:.0%} of the pooled non-DP loss gain over the base model"
            if math.isfinite(share)
            else "the pooled non-DP arm did not improve on the base model: no share of its gain to give"
        )
    tuned = {arm: o for arm, o in result.get("arm_overrides", {}).items() if o}
    if tuned:
        lines.append("arm settings: " + "; ".join(f"{arm} {' '.join(o)}" for arm, o in tuned.items()))
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    arms = parse_arms(args.arms)
    result = compare(
        list(args.overrides),
        parse_arm_overrides(list(args.arm)),
        reuse_run=args.reuse_run,
        decode=not args.no_decode,
        arms=arms,
    )
    print("\n" + format_compare(result))
    print(f"compare: {result['run_dir']}/compare.json\nreport: {result['run_dir']}/report.html")
    skipped = [a for a in ARMS if a not in arms]
    if skipped:
        more = " ".join(["fedcare compare --reuse-run", result["run_dir"], *args.overrides])
        print(f"the other arms, {', '.join(skipped)} (all records in one place; same steps and epsilon): {more}")
    return 0
