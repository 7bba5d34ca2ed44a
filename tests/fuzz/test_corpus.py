"""The adversarial corpus (tests/fuzz/corpus.py) against every fedcare command: the error contract holds.

Default tier: the cheap cases, each a call of the CLI's ``main`` in this process with captured output.
Slow tier: every case in its own subprocess, with its exit status, wall time and peak memory measured.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fuzz.corpus import CASES, Case
from tests.fuzz.runner import MEMORY_LIMIT_BYTES, TIME_LIMIT_S, run_in_process, run_subprocess


def _describe(outcome) -> str:  # noqa: ANN001 - an Outcome
    return f"{outcome.case.id}: {', '.join(outcome.problems)}; stderr: {outcome.stderr.strip()[-400:]!r}"


@pytest.mark.parametrize("case", [c for c in CASES if c.fast], ids=lambda c: c.id)
def test_hostile_input_gets_one_clean_line_in_process(case: Case, tmp_path: Path) -> None:
    outcome = run_in_process(case, tmp_path)
    assert not outcome.problems, _describe(outcome)
    if case.expect == "error":
        assert outcome.code == 2 and outcome.stderr.startswith("fedcare: error: ")


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_hostile_input_is_bounded_in_a_subprocess(case: Case, tmp_path: Path) -> None:
    outcome = run_subprocess(case, tmp_path)
    assert not outcome.problems, _describe(outcome)
    assert outcome.seconds < TIME_LIMIT_S and outcome.peak_bytes is not None
    assert outcome.peak_bytes < MEMORY_LIMIT_BYTES


def test_default_tier_covers_every_command_and_category(tmp_path: Path) -> None:
    commands: set[str] = set()
    for index, case in enumerate(c for c in CASES if c.fast):
        folder = tmp_path / str(index)
        folder.mkdir()
        argv = case.build(folder)
        words = argv[:2] if argv[:1] in (["coordinator"], ["site"], ["audit"]) else argv[:1]
        commands.add(" ".join(words))
    assert commands >= {
        "simulate",
        "check-data",
        "prepare-model",
        "generate",
        "verify",
        "certs",
        "coordinator start",
        "coordinator enroll",
        "coordinator run",
        "site start",
        "audit verify",
        "audit show",
        "audit canaries",
    }
    assert {c.category for c in CASES if c.fast} == {c.category for c in CASES}
    assert len(CASES) >= 250
