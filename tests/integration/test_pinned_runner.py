"""SuperExec's side of the long-lived ClientApp runner (client/pinned_app.py::PinnedExecutor).

The runner here is a stand-in shell script that records what it is started with and the task
requests it reads; the real runner against a real SuperLink is in tests/e2e/test_deployment.py.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import pytest
from flwr.supercore.constant import TaskType
from flwr.supercore.superexec.executor.types import ExecutionSpec, LaunchResult, LaunchResultStatus

from client.pinned_app import PinnedExecutor

pytestmark = pytest.mark.slow  # starts (tiny) subprocesses


class Flowers:
    """Stands for Flower's subprocess executor: records what is launched through it."""

    def __init__(self) -> None:
        self.launched: list[ExecutionSpec] = []
        self.closed = False

    def launch(self, spec: ExecutionSpec) -> LaunchResult:
        self.launched.append(spec)
        return LaunchResult.accepted()

    def get_eligible_capacity(self, types: set[Any], **_: Any) -> tuple[set[Any], set[str]]:
        return types, set()

    def close(self) -> None:
        self.closed = True


def test_clientapp_tasks_go_to_one_long_lived_runner_per_bundle(tmp_path: Path) -> None:
    runner = tmp_path / "runner"
    # The stand-in reads its task requests until stdin closes, then leaves a done-<hash> marker: the redirection
    # creates tasks-<hash> before cat has written to it, so only the marker says its requests are all there.
    runner.write_text(
        f'#!/bin/sh\necho "$@" >> {tmp_path}/starts\ncat >> {tmp_path}/tasks-"$2"\ntouch {tmp_path}/done-"$2"\n',
        encoding="utf-8",
    )
    runner.chmod(0o700)
    flowers = Flowers()
    executor = PinnedExecutor(flowers, runner)
    a, b = "a" * 64, "b" * 64
    spec = ExecutionSpec(
        task_type=TaskType.CLIENT_APP,
        runtime_api_address="127.0.0.1:9094",
        token="t1",
        insecure=True,
        root_certificates_path=None,
        runtime_dependency_install=False,
        parent_pid=4242,
        suppress_output=False,
        task_id=1,
        fab_hash=a,
    )
    assert executor.launch(spec).status == LaunchResultStatus.ACCEPTED
    executor.launch(dataclasses.replace(spec, token="t2", task_id=2))
    executor.launch(dataclasses.replace(spec, token="t3", task_id=3, fab_hash=b))  # a new bundle: a new runner
    server = dataclasses.replace(spec, task_type=TaskType.SERVER_APP, token="s1", task_id=4)
    executor.launch(server)
    executor.launch(dataclasses.replace(spec, token="t4", task_id=5, fab_hash=b, runtime_dependency_install=True))
    assert executor.get_eligible_capacity({TaskType.CLIENT_APP}) == ({TaskType.CLIENT_APP}, set())
    executor.close()  # closes the runners' stdin: they finish their tasks and exit
    deadline = time.monotonic() + 30
    while not ((tmp_path / f"done-{b}").exists() and (tmp_path / f"done-{a}").exists()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert sorted((tmp_path / "starts").read_text().splitlines()) == [f"--serve {a} 4242", f"--serve {b} 4242"]
    tokens = {h: [json.loads(x)["token"] for x in (tmp_path / f"tasks-{h}").read_text().splitlines()] for h in (a, b)}
    assert tokens == {a: ["t1", "t2"], b: ["t3"]}
    request = json.loads((tmp_path / f"tasks-{a}").read_text().splitlines()[0])
    assert request == {"address": "127.0.0.1:9094", "token": "t1", "insecure": True, "root_certificates": None}
    # Other task types, and tasks that need runtime dependency installs, are Flower's own launches.
    assert [s.token for s in flowers.launched] == ["s1", "t4"] and flowers.closed
