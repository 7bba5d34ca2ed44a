"""The site runs only the app bundle (FAB) it approved, with Flower's own process isolation.

``fedcare site start`` with ``trusted_apps`` in site.yaml runs ``flower-supernode --isolation
process``: the SuperNode then starts no ClientApp itself. The site daemon runs Flower's SuperExec
(:func:`superexec_main`, Flower's ``run_superexec``) with one change: ClientApp tasks are launched
with this module's runner (a small executable written into the site's state dir) instead of
``flwr-clientapp``. The runner (:func:`clientapp_main`) is Flower's ``flwr-clientapp`` with a check
at the one point where the bundle enters: before Flower installs the FAB (nothing of it is
extracted, imported or run before), its SHA-256 must be one of the site's ``trusted_apps``, or the
run must carry a consortium signature over exactly these bytes (run config ``app-signature``) by
one of the site's ``trusted_signers`` (:func:`common.signing.check_app`); and it must equal the
hash the SuperLink claims for it. A refused bundle is answered with an error reply that
names the hash, so the refusal shows in the coordinator's log as well as the site's.

The runner lives across messages (:func:`serve_main`): SuperExec hands each ClientApp task of an
app bundle to ONE process per bundle hash (:class:`PinnedExecutor`), which pulls the task, checks
the bundle as above, installs and loads the ClientApp the first time, and runs it, then waits for
the next task; so the model fed to the ClientApp (``client.runtime``'s cache) is loaded once per
site and bundle, not once per message. Flower's ``flwr-clientapp`` starts a process per message and
reloads everything. A bundle that is refused ends its process (nothing of it was loaded); a task
of another bundle gets its own process. ``FEDCARE_CLIENTAPP_PER_TASK=1`` restores Flower's
process-per-task launching (still through the check).

Why not ``--trusted-entities``: in flwr 1.42 it checks signatures that Flower Hub attaches to a
FAB; a FAB submitted straight to a consortium's SuperLink has none and is always refused. The
consortium builds, hashes and signs its approved FAB with ``fedcare app build --sign``; a site
reviews it (files, hash, signer) with ``fedcare site review``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from common.signing import AppRefusedError, check_app, load_trusted_signers
from common.site import load_site_config

__all__ = ["AppRefusedError", "clientapp_main", "serve_main", "superexec_main", "write_runner"]

log = logging.getLogger("fedcare.site")

RUNNER_NAME = "fedcare-clientapp"  # the executable SuperExec launches for ClientApp tasks
PER_TASK_ENV = "FEDCARE_CLIENTAPP_PER_TASK"  # "1": one process per task, as Flower's flwr-clientapp
SIGNATURE_KEY = "app-signature"  # run config key carrying the consortium's signature (pyproject [tool.flwr.app.config])


def write_runner(state_dir: Path, site_config: Path) -> Path:
    """Write the executable that SuperExec starts for a ClientApp task (this Python, this fedcare)."""
    root = Path(__file__).resolve().parents[1]
    path = state_dir / "bin" / RUNNER_NAME
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_text(
        f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(root)!r})\n"
        "from client.pinned_app import clientapp_main, serve_main\n"
        f"config = {str(site_config.resolve())!r}\n"
        "if sys.argv[1:2] == ['--serve']:\n"
        "    raise SystemExit(serve_main(config, sys.argv[2], int(sys.argv[3])))\n"
        "raise SystemExit(clientapp_main(config, sys.argv[1:]))\n",
        encoding="utf-8",
    )
    path.chmod(0o700)
    return path


def clientapp_main(site_config: str, argv: list[str]) -> int:
    """Flower's ``flwr-clientapp`` for one task, refusing any bundle the site did not approve."""
    import flwr.supernode.runtime.run_clientapp as runner
    from flwr.supernode.cli.flwr_clientapp import flwr_clientapp

    from common.console import configure_logging

    configure_logging()
    cfg = load_site_config(site_config)
    signers = load_trusted_signers(cfg.trusted_signers)
    claimed: dict[str, str] = {}
    pull, install = runner.pull_task_input, runner.install_from_fab

    def pull_task_input(client: Any) -> Any:
        message, context, run, fab = pull(client)
        claimed["hash"] = fab.hash_str
        claimed["signature"] = str(run.override_config.get(SIGNATURE_KEY, ""))  # what the coordinator sent
        return message, context, run, fab

    def install_from_fab(fab_file: Any, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(fab_file, bytes):
            raise AppRefusedError("site: the app bundle did not arrive as bytes; refused")
        try:
            approved = check_app(
                fab_file,
                site_id=cfg.site_id,
                trusted_apps=cfg.trusted_apps,
                trusted_signers=signers,
                signature=claimed.get("signature", ""),
                claimed_hash=claimed.get("hash", ""),
                revoked_apps=cfg.revoked_apps,
                min_release=cfg.min_app_release,
            )
        except AppRefusedError as err:
            log.error("%s", err)
            raise
        log.info("site %s: app bundle %s is approved; installing it", cfg.site_id, approved)
        return install(fab_file, *args, **kwargs)

    runner.pull_task_input = pull_task_input
    runner.install_from_fab = install_from_fab
    sys.argv = ["flwr-clientapp", *argv]
    flwr_clientapp()
    return 0


def _approve(fab: Any, run: Any, cfg: Any, signers: Any) -> str:
    """:func:`common.signing.check_app` on a pulled task's bundle (before anything of it is installed)."""
    if not isinstance(fab.content, bytes):
        raise AppRefusedError("site: the app bundle did not arrive as bytes; refused")
    try:
        approved = check_app(
            fab.content,
            site_id=cfg.site_id,
            trusted_apps=cfg.trusted_apps,
            trusted_signers=signers,
            signature=str(run.override_config.get(SIGNATURE_KEY, "")),
            claimed_hash=fab.hash_str,
        )
    except AppRefusedError as err:
        log.error("%s", err)
        raise
    return approved


def serve_main(site_config: str, fab_hash: str, parent_pid: int) -> int:
    """The long-lived ClientApp runner of one site and app bundle: runs the tasks SuperExec writes to
    stdin (one JSON launch request a line) one after another, in this process, until stdin closes.

    Each task is Flower's ``run_clientapp`` (pull the task, run the ClientApp, push the reply, the
    context and the task status) with the site's bundle check before the bundle is installed; the
    install and the ClientApp load happen once, so the ClientApp's caches (the model) live on. A
    refused bundle, or a task of another bundle than ``fab_hash``, ends the process after its error
    reply.
    """
    from flwr.clientapp.utils import get_load_client_app_fn
    from flwr.supercore.app_utils import start_parent_process_monitor

    from common.console import configure_logging

    configure_logging()
    cfg = load_site_config(site_config)
    signers = load_trusted_signers(cfg.trusted_signers)
    start_parent_process_monitor(parent_pid)
    load = get_load_client_app_fn(default_app_ref="", app_path=None, multi_app=True)
    loaded: list[Any] = []  # the ClientApp, once installed and loaded
    log.info("site %s: ClientApp runner %d serves app bundle %s", cfg.site_id, os.getpid(), fab_hash[:16])
    for line in sys.stdin:
        if not _serve_task(json.loads(line), fab_hash, loaded, lambda fab, run: _approve(fab, run, cfg, signers), load):
            return 0
    return 0


def _serve_task(request: dict[str, Any], fab_hash: str, loaded: list[Any], approve: Any, load: Any) -> bool:
    """One ClientApp task, as ``flwr.supernode.runtime.run_clientapp.run_clientapp`` runs it but without
    exiting the process. Returns whether this process may serve further tasks."""
    from flwr.app import Message
    from flwr.app.error import Error
    from flwr.cli.install import install_from_fab
    from flwr.clientapp.client_app import LoadClientAppError
    from flwr.common.constant import ErrorCode, SubStatus
    from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
    from flwr.supercore.interceptors import RuntimeTokenHttpInterceptor, RuntimeVersionHttpInterceptor
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient
    from flwr.supercore.runtime.tracing import RuntimeTracingInterceptor
    from flwr.supercore.tls import validate_and_resolve_root_certificates
    from flwr.supernode.runtime import run_clientapp as flower

    retry_invoker = make_simple_http_retry_invoker()
    client = RuntimeHttpClient.from_server_address(
        server_address=request["address"],
        insecure=request["insecure"],
        root_certificates=validate_and_resolve_root_certificates(request["root_certificates"], request["insecure"]),
        interceptors=[
            RuntimeTracingInterceptor(),
            RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"),
            RuntimeTokenHttpInterceptor(request["token"]),
        ],
        retry_invoker=retry_invoker,
    )
    heartbeat = HeartbeatSender(make_task_heartbeat_fn_http(client))
    message = reply = context = None
    sub_status, details, keep = SubStatus.FAILED, "ClientApp task failed due to unknown reason", True
    try:
        heartbeat.start()
        message, context, run, fab = flower.pull_task_input(client)
        keep = False  # until the bundle is approved and is this process's bundle
        approve(fab, run)
        if fab.hash_str != fab_hash:
            raise AppRefusedError(
                f"site: a task of app bundle {fab.hash_str[:16]} reached the runner of {fab_hash[:16]}"
            )
        if loaded:
            log.info("app bundle %s is approved", fab.hash_str)
        else:
            log.info("app bundle %s is approved; installing it once for this runner", fab.hash_str)
            install_from_fab(fab.content, skip_prompt=True)
            loaded.append(load(run.fab_id, run.fab_version, fab.hash_str))
        keep = True
        reply = loaded[0](message=message, context=context)
        sub_status, details = SubStatus.COMPLETED, ""
    except Exception as ex:  # noqa: BLE001 - answered as Flower answers a failing ClientApp
        code, reason = ErrorCode.CLIENT_APP_RAISED_EXCEPTION, str(type(ex)) + ":<'" + str(ex) + "'>"
        if isinstance(ex, LoadClientAppError):
            code, reason = (
                ErrorCode.LOAD_CLIENT_APP_EXCEPTION,
                "An exception was raised when attempting to load `ClientApp`",
            )
        log.error("ClientApp raised an exception", exc_info=ex)
        sub_status, details = SubStatus.FAILED, reason
        if message is not None:
            reply = Message(Error(code=code, reason=reason), reply_to=message)
    finally:
        if reply is not None and context is not None:
            try:
                flower.push_message(client, reply, context)
            except Exception as ex:  # noqa: BLE001
                log.error("Failed to push reply message", exc_info=ex)
        retry_invoker.max_tries = 1
        # The heartbeat stops BEFORE the task output is pushed, which ends the task's token: a heartbeat sent
        # after it is refused (401), and Flower's HTTP retry answers that with SIGINT to this process, which
        # killed the long-lived runner (Flower's order, harmless in its process-per-task flwr-clientapp).
        if heartbeat.is_running:
            heartbeat.stop()
        flower.push_task_output(client=client, context=context, sub_status=sub_status, details=details)
        client.close()
    return keep


class PinnedExecutor:
    """Flower's subprocess executor, except that ClientApp tasks go to one long-lived runner per app
    bundle (:func:`serve_main`) instead of a fresh ``flwr-clientapp`` process each."""

    def __init__(self, inner: Any, runner: Path) -> None:
        self.inner, self.runner = inner, runner
        self.workers: dict[str, subprocess.Popen[str]] = {}

    def __getattr__(self, name: str) -> Any:  # get_eligible_capacity, wait_for_capacity, ...
        return getattr(self.inner, name)

    def launch(self, spec: Any) -> Any:
        """Hand a ClientApp task to its bundle's runner (started if needed); others as Flower does."""
        from flwr.supercore.constant import TaskType
        from flwr.supercore.superexec.executor.types import LaunchResult

        if spec.task_type != TaskType.CLIENT_APP or not spec.fab_hash or spec.runtime_dependency_install:
            return self.inner.launch(spec)
        worker = self.workers.get(spec.fab_hash)
        if worker is None or worker.poll() is not None:
            for other in [h for h in self.workers if h != spec.fab_hash]:  # one bundle's runner at a time
                self._stop(self.workers.pop(other), wait=False)
            worker = subprocess.Popen(
                [str(self.runner), "--serve", spec.fab_hash, str(spec.parent_pid or os.getpid())],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL if spec.suppress_output else None,
                stderr=subprocess.DEVNULL if spec.suppress_output else None,
                text=True,
            )
            self.workers[spec.fab_hash] = worker
        request = {
            "address": spec.runtime_api_address,
            "token": spec.token,
            "insecure": spec.insecure,
            "root_certificates": spec.root_certificates_path,
        }
        try:
            assert worker.stdin is not None
            worker.stdin.write(json.dumps(request) + "\n")
            worker.stdin.flush()
        except (BrokenPipeError, OSError) as err:
            return LaunchResult.failed(f"the ClientApp runner exited: {err}")
        return LaunchResult.accepted()

    @staticmethod
    def _stop(proc: subprocess.Popen[str], wait: bool = True) -> None:
        if proc.stdin is not None and not proc.stdin.closed:
            proc.stdin.close()  # it finishes the tasks it was given, then exits
        if wait and proc.poll() is None:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()

    def close(self) -> None:
        """Stop the runners (each after its current task), then Flower's executor."""
        for proc in self.workers.values():
            self._stop(proc)
        self.workers.clear()
        self.inner.close()


def superexec_main(site_config: str, argv: list[str]) -> int:
    """Flower's ``flower-superexec`` (``argv`` are its options) launching ClientApps through the pinned runner."""
    from flwr.supercore import constant
    from flwr.supercore.cli.flower_superexec import flower_superexec  # imports run_superexec

    from common.console import configure_logging

    configure_logging()
    cfg = load_site_config(site_config)
    if not cfg.pins_apps:
        raise AppRefusedError(
            f"{site_config}: trusted_apps and trusted_signers are empty; the pinned runner would refuse every app"
        )
    signers = load_trusted_signers(cfg.trusted_signers)  # an unreadable key stops the site here, not at a run
    runner = write_runner(Path(cfg.state_dir), Path(site_config))
    constant.TASK_TYPE_TO_COMMAND[constant.TaskType.CLIENT_APP] = str(runner)
    if os.environ.get(PER_TASK_ENV) != "1":
        superexec = sys.modules["flwr.supercore.superexec.run_superexec"]
        flowers_executor = superexec.get_executor

        def get_executor(*args: Any, **kwargs: Any) -> Any:
            return PinnedExecutor(flowers_executor(*args, **kwargs), runner)

        superexec.get_executor = get_executor
    log.info(
        "site %s: ClientApps run only from approved bundles: pinned %s; signed by %s",
        cfg.site_id,
        ", ".join(h[:16] for h in cfg.trusted_apps) or "none",
        ", ".join(signers) or "nobody",
    )
    sys.argv = ["flower-superexec", *argv]
    flower_superexec()
    return 0


if __name__ == "__main__":  # python -m client.pinned_app SITE_YAML [flower-superexec options]
    raise SystemExit(superexec_main(sys.argv[1], sys.argv[2:]))
