"""Malformed site data of every kind: one clear line naming file, row and reason; no traceback, no text."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # every test here runs the `fedcare` command line in a subprocess
SECRET = "Jane Roe 555-0199"
ROOT = Path(__file__).resolve().parents[2]


def _fedcare(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"FLWR_TELEMETRY_ENABLED": "0", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "simulations.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def _parquet(path: Path, rows: list[dict[str, str]]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


GOOD = json.dumps({"question": "q", "answer": "a"})
CASES = {
    "missing file": (lambda d: d / "absent.jsonl", "absent.jsonl", "does not exist"),
    "invalid json line": (
        lambda d: _write(d / "a.jsonl", f'{GOOD}\n{{"question": "{SECRET}", "answer": \n'),
        "a.jsonl line 2",
        "invalid JSON",
    ),
    "missing field": (
        lambda d: _write(d / "b.jsonl", f"{GOOD}\n{json.dumps({'input': SECRET})}\n"),
        "b.jsonl line 2",
        "'output' is missing",
    ),
    "empty field": (
        lambda d: _write(d / "c.json", json.dumps([{"prompt": SECRET, "completion": "  "}])),
        "c.json row 1",
        "'completion' is empty",
    ),
    "non-utf8": (
        lambda d: _write(d / "d.jsonl", f'{GOOD}\n{{"question": "{SECRET}\xe9"}}'.encode("latin-1")),
        "d.jsonl line 2",
        "not valid UTF-8",
    ),
    "empty data set": (lambda d: _write(d / "e.jsonl", "\n\n"), "e.jsonl", "contains no records"),
    "csv empty cell": (
        lambda d: _write(d / "f.csv", f"question,answer\nq,a\n{SECRET},\n"),
        "f.csv line 3",
        "'answer' is empty",
    ),
    "parquet missing field": (
        lambda d: _parquet(d / "g.parquet", [{"question": SECRET, "other": "x"}]),
        "g.parquet",
        "answer",
    ),
    "chat last turn not assistant": (
        lambda d: _write(d / "h.jsonl", json.dumps({"messages": [{"role": "user", "content": SECRET}]}) + "\n"),
        "h.jsonl line 1",
        "assistant",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_check_data_reports_bad_files_in_one_line(case: str, tmp_path: Path) -> None:
    make, where, reason = CASES[case]
    path = make(tmp_path)
    result = _fedcare("check-data", str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and SECRET not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fedcare: error:")
    assert where in lines[0] and reason in lines[0]


def test_check_data_accepts_a_good_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "ok.jsonl", GOOD + "\n" + GOOD + "\n")
    result = _fedcare("check-data", str(path), cwd=tmp_path)
    assert result.returncode == 0 and "2 records OK" in result.stdout


def test_simulate_stops_before_training_on_bad_data(tmp_path: Path) -> None:
    good = _write(tmp_path / "good.jsonl", "\n".join([GOOD] * 10) + "\n")
    bad = _write(tmp_path / "bad.csv", f"question,answer\nq,a\n{SECRET},\n")
    result = _fedcare(
        "simulate",
        "model=tiny",
        "data=files",
        f"data.paths=[{good},{bad}]",
        "num_sites=2",
        "train.batch_size=2",  # within the good site's records, so the bad file is what stops the run
        f"output_dir={tmp_path / 'runs'}",
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and SECRET not in result.stderr
    assert "bad.csv line 3: field 'answer' is empty" in result.stderr
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("summary.json"))
