"""Federated task evaluation: a site's task counts leave only in its evaluate reply's one noised, charged query,
and the coordinator's per-site and pooled task metrics land in metrics.jsonl and summary.json."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, RecordDict

from client import client_app, runtime
from client.rounds import resolve_site
from client.state import SiteState
from common.adapters import load_adapter_arrays
from common.config import PrivacyConfig, RunConfig, plan_for_round, plan_to_flat
from common.evaluation import EvalSettings, score_task, site_task, summarize_scores
from common.task_release import task_metrics
from common.wire import ACCOUNTED, ARRAYS, EVAL_METRICS, METRICS, PLAN, TASK_PREFIX, confusion_key
from tests.integration.conftest import context, site_node

LABELS = ("no", "yes")


def _task_message(cfg: RunConfig, arrays: dict[str, np.ndarray], server_round: int = 2) -> Message:
    plan = dataclasses.replace(plan_for_round(cfg, server_round, "r"), score_tasks=True, task_labels=LABELS)
    content = RecordDict(
        {
            ARRAYS: ArrayRecord(array_dict={k: Array.from_numpy_ndarray(v) for k, v in arrays.items()}),
            PLAN: ConfigRecord(plan_to_flat(plan)),
        }
    )
    return Message(content, dst_node_id=7, message_type=MessageType.EVALUATE)


def _exact(cfg: RunConfig, node: dict[str, str], arrays: dict[str, np.ndarray]) -> dict:
    """The site's task metrics computed here the way the site does (they never leave it)."""
    site = resolve_site(node)
    model, tokenizer = runtime.model_for(cfg.model, cfg.lora, cfg.seed)
    load_adapter_arrays(model, arrays)
    task = site_task(site.config.data, site.config.data_slot, LABELS)
    assert task is not None
    scores = score_task(model, tokenizer, task, EvalSettings.for_training_length(cfg.train.max_seq_len), progress=False)
    return summarize_scores(task, scores)["metrics"]


@pytest.fixture
def task_cfg(cfg: RunConfig) -> RunConfig:
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, task_items_per_site=8))


def test_without_dp_the_reply_carries_the_exact_counts(task_cfg, initial, tmp_path: Path) -> None:
    cfg = dataclasses.replace(task_cfg, privacy=PrivacyConfig(enabled=False))
    node = site_node(cfg, tmp_path, 1)
    reply = client_app.app(_task_message(cfg, initial), context(node_config=node))
    assert not reply.has_error(), reply.error.reason
    metrics = dict(reply.content.metric_records[METRICS])
    assert metrics["task_noise_std"] == 0.0 and metrics["task_units"] == 8 and metrics["task_classes"] == 2
    released = task_metrics({"site-1": metrics}, LABELS)["sites"]["site-1"]
    exact = _exact(cfg, node, initial)
    assert released["confusion_matrix"]["matrix"] == exact["confusion_matrix"]["matrix"]
    for key in ("accuracy", "macro_precision", "macro_recall", "macro_f1"):
        assert released[key] == pytest.approx(exact[key]), key


def test_with_dp_task_counts_share_the_replys_one_charged_query(task_cfg, initial, tmp_path: Path, site_log) -> None:
    cfg = dataclasses.replace(task_cfg, privacy=PrivacyConfig(noise_seed=3))
    node = site_node(cfg, tmp_path)
    reply = client_app.app(_task_message(cfg, initial), context(node_config=node))
    assert not reply.has_error(), reply.error.reason
    metrics = dict(reply.content.metric_records[METRICS])
    task_keys = {k for k in metrics if k.startswith(TASK_PREFIX)}
    assert {confusion_key(i, j) for i in range(2) for j in range(2)} <= task_keys <= set(EVAL_METRICS)
    assert all(EVAL_METRICS[confusion_key(i, j)] == ACCOUNTED for i in range(2) for j in range(2))
    # One reply, one query: a single evaluate entry in the ledger covers the loss and the task counts.
    ledger = SiteState(resolve_site(node).config.state_dir).read_ledger()
    assert [e["kind"] for e in ledger.entries] == ["evaluate"] and metrics["epsilon"] == pytest.approx(ledger.epsilon())
    std = 8.0 * math.sqrt(2)  # eval_noise_multiplier x joint sensitivity of two unit-bounded sums (loss, matrix)
    assert metrics["task_noise_std"] == pytest.approx(std)
    exact = np.array(_exact(cfg, node, initial)["confusion_matrix"]["matrix"], dtype=float)
    noisy = np.array([[metrics[confusion_key(i, j)] for j in range(2)] for i in range(2)])
    assert not np.allclose(noisy, exact) and np.all(np.abs(noisy - exact) < 6 * std)
    assert "exact (stays here)" in site_log.text and "task synthetic triage" in site_log.text


@pytest.mark.slow  # trains the tiny model at two sites for two rounds (about a minute on two shared cores)
def test_task_metrics_of_every_site_and_pooled_land_in_metrics_and_summary(tmp_path: Path, cache_dir: Path) -> None:
    from simulations.inprocess import simulate_inprocess

    summary = simulate_inprocess(
        [
            "+experiment=smoke",
            "data.task_items_per_site=12",
            "coordinator.task_eval_every=2",
            "privacy.noise_seed=5",
            f"model.cache_dir={cache_dir}",
            f"output_dir={tmp_path}",
            "run_name=t",
        ]
    )
    run = tmp_path / "t"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert ["task_metrics" in r for r in rows] == [False, True]  # every 2 rounds: rounds 0 and 2
    last = rows[-1]["task_metrics"]
    assert last["kind"] == "choice" and last["labels"] == list(LABELS) and last["dp_noised"]
    assert set(last["sites"]) == {"site-0", "site-1"}
    for entry in [*last["sites"].values(), last["pooled"]]:
        assert 0.0 <= entry["accuracy"] <= 1.0 and 0.0 <= entry["macro_f1"] <= 1.0
        assert len(entry["confusion_matrix"]["matrix"]) == 2
    assert last["pooled"]["n"] == 24 and last["pooled"]["noise_std"] == pytest.approx(16.0)  # sqrt(2) x 8 sqrt(2)
    on_disk = json.loads((run / "summary.json").read_text())
    assert on_disk["task_metrics"] == last and sorted(on_disk["task_metrics_by_round"]) == ["0", "2"]
    assert summary["task_metrics"]["pooled"]["accuracy"] == pytest.approx(last["pooled"]["accuracy"])
    # What the pool was built from is what left the sites (their egress logs), and each reply cost one query.
    pooled_cells = np.zeros((2, 2))
    for site in ("site-0", "site-1"):
        entries = [json.loads(x) for x in (run / "sites" / site / "egress.jsonl").read_text().splitlines()]
        evaluates = [e for e in entries if e["message_type"] == MessageType.EVALUATE]
        assert [e["server_round"] for e in evaluates] == [0, 1, 2]
        assert ["task_units" in e["metrics"] for e in evaluates] == [True, False, True]
        pooled_cells += [[evaluates[-1]["metrics"][confusion_key(i, j)] for j in range(2)] for i in range(2)]
        ledger = SiteState(run / "sites" / site).read_ledger()
        assert [e["kind"] for e in ledger.entries].count("evaluate") == 3
    assert np.allclose(np.maximum(pooled_cells, 0), last["pooled"]["confusion_matrix"]["matrix"])


def test_a_generation_task_releases_rouge_and_loss_sums_in_the_same_query(cfg, initial, tmp_path: Path) -> None:
    from common.config import DataConfig, TrainConfig
    from common.synthetic import generate_site_records, write_jsonl

    paths, tasks = [], []
    for i in range(2):
        write_jsonl(generate_site_records(i, 20), tmp_path / f"train-{i}.jsonl")
        rows = [{"input": f"Summarize visit {n} of site {i}.", "output": f"Visit {n}: stable."} for n in range(4)]
        (tmp_path / f"task-{i}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        paths.append(str(tmp_path / f"train-{i}.jsonl"))
        tasks.append(str(tmp_path / f"task-{i}.jsonl"))
    files = DataConfig(kind="files", paths=tuple(paths), task_paths=tuple(tasks), deid="off")
    base = dataclasses.replace(cfg, data=files, train=TrainConfig(local_steps=3, batch_size=4, max_seq_len=24))
    released = {}
    for dp in (False, True):
        site_cfg = dataclasses.replace(base, privacy=PrivacyConfig(enabled=dp, noise_seed=3))
        node = site_node(site_cfg, tmp_path)
        reply = client_app.app(_task_message(site_cfg, initial), context(node_config=node))
        assert not reply.has_error(), reply.error.reason
        released[dp] = dict(reply.content.metric_records[METRICS])
        ledger = SiteState(resolve_site(node).config.state_dir).read_ledger()
        assert ([e["kind"] for e in ledger.entries] if ledger else []) == (["evaluate"] if dp else [])
    exact, noised = released[False], released[True]
    assert exact["task_classes"] == 0 and exact["task_units"] == 4 and exact["task_noise_std"] == 0.0
    assert EVAL_METRICS["task_rouge_l_sum"] == ACCOUNTED and EVAL_METRICS["task_loss_sum"] == ACCOUNTED
    assert noised["task_noise_std"] == pytest.approx(8.0 * math.sqrt(3))  # loss, ROUGE-L and answer-loss sums
    assert noised["task_rouge_l_sum"] != pytest.approx(exact["task_rouge_l_sum"])
    metrics = task_metrics({"site-0": exact})["sites"]["site-0"]
    assert 0.0 <= metrics["rouge_l"] <= 1.0 and 0.0 < metrics["loss"] <= 5.0
