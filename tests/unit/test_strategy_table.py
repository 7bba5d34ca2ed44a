"""The strategy-table benchmark's plumbing (the measurement itself is `python -m benchmarks.strategies`)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.strategies import main, rows_to_run, table
from common.config import STRATEGIES


def test_every_strategy_and_the_ffa_comparison_are_rows() -> None:
    labels = [label for label, _ in rows_to_run([])]
    assert labels[1] == "fedavg + FFA-LoRA" and [x for x in labels if x != labels[1]] == list(STRATEGIES)
    assert [label for label, _ in rows_to_run(["krum"])] == ["krum"]


def test_table_lists_each_site_the_mean_and_the_worst() -> None:
    row = {
        "label": "fedavg",
        "by_site": {"site-0": 2.0, "site-1": 3.0},
        "mean": 2.5,
        "worst": ("site-1", 3.0),
        "bytes_up": 1000.0,
        "seconds": 1.25,
    }
    text = table([row], ["site-0", "site-1"])
    assert "| fedavg | 2.0000 | 3.0000 | 2.5000 | site-1 (3.0000) | 1,000 | 1.2 |" in text


def test_absent_data_skips_cleanly(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    assert main(["--data", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "t.md")]) == 0
    assert "skipped" in capsys.readouterr().out and not (tmp_path / "t.md").exists()
