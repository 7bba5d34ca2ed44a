"""Task metrics on plain label lists: accuracy, macro and per-class P/R/F1, confusion matrix, baselines, gaps.

Classification numbers come from scikit-learn (``zero_division=0``: a class never predicted has
precision 0, as lm-evaluation-harness and sklearn's reports count it). ROUGE-L comes from Google's
``rouge-score`` (the implementation the summarisation literature reports). Everything here is a pure
function of its inputs: the same lists give the same numbers, bit for bit.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any


def classification_metrics(gold: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro precision/recall/F1, per-class P/R/F1/support and the confusion matrix.

    Args:
        gold: the correct label of each item.
        predicted: the model's label of each item (same length).
        labels: every class, in the order rows and columns of the confusion matrix use.

    Returns:
        ``{"n", "accuracy", "macro_precision", "macro_recall", "macro_f1", "per_class": {label:
        {"precision", "recall", "f1", "support"}}, "confusion_matrix": {"labels", "matrix"}}``;
        ``matrix[i][j]`` counts items of gold class ``labels[i]`` predicted as ``labels[j]``.

    Raises:
        ValueError: when the lists differ in length or are empty.
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    if len(gold) != len(predicted) or not gold:
        raise ValueError(f"metrics: expected equal, non-empty label lists, got {len(gold)} and {len(predicted)}")
    labels = list(labels)
    p, r, f, s = precision_recall_fscore_support(gold, predicted, labels=labels, zero_division=0)
    mp, mr, mf, _ = precision_recall_fscore_support(gold, predicted, labels=labels, average="macro", zero_division=0)
    matrix = confusion_matrix(gold, predicted, labels=labels)
    return {
        "n": len(gold),
        "accuracy": float(accuracy_score(gold, predicted)),
        "macro_precision": float(mp),
        "macro_recall": float(mr),
        "macro_f1": float(mf),
        "per_class": {
            lab: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, lab in enumerate(labels)
        },
        "confusion_matrix": {"labels": labels, "matrix": matrix.astype(int).tolist()},
    }


def baselines(gold: Sequence[str], labels: Sequence[str]) -> dict[str, Any]:
    """What a model must beat: always answering the majority class, and guessing uniformly.

    ``chance`` is the expected accuracy (1 / classes) and macro-F1 of a uniform random guesser
    (per class: precision = its share of the gold labels, recall = 1 / classes); ``majority`` is
    computed exactly on ``gold``.
    """
    counts = Counter(gold)
    majority = max(labels, key=lambda lab: (counts[lab], -list(labels).index(lab)))
    k = len(labels)
    shares = [counts[lab] / len(gold) for lab in labels]
    chance_f1 = sum(2 * s * (1 / k) / (s + 1 / k) for s in shares if s > 0) / k
    major = classification_metrics(gold, [majority] * len(gold), labels)
    return {
        "majority": {"label": majority, "accuracy": major["accuracy"], "macro_f1": major["macro_f1"]},
        "chance": {"accuracy": 1.0 / k, "macro_f1": chance_f1},
    }


def rouge_l(references: Sequence[str], predictions: Sequence[str]) -> list[float]:
    """ROUGE-L F1 of each prediction against its reference (``rouge-score``, Porter stemming)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return [
        float(scorer.score(ref, pred)["rougeL"].fmeasure) for ref, pred in zip(references, predictions, strict=True)
    ]


def group_gaps(by_group: dict[str, dict[str, Any]], metric: str, *, min_n: int = 1) -> dict[str, Any]:
    """The largest gap in ``metric`` between groups, and the worst and best group.

    Args:
        by_group: group name -> metrics dict holding ``metric`` and ``n``.
        metric: the key to compare (higher is better).
        min_n: groups with fewer items are listed but not ranked (their numbers are noise).

    Returns:
        ``{"metric", "worst_group", "best_group", "largest_gap", "ranked": [names...]}``;
        the groups are ``None`` and the gap 0 when fewer than two groups qualify.
    """
    ranked = sorted((g for g, m in by_group.items() if m.get("n", 0) >= min_n), key=lambda g: (by_group[g][metric], g))
    if len(ranked) < 2:
        return {
            "metric": metric,
            "worst_group": ranked[0] if ranked else None,
            "best_group": None,
            "largest_gap": 0.0,
            "ranked": ranked,
        }
    worst, best = ranked[0], ranked[-1]
    return {
        "metric": metric,
        "worst_group": worst,
        "best_group": best,
        "largest_gap": float(by_group[best][metric] - by_group[worst][metric]),
        "ranked": ranked,
    }
