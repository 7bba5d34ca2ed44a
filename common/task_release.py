"""Task metrics under the release rule: a site's task counts as bounded sums, and the coordinator's metrics from them.

A site that holds a task set of its own (``data.task_paths``, or the synthetic triage items) scores it
with the current global adapter when the coordinator's evaluate plan asks (``score_tasks``). What
leaves is never a metric computed from the records but sums whose every privacy unit adds at most 1
(L2) to each, released together with the held-out loss in ONE Gaussian query
(``common.privacy.release_sums``, one ``charge_query``):

- ``choice`` tasks: the confusion matrix, each unit adding its items' mean one-hot (gold row,
  predicted column): one item per unit under ``privacy.unit=record``, so the cells are counts;
- ``generation`` tasks: the sum of per-unit ROUGE-L F1 (in [0, 1]) and of the per-unit answer-token
  loss clipped to [0, clip] and divided by clip.

The exact metrics stay in the site's log. The coordinator turns the noised sums into per-site and
pooled metrics (:func:`task_metrics`, :func:`pooled_task_metrics`): accuracy, per-class and macro
precision / recall / F1 and the confusion matrix, or ROUGE-L and answer loss. Clamping to valid
ranges is post-processing of the released values, so it costs no privacy. Pure: numpy only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from common.errors import DataError
from common.wire import MAX_TASK_CLASSES, TASK_PREFIX, confusion_key

UNITS = f"{TASK_PREFIX}units"
CLASSES = f"{TASK_PREFIX}classes"
NOISE_STD = f"{TASK_PREFIX}noise_std"
LOSS_CLIP = f"{TASK_PREFIX}loss_clip"
ROUGE_SUM = f"{TASK_PREFIX}rouge_l_sum"
LOSS_SUM = f"{TASK_PREFIX}loss_sum"


@dataclass(frozen=True)
class TaskSums:
    """A site's task set reduced to sums with a per-unit L2 bound of 1 each (what may be released, once noised)."""

    kind: str  # "choice" or "generation"
    units: int  # privacy units in the task set (public, like the held-out set's size)
    labels: tuple[str, ...]  # choice: class order of the confusion matrix
    sums: dict[str, np.ndarray]  # "confusion" [K, K], or "rouge_l" and "answer_loss" (divided by loss_clip) scalars
    loss_clip: float = 0.0


def _per_unit(rows: np.ndarray, units: Sequence[Any] | None) -> np.ndarray:
    """Mean of each unit's rows (each row its own unit when ``units`` is None)."""
    if units is None:
        return rows
    order = {u: n for n, u in enumerate(dict.fromkeys(units))}
    index = np.array([order[u] for u in units])
    totals = np.zeros((len(order), *rows.shape[1:]))
    np.add.at(totals, index, rows)
    counts = np.bincount(index, minlength=len(order)).reshape(-1, *([1] * (rows.ndim - 1)))
    return totals / counts


def choice_sums(
    gold: Sequence[str], predicted: Sequence[str], labels: Sequence[str], units: Sequence[Any] | None = None
) -> TaskSums:
    """The confusion matrix as a sum of per-unit mean one-hots (cells are counts with one item per unit).

    Raises:
        DataError: when a gold or predicted label is not one of ``labels``, there are more than
            ``MAX_TASK_CLASSES`` labels, or the lists differ in length or are empty.
    """
    labels = tuple(labels)
    if not 2 <= len(labels) <= MAX_TASK_CLASSES:
        raise DataError(f"task release: a choice task needs 2 to {MAX_TASK_CLASSES} options, got {len(labels)}")
    if len(gold) != len(predicted) or not gold or (units is not None and len(units) != len(gold)):
        raise DataError("task release: expected equal, non-empty lists of gold and predicted labels (and units)")
    where = {lab: i for i, lab in enumerate(labels)}
    missing = sorted({x for x in (*gold, *predicted) if x not in where})
    if missing:
        raise DataError(f"task release: {len(missing)} answer(s) are not among the task's options {list(labels)}")
    k = len(labels)
    rows = np.zeros((len(gold), k, k))
    rows[np.arange(len(gold)), [where[g] for g in gold], [where[p] for p in predicted]] = 1.0
    per_unit = _per_unit(rows, units)
    return TaskSums("choice", len(per_unit), labels, {"confusion": per_unit.sum(axis=0)})


def generation_sums(
    rouge: Sequence[float], loss: Sequence[float], loss_clip: float, units: Sequence[Any] | None = None
) -> TaskSums:
    """Sums of per-unit ROUGE-L (clipped to [0, 1]) and of per-unit answer loss clipped to [0, loss_clip] / loss_clip.

    Raises:
        DataError: when the lists differ in length or are empty, or ``loss_clip`` is not positive.
    """
    if len(rouge) != len(loss) or not rouge or (units is not None and len(units) != len(rouge)):
        raise DataError("task release: expected equal, non-empty lists of ROUGE-L and loss values (and units)")
    if not loss_clip > 0:
        raise DataError(f"task release: loss_clip must be > 0, got {loss_clip!r}")
    rows = np.stack(
        [np.clip(np.nan_to_num(np.asarray(rouge, float)), 0, 1), np.clip(np.asarray(loss, float), 0, loss_clip)], 1
    )
    rows[:, 1] /= loss_clip
    per_unit = _per_unit(rows, units)
    sums = per_unit.sum(axis=0)
    return TaskSums("generation", len(per_unit), (), {"rouge_l": sums[0], "answer_loss": sums[1]}, loss_clip)


def release_metrics(task: TaskSums, released: Mapping[str, np.ndarray], noise_std: float) -> dict[str, float]:
    """The reply metrics of a task release: ``released`` holds ``task.sums`` after the noise (or exact, DP off)."""
    out: dict[str, float] = {UNITS: task.units, NOISE_STD: float(noise_std)}
    if task.kind == "choice":
        matrix = np.asarray(released["confusion"])
        out[CLASSES] = len(task.labels)
        for i in range(len(task.labels)):
            for j in range(len(task.labels)):
                out[confusion_key(i, j)] = float(matrix[i, j])
    else:
        out[CLASSES] = 0
        out[ROUGE_SUM] = float(released["rouge_l"])
        out[LOSS_SUM] = float(released["answer_loss"]) * task.loss_clip
        out[LOSS_CLIP] = task.loss_clip
    return out


# ----------------------------------------------------------------------------------------------
# Coordinator: released sums -> metrics


def metrics_from_confusion(matrix: Any, labels: Sequence[str], n: float) -> dict[str, Any]:
    """Accuracy, per-class and macro P/R/F1 from a (possibly noised) confusion matrix over ``n`` units.

    Noised cells are clamped at 0 first; accuracy is trace / n (``n`` public, not the noised total),
    clamped to [0, 1]; per class TP = cell (k, k), FP = column sum - TP, FN = row sum - TP over the
    clamped matrix, a ratio with a zero denominator is 0 (scikit-learn's ``zero_division=0``); macro
    numbers are the unweighted means over classes. On an exact integer matrix these are
    :func:`common.metrics.classification_metrics`' numbers.
    """
    raw = np.asarray(matrix, dtype=np.float64)
    cm = np.maximum(raw, 0.0)
    tp = np.diag(cm)
    predicted, actual = cm.sum(axis=0), cm.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(tp), where=both > 0)
    accuracy = float(np.trace(raw) / n) if n > 0 else math.nan
    return {
        "n": n,
        "accuracy": min(max(accuracy, 0.0), 1.0) if n > 0 else math.nan,
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
        "per_class": {
            lab: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": float(actual[i]),
                "tp": float(tp[i]),
                "fp": float(predicted[i] - tp[i]),
                "fn": float(actual[i] - tp[i]),
            }
            for i, lab in enumerate(labels)
        },
        "confusion_matrix": {"labels": list(labels), "matrix": cm.tolist()},
    }


def metrics_from_generation(rouge_sum: float, loss_sum: float, n: float, loss_clip: float) -> dict[str, Any]:
    """Mean ROUGE-L (clamped to [0, 1]) and mean answer-token loss (clamped to [0, loss_clip]) over ``n`` units."""
    if n <= 0:
        return {"n": n, "rouge_l": math.nan, "loss": math.nan}
    return {
        "n": n,
        "rouge_l": min(max(rouge_sum / n, 0.0), 1.0),
        "loss": min(max(loss_sum / n, 0.0), loss_clip),
    }


@dataclass(frozen=True)
class SiteTaskRelease:
    """One site's released task sums, read back from its evaluate reply."""

    kind: str
    units: float
    noise_std: float
    confusion: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # choice (0 x 0 for generation)
    rouge_sum: float = 0.0  # generation
    loss_sum: float = 0.0
    loss_clip: float = 0.0


def read_release(metrics: Mapping[str, float]) -> SiteTaskRelease | None:
    """The task part of one site's evaluate reply metrics (None when it sent none).

    Raises:
        DataError: when the reply's task metrics are incomplete (a cell or sum is missing).
    """
    if UNITS not in metrics:
        return None
    classes = int(metrics.get(CLASSES, 0))
    units, std = float(metrics[UNITS]), float(metrics.get(NOISE_STD, 0.0))
    if classes:
        keys = [[confusion_key(i, j) for j in range(classes)] for i in range(classes)]
        if any(k not in metrics for row in keys for k in row):
            raise DataError(f"task release: the reply has {classes} classes but not every confusion cell")
        matrix = np.array([[float(metrics[k]) for k in row] for row in keys])
        return SiteTaskRelease("choice", units, std, confusion=matrix)
    if ROUGE_SUM not in metrics or LOSS_SUM not in metrics:
        raise DataError("task release: a generation reply needs task_rouge_l_sum and task_loss_sum")
    return SiteTaskRelease(
        "generation",
        units,
        std,
        rouge_sum=float(metrics[ROUGE_SUM]),
        loss_sum=float(metrics[LOSS_SUM]),
        loss_clip=float(metrics.get(LOSS_CLIP, 0.0)),
    )


def _metrics(release: SiteTaskRelease, labels: Sequence[str]) -> dict[str, Any]:
    if release.kind == "choice":
        out = metrics_from_confusion(release.confusion, labels, release.units)
    else:
        out = metrics_from_generation(release.rouge_sum, release.loss_sum, release.units, release.loss_clip)
    out["noise_std"] = release.noise_std
    return out


def task_metrics(by_site: Mapping[str, Mapping[str, float]], labels: Sequence[str] = ()) -> dict[str, Any] | None:
    """Per-site and pooled task metrics from the sites' evaluate replies (None when no site released any).

    The pooled entry adds the sites' released sums (their noise adds: its std is the root of the
    sum of squares). Sites whose task kind or class count differs from the first one are listed under
    ``"skipped"`` and left out of the pool. ``labels`` name the classes (the coordinator's
    ``coordinator.task_labels``); without them the classes are named ``class-0``, ``class-1``, ...

    Returns:
        ``{"kind", "metric", "labels", "dp_noised", "sites": {site: metrics}, "pooled": metrics,
        "skipped": [site, ...]}``; each metrics dict has ``noise_std`` (per released count or sum).
    """
    releases = {s: r for s, m in by_site.items() if (r := read_release(m)) is not None}
    if not releases:
        return None
    first = next(iter(releases.values()))
    classes = len(first.confusion)
    names = tuple(labels) if len(labels) == classes else tuple(f"class-{i}" for i in range(classes))
    same = {s: r for s, r in releases.items() if r.kind == first.kind and len(r.confusion) == classes}
    result: dict[str, Any] = {
        "kind": first.kind,
        "metric": "accuracy" if first.kind == "choice" else "rouge_l",
        "labels": list(names),
        "dp_noised": any(r.noise_std > 0 for r in same.values()),
        "sites": {s: _metrics(r, names) for s, r in same.items()},
        "skipped": sorted(set(releases) - set(same)),
    }
    pooled = SiteTaskRelease(
        first.kind,
        sum(r.units for r in same.values()),
        math.sqrt(sum(r.noise_std**2 for r in same.values())),
        confusion=np.sum([r.confusion for r in same.values()], axis=0),
        rouge_sum=sum(r.rouge_sum for r in same.values()),
        loss_sum=sum(r.loss_sum for r in same.values()),
        loss_clip=max((r.loss_clip for r in same.values()), default=0.0),
    )
    result["pooled"] = _metrics(pooled, names)
    return result


def is_task_round(every: int, server_round: int, num_rounds: int) -> bool:
    """Whether the coordinator asks for task metrics in ``server_round``'s evaluation.

    ``every`` is ``coordinator.task_eval_every``: -1 never, 0 before training (round 0, the base model)
    and after the last round, k > 0 every k rounds (round 0 included) and after the last.
    """
    if every < 0:
        return False
    return server_round in (0, num_rounds) or (every > 0 and server_round % every == 0)
