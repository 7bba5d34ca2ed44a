"""The real ClientApp driven with hand-built Messages: what a reply may hold, refusals, data errors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from flwr.app import MessageType

from client import client_app
from client.state import ContextLedgerStore
from common.adapters import is_lora_tensor_name
from common.config import DataConfig, TrainConfig
from common.wire import ARRAYS, EVAL_METRICS, METRICS, TRAIN_METRICS
from tests.integration.conftest import SECRET, context, message


def test_train_reply_holds_only_lora_tensors_and_allowed_numbers(cfg, initial) -> None:
    reply = client_app.app(message(cfg, 1, initial, MessageType.TRAIN), context())
    assert not reply.has_error(), reply.error.reason if reply.has_error() else ""
    content = reply.content
    assert set(content.array_records) == {ARRAYS} and set(content.metric_records) == {METRICS}
    assert not content.config_records  # no strings, no config: only tensors and numbers leave
    names = list(content.array_records[ARRAYS].keys())
    assert sorted(names) == sorted(initial) and all(is_lora_tensor_name(n) for n in names)
    for name in names:
        arr = content.array_records[ARRAYS][name].numpy()
        assert arr.dtype == np.float32 and arr.shape == initial[name].shape
    metrics = dict(content.metric_records[METRICS])
    assert set(metrics) <= TRAIN_METRICS
    assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in metrics.values())
    assert 0 < metrics["epsilon"] <= metrics["target_epsilon"] == 8.0
    assert metrics["steps"] == 3 and metrics["num-examples"] == 16


def test_ledger_persists_in_state_and_composes_over_rounds(cfg, initial) -> None:
    ctx = context()
    first = client_app.app(message(cfg, 1, initial, MessageType.TRAIN), ctx)
    second = client_app.app(message(cfg, 2, initial, MessageType.TRAIN), ctx)
    eps1 = first.content.metric_records[METRICS]["epsilon"]
    eps2 = second.content.metric_records[METRICS]["epsilon"]
    assert 0 < eps1 < eps2 <= 8.0
    ledger = ContextLedgerStore(ctx).load()
    assert ledger is not None and [(r['server_round'], r['steps']) for r in ledger.rounds] == [(1, 3), (2, 3)]


def test_a_round_beyond_the_budget_gets_an_error_reply_not_a_crash(cfg, initial) -> None:
    ctx = context()
    for server_round in (1, 2):
        assert not client_app.app(message(cfg, server_round, initial, MessageType.TRAIN), ctx).has_error()
    reply = client_app.app(message(cfg, 3, initial, MessageType.TRAIN), ctx)
    assert reply.has_error()
    assert reply.error.code == client_app.FEDCARE_ERROR
    assert "round 3 would raise epsilon" in reply.error.reason
    assert [r["server_round"] for r in ContextLedgerStore(ctx).load().rounds] == [1, 2]  # refusal: not recorded


def test_dp_off_is_explicit_in_the_metrics(cfg, initial) -> None:
    plain = dataclasses.replace(cfg, privacy=dataclasses.replace(cfg.privacy, enabled=False))
    reply = client_app.app(message(plain, 1, initial, MessageType.TRAIN), context())
    metrics = reply.content.metric_records[METRICS]
    assert metrics["dp_enabled"] == 0.0 and metrics["epsilon"] == float("inf")


def test_evaluate_reply_holds_only_eval_metrics(cfg, initial) -> None:
    reply = client_app.app(message(cfg, 0, initial, MessageType.EVALUATE), context(1))
    assert not reply.content.array_records and not reply.content.config_records
    metrics = dict(reply.content.metric_records[METRICS])
    assert set(metrics) == EVAL_METRICS and metrics["site_index"] == 1 and metrics["eval_loss"] > 0


def test_non_lora_tensors_in_a_round_message_are_refused(cfg, initial) -> None:
    arrays = initial | {"base_model.model.lm_head.weight": np.zeros((2, 2), np.float32)}
    reply = client_app.app(message(cfg, 1, arrays, MessageType.TRAIN), context())
    assert reply.has_error() and "only LoRA adapter tensors" in reply.error.reason


def test_bad_site_data_is_an_error_reply_naming_file_and_row_without_text(cfg, initial, tmp_path: Path) -> None:
    good = tmp_path / "good.jsonl"
    bad = tmp_path / "bad.jsonl"
    rows = [{"question": f"q{i}", "answer": f"a{i}"} for i in range(10)]
    good.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    bad.write_text("\n".join(json.dumps(r) for r in rows[:4]) + "\n" + json.dumps({"question": SECRET, "answer": ""}))
    files = dataclasses.replace(cfg, data=DataConfig(kind="files", paths=(str(good), str(bad))))
    reply = client_app.app(message(files, 1, initial, MessageType.TRAIN), context(1))
    assert reply.has_error()
    assert "bad.jsonl line 5" in reply.error.reason and "'answer' is empty" in reply.error.reason
    assert SECRET not in reply.error.reason


def test_patient_level_dp_accounts_per_patient(cfg, initial, tmp_path: Path) -> None:
    rows = [{"question": f"q{i}", "answer": f"a{i}", "patient": f"p{i // 4}"} for i in range(40)]  # 10 patients
    path = tmp_path / "patients.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    files = dataclasses.replace(
        cfg, data=DataConfig(kind="files", paths=(str(path), str(path)), patient_field="patient", eval_fraction=0.2),
        privacy=dataclasses.replace(cfg.privacy, unit="patient"), train=TrainConfig(local_steps=3, batch_size=2))
    ctx = context()
    reply = client_app.app(message(files, 1, initial, MessageType.TRAIN), ctx)
    assert not reply.has_error(), reply.error.reason
    metrics = reply.content.metric_records[METRICS]
    assert metrics["sample_rate"] == pytest.approx(2 / 8)  # 8 training patients, not 32 records
    assert metrics["delta"] == pytest.approx(1 / 80)  # delta = 1 / (10 x patients)
    assert metrics["num-examples"] == 32
