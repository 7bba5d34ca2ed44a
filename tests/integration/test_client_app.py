"""The real ClientApp driven with hand-built Messages: what a reply may hold, refusals, data errors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from flwr.app import MessageType

from client import client_app
from client.state import SiteState
from common.adapters import is_lora_tensor_name
from common.config import DataConfig, TrainConfig
from common.wire import ARRAYS, EGRESS, EVAL_METRICS, METRICS, TASK_PREFIX, TRAIN_METRICS, check_egress
from tests.integration.conftest import SECRET, context, message, site_node


def _ledger(node: dict):  # noqa: ANN202
    from client.rounds import resolve_site

    return SiteState(resolve_site(node).config.state_dir).read_ledger()


def test_train_reply_holds_only_lora_tensors_and_allowed_numbers(cfg, initial, tmp_path: Path) -> None:
    node = site_node(cfg, tmp_path)
    reply = client_app.app(message(cfg, 1, initial, MessageType.TRAIN), context(node_config=node))
    assert not reply.has_error(), reply.error.reason if reply.has_error() else ""
    content = reply.content
    assert set(content.array_records) == {ARRAYS} and set(content.metric_records) == {METRICS}
    # No strings, no config: only tensors, numbers and the egress log's head (seq + SHA-256 hex).
    assert set(content.config_records) == {EGRESS}
    assert check_egress(dict(content.config_records[EGRESS]))[0] == 1
    names = list(content.array_records[ARRAYS].keys())
    assert sorted(names) == sorted(initial) and all(is_lora_tensor_name(n) for n in names)
    for name in names:
        arr = content.array_records[ARRAYS][name].numpy()
        assert arr.dtype == np.float32 and arr.shape == initial[name].shape
    metrics = dict(content.metric_records[METRICS])
    assert set(metrics) <= set(TRAIN_METRICS)
    assert not {"train_loss", "tokens", "examples_seen", "seconds", "phi_removed"} & set(metrics)  # stay at the site
    assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in metrics.values())
    assert 0 < metrics["epsilon"] <= metrics["target_epsilon"] == 8.0
    assert metrics["steps"] == 3 and metrics["num-examples"] == 16


def test_ledger_persists_in_state_and_composes_over_rounds(cfg, initial, tmp_path: Path) -> None:
    node = site_node(cfg, tmp_path)
    ctx = context(node_config=node)
    first = client_app.app(message(cfg, 1, initial, MessageType.TRAIN), ctx)
    second = client_app.app(message(cfg, 2, initial, MessageType.TRAIN), ctx)
    eps1 = first.content.metric_records[METRICS]["epsilon"]
    eps2 = second.content.metric_records[METRICS]["epsilon"]
    assert 0 < eps1 < eps2 <= 8.0
    ledger = _ledger(node)
    assert ledger is not None and [(r["server_round"], r["steps"]) for r in ledger.entries] == [(1, 3), (2, 3)]
    assert ledger.epsilon() == pytest.approx(eps2)


def test_a_run_the_remaining_budget_cannot_serve_is_refused_naming_what_is_left(cfg, initial, tmp_path: Path) -> None:
    node = site_node(cfg, tmp_path)
    ctx = context(node_config=node)
    for server_round in (1, 2):  # run "r" spends (almost) the whole lifetime budget of 8
        assert not client_app.app(message(cfg, server_round, initial, MessageType.TRAIN), ctx).has_error()
    before = _ledger(node).entries
    reply = client_app.app(message(cfg, 1, initial, MessageType.TRAIN, run_id="second"), ctx)
    assert reply.has_error() and reply.error.code == client_app.FEDCARE_ERROR
    assert "left" in reply.error.reason and "to proceed" in reply.error.reason
    assert _ledger(node).entries == before  # refusal: nothing recorded


def test_dp_off_is_explicit_in_the_metrics(cfg, initial, tmp_path: Path) -> None:
    plain = dataclasses.replace(cfg, privacy=dataclasses.replace(cfg.privacy, enabled=False))
    node = site_node(plain, tmp_path)
    reply = client_app.app(message(plain, 1, initial, MessageType.TRAIN), context(node_config=node))
    metrics = reply.content.metric_records[METRICS]
    assert metrics["dp_enabled"] == 0.0 and metrics["epsilon"] == float("inf")


def test_evaluate_reply_holds_only_eval_metrics(cfg, initial, tmp_path: Path) -> None:
    node = site_node(cfg, tmp_path, 1)
    reply = client_app.app(message(cfg, 0, initial, MessageType.EVALUATE), context(node_config=node))
    assert not reply.has_error(), reply.error.reason
    assert not reply.content.array_records and set(reply.content.config_records) == {EGRESS}
    metrics = dict(reply.content.metric_records[METRICS])
    # No task set was asked for (the plan's score_tasks is false): the held-out loss and the budget only.
    assert set(metrics) == {k for k in EVAL_METRICS if not k.startswith(TASK_PREFIX)} and metrics["site_index"] == 1
    assert 0 < metrics["epsilon"] < 8.0 and metrics["dp_enabled"] == 1.0  # the query was charged


def test_non_lora_tensors_in_a_round_message_are_refused(cfg, initial, tmp_path: Path) -> None:
    arrays = initial | {"base_model.model.lm_head.weight": np.zeros((2, 2), np.float32)}
    node = site_node(cfg, tmp_path)
    reply = client_app.app(message(cfg, 1, arrays, MessageType.TRAIN), context(node_config=node))
    assert reply.has_error() and "only LoRA adapter tensors" in reply.error.reason


def test_bad_site_data_is_an_error_reply_naming_file_and_row_without_text(cfg, initial, tmp_path: Path) -> None:
    good = tmp_path / "good.jsonl"
    bad = tmp_path / "bad.jsonl"
    rows = [{"question": f"q{i}", "answer": f"a{i}"} for i in range(10)]
    good.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    bad.write_text("\n".join(json.dumps(r) for r in rows[:4]) + "\n" + json.dumps({"question": SECRET, "answer": ""}))
    files = dataclasses.replace(cfg, data=DataConfig(kind="files", paths=(str(good), str(bad))))
    node = site_node(files, tmp_path, 1)
    reply = client_app.app(message(files, 1, initial, MessageType.TRAIN), context(node_config=node))
    assert reply.has_error()
    assert "bad.jsonl line 5" in reply.error.reason and "'answer' is empty" in reply.error.reason
    assert SECRET not in reply.error.reason


def test_patient_level_dp_accounts_per_patient(cfg, initial, tmp_path: Path) -> None:
    rows = [{"question": f"q{i}", "answer": f"a{i}", "patient": f"p{i // 4}"} for i in range(40)]  # 10 patients
    path = tmp_path / "patients.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    files = dataclasses.replace(
        cfg,
        data=DataConfig(kind="files", paths=(str(path), str(path)), patient_field="patient", eval_fraction=0.2),
        privacy=dataclasses.replace(cfg.privacy, unit="patient"),
        train=TrainConfig(local_steps=3, batch_size=2),
    )
    ctx = context(node_config=site_node(files, tmp_path))
    reply = client_app.app(message(files, 1, initial, MessageType.TRAIN), ctx)
    assert not reply.has_error(), reply.error.reason
    metrics = reply.content.metric_records[METRICS]
    assert metrics["sample_rate"] == pytest.approx(2 / 8)  # 8 training patients, not 32 records
    assert metrics["delta"] == pytest.approx(1e-5)  # delta = min(1e-5, 1 / (10 x patients))
    assert metrics["num-examples"] == 32
