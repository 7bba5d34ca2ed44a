"""Run the adversarial corpus against ``fedcare`` and check the error contract for every case.

    python -m tests.fuzz.runner                 # every case, each in its own subprocess, counts per category
    python -m tests.fuzz.runner --only paths    # one category (or a case id prefix)
    python -m tests.fuzz.runner --in-process    # every case but the bombs, calling main() in this one process

A case passes when: the exit status is 2 with exactly one ``fedcare: error:`` line on stderr (or 0 for
``expect="ok"``), no traceback, the planted secret appears nowhere in the output, no raw control
character is printed, and the command ends within 30 s using at most 1 GB of memory (peak RSS).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tests.fuzz.corpus import CASES, SECRET, Case

# The checkout under test; FEDCARE_FUZZ_ROOT points the subprocess runner at another one (main: "before" counts).
ROOT = Path(os.environ.get("FEDCARE_FUZZ_ROOT") or Path(__file__).resolve().parents[2])
TIME_LIMIT_S = 30.0
MEMORY_LIMIT_BYTES = 1 << 30
_CONTROL = {chr(c) for c in range(32) if chr(c) not in "\n\t"} | {"\x7f"}


@dataclass(frozen=True)
class Outcome:
    """What one case did and which parts of the contract it broke (``problems`` empty = pass)."""

    case: Case
    code: int | None
    stdout: str
    stderr: str
    seconds: float
    peak_bytes: int | None
    problems: tuple[str, ...]


def judge(case: Case, code: int | None, stdout: str, stderr: str, seconds: float, peak_bytes: int | None) -> Outcome:
    problems: list[str] = []
    if code is None:
        problems.append("timeout")
    elif case.expect == "error":
        lines = [line for line in stderr.splitlines() if line.strip()]
        if code != 2:
            problems.append(f"exit {code}")
        if len(lines) != 1 or not lines[0].startswith("fedcare: error:"):
            problems.append(f"{len(lines)} stderr lines")
    elif code != 0:
        problems.append(f"exit {code}")
    if "Traceback" in stdout + stderr:
        problems.append("traceback")
    if SECRET in stdout + stderr:
        problems.append("secret")
    if any(c in _CONTROL for c in stdout + stderr):
        problems.append("control-char")
    if seconds > TIME_LIMIT_S:
        problems.append("slow")
    if peak_bytes is not None and peak_bytes > MEMORY_LIMIT_BYTES:
        problems.append("memory")
    return Outcome(case, code, stdout, stderr, seconds, peak_bytes, tuple(problems))


def _env(folder: Path) -> dict[str, str]:
    return os.environ | {
        "FLWR_TELEMETRY_ENABLED": "0",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(ROOT),
        "FLWR_HOME": str(folder / ".flwr"),
        "FEDCARE_CACHE": str(folder / ".cache"),
        "TOKENIZERS_PARALLELISM": "false",
    }


def _limit_child() -> None:
    # A safety net for the shared machine; the contract (1 GB peak RSS) is measured, not enforced, here.
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))


def run_subprocess(case: Case, folder: Path) -> Outcome:
    """Run one case as ``python -m simulations.cli ...`` in its own process; measure time and peak RSS."""
    argv = case.build(folder)
    out, err = folder / ".stdout", folder / ".stderr"
    start = time.monotonic()
    with out.open("wb") as o, err.open("wb") as e:
        child = subprocess.Popen(
            [sys.executable, "-m", "simulations.cli", *argv],
            cwd=folder,
            env=_env(folder),
            stdin=subprocess.DEVNULL,
            stdout=o,
            stderr=e,
            preexec_fn=_limit_child,
            start_new_session=True,
        )
        code: int | None = None
        peak = None
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                code = os.waitstatus_to_exitcode(status)
                peak = usage.ru_maxrss * 1024  # kilobytes on Linux
                child.returncode = code
                break
            if time.monotonic() - start > TIME_LIMIT_S:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
                break
            time.sleep(0.02)
    seconds = time.monotonic() - start
    return judge(case, code, _text(out), _text(err), seconds, peak)


class _Timeout(BaseException):
    pass


def run_in_process(case: Case, folder: Path) -> Outcome:
    """Call the CLI's ``main`` in this process with captured output (fast; no memory measurement)."""
    from simulations.cli import main

    argv = case.build(folder)
    stdout, stderr = io.StringIO(), io.StringIO()
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    os.environ.update(_env(folder))

    def alarm(*_: object) -> None:
        raise _Timeout

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(int(TIME_LIMIT_S))
    start = time.monotonic()
    code: int | None
    try:
        os.chdir(folder)
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                code = main(argv)
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
            except _Timeout:
                code = None
            except Exception:  # noqa: BLE001 - an escaped exception is a traceback for the user
                import traceback

                traceback.print_exc()
                code = 1
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    return judge(case, code, stdout.getvalue(), stderr.getvalue(), time.monotonic() - start, None)


def _text(path: Path) -> str:
    return path.read_bytes().decode("utf-8", errors="replace")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="run cases whose id starts with this (e.g. 'paths')")
    parser.add_argument(
        "--in-process", action="store_true", help="call main() in this process (every case but the bombs run alone)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="print every failing case's output")
    args = parser.parse_args(argv)
    cases = [c for c in CASES if c.id.startswith(args.only) and not (args.in_process and c.alone)]
    passed: Counter[str] = Counter()
    total: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    for case in cases:
        with tempfile.TemporaryDirectory(prefix="fedcare-fuzz-") as tmp:
            folder = Path(tmp)
            outcome = run_in_process(case, folder) if args.in_process else run_subprocess(case, folder)
        total[case.category] += 1
        if outcome.problems:
            kinds.update(outcome.problems)
            peak = f"{outcome.peak_bytes / 2**20:.0f} MB" if outcome.peak_bytes else "-"
            print(f"FAIL {case.id}: {', '.join(outcome.problems)} ({outcome.seconds:.1f} s, {peak})", flush=True)
            if args.verbose:
                print("  " + (outcome.stderr.strip()[-600:] or "(no stderr)").replace("\n", "\n  "), flush=True)
        else:
            passed[case.category] += 1
    print("\ncategory      passed / cases")
    for category in total:
        print(f"{category:<13} {passed[category]:>4} / {total[category]}")
    print(f"{'all':<13} {sum(passed.values()):>4} / {sum(total.values())}")
    if kinds:
        print("failures by kind: " + ", ".join(f"{k} {n}" for k, n in kinds.most_common()))
    return 0 if sum(passed.values()) == sum(total.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
