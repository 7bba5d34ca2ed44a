"""Flower's deployment engine on loopback: a SuperLink and SuperNodes as separate processes, TLS + auth.

Everything here is the real thing: `fedcare certs`, `fedcare coordinator start/enroll/run`,
`fedcare site start` (flower-superlink / flower-supernode processes), the tiny model.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from common.synthetic import generate_site_records, write_jsonl

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
# `make test` runs the slow tier on two pytest-xdist workers (-n 2 --dist loadgroup). The tests below form two
# groups of about five minutes each; a group runs whole on one worker, which starts one consortium (the module
# fixture: a SuperLink, enrolled keys) for it. The two groups start first, one per worker, and while one
# group's daemons wait on heartbeats and subprocesses the other worker computes.
GROUP_1 = pytest.mark.xdist_group("deployment-1")
GROUP_2 = pytest.mark.xdist_group("deployment-2")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tree(pid: int, *, freeze: bool = True) -> list[psutil.Process]:
    """``pid`` and its descendants, frozen (SIGSTOP) so that none can start another before it is killed:
    Flower's SuperExec runs in a session of its own, so killing a process group misses what it started."""
    try:
        procs = [psutil.Process(pid)]
    except psutil.NoSuchProcess:
        return []
    seen: dict[int, psutil.Process] = {}
    while new := [p for p in procs if p.pid not in seen]:
        for p in new:
            seen[p.pid] = p
            if freeze:
                with contextlib.suppress(psutil.Error):
                    p.suspend()
        procs = [c for p in new for c in _children(p)]
    return list(seen.values())


def _children(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return proc.children(recursive=True)
    except psutil.Error:
        return []


def _kill_all(procs: list[psutil.Process]) -> None:
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(procs, timeout=30)


class Deployment:
    """Processes of one loopback consortium (a SuperLink, enrolled site keys, the approved app bundle in
    ``home``); each test works in its own folder (:meth:`use`). Every process is killed at teardown."""

    def __init__(self, home: Path, cache: Path, num_sites: int) -> None:
        self.home = self.root = home
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = os.environ | {
            "FLWR_TELEMETRY_ENABLED": "0",
            "HF_HUB_OFFLINE": "1",
            "FEDCARE_CACHE": str(cache),
            "FLWR_HOME": str(home / "flwr-home"),
            "PYTHONPATH": str(ROOT),
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.num_sites = num_sites
        self.certs = home / "certs"
        self.approved = ""  # the approved bundle's SHA-256, once built
        sites = [a for i in range(num_sites) for a in ("--site", f"site-{i}")]
        self.cli("certs", "--out", str(self.certs), "--host", "localhost", "--host", "127.0.0.1", *sites)
        for i in range(num_sites):
            write_jsonl(generate_site_records(i, 24), home / "data" / f"site-{i}.jsonl")

    def use(self, root: Path) -> None:
        """Work in ``root`` from now on (site state, logs, runs), with the consortium's files linked in."""
        self.root = root
        for name in ("certs", "certs-ca", "data", "approved", "rogue-certs", "rogue-certs-ca"):
            if (self.home / name).exists():
                (root / name).symlink_to(self.home / name)

    def cli(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "simulations.cli", *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check:
            assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
        return result

    def spawn(self, name: str, *args: str, cwd: Path | None = None) -> subprocess.Popen[bytes]:
        log = open((cwd or self.root) / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [sys.executable, "-m", "simulations.cli", *args],
            cwd=cwd or self.root,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs[name] = proc
        return proc

    def kill(self, name: str) -> None:
        """SIGKILL a daemon and everything it started (as a crash or `kill -9` would end it)."""
        proc = self.procs.pop(name)
        _kill_all(_tree(proc.pid))
        proc.wait(timeout=30)

    def stop(self, *names: str) -> None:
        """Stop site daemons as their operators would (SIGTERM): each SuperNode leaves the SuperLink at once,
        so the next daemon with the same key is accepted without waiting for Flower's heartbeat to expire."""
        procs = [self.procs.pop(name) for name in names]
        started = [p.pid for proc in procs for p in _tree(proc.pid, freeze=False)]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
        _kill_all([p for pid in started for p in _tree(pid)])  # whatever did not stop by itself
        for proc in procs:
            proc.wait(timeout=30)

    def stop_sites(self) -> None:
        self.stop(*[n for n in self.procs if n.startswith("site-")])

    def leftovers(self) -> list[str]:
        """Processes still running with this consortium's FLWR_HOME (none may outlive it)."""
        found = []
        for p in psutil.process_iter(["pid", "cmdline", "status"]):
            with contextlib.suppress(psutil.Error):
                if p.status() != psutil.STATUS_ZOMBIE and p.environ().get("FLWR_HOME") == self.env["FLWR_HOME"]:
                    found.append(f"{p.pid} {' '.join(p.cmdline())[:160]}")
        return found

    def refused(self, name: str, *args: str) -> str:
        """Run a flower-supernode that should give up; returns its log. Its helpers share the log file,
        so wait on the process itself (not on pipes) and kill its whole group afterwards."""
        path = self.root / f"{name}.log"
        with open(path, "wb") as log:
            proc = subprocess.Popen(
                [
                    "flower-supernode",
                    "--superlink",
                    self.address,
                    "--max-retries",
                    "2",
                    "--max-wait-time",
                    "10",
                    "--port",
                    str(_free_port()),
                    *args,
                ],
                cwd=self.root,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                code = proc.wait(timeout=120)
            finally:
                _kill_all(_tree(proc.pid))
        assert code != 0, f"{name} was accepted"
        return path.read_text(errors="replace")

    def start_coordinator(self) -> None:
        self.spawn(
            "superlink",
            "coordinator",
            "start",
            "--certs",
            str(self.certs),
            "--state-dir",
            "coord-state",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            cwd=self.home,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.3)
        raise AssertionError((self.home / "superlink.log").read_text()[-3000:])

    def coordinator_running(self) -> bool:
        return "superlink" in self.procs and self.procs["superlink"].poll() is None

    def enroll(self) -> None:
        for i in range(self.num_sites):
            self.cli(
                "coordinator",
                "enroll",
                str(self.certs / f"site-{i}.pub"),
                "--superlink",
                self.address,
                "--ca",
                str(self.certs / "ca.crt"),
            )

    def approved_app(self) -> str:
        """The SHA-256 of this checkout's app bundle, as the consortium publishes it (`fedcare app build`)."""
        out = self.cli("app", "build", "--out", str(self.root / "approved"))
        return next(line.split()[1] for line in out.stdout.splitlines() if line.startswith("sha256:"))

    def site_config(
        self, i: int, state: str, *, noise_seed: int = 0, trusted_app: str = "", trusted_signer: str = ""
    ) -> Path:
        path = self.root / f"site-{i}-{state}.yaml"
        pinned = f"trusted_apps: [{trusted_app}]\n" if trusted_app else ""
        pinned += f"trusted_signers: [{trusted_signer}]\n" if trusted_signer else ""
        path.write_text(
            f"site_id: site-{i}\nsite_index: {i}\nstate_dir: {state}/site-{i}\ncoordinator: {self.address}\n"
            f"ca_cert: certs/ca.crt\nauth_key: certs/site-{i}\nruntime_port: {_free_port()}\n{pinned}"
            f"data:\n  paths: [data/site-{i}.jsonl]\n"
            f"privacy:\n  target_epsilon: 6.0\n  noise_seed: {noise_seed}\n",
            encoding="utf-8",
        )
        return path

    def start_site(self, i: int, config: Path) -> None:
        self.spawn(f"site-{i}", "site", "start", "--config", str(config))

    def run_argv(self, *overrides: str) -> list[str]:
        """``coordinator run OVERRIDES`` against this consortium's SuperLink over TLS (unsigned), for a Popen."""
        tls = ["--superlink", self.address, "--ca", str(self.certs / "ca.crt")]
        return [sys.executable, "-m", "simulations.cli", "coordinator", "run", *overrides, *tls]

    def run(self, *overrides: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.cli(
            "coordinator",
            "run",
            *overrides,
            "--superlink",
            self.address,
            "--ca",
            str(self.certs / "ca.crt"),
            "--signing-key",
            str(self.certs / "coordinator.key"),
            timeout=600,
            check=check,
        )

    def close(self) -> None:
        for name in list(self.procs):
            self.kill(name)


@pytest.fixture(scope="module")
def consortium(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Iterator[Deployment]:
    """One SuperLink with three enrolled site keys, the approved app bundle and a rogue key pair, shared by
    the tests below that run in this process (each in a folder of its own; under `make test`, one consortium per
    xdist group); nothing of it may outlive the module."""
    dep = Deployment(tmp_path_factory.mktemp("consortium"), cache_dir, num_sites=3)
    try:
        dep.start_coordinator()
        dep.enroll()
        dep.approved = dep.approved_app()
        dep.cli("certs", "--out", "rogue-certs", "--site", "rogue")
        yield dep
    finally:
        dep.close()
        left = dep.leftovers()
        _kill_all([psutil.Process(int(line.split()[0])) for line in left])
        assert not left, "processes outlived the deployment tests:\n" + "\n".join(left)


@pytest.fixture
def deployment(consortium: Deployment, tmp_path: Path) -> Iterator[Deployment]:
    if not consortium.coordinator_running():  # an earlier test failed with its SuperLink down
        consortium.start_coordinator()
    consortium.use(tmp_path)
    try:
        yield consortium
    finally:
        consortium.stop_sites()  # gracefully: the next test's daemons hold the same keys


SMOKE = (
    "model=tiny",
    "num_sites=3",
    "train.batch_size=4",
    "data.eval_fraction=0.25",
    "coordinator.round_timeout_s=300",
)


def _wait_for(predicate, timeout: float, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@GROUP_1
def test_three_sites_over_tls_produce_a_signed_adapter_and_a_killed_coordinator_resumes_to_it(
    deployment: Deployment,
) -> None:
    from safetensors.numpy import load_file

    # Before any site joins: an unregistered key and a plain connection are refused by this SuperLink.
    rogue = deployment.refused(
        "rogue",
        "--root-certificates",
        str(deployment.certs / "ca.crt"),
        "--auth-supernode-private-key",
        "rogue-certs/rogue",
    )
    assert "Failed to activate SuperNode" in rogue
    plain = deployment.refused("plain", "--insecure")
    assert "Failed to initialize the connection" in plain
    # The enrolled keys over TLS are accepted: the three sites run the whole run. Sites 1 and 2 pin the
    # approved bundle (one long-lived ClientApp runner each, client/pinned_app.py); site 0 pins nothing, so
    # it runs Flower's own path: a fresh `flwr-clientapp` process (fresh model, fresh RNGs) per message.
    for i in range(3):
        trusted = deployment.approved if i else ""
        deployment.start_site(i, deployment.site_config(i, "state", noise_seed=11, trusted_app=trusted))
    rounds = 2
    common = (*SMOKE, f"num_rounds={rounds}", "train.local_steps=4", "output_dir=runs")
    deployment.run(*common, "run_name=same")
    run = deployment.root / "runs" / "same"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["signed"] and len(summary["sites"]) == 3 and summary["rounds"] == 2
    assert all(0 < s["epsilon"] <= 6.0 == s["target_epsilon"] for s in summary["sites"])  # the site's budget wins
    messages = 2 * rounds + 1  # a train and an evaluate message per round, and the round-0 evaluation
    # A pinned site's runner lives across messages: one process, one model load, every message's bundle
    # still checked against the pinned hash before it runs. Flower's flwr-clientapp loads the model per message.
    for i in (1, 2):
        site_log = (deployment.root / f"site-{i}.log").read_text(errors="replace")
        assert site_log.count("is approved") == messages, site_log[-3000:]  # each message's bundle was checked
        assert site_log.count("is approved; installing it") == 1, site_log[-3000:]
        assert site_log.count("serves app bundle") == 1 and site_log.count("loaded base model") == 1, site_log[-3000:]
    site_log = (deployment.root / "site-0.log").read_text(errors="replace")
    assert site_log.count("loaded base model") == messages and "is approved" not in site_log, site_log[-3000:]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [
        float(line.rsplit(" tokens, ", 1)[1].split(" s,")[0])
        for line in (deployment.root / "site-1.log").read_text(errors="replace").splitlines()
        if " done: train loss" in line
    ]
    print(f"\nseconds per round {[r['seconds'] for r in rows]}, site-1 training {train}")
    adapter = Path(summary["adapter_dir"])
    ok = deployment.cli("verify", str(adapter), "--key", str(deployment.certs / "coordinator.pub"))
    assert "signature OK" in ok.stdout and "run same round 2 strategy" in ok.stdout
    assert ok.stdout.count(": DP on, epsilon") == 3  # each site's privacy facts are signed and printed
    anchored = deployment.cli(
        "audit", "verify", "state/site-0/egress.jsonl", "--adapter", str(adapter), "--site", "site-0"
    )
    assert "holds 1 anchored head(s)" in anchored.stdout
    # Each site kept its ledger and an egress log that verifies.
    for i in range(3):
        ledger = json.loads((deployment.root / "state" / f"site-{i}" / "privacy_ledger.json").read_text())
        assert [e["server_round"] for e in ledger["entries"] if e["kind"] == "train"] == [1, 2]
        assert [e["kind"] for e in ledger["entries"]].count("evaluate") == 3  # each evaluation was charged
        log = deployment.cli("audit", "verify", f"state/site-{i}/egress.jsonl")
        assert "chain OK (5 entries)" in log.stdout  # 3 evaluations + 2 trainings
    reference = load_file(str(adapter / "adapter_model.safetensors"))
    # A changed byte fails verification with a clear error.
    weights = adapter / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    bad = deployment.cli("verify", str(adapter), "--key", str(deployment.certs / "coordinator.pub"), check=False)
    assert bad.returncode == 2 and "adapter_model.safetensors was modified after signing" in bad.stderr
    assert "Traceback" not in bad.stderr

    # The same run again, from fresh site state (ledgers) and the same seeds, its coordinator killed after
    # round 1 and resumed. Sites 1 and 2 keep their runners (they served the run above and serve this one);
    # site 0 now pins the approved bundle too. The resumed adapter equals the reference only if nothing a
    # long-lived runner carries across messages and runs (the cached model, torch's RNG) changes a result.
    run.rename(deployment.root / "runs" / "reference")
    deployment.stop("site-0")
    shutil.rmtree(deployment.root / "state")
    deployment.start_site(0, deployment.site_config(0, "resume", noise_seed=11, trusted_app=deployment.approved))
    checkpoint = deployment.root / "runs" / "same" / "checkpoint.json"
    runner = subprocess.Popen(
        deployment.run_argv(*common, "run_name=same"),
        cwd=deployment.root,
        env=deployment.env,
        stdout=open(deployment.root / "interrupted.log", "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_for(
            lambda: checkpoint.exists() and json.loads(checkpoint.read_text())["completed_round"] == 1,
            600,
            "round 1 to complete",
        )
        deployment.kill("superlink")  # the coordinator dies after round 1 (its ServerApp with it)
        runner.kill()
    finally:
        runner.wait(timeout=30)
    assert not (deployment.root / "runs" / "same" / "summary.json").exists()
    deployment.start_coordinator()  # same state dir: enrolled sites are remembered; sites reconnect
    deployment.cli(
        "coordinator",
        "run",
        *SMOKE,
        "--resume",
        "runs/same",
        "--superlink",
        deployment.address,
        "--ca",
        str(deployment.certs / "ca.crt"),
        timeout=600,
    )
    resumed = load_file(str(deployment.root / "runs" / "same" / "adapters" / "round-002" / "adapter_model.safetensors"))
    assert sorted(resumed) == sorted(reference)
    for name, ref in reference.items():
        assert resumed[name] == pytest.approx(ref, abs=1e-5), name
    rows = [json.loads(line) for line in (deployment.root / "runs" / "same" / "metrics.jsonl").open()]
    assert [r["round"] for r in rows] == [1, 2]
    for i in range(3):  # every site's runner outlived the coordinator: still one model load per site
        site_log = (deployment.root / f"site-{i}.log").read_text(errors="replace")
        assert site_log.count("serves app bundle") == 1 and site_log.count("loaded base model") == 1 + 5 * (i == 0)


def _trained_rounds(ledger: Path) -> list[int]:
    """The rounds a site's ledger recorded training for (empty while the ledger is absent or mid-write)."""
    try:
        entries = json.loads(ledger.read_text())["entries"]
    except (OSError, ValueError, KeyError):
        return []
    return [e["server_round"] for e in entries if e["kind"] == "train"]


@GROUP_2
def test_a_site_killed_mid_round_does_not_stop_the_run(deployment: Deployment) -> None:
    configs = [deployment.site_config(i, "state", trusted_app=deployment.approved) for i in range(3)]
    for i in range(3):
        deployment.start_site(i, configs[i])
    ledger = deployment.root / "state" / "site-2" / "privacy_ledger.json"
    runner = subprocess.Popen(
        deployment.run_argv(
            *SMOKE,
            "num_rounds=2",
            "train.local_steps=12",  # long enough to be killed mid-round (seconds after its ledger entry)
            "strategy.min_sites=2",
            "coordinator.rejoin_wait_s=180",
            "output_dir=runs",
            "run_name=killsite",
        ),
        cwd=deployment.root,
        env=deployment.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        # The ledger exists from the round-0 evaluation on (it is charged too): wait for round 1's
        # training entry, recorded before the site trains.
        _wait_for(lambda: 1 in _trained_rounds(ledger), 300, "site-2 to start training round 1")
        deployment.kill("site-2")  # in the middle of its round-1 training
        deployment.start_site(2, configs[2])  # the hospital restarts its daemon
        out, _ = runner.communicate(timeout=900)
    finally:
        runner.kill()
    assert runner.returncode == 0, out.decode()[-4000:]
    rows = [json.loads(line) for line in (deployment.root / "runs" / "killsite" / "metrics.jsonl").open()]
    assert rows[0]["sites_trained"] == 2  # round 1 completed with the two others
    assert [r["round"] for r in rows] == [1, 2]
    # The restarted daemon continued from its on-disk ledger: the interrupted round 1 is still counted.
    assert _trained_rounds(ledger) == [1, 2]
    assert rows[1]["sites_trained"] == 3  # and it trains again in round 2


def _tampered_app(deployment: Deployment) -> tuple[Path, Path]:
    """The coordinator's tampered copy of the approved bundle: its ClientApp writes the site's data file where
    the attacker wants it as soon as it is imported. Returns (app folder, where the leak would land)."""
    tampered = deployment.root / "tampered-app"
    with zipfile.ZipFile(deployment.root / "approved" / "fedcare.fab") as fab:
        fab.extractall(tampered)
    leak = deployment.root / "leaked.jsonl"
    app_file = tampered / "client" / "client_app.py"
    data = str(deployment.root / "data" / "*.jsonl")
    app_file.write_text(
        app_file.read_text() + f"\nimport shutil, glob\nfor f in glob.glob({data!r}):\n"
        f"    shutil.copy(f, {str(leak)!r})\n"
    )
    return tampered, leak


def _submit(deployment: Deployment, *runs: tuple[Path, str, str]) -> list[str]:
    """`flwr run` of each (app, run name, signature) for one site and one round, as a coordinator could submit it;
    all at once (the SuperLink starts a ServerApp per run); returns their outputs, in order."""
    overrides = [
        *SMOKE,
        "num_sites=1",
        "num_rounds=1",
        "coordinator.round_timeout_s=120",
        "coordinator.node_wait_s=60",
        "output_dir=runs",
    ]
    procs = []
    try:
        for app, name, signature in runs:
            config = deployment.root / f"run_config-{name}.toml"
            text = f"overrides = {json.dumps(' '.join([*overrides, f'run_name={name}']))}\n"
            config.write_text(text + (f"app-signature = {json.dumps(signature)}\n" if signature else ""))
            procs.append(
                subprocess.Popen(
                    ["flwr", "run", str(app), "fedcare", "--run-config", str(config), "--stream"],
                    cwd=deployment.root,
                    env=deployment.env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            )
        return [proc.communicate(timeout=600)[0] for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=30)


@GROUP_1
def test_a_tampered_client_app_is_refused_and_nothing_leaves(deployment: Deployment) -> None:
    approved = deployment.approved
    deployment.start_site(0, deployment.site_config(0, "state", trusted_app=approved))
    _wait_for(lambda: "SuperNode ID" in (deployment.root / "site-0.log").read_text(), 120, "site-0 to connect")
    tampered, leak = _tampered_app(deployment)
    [coordinator_log] = _submit(deployment, (tampered, "tampered", ""))
    site_log = (deployment.root / "site-0.log").read_text(errors="replace")
    assert "refused the app bundle sha256" in site_log, site_log[-3000:]
    assert "refused the app bundle" in coordinator_log, coordinator_log[-3000:]
    assert not leak.exists()  # the tampered code never ran
    assert not (deployment.root / "state" / "site-0" / "egress.jsonl").exists()  # nothing left the site
    assert approved not in site_log.split("refused the app bundle sha256")[1][:80]  # it named the other hash


@GROUP_2
def test_a_site_runs_the_consortium_signed_app_and_refuses_a_tampered_or_foreign_signed_one(
    deployment: Deployment,
) -> None:
    # The consortium signs the approved bundle; the site trusts its key, and pins no hash.
    built = deployment.cli("app", "build", "--out", "signed", "--sign", "certs-ca/app-signing.key")
    assert "signature: signed/fedcare.fab.sig" in built.stdout
    signature = (deployment.root / "signed" / "fedcare.fab.sig").read_text().strip()
    site_yaml = deployment.site_config(0, "state", trusted_signer="certs/app-signing.pub")
    review = deployment.cli("site", "review", "signed/fedcare.fab", "--config", str(site_yaml))
    assert "site site-0 would run it: sha256" in review.stdout and "signed by SHA256:" in review.stdout
    deployment.start_site(0, site_yaml)
    _wait_for(lambda: "SuperNode ID" in (deployment.root / "site-0.log").read_text(), 120, "site-0 to connect")

    # Two runs submitted together, both refused: 1. the tampered bundle, sent with the consortium's genuine
    # signature of the approved one; 2. the approved bytes signed by a key the site does not trust.
    tampered, leak = _tampered_app(deployment)
    deployment.cli("app", "build", "--out", "rogue", "--sign", "rogue-certs-ca/app-signing.key")
    rogue = (deployment.root / "rogue" / "fedcare.fab.sig").read_text().strip()
    logs = _submit(deployment, (tampered, "tampered", signature), (ROOT, "rogue", rogue))
    site_log = (deployment.root / "site-0.log").read_text(errors="replace")
    changed = [line for line in site_log.splitlines() if "not for this bundle (the bundle was changed" in line]
    foreign = [line for line in site_log.splitlines() if "not a key its site.yaml trusts" in line]
    assert changed and foreign, site_log[-3000:]
    approved = f"refused the app bundle sha256 {deployment.approved}:"
    # Each refusal is of its own run: the tampered bytes under the approved bundle's signature; the approved bytes.
    assert all(approved not in line and f"is for sha256 {deployment.approved}," in line for line in changed)
    assert all(approved in line for line in foreign)
    for coordinator_log in logs:
        assert "refused the app bundle" in coordinator_log, coordinator_log[-3000:]
    assert not leak.exists()
    assert not (deployment.root / "state" / "site-0" / "egress.jsonl").exists()

    # 3. The approved bundle with the consortium's signature: the site runs it, and trains.
    deployment.run(
        *SMOKE,
        "num_sites=1",
        "num_rounds=1",
        "train.local_steps=2",
        "coordinator.node_wait_s=60",
        "output_dir=runs",
        "run_name=signed",
        "--app-signature",
        "signed/fedcare.fab.sig",
    )
    summary = json.loads((deployment.root / "runs" / "signed" / "summary.json").read_text())
    assert summary["rounds"] == 1 and len(summary["sites"]) == 1
    site_log = (deployment.root / "site-0.log").read_text(errors="replace")
    assert "is approved; installing it" in site_log and "signed by SHA256:" in site_log
    ledger = json.loads((deployment.root / "state" / "site-0" / "privacy_ledger.json").read_text())
    assert [e["server_round"] for e in ledger["entries"] if e["kind"] == "train"] == [1]


@GROUP_1
def test_enroll_started_before_the_superlink_waits_and_names_the_key(tmp_path: Path, cache_dir: Path) -> None:
    # docs/deploy.md's trial runs `coordinator start &` and enrolls at once; the SuperLink needs a moment to listen.
    dep = Deployment(tmp_path, cache_dir, num_sites=1)
    try:
        pub = dep.certs / "site-0.pub"
        enroll = subprocess.Popen(
            [sys.executable, "-m", "simulations.cli", "coordinator", "enroll", str(pub)]
            + ["--superlink", dep.address, "--ca", str(dep.certs / "ca.crt")],
            cwd=dep.root,
            env=dep.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(3)
        assert enroll.poll() is None  # still waiting for the SuperLink, not failed
        dep.start_coordinator()
        out, err = enroll.communicate(timeout=180)
        assert enroll.returncode == 0, out[-2000:] + err[-2000:]
        from common.credentials import fingerprint  # = `ssh-keygen -lf` (tests/unit/test_credentials.py)

        assert f"enrolled site site-0: key {fingerprint(pub)}" in out
    finally:
        dep.close()
    assert not dep.leftovers()
