"""The real ClientApp driven with hand-built Messages: what a reply may hold, refusals, data errors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from client import client_app
from client.state import ContextLedgerStore
from common.adapters import adapter_arrays, attach_lora, is_lora_tensor_name
from common.config import DataConfig, RunConfig, TrainConfig, plan_for_round, plan_to_flat
from common.wire import ARRAYS, EVAL_METRICS, METRICS, PLAN, TRAIN_METRICS

SECRET = "Jane Roe 555-0199"


@pytest.fixture(autouse=True)
def _task_identity() -> None:
    # A Message built outside a running app needs the task identity set first (flwr 1.41).
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1


@pytest.fixture
def cfg(tiny) -> RunConfig:
    model_cfg, _, _ = tiny
    return RunConfig(num_sites=2, num_rounds=2, model=model_cfg, train=TrainConfig(local_steps=3, batch_size=4),
                     data=DataConfig(records_per_site=20))


@pytest.fixture
def initial(tiny, cfg: RunConfig) -> dict[str, np.ndarray]:
    import copy

    _, model, _ = tiny
    return adapter_arrays(attach_lora(copy.deepcopy(model), cfg.lora, seed=cfg.seed))


def _message(cfg: RunConfig, server_round: int, arrays: dict[str, np.ndarray], kind: str) -> Message:
    content = RecordDict({
        ARRAYS: ArrayRecord(array_dict={k: Array.from_numpy_ndarray(v) for k, v in arrays.items()}),
        PLAN: ConfigRecord(plan_to_flat(plan_for_round(cfg, server_round))),
    })
    return Message(content, dst_node_id=7, message_type=kind)


def _context(partition: int = 0) -> Context:
    return Context(run_id=1, node_id=7, node_config={"partition-id": partition, "num-partitions": 2},
                   state=RecordDict(), run_config={})


def test_train_reply_holds_only_lora_tensors_and_allowed_numbers(cfg, initial) -> None:
    reply = client_app.app(_message(cfg, 1, initial, MessageType.TRAIN), _context())
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
    context = _context()
    first = client_app.app(_message(cfg, 1, initial, MessageType.TRAIN), context)
    second = client_app.app(_message(cfg, 2, initial, MessageType.TRAIN), context)
    eps1 = first.content.metric_records[METRICS]["epsilon"]
    eps2 = second.content.metric_records[METRICS]["epsilon"]
    assert 0 < eps1 < eps2 <= 8.0
    ledger = ContextLedgerStore(context).load()
    assert ledger is not None and [(r['server_round'], r['steps']) for r in ledger.rounds] == [(1, 3), (2, 3)]


def test_a_round_beyond_the_budget_gets_an_error_reply_not_a_crash(cfg, initial) -> None:
    context = _context()
    for server_round in (1, 2):
        assert not client_app.app(_message(cfg, server_round, initial, MessageType.TRAIN), context).has_error()
    reply = client_app.app(_message(cfg, 3, initial, MessageType.TRAIN), context)
    assert reply.has_error()
    assert reply.error.code == client_app.FEDCARE_ERROR
    assert "round 3 would raise epsilon" in reply.error.reason
    assert [r["server_round"] for r in ContextLedgerStore(context).load().rounds] == [1, 2]  # refusal: not recorded


def test_dp_off_is_explicit_in_the_metrics(cfg, initial) -> None:
    plain = dataclasses.replace(cfg, privacy=dataclasses.replace(cfg.privacy, enabled=False))
    reply = client_app.app(_message(plain, 1, initial, MessageType.TRAIN), _context())
    metrics = reply.content.metric_records[METRICS]
    assert metrics["dp_enabled"] == 0.0 and metrics["epsilon"] == float("inf")


def test_evaluate_reply_holds_only_eval_metrics(cfg, initial) -> None:
    reply = client_app.app(_message(cfg, 0, initial, MessageType.EVALUATE), _context(1))
    assert not reply.content.array_records and not reply.content.config_records
    metrics = dict(reply.content.metric_records[METRICS])
    assert set(metrics) == EVAL_METRICS and metrics["site_index"] == 1 and metrics["eval_loss"] > 0


def test_non_lora_tensors_in_a_round_message_are_refused(cfg, initial) -> None:
    arrays = initial | {"base_model.model.lm_head.weight": np.zeros((2, 2), np.float32)}
    reply = client_app.app(_message(cfg, 1, arrays, MessageType.TRAIN), _context())
    assert reply.has_error() and "only LoRA adapter tensors" in reply.error.reason


def test_bad_site_data_is_an_error_reply_naming_file_and_row_without_text(cfg, initial, tmp_path: Path) -> None:
    good = tmp_path / "good.jsonl"
    bad = tmp_path / "bad.jsonl"
    rows = [{"question": f"q{i}", "answer": f"a{i}"} for i in range(10)]
    good.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    bad.write_text("\n".join(json.dumps(r) for r in rows[:4]) + "\n" + json.dumps({"question": SECRET, "answer": ""}))
    files = dataclasses.replace(cfg, data=DataConfig(kind="files", paths=(str(good), str(bad))))
    reply = client_app.app(_message(files, 1, initial, MessageType.TRAIN), _context(1))
    assert reply.has_error()
    assert "bad.jsonl line 5" in reply.error.reason and "'answer' is empty" in reply.error.reason
    assert SECRET not in reply.error.reason
