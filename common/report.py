"""A run's ``report.html``: PNG plots (matplotlib) and tables built from the run directory's files.

Reads ``summary.json`` (with the sites' DP-noised task-metric releases, ``task_metrics``),
``metrics.jsonl``, ``config.json``, the sites' egress logs (``sites/site-N/egress.jsonl``), and when
present ``evaluation.json`` (exact task metrics of the base model and the final adapter per site,
scored by a simulation's driver) and ``compare.json`` (the baseline arms). Missing parts are
left out of the page, never invented. ``write_sweep_report`` draws the privacy-utility curve of a
Hydra multirun (one run directory per epsilon).
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

PLOTS = "report"  # sub-folder of the run directory holding the PNGs


def _read_json(path: Path) -> Any:
    if not path.exists():
        return None
    from common.errors import FedcareError
    from common.files import MIB, read_regular

    try:  # a regular file, read without blocking (a FIFO would hang), bounded, and no traceback for bad JSON
        return json.loads(read_regular(path, "run file", 64 * MIB))
    except (ValueError, RecursionError):
        raise FedcareError(f"{path}: not valid JSON (was the run directory edited?)") from None


def _read_rows(path: Path) -> list[dict[str, Any]]:
    from common.errors import FedcareError

    if not path.exists():
        return []
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError:
                raise FedcareError(f"{path} line {number}: not valid JSON (was the run directory edited?)") from None
    return rows


def _site_key(name: str) -> tuple[int, str]:
    tail = name.rsplit("-", 1)[-1]
    return (int(tail), name) if tail.isdigit() else (10**9, name)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, folder: Path, name: str) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(folder / name, dpi=100)
    _pyplot().close(fig)
    return f"{PLOTS}/{name}"


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return html.escape(str(value))


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _loss_plot(
    summary: dict[str, Any], rows: list[dict[str, Any]], exact: dict[str, Any] | None, folder: Path
) -> str | None:
    """Per-site held-out loss by round: the exact losses when the simulation driver measured them
    (``exact_loss.json``), with the sites' noised releases as faint points; else the releases alone."""
    plt = _pyplot()
    by_round = summary.get("eval_loss_by_round") or []
    if not by_round and not exact:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    sites = sorted({s for r in rows for s in (r.get("eval_loss_by_site") or {})}, key=_site_key)
    if exact:
        exact_sites = sorted({s for r in exact["by_round"] for s in r["sites"]}, key=_site_key)
        for n, site in enumerate(exact_sites):
            points = [(r["round"], r["sites"][site]) for r in exact["by_round"] if site in r["sites"]]
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", color=f"C{n}", label=f"{site} (exact)")
        means = [(r["round"], r["mean"]) for r in exact["by_round"]]
        ax.plot(
            [p[0] for p in means], [p[1] for p in means], color="black", linestyle="--", marker="s", label="all sites"
        )
    for n, site in enumerate(sites):
        points = [
            (r["round"], r["eval_loss_by_site"][site]) for r in rows if site in (r.get("eval_loss_by_site") or {})
        ]
        style = {"linestyle": "none", "alpha": 0.45, "marker": "x"} if exact else {"marker": "o"}
        label = f"{site} released (DP noise)" if exact else site
        ax.plot([p[0] for p in points], [p[1] for p in points], color=f"C{n}", label=label, **style)
    if not exact:
        ax.plot(range(len(by_round)), by_round, color="black", linestyle="--", marker="s", label="all sites (weighted)")
    rounds = len(exact["by_round"]) if exact else len(by_round)
    if exact:  # scale to the exact curves: a released value is the same plus noise of std 40/n nats
        values = [v for r in exact["by_round"] for v in r["sites"].values()]
        pad = max(0.1, 0.25 * (max(values) - min(values)))
        ax.set_ylim(min(values) - pad, max(values) + pad)
    ax.set(
        xlabel="round (0 = base model)",
        ylabel="held-out loss (nats/token)",
        title="Held-out loss per site" + (" (exact: simulation driver)" if exact else " (released by the sites)"),
        xticks=range(rounds),
    )
    ax.legend(fontsize=7)
    return _save(fig, folder, "loss.png")


def _epsilon_plot(summary: dict[str, Any], rows: list[dict[str, Any]], folder: Path) -> str | None:
    if not summary.get("dp_enabled"):
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for entry in summary.get("sites", []):
        site = entry["site_id"]
        points = [(0, 0.0)] + [
            (r["round"], r["sites"][site]["epsilon"])
            for r in rows
            if site in (r.get("sites") or {}) and r["sites"][site].get("epsilon") is not None
        ]
        line = ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=f"{site} spent")[0]
        if entry.get("target_epsilon") is not None:
            ax.axhline(entry["target_epsilon"], color=line.get_color(), linestyle=":", label=f"{site} target")
    ax.set(
        xlabel="round",
        ylabel="epsilon (whole run so far)",
        title="Privacy budget spent per site",
        xticks=range(len(rows) + 1),
    )
    ax.legend(fontsize=8)
    return _save(fig, folder, "epsilon.png")


def _bytes_plot(summary: dict[str, Any], folder: Path) -> str | None:
    up, down = summary.get("bytes_up_per_round") or [], summary.get("bytes_down_per_round") or []
    if not up:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    rounds = list(range(1, len(up) + 1))
    ax.bar([r - 0.2 for r in rounds], [b / 1e6 for b in up], width=0.4, label="up (sites -> coordinator)")
    ax.bar([r + 0.2 for r in rounds], [b / 1e6 for b in down], width=0.4, label="down (coordinator -> sites)")
    ax.set(xlabel="round", ylabel="MB of adapter tensors", title="Traffic per round", xticks=rounds)
    ax.legend(fontsize=8)
    return _save(fig, folder, "bytes.png")


def _task_plot(evaluation: dict[str, Any], folder: Path) -> str:
    plt = _pyplot()
    metric = evaluation["metric"]
    sites = sorted(evaluation["sites"], key=_site_key)
    names = [*sites, "pooled"]
    base = [evaluation["sites"][s]["base"]["metrics"][metric] for s in sites] + [
        evaluation["pooled"]["base"]["metrics"][metric]
    ]
    final = [evaluation["sites"][s]["final"]["metrics"][metric] for s in sites] + [
        evaluation["pooled"]["final"]["metrics"][metric]
    ]
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    xs = list(range(len(names)))
    ax.bar([x - 0.2 for x in xs], base, width=0.4, label="base model")
    ax.bar([x + 0.2 for x in xs], final, width=0.4, label="final adapter")
    ax.set(xticks=xs, ylabel=metric, title=f"Task {metric}: base vs final adapter", ylim=(0, 1))
    ax.set_xticklabels(names, fontsize=8)
    ax.legend(fontsize=8)
    return _save(fig, folder, "task.png")


def _confusion_plot(evaluation: dict[str, Any], folder: Path) -> str:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.8))
    for ax, which in zip(axes, ("base", "final"), strict=True):
        cm = evaluation["pooled"][which]["metrics"]["confusion_matrix"]
        labels, matrix = cm["labels"], cm["matrix"]
        ax.imshow(matrix, cmap="Blues")
        for i, row in enumerate(matrix):
            for j, v in enumerate(row):
                dark = v > max(max(r) for r in matrix) / 2
                ax.text(j, i, str(v), ha="center", va="center", fontsize=9, color="white" if dark else "black")
        ax.set(
            xticks=range(len(labels)),
            yticks=range(len(labels)),
            xlabel="predicted",
            ylabel="gold",
            title=f"{'base model' if which == 'base' else 'final adapter'} (all sites)",
        )
        ax.set_xticklabels(labels, rotation=30, fontsize=8)
        ax.set_yticklabels(labels, fontsize=8)
    return _save(fig, folder, "confusion.png")


def fairness_rows(evaluation: dict[str, Any]) -> tuple[list[list[Any]], dict[str, Any]]:
    """Rows (unit, group, n, base, final, change) over sites and subgroups, and the gap summary."""
    metric = evaluation["metric"]
    rows: list[list[Any]] = []
    for site in sorted(evaluation["sites"], key=_site_key):
        b, f = evaluation["sites"][site]["base"]["metrics"], evaluation["sites"][site]["final"]["metrics"]
        rows.append(["site", site, b["n"], b[metric], f[metric], f[metric] - b[metric]])
    pooled = evaluation["pooled"]
    for group, b in (pooled["base"].get("groups") or {}).items():
        f = pooled["final"]["groups"][group]
        rows.append(["group", group, b["n"], b[metric], f[metric], f[metric] - b[metric]])
    gaps = {which: pooled[which].get("fairness") for which in ("base", "final")}
    return rows, gaps


def _fairness_html(evaluation: dict[str, Any]) -> str:
    metric = evaluation["metric"]
    rows, gaps = fairness_rows(evaluation)
    out = [_table(["unit", "name", "n", f"base {metric}", f"final {metric}", "change"], rows)]
    lost = [f"{r[0]} {r[1]} ({r[5]:+.3f})" for r in rows if r[5] < 0]
    gained = [f"{r[0]} {r[1]} ({r[5]:+.3f})" for r in rows if r[5] > 0]
    out.append(
        f"<p><b>Lost:</b> {html.escape(', '.join(lost) or 'none')}. "
        f"<b>Gained:</b> {html.escape(', '.join(gained) or 'none')}.</p>"
    )
    for which in ("base", "final"):
        g = gaps[which]
        if g and g.get("best_group") is not None:
            out.append(
                f"<p>{'Base model' if which == 'base' else 'Final adapter'}: worst group "
                f"<b>{html.escape(str(g['worst_group']))}</b>, largest gap {g['largest_gap']:.3f} "
                f"({html.escape(metric)}, vs {html.escape(str(g['best_group']))}).</p>"
            )
    if not any(gaps.values()):
        out.append("<p>No subgroup field was set (<code>data.group_field</code>): sites only.</p>")
    return "\n".join(out)


def _released_tasks_html(summary: dict[str, Any]) -> str:
    """The sites' own task sets as the coordinator received them: DP-noised counts turned into metrics."""
    tasks = summary["task_metrics"]
    by_round = summary.get("task_metrics_by_round") or {}
    metric = tasks["metric"]
    keys = (
        ["accuracy", "macro_precision", "macro_recall", "macro_f1"]
        if tasks["kind"] == "choice"
        else ["rouge_l", "loss"]
    )
    last = max(by_round, key=int) if by_round else "?"
    rows = [
        [site, m["n"], *[m[k] for k in keys], m["noise_std"]]
        for site, m in [*sorted(tasks["sites"].items(), key=lambda kv: _site_key(kv[0])), ("pooled", tasks["pooled"])]
    ]
    if tasks["dp_noised"]:
        what = (
            "<p>Each site scored its own task set with the global adapter and released only counts "
            "(confusion-matrix cells; for generation tasks sums of per-unit ROUGE-L and clipped answer loss), "
            "with Gaussian noise, in the same charged query as its held-out loss: these are <b>DP-noised "
            "releases</b>, not exact metrics (the exact ones stay in each site's log). The noise std column is "
            "the std of the noise on each released count; the pooled matrix adds the sites' releases (noise std "
            "the root of the sum of squares). Negative cells are clamped to 0 and ratios to [0, 1] "
            "(post-processing, no privacy cost). A count's noise std over n units moves accuracy by about "
            "std / n.</p>"
        )
    else:
        what = "<p>DP was off at every site that released them: exact counts.</p>"
    out = [what, f"<p>Round {html.escape(str(last))}.</p>", _table(["site", "n", *keys, "noise std per count"], rows)]
    if tasks.get("skipped"):
        out.append(
            f"<p>Left out of the pool (other task kind or options): {html.escape(', '.join(tasks['skipped']))}.</p>"
        )
    if tasks["kind"] == "choice":
        cm = tasks["pooled"]["confusion_matrix"]
        out.append("<p>Pooled confusion matrix (rows = gold, columns = predicted; noised counts):</p>")
        out.append(
            _table(
                ["gold \\ predicted", *cm["labels"]], [[g, *r] for g, r in zip(cm["labels"], cm["matrix"], strict=True)]
            )
        )
    if len(by_round) > 1:
        out.append(
            _table(
                ["round", f"pooled {metric}", "pooled noise std"],
                [
                    [int(r), t["pooled"][metric], t["pooled"]["noise_std"]]
                    for r, t in sorted(by_round.items(), key=lambda kv: int(kv[0]))
                ],
            )
        )
    return "\n".join(out)


def _egress_path(run_dir: Path, site_id: str) -> Path:
    """A site's egress log in the run directory (simulated sites: sites/site-N/; older runs: egress/site-N/)."""
    path = run_dir / "sites" / site_id / "egress.jsonl"
    return path if path.exists() else run_dir / "egress" / site_id / "egress.jsonl"


def _privacy_html(run_dir: Path, summary: dict[str, Any], config: dict[str, Any]) -> str:
    from common.audit import AuditError, EgressLog, summarize

    privacy = (config or {}).get("privacy", {})
    rows = []
    for entry in summary.get("sites", []):
        log_path = _egress_path(run_dir, entry["site_id"])
        sample_rate = None
        if log_path.exists():
            train = [e for e in EgressLog(log_path).entries() if "sample_rate" in e.get("metrics", {})]
            sample_rate = train[-1]["metrics"]["sample_rate"] if train else None
        rows.append(
            [
                entry["site_id"],
                entry.get("examples"),
                entry.get("epsilon"),
                entry.get("target_epsilon"),
                entry.get("delta"),
                entry.get("noise_multiplier"),
                sample_rate,
                privacy.get("accountant", "-") if summary.get("dp_enabled") else "DP off",
            ]
        )
    parts = [
        _table(
            [
                "site",
                "training records",
                "epsilon spent",
                "target epsilon",
                "delta",
                "noise multiplier",
                "sample rate",
                "accountant",
            ],
            rows,
        )
    ]
    for entry in summary.get("sites", []):
        log_path = _egress_path(run_dir, entry["site_id"])
        if not log_path.exists():
            continue
        try:
            text = summarize(log_path)
        except AuditError as err:
            text = f"egress log FAILED verification: {err}"
        parts.append(
            f"<h3>What left {html.escape(entry['site_id'])} (its egress log)</h3><pre>{html.escape(text)}</pre>"
        )
    return "\n".join(parts)


def _compare_html(compare: dict[str, Any]) -> str:
    arms = compare["arms"]
    metric = compare.get("metric")
    answer = any(v is not None for r in compare["sites"].values() for v in r.get("task_loss", {}).values())
    header = ["site"] + [f"{a} loss" for a in arms] + ([f"{a} {metric}" for a in arms] if metric else [])
    header += [f"{a} task answer loss" for a in arms] if answer else []
    header += ["gain fed vs local (loss)"]
    rows = [
        [
            site,
            *[r["loss"].get(a) for a in arms],
            *([r["task"].get(a) for a in arms] if metric else []),
            *([r["task_loss"].get(a) for a in arms] if answer else []),
            r.get("gain_vs_local"),
        ]
        for site, r in sorted(compare["sites"].items(), key=lambda kv: _site_key(kv[0]))
    ]
    verdict = "yes" if compare.get("no_site_worse_off") else "no"
    return (
        _table(header, rows) + f"<p>Worst site: <b>{html.escape(str(compare.get('worst_site')))}</b>. "
        f"No site worse off than alone: <b>{verdict}</b>.</p>"
    )


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
    "text-align:right}th{background:#f3f3f3}img{max-width:100%;display:block;margin:0.5em 0}"
    "pre{background:#f7f7f7;padding:0.6em;overflow-x:auto;font-size:12px}"
)


def write_report(run_dir: str | Path) -> Path:
    """Build ``RUN_DIR/report.html`` (and ``RUN_DIR/report/*.png``) from the run's files; returns its path.

    Raises:
        RunDirectoryError: when ``RUN_DIR`` is not a directory or has no ``summary.json`` (the run did not finish).
    """
    from common.errors import RunDirectoryError

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirectoryError(f"{run_dir}: not a run directory (no such folder)")
    summary = _read_json(run_dir / "summary.json")
    if summary is None:
        raise RunDirectoryError(f"{run_dir / 'summary.json'} does not exist: the run did not finish")
    config = _read_json(run_dir / "config.json") or {}
    rows = _read_rows(run_dir / "metrics.jsonl")
    evaluation = _read_json(run_dir / "evaluation.json")
    compare = _read_json(run_dir / "compare.json")
    exact = _read_json(run_dir / "exact_loss.json")
    folder = run_dir / PLOTS
    losses = [r["mean"] for r in exact["by_round"]] if exact else summary.get("eval_loss_by_round") or []
    title = f"fedcare run {run_dir.name}"
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{len(summary.get('sites', []))} sites, {summary.get('rounds')} rounds, model "
        f"{html.escape(str((config.get('model') or {}).get('name_or_path', '?')))}, DP "
        f"{'on' if summary.get('dp_enabled') else 'OFF'}; {'exact' if exact else 'released'} held-out loss "
        f"{' &rarr; '.join(_fmt(x, 3) for x in losses)}; {_fmt(summary.get('wall_seconds'), 0)} s.</p>",
    ]
    plots = [
        ("Held-out loss", _loss_plot(summary, rows, exact, folder)),
        ("Privacy budget", _epsilon_plot(summary, rows, folder)),
        ("Traffic", _bytes_plot(summary, folder)),
    ]
    for heading, src in plots:
        if src:
            body.append(f'<h2>{heading}</h2><img src="{src}" alt="{heading}">')
    if evaluation:
        body.append(
            f"<h2>Task metrics, base vs final ({html.escape(evaluation['task'])}, "
            f"{html.escape(evaluation['kind'])})</h2>"
            "<p>Exact, scored by the simulation driver on every virtual site's task set after the run "
            "(a research view: no real site's numbers leave it this way).</p>"
        )
        body.append(f'<img src="{_task_plot(evaluation, folder)}" alt="task metrics">')
        keys = (
            ["accuracy", "macro_precision", "macro_recall", "macro_f1"]
            if evaluation["kind"] == "choice"
            else ["rouge_l", "loss", "perplexity"]
        )
        table_rows = []
        for site in [*sorted(evaluation["sites"], key=_site_key), "pooled"]:
            entry = evaluation["pooled"] if site == "pooled" else evaluation["sites"][site]
            for which in ("base", "final"):
                table_rows.append(
                    [site, which, entry[which]["metrics"]["n"], *[entry[which]["metrics"][k] for k in keys]]
                )
        body.append(_table(["site", "model", "n", *keys], table_rows))
        if evaluation.get("baselines"):
            b = evaluation["baselines"]
            body.append(
                f"<p>Baselines (all sites): majority class '{html.escape(str(b['majority']['label']))}' "
                f"accuracy {b['majority']['accuracy']:.3f}; chance accuracy {b['chance']['accuracy']:.3f}.</p>"
            )
        if evaluation["kind"] == "choice":
            body.append(
                f'<h2>Confusion matrix</h2><img src="{_confusion_plot(evaluation, folder)}" alt="confusion matrix">'
            )
        body.append("<h2>Fairness</h2>" + _fairness_html(evaluation))
    if summary.get("task_metrics"):
        noised = " (DP-noised releases)" if summary["task_metrics"]["dp_noised"] else " (exact: DP off)"
        body.append(f"<h2>Task metrics released by the sites{noised}</h2>" + _released_tasks_html(summary))
    if compare:
        pooled = " vs pooled" if {"pooled", "pooled_dp"} & set(compare["arms"]) else ""
        body.append(f"<h2>Baselines: federated vs alone{pooled}</h2>" + _compare_html(compare))
    body.append("<h2>Privacy</h2>" + _privacy_html(run_dir, summary, config))
    page = (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n"
    )
    path = run_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


def sweep_points(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """(target epsilon, final held-out loss, task metric) of every finished run under ``sweep_dir``."""
    points = []
    for summary_path in sorted(Path(sweep_dir).rglob("summary.json")):
        run = summary_path.parent
        summary = _read_json(summary_path)
        config = _read_json(run / "config.json") or {}
        privacy = config.get("privacy", {})
        evaluation = _read_json(run / "evaluation.json")
        exact = _read_json(run / "exact_loss.json")
        losses = [r["mean"] for r in exact["by_round"]] if exact else summary.get("eval_loss_by_round") or [math.nan]
        points.append(
            {
                "run": str(run),
                "dp_enabled": bool(summary.get("dp_enabled")),
                "target_epsilon": privacy.get("target_epsilon") if summary.get("dp_enabled") else None,
                "epsilon": max((s.get("epsilon") or 0.0 for s in summary.get("sites", [])), default=None),
                "loss_kind": "exact" if exact else "released",
                "base_loss": losses[0],
                "final_loss": losses[-1],
                "metric": evaluation["metric"] if evaluation else None,
                "final_metric": evaluation["pooled"]["final"]["metrics"][evaluation["metric"]] if evaluation else None,
            }
        )
    return sorted(points, key=lambda p: (p["target_epsilon"] is None, p["target_epsilon"] or 0.0))


def write_sweep_report(sweep_dir: str | Path) -> Path:
    """``SWEEP_DIR/sweep.html`` with the privacy-utility curve of the runs below it; returns its path.

    Raises:
        RunDirectoryError: when ``sweep_dir`` is not a folder or no finished run (``summary.json``) is below it.
    """
    from common.errors import RunDirectoryError

    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise RunDirectoryError(f"{sweep_dir}: not a sweep folder (no such folder)")
    points = sweep_points(sweep_dir)
    if not points:
        raise RunDirectoryError(
            f"{sweep_dir}: no finished run (summary.json) below it; a sweep folder is the "
            "output_dir/multirun/<time> of `fedcare simulate --multirun`"
        )
    plt = _pyplot()
    dp = [p for p in points if p["dp_enabled"]]
    fig, ax = plt.subplots(figsize=(6.4, 4))
    kind = "exact" if dp and all(p["loss_kind"] == "exact" for p in dp) else "released"
    ax.plot(
        [p["target_epsilon"] for p in dp],
        [p["final_loss"] for p in dp],
        marker="o",
        label=f"final held-out loss ({kind})",
    )
    if dp:
        ax.axhline(dp[0]["base_loss"], color="grey", linestyle=":", label="base model")
    for p in points:
        if not p["dp_enabled"]:
            ax.axhline(p["final_loss"], color="green", linestyle="--", label="no DP")
    ax.set(
        xscale="log",
        xlabel="target epsilon per site (log scale)",
        ylabel="held-out loss (nats/token)",
        title="Privacy-utility curve",
    )
    ax.legend(fontsize=8)
    src = _save(fig, sweep_dir / PLOTS, "privacy_utility.png")
    rows = [
        [
            p["target_epsilon"],
            p["epsilon"],
            p["base_loss"],
            p["final_loss"],
            p["final_metric"],
            Path(p["run"]).relative_to(sweep_dir).as_posix(),
        ]
        for p in points
    ]
    metric = next((p["metric"] for p in points if p["metric"]), "task metric")
    page = (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>fedcare sweep</title>'
        f"<style>{_CSS}</style></head><body><h1>Privacy-utility sweep: {html.escape(sweep_dir.name)}</h1>"
        f'<img src="{src}" alt="privacy-utility curve">'
        + _table(
            ["target epsilon", "epsilon spent (max site)", "base loss", "final loss", f"final {metric}", "run"], rows
        )
        + "</body></html>\n"
    )
    path = sweep_dir / "sweep.html"
    path.write_text(page, encoding="utf-8")
    return path
