"""Task metrics: known values worked out by hand, baselines, group gaps, ROUGE-L."""

from __future__ import annotations

import pytest

from common.metrics import baselines, classification_metrics, group_gaps, rouge_l


def test_classification_metrics_known_values() -> None:
    gold = ["yes", "yes", "yes", "no", "no", "maybe"]
    pred = ["yes", "no", "yes", "no", "yes", "no"]
    m = classification_metrics(gold, pred, ["yes", "no", "maybe"])
    assert m["n"] == 6
    assert m["accuracy"] == pytest.approx(3 / 6)
    # yes: P 2/3 R 2/3; no: P 1/3 R 1/2; maybe: never predicted -> P 0 R 0
    assert m["per_class"]["yes"]["precision"] == pytest.approx(2 / 3)
    assert m["per_class"]["no"]["precision"] == pytest.approx(1 / 3)
    assert m["per_class"]["no"]["recall"] == pytest.approx(1 / 2)
    assert m["per_class"]["maybe"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert m["macro_precision"] == pytest.approx((2 / 3 + 1 / 3 + 0) / 3)
    assert m["macro_recall"] == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    f_no = 2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2)
    assert m["macro_f1"] == pytest.approx((2 / 3 + f_no + 0) / 3)
    assert m["confusion_matrix"] == {"labels": ["yes", "no", "maybe"], "matrix": [[2, 1, 0], [1, 1, 0], [0, 1, 0]]}


def test_classification_metrics_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="equal, non-empty"):
        classification_metrics(["a"], ["a", "b"], ["a", "b"])


def test_baselines_majority_and_chance() -> None:
    gold = ["yes"] * 6 + ["no"] * 3 + ["maybe"]
    b = baselines(gold, ["maybe", "no", "yes"])
    assert b["majority"]["label"] == "yes"
    assert b["majority"]["accuracy"] == pytest.approx(0.6)
    assert b["majority"]["macro_f1"] == pytest.approx((2 * 0.6 / 1.6) / 3)
    assert b["chance"]["accuracy"] == pytest.approx(1 / 3)
    expected = sum(2 * s / 3 / (s + 1 / 3) for s in (0.6, 0.3, 0.1)) / 3
    assert b["chance"]["macro_f1"] == pytest.approx(expected)


def test_group_gaps_names_worst_group_and_skips_small_ones() -> None:
    by_group = {"f": {"accuracy": 0.8, "n": 10}, "m": {"accuracy": 0.5, "n": 12}, "x": {"accuracy": 0.0, "n": 1}}
    g = group_gaps(by_group, "accuracy", min_n=5)
    assert (g["worst_group"], g["best_group"]) == ("m", "f")
    assert g["largest_gap"] == pytest.approx(0.3)
    assert group_gaps({"f": {"accuracy": 1.0, "n": 3}}, "accuracy")["largest_gap"] == 0.0


def test_rouge_l_known_values() -> None:
    scores = rouge_l(["the patient has chest pain", "fever"], ["the patient has chest pain", "no cough"])
    assert scores[0] == pytest.approx(1.0)
    assert scores[1] == 0.0
    # LCS of "a b c d" and "a c" = 2: P = 1, R = 0.5, F = 2/3
    assert rouge_l(["alpha beta gamma delta"], ["alpha gamma"])[0] == pytest.approx(2 / 3)
