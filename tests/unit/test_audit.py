"""Egress log: entries chain by hash, and any edit, removal, reordering or truncation is named."""

from __future__ import annotations

import hashlib
import json
import math
import re
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

import common.audit as audit
from common.audit import AuditError, EgressLog, TensorEntry, describe_arrays, summarize, verify_log

ROUNDS = (1, 1, 2, 2, 3)
TYPES = ("train", "evaluate", "train", "evaluate", "train")


def _arrays(round_: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(round_)
    return {
        "layer.0.lora_A.weight": rng.standard_normal((4, 16)).astype(np.float32),
        "layer.0.lora_B.weight": rng.standard_normal((16, 4)).astype(np.float32),
    }


def _write_log(path: Path) -> list[dict]:
    """Five entries: train replies carry tensors and epsilon, evaluate replies only metrics."""
    log = EgressLog(path)
    written = []
    for round_, kind in zip(ROUNDS, TYPES, strict=True):
        if kind == "train":
            written.append(
                log.append(
                    message_type=kind,
                    server_round=round_,
                    tensors=_arrays(round_),
                    metrics={"num-examples": 40, "train_loss": 1.2345 + round_, "epsilon": 0.5 * round_},
                    epsilon=0.5 * round_,
                )
            )
        else:
            written.append(
                log.append(
                    message_type=kind,
                    server_round=round_,
                    tensors=None,
                    metrics={"num-examples": 10, "eval_loss": 2.3456 + round_},
                    epsilon=None,
                )
            )
    return written


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    path = tmp_path / "site-0" / "egress.jsonl"
    _write_log(path)
    return path


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def _rehashed(entry: dict) -> bytes:
    """An entry re-sealed as a forger without any key could: canonical JSON, fresh hash (computed here, by the spec)."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    sealed = {**body, "hash": hashlib.sha256(canonical.encode()).hexdigest()}
    return (json.dumps(sealed, sort_keys=True, separators=(",", ":")) + "\n").encode()


def _entry_error(index: int) -> str:
    return rf"entry {index} \(line {index}\)"


def test_append_writes_entries_that_verify(log_path: Path) -> None:
    assert verify_log(log_path) == 5
    entries = EgressLog(log_path).entries()
    assert [e["seq"] for e in entries] == [1, 2, 3, 4, 5]
    assert [e["message_type"] for e in entries] == list(TYPES)
    assert entries[0]["prev_hash"] == "0" * 64
    assert all(later["prev_hash"] == earlier["hash"] for earlier, later in zip(entries, entries[1:], strict=False))


def test_append_returns_the_entry_it_wrote(tmp_path: Path) -> None:
    log = EgressLog(tmp_path / "deep" / "dir" / "egress.jsonl")
    entry = log.append(message_type="train", server_round=1, tensors=_arrays(1), metrics={"steps": 3}, epsilon=1.5)
    assert log.entries() == [entry]
    assert entry["tensor_bytes"] == sum(a.nbytes for a in _arrays(1).values())
    assert entry["metrics"] == {"steps": 3}
    assert entry["epsilon"] == 1.5


def test_each_line_is_canonical_json_hashed_without_its_hash(log_path: Path) -> None:
    for line in _lines(log_path):
        entry = json.loads(line)
        assert line == _rehashed(entry)
        assert list(entry) == sorted(entry)


def test_time_is_iso8601_utc(log_path: Path) -> None:
    for entry in EgressLog(log_path).entries():
        assert datetime.fromisoformat(entry["time"]).utcoffset().total_seconds() == 0


def test_describe_arrays_hashes_the_raw_bytes() -> None:
    base = np.arange(12, dtype=np.float64).reshape(3, 4)
    arrays = {"a": base.astype(np.float32), "b_transposed": base.T, "c": np.zeros((0, 5), dtype=np.int8)}
    described = describe_arrays(arrays)
    assert [d.name for d in described] == ["a", "b_transposed", "c"]
    for entry, array in zip(described, arrays.values(), strict=True):
        assert entry.sha256 == hashlib.sha256(array.tobytes()).hexdigest()
        assert entry.shape == array.shape
        assert entry.dtype == str(array.dtype)
    assert isinstance(described[0], TensorEntry)


def test_describe_arrays_refuses_object_arrays() -> None:
    with pytest.raises(AuditError, match="'x'"):
        describe_arrays({"x": np.array(["Jane Roe"], dtype=object)})


def test_log_records_the_hashes_of_what_was_sent(log_path: Path) -> None:
    first_train = EgressLog(log_path).entries()[0]
    expected = [
        {"name": name, "shape": list(a.shape), "dtype": "float32", "sha256": hashlib.sha256(a.tobytes()).hexdigest()}
        for name, a in _arrays(1).items()
    ]
    assert first_train["tensors"] == expected


def _edit_one_byte(line: bytes, anchor: bytes) -> bytes:
    """Change one digit or hex character just after ``anchor`` to another one, keeping the JSON valid."""
    position = line.index(anchor) + len(anchor)
    while not chr(line[position]).isalnum():
        position += 1
    old = chr(line[position])
    new = ("1" if old != "1" else "2") if old.isdigit() else ("b" if old != "b" else "c")
    return line[:position] + new.encode() + line[position + 1 :]


@pytest.mark.parametrize(
    ("index", "anchor"),
    [
        (1, b'"train_loss":2.'),  # inside a metric value
        (3, b'"sha256":"'),  # inside a tensor's hash
        (4, b'"time":"2'),  # inside the timestamp
        (5, b'"epsilon":1.'),  # inside epsilon
        (2, b'"server_round":'),  # the round number
    ],
)
def test_verify_log_names_the_edited_entry(log_path: Path, index: int, anchor: bytes) -> None:
    lines = _lines(log_path)
    edited = _edit_one_byte(lines[index - 1], anchor)
    assert edited != lines[index - 1]
    json.loads(edited)  # still valid JSON: only the hash can catch it
    lines[index - 1] = edited
    log_path.write_bytes(b"".join(lines))
    with pytest.raises(AuditError, match=_entry_error(index) + ": hash does not match its content"):
        verify_log(log_path)


def test_verify_log_names_a_content_preserving_edit(log_path: Path) -> None:
    lines = _lines(log_path)
    lines[2] = lines[2].replace(b'"seq":3,', b'"seq": 3,')
    log_path.write_bytes(b"".join(lines))
    with pytest.raises(AuditError, match=_entry_error(3) + ": line is not in canonical form"):
        verify_log(log_path)


def test_verify_log_names_the_entry_after_a_removed_one(log_path: Path) -> None:
    lines = _lines(log_path)
    del lines[2]
    log_path.write_bytes(b"".join(lines))
    with pytest.raises(AuditError, match=_entry_error(3) + ": expected seq 3, found 4"):
        verify_log(log_path)


def test_verify_log_names_swapped_entries(log_path: Path) -> None:
    lines = _lines(log_path)
    lines[1], lines[3] = lines[3], lines[1]
    log_path.write_bytes(b"".join(lines))
    with pytest.raises(AuditError, match=_entry_error(2) + ": expected seq 2, found 4"):
        verify_log(log_path)


def test_verify_log_names_an_entry_whose_predecessor_was_resealed(log_path: Path) -> None:
    # A forger who edits entry 3 and recomputes its hash still breaks the link from entry 4.
    lines = _lines(log_path)
    entry = json.loads(lines[2])
    entry["tensors"][0]["sha256"] = "f" * 64
    lines[2] = _rehashed(entry)
    log_path.write_bytes(b"".join(lines))
    with pytest.raises(AuditError, match=_entry_error(4) + ": previous-hash does not match entry 3"):
        verify_log(log_path)


@pytest.mark.parametrize("cut", [1, 2, 40])
def test_verify_log_names_a_truncated_last_entry(log_path: Path, cut: int) -> None:
    data = log_path.read_bytes()
    log_path.write_bytes(data[:-cut])
    with pytest.raises(AuditError, match=_entry_error(5) + ": truncated"):
        verify_log(log_path)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("metric", "0.5", "metric 'train_loss' is not a number"),
        ("metric", True, "metric 'train_loss' is not a number"),
        ("tensor", "sha256", "tensor 2: missing field.s. sha256"),
        ("tensor", "shape", "tensor 2: missing field.s. shape"),
        ("tensor_bytes", 1, "tensor_bytes does not equal"),
        ("time", "2024-01-01T00:00:00+01:00", "time is not an ISO-8601 UTC timestamp"),
        ("extra", "hello", "unexpected field.s. extra"),
    ],
)
def test_verify_log_names_a_malformed_entry_even_when_resealed(
    log_path: Path, field: str, value: object, message: str
) -> None:
    lines = _lines(log_path)
    entry = json.loads(lines[2])
    if field == "metric":
        entry["metrics"]["train_loss"] = value
    elif field == "tensor":
        del entry["tensors"][1][value]
    else:
        entry[field] = value
    lines[2] = _rehashed(entry)
    log_path.write_bytes(b"".join(lines))
    with pytest.raises(AuditError, match=_entry_error(3) + ": " + message):
        verify_log(log_path)


def test_verify_log_rejects_json_infinity(log_path: Path) -> None:
    lines = _lines(log_path)
    lines[0] = re.sub(rb'"epsilon":[0-9.]+,"error"', b'"epsilon":Infinity,"error"', lines[0])
    assert b"Infinity" in lines[0]
    log_path.write_bytes(b"".join(lines))
    with pytest.raises(AuditError, match=_entry_error(1) + ": not a valid JSON line"):
        verify_log(log_path)


def test_verify_log_names_an_empty_line(log_path: Path) -> None:
    lines = _lines(log_path)
    lines.insert(2, b"\n")
    log_path.write_bytes(b"".join(lines))
    with pytest.raises(AuditError, match=_entry_error(3) + ": empty line"):
        verify_log(log_path)


def test_verify_log_of_a_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(AuditError, match="no egress log"):
        verify_log(tmp_path / "absent.jsonl")


def test_append_after_tampering_raises_and_writes_nothing(log_path: Path) -> None:
    lines = _lines(log_path)
    lines[-1] = _edit_one_byte(lines[-1], b'"train_loss":4.')
    log_path.write_bytes(b"".join(lines))
    before = log_path.read_bytes()
    with pytest.raises(AuditError, match="cannot append: last entry: hash does not match"):
        EgressLog(log_path).append(message_type="train", server_round=4, tensors=None, metrics={}, epsilon=None)
    assert log_path.read_bytes() == before


def test_append_after_a_partial_write_raises(log_path: Path) -> None:
    log_path.write_bytes(log_path.read_bytes()[:-7])
    before = log_path.read_bytes()
    with pytest.raises(AuditError, match="cannot append: the last line is truncated"):
        EgressLog(log_path).append(message_type="train", server_round=4, tensors=None, metrics={}, epsilon=None)
    assert log_path.read_bytes() == before


def test_append_continues_a_long_log_from_its_last_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A tiny read chunk makes the backwards search cross chunk boundaries.
    monkeypatch.setattr(audit, "_TAIL_CHUNK", 7)
    log = EgressLog(tmp_path / "egress.jsonl")
    for round_ in range(1, 6):
        log.append(message_type="train", server_round=round_, tensors=_arrays(round_), metrics={}, epsilon=1.0)
    assert verify_log(log.path) == 5


@pytest.mark.parametrize("value", ["1.0", b"1", True, None, [1.0], np.float32(1.0)])
def test_append_refuses_a_non_numeric_metric(tmp_path: Path, value: object) -> None:
    path = tmp_path / "egress.jsonl"
    log = EgressLog(path)
    with pytest.raises(AuditError, match="metric 'train_loss' is not a number") as info:
        log.append(message_type="train", server_round=1, tensors=None, metrics={"train_loss": value}, epsilon=None)
    assert "1.0" not in str(info.value)
    assert not path.exists()


def test_refused_append_leaves_an_existing_log_unchanged(log_path: Path) -> None:
    before = log_path.read_bytes()
    with pytest.raises(AuditError):
        EgressLog(log_path).append(
            message_type="train", server_round=4, tensors=_arrays(4), metrics={"note": "Jane Roe"}, epsilon=1.0
        )
    assert log_path.read_bytes() == before
    assert verify_log(log_path) == 5


def test_non_finite_metrics_and_epsilon_are_stored_as_null(tmp_path: Path) -> None:
    log = EgressLog(tmp_path / "egress.jsonl")
    entry = log.append(
        message_type="train",
        server_round=1,
        tensors=None,
        metrics={"epsilon": math.inf, "train_loss": math.nan, "steps": 2},
        epsilon=math.inf,
    )
    assert entry["metrics"] == {"epsilon": None, "train_loss": None, "steps": 2}
    assert entry["epsilon"] is None
    assert verify_log(log.path) == 1


def test_error_text_is_stored_as_given(tmp_path: Path) -> None:
    log = EgressLog(tmp_path / "egress.jsonl")
    reason = "data/site-0.jsonl row 7: missing key 'output' — refusing to train"
    log.append(message_type="train", server_round=2, tensors=None, metrics={}, epsilon=None, error=reason)
    assert log.entries()[0]["error"] == reason
    assert reason in summarize(log.path)


def test_append_fsyncs_each_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real_fsync = audit.os.fsync
    monkeypatch.setattr(audit.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    log = EgressLog(tmp_path / "egress.jsonl")
    log.append(message_type="evaluate", server_round=1, tensors=None, metrics={"eval_loss": 1.0}, epsilon=None)
    first = len(synced)
    log.append(message_type="evaluate", server_round=2, tensors=None, metrics={"eval_loss": 1.0}, epsilon=None)
    assert first >= 1
    assert len(synced) > first


def test_summarize_reports_counts_rounds_bytes_and_chain(log_path: Path) -> None:
    text = summarize(log_path)
    total_bytes = sum(a.nbytes for r, t in zip(ROUNDS, TYPES, strict=True) if t == "train" for a in _arrays(r).values())
    assert "entries: 5" in text
    assert "rounds: 3 distinct, 1..3" in text
    assert "evaluate x2, train x3" in text
    assert "tensors sent: 6 (2 distinct names)" in text
    assert f"tensor bytes sent: {total_bytes} " in text
    assert "eval_loss" in text and "train_loss" in text
    assert "last epsilon: 1.5 (entry 5, round 3)" in text
    assert "errors sent: none" in text
    assert text.endswith("chain: OK (5 entries)")


def test_summarize_raises_on_a_broken_chain(log_path: Path) -> None:
    lines = _lines(log_path)
    del lines[1]
    log_path.write_bytes(b"".join(lines))
    with pytest.raises(AuditError, match=_entry_error(2)):
        summarize(log_path)


def test_summarize_of_an_empty_log(tmp_path: Path) -> None:
    path = tmp_path / "egress.jsonl"
    path.write_bytes(b"")
    assert summarize(path).endswith("chain: OK (0 entries)")


def test_entries_name_their_run_and_anchored_heads_reveal_a_rewrite_or_truncation(tmp_path: Path) -> None:
    path = tmp_path / "egress.jsonl"
    log = EgressLog(path)
    heads = [
        log.append(
            message_type="evaluate",
            server_round=r,
            tensors=None,
            metrics={"eval_loss": 1.0},
            epsilon=None,
            run_id="run-7",
        )
        for r in range(3)
    ]
    assert all(json.loads(line)["run"] == "run-7" for line in path.read_text().splitlines())
    anchors = [(h["seq"], h["hash"]) for h in heads]
    assert verify_log(path, anchors) == 3
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:2]))  # truncated: the chain alone still verifies
    assert verify_log(path) == 2
    with pytest.raises(AuditError, match="anchored entry 3 is missing: the log was truncated"):
        verify_log(path, anchors)
    path.unlink()  # rewritten from scratch, same length: every entry re-chained
    rewritten = EgressLog(path)
    for r in range(3):
        rewritten.append(
            message_type="evaluate",
            server_round=r,
            tensors=None,
            metrics={"eval_loss": 0.5},
            epsilon=None,
            run_id="run-7",
        )
    with pytest.raises(AuditError, match="entry 1 does not match the head hash recorded outside the site"):
        verify_log(path, anchors)
