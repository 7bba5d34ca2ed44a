"""The adversarial corpus (tests/fuzz/corpus.py) against every fedcare command: the error contract holds.

Default tier: the cheap cases, each a call of the CLI's ``main`` in this process with captured output.
Slow tier: each bomb (``Case.alone``) in its own subprocess, with its exit status, wall time and peak memory
measured; the first cheap case of each command in its own subprocess too (the exit status and stderr of a
real ``python -m simulations.cli`` for every command); and every other case, the cheap ones and those that
compose Hydra's config (~0.5 s each), in ONE subprocess (``python -m tests.fuzz.runner --in-process``),
whose peak memory bounds each case's and which times each case (a subprocess of its own costs ~1.5 s of
interpreter, imports and Hydra start-up, which is what those cases would otherwise measure).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fuzz.corpus import CASES, Case
from tests.fuzz.runner import MEMORY_LIMIT_BYTES, ROOT, TIME_LIMIT_S, run_in_process, run_subprocess


def _describe(outcome) -> str:  # noqa: ANN001 - an Outcome
    return f"{outcome.case.id}: {', '.join(outcome.problems)}; stderr: {outcome.stderr.strip()[-400:]!r}"


@pytest.mark.parametrize("case", [c for c in CASES if c.fast], ids=lambda c: c.id)
def test_hostile_input_gets_one_clean_line_in_process(case: Case, tmp_path: Path) -> None:
    outcome = run_in_process(case, tmp_path)
    assert not outcome.problems, _describe(outcome)
    if case.expect == "error":
        assert outcome.code == 2 and outcome.stderr.startswith("fedcare: error: ")


def _command(argv: list[str]) -> str:
    return " ".join(argv[:2] if argv[:1] in (["coordinator"], ["site"], ["audit"]) else argv[:1])


def _first_cheap_case_of_each_command(folder: Path) -> list[Case]:
    seen: dict[str, Case] = {}
    for index, case in enumerate(c for c in CASES if c.fast):
        (folder / str(index)).mkdir()
        seen.setdefault(_command(case.build(folder / str(index))), case)
    return list(seen.values())


def _subprocess_cases() -> list[Case]:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="fedcare-fuzz-ids-") as tmp:
        alone = {c.id for c in _first_cheap_case_of_each_command(Path(tmp))}
    return [c for c in CASES if c.alone or c.id in alone]


@pytest.mark.slow
@pytest.mark.parametrize("case", _subprocess_cases(), ids=lambda c: c.id)
def test_hostile_input_is_bounded_in_a_subprocess(case: Case, tmp_path: Path) -> None:
    outcome = run_subprocess(case, tmp_path)
    assert not outcome.problems, _describe(outcome)
    assert outcome.seconds < TIME_LIMIT_S and outcome.peak_bytes is not None
    assert outcome.peak_bytes < MEMORY_LIMIT_BYTES


@pytest.mark.slow
def test_every_case_but_the_bombs_is_bounded_in_one_subprocess(tmp_path: Path) -> None:
    # The runner calls main() for each case that does not run alone (each in a fresh folder, TIME_LIMIT_S each
    # by an alarm) and exits 1 naming every case that broke the contract; its peak RSS bounds each case's.
    env = os.environ | {"PYTHONPATH": str(ROOT), "FLWR_TELEMETRY_ENABLED": "0", "HF_HUB_OFFLINE": "1"}
    log = tmp_path / "runner.log"
    with log.open("wb") as out:
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.fuzz.runner", "--in-process"],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 900
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                child.returncode = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() > deadline:
                child.kill()
                child.wait()
                pytest.fail(f"the runner took over 900 s: {log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.1)
    text = log.read_text(errors="replace")
    assert child.returncode == 0, text[-4000:]
    batched = sum(not c.alone for c in CASES)
    assert batched > sum(c.fast for c in CASES)  # the Hydra-composing slow cases are among them
    assert text.splitlines()[-1].split() == ["all", str(batched), "/", str(batched)], text[-2000:]
    assert usage.ru_maxrss * 1024 < MEMORY_LIMIT_BYTES  # kilobytes on Linux: every one of them stayed under it


def test_default_tier_covers_every_command_and_category(tmp_path: Path) -> None:
    commands: set[str] = set()
    for index, case in enumerate(c for c in CASES if c.fast):
        folder = tmp_path / str(index)
        folder.mkdir()
        commands.add(_command(case.build(folder)))
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
    assert all(not c.fast for c in CASES if c.alone)
