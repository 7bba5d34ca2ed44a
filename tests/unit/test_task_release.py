"""Task metrics under the release rule: bounded per-unit sums at the site, metrics from noised sums."""

from __future__ import annotations

import math

import numpy as np
import pytest

from common.errors import DataError
from common.metrics import classification_metrics
from common.task_release import (
    choice_sums,
    generation_sums,
    is_task_round,
    metrics_from_confusion,
    metrics_from_generation,
    read_release,
    release_metrics,
    task_metrics,
)
from common.wire import ACCOUNTED, EVAL_METRICS, PUBLIC, check_metrics, confusion_key

LABELS = ("no", "yes")


def test_confusion_matrix_to_metrics_by_hand() -> None:
    # rows gold, columns predicted: 3 no->no, 1 no->yes, 2 yes->no, 4 yes->yes
    m = metrics_from_confusion([[3, 1], [2, 4]], LABELS, 10)
    assert m["accuracy"] == pytest.approx(0.7)
    no, yes = m["per_class"]["no"], m["per_class"]["yes"]
    assert (no["tp"], no["fp"], no["fn"]) == (3, 2, 1)
    assert (no["precision"], no["recall"]) == pytest.approx((3 / 5, 3 / 4))
    assert no["f1"] == pytest.approx(2 * 0.6 * 0.75 / 1.35)
    assert (yes["tp"], yes["fp"], yes["fn"]) == (4, 1, 2)
    assert (yes["precision"], yes["recall"]) == pytest.approx((4 / 5, 4 / 6))
    assert m["macro_precision"] == pytest.approx(0.7)
    assert m["macro_recall"] == pytest.approx((0.75 + 4 / 6) / 2)
    assert m["macro_f1"] == pytest.approx((2 * 0.6 * 0.75 / 1.35 + 2 * 0.8 * (4 / 6) / (0.8 + 4 / 6)) / 2)


def test_an_exact_matrix_gives_scikit_learns_numbers() -> None:
    gold = ["yes", "no", "maybe", "yes", "yes", "no", "maybe", "no"]
    pred = ["yes", "yes", "no", "yes", "no", "no", "yes", "no"]
    labels = ("maybe", "no", "yes")  # "maybe" is never predicted: precision 0 (zero_division=0)
    released = release_metrics(choice_sums(gold, pred, labels), choice_sums(gold, pred, labels).sums, 0.0)
    ours = task_metrics({"site-0": released}, labels)["sites"]["site-0"]
    ref = classification_metrics(gold, pred, labels)
    for key in ("accuracy", "macro_precision", "macro_recall", "macro_f1"):
        assert ours[key] == pytest.approx(ref[key]), key
    assert ours["confusion_matrix"]["matrix"] == ref["confusion_matrix"]["matrix"]
    for lab in labels:
        for key in ("precision", "recall", "f1", "support"):
            assert ours["per_class"][lab][key] == pytest.approx(ref["per_class"][lab][key])


def test_noised_cells_are_clamped_and_accuracy_uses_the_public_count() -> None:
    m = metrics_from_confusion([[3.5, -1.0], [2.0, 4.5]], LABELS, 10)
    assert m["accuracy"] == pytest.approx(0.8)  # trace 8 of the raw release over the 10 public units
    assert m["confusion_matrix"]["matrix"] == [[3.5, 0.0], [2.0, 4.5]]
    assert m["per_class"]["no"]["precision"] == pytest.approx(3.5 / 5.5)
    assert m["per_class"]["no"]["recall"] == pytest.approx(1.0)
    assert m["per_class"]["yes"]["recall"] == pytest.approx(4.5 / 6.5)
    assert metrics_from_confusion([[9, 0], [0, 9]], LABELS, 10)["accuracy"] == 1.0  # clamped to [0, 1]
    assert metrics_from_confusion([[-3, 0], [0, -1]], LABELS, 10)["accuracy"] == 0.0
    assert metrics_from_confusion([[-3, -1], [-1, -1]], LABELS, 10)["macro_f1"] == 0.0  # all cells clamped away


def test_each_patient_adds_at_most_one_to_the_confusion_matrix() -> None:
    sums = choice_sums(["yes", "yes", "no"], ["yes", "no", "no"], LABELS, units=["p1", "p1", "p2"])
    assert sums.units == 2
    assert sums.sums["confusion"].tolist() == [[1.0, 0.0], [0.5, 0.5]]
    with pytest.raises(DataError, match="not among the task's options"):
        choice_sums(["yes"], ["maybe"], LABELS)
    with pytest.raises(DataError, match="2 to 10 options"):
        choice_sums(["a"], ["a"], tuple("abcdefghijk"))


def test_generation_sums_are_clipped_per_unit_and_averaged_back() -> None:
    sums = generation_sums([0.5, 1.2, math.nan], [2.0, 7.0, 1.0], loss_clip=5.0)
    assert float(sums.sums["rouge_l"]) == pytest.approx(1.5)  # 0.5 + 1 (clipped) + 0 (no score)
    assert float(sums.sums["answer_loss"]) == pytest.approx((2 + 5 + 1) / 5)  # per-unit bound 1
    released = release_metrics(sums, sums.sums, 0.0)
    assert released["task_loss_sum"] == pytest.approx(8.0) and released["task_classes"] == 0
    m = metrics_from_generation(released["task_rouge_l_sum"], released["task_loss_sum"], 3, 5.0)
    assert (m["rouge_l"], m["loss"]) == pytest.approx((0.5, 8 / 3))
    assert metrics_from_generation(-1.0, 40.0, 3, 5.0) == {"n": 3, "rouge_l": 0.0, "loss": 5.0}


def test_sites_pool_by_adding_their_released_sums() -> None:
    a = release_metrics(choice_sums(["no", "yes"], ["no", "yes"], LABELS), {"confusion": np.eye(2)}, 3.0)
    b = release_metrics(
        choice_sums(["no", "yes", "yes"], ["yes", "yes", "no"], LABELS), {"confusion": np.array([[0, 1], [1, 1]])}, 4.0
    )
    result = task_metrics({"site-0": a, "site-1": b, "site-2": {"eval_loss": 2.0}}, LABELS)
    assert set(result["sites"]) == {"site-0", "site-1"} and result["dp_noised"]
    assert result["pooled"]["confusion_matrix"]["matrix"] == [[1, 1], [1, 2]]
    assert result["pooled"]["n"] == 5 and result["pooled"]["accuracy"] == pytest.approx(3 / 5)
    assert result["pooled"]["noise_std"] == pytest.approx(5.0)  # sqrt(3^2 + 4^2)
    assert task_metrics({"site-0": a}, ())["labels"] == ["class-0", "class-1"]  # no names given
    g = release_metrics(generation_sums([0.5], [1.0], 5.0), generation_sums([0.5], [1.0], 5.0).sums, 0.0)
    assert task_metrics({"site-0": a, "site-1": g}, LABELS)["skipped"] == ["site-1"]
    assert task_metrics({"site-0": {"eval_loss": 1.0}}) is None


def test_release_metric_names_follow_the_release_rule() -> None:
    choice = choice_sums(["no", "yes"], ["yes", "yes"], LABELS)
    gen = generation_sums([0.5], [1.0], 5.0)
    for released in (release_metrics(choice, choice.sums, 1.0), release_metrics(gen, gen.sums, 1.0)):
        check_metrics(released, EVAL_METRICS)
    for key in (confusion_key(0, 1), "task_rouge_l_sum", "task_loss_sum"):
        assert EVAL_METRICS[key] == ACCOUNTED
    for key in ("task_units", "task_classes", "task_noise_std", "task_loss_clip"):
        assert EVAL_METRICS[key] == PUBLIC
    with pytest.raises(DataError, match="confusion cell"):
        read_release({"task_units": 2, "task_classes": 2, confusion_key(0, 0): 1.0})


@pytest.mark.parametrize(
    ("every", "rounds_asked"),
    [(-1, []), (0, [0, 3]), (1, [0, 1, 2, 3]), (2, [0, 2, 3])],
)
def test_task_rounds(every: int, rounds_asked: list[int]) -> None:
    assert [r for r in range(4) if is_task_round(every, r, 3)] == rounds_asked


def test_a_sites_task_takes_the_coordinators_options_only_for_choice_tasks(tmp_path) -> None:  # noqa: ANN001
    import json

    from common.config import DataConfig
    from common.evaluation import site_task

    choice, generation = tmp_path / "choice.jsonl", tmp_path / "gen.jsonl"
    choice.write_text("".join(json.dumps({"question": f"q{i}", "label": lab}) + "\n" for i, lab in enumerate("ab")))
    generation.write_text(json.dumps({"input": "Summarize.", "output": "Stable."}) + "\n")
    data = DataConfig(kind="files", paths=("x.jsonl", "y.jsonl"), task_paths=(str(choice), str(generation)))
    assert site_task(data, 0).labels == ("a", "b")
    assert site_task(data, 0, ("b", "c", "a")).labels == ("b", "c", "a")  # the coordinator's order
    assert site_task(data, 1, ("b", "a")).kind == "generation"  # options do not turn it into a choice task
    with pytest.raises(DataError, match="choice.jsonl row 1: the gold answer is not one of the options"):
        site_task(data, 0, ("b", "c"))
    synthetic = site_task(DataConfig(task_items_per_site=3), 0)
    assert synthetic is not None and synthetic.labels == ("no", "yes")  # fixed, whatever the items' answers
