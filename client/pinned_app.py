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

Why not ``--trusted-entities``: in flwr 1.42 it checks signatures that Flower Hub attaches to a
FAB; a FAB submitted straight to a consortium's SuperLink has none and is always refused. The
consortium builds, hashes and signs its approved FAB with ``fedcare app build --sign``; a site
reviews it (files, hash, signer) with ``fedcare site review``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from common.signing import AppRefusedError, check_app, load_trusted_signers
from common.site import load_site_config

__all__ = ["AppRefusedError", "clientapp_main", "superexec_main", "write_runner"]

log = logging.getLogger("fedcare.site")

RUNNER_NAME = "fedcare-clientapp"  # the executable SuperExec launches for each ClientApp task
SIGNATURE_KEY = "app-signature"  # run config key carrying the consortium's signature (pyproject [tool.flwr.app.config])


def write_runner(state_dir: Path, site_config: Path) -> Path:
    """Write the executable that SuperExec starts for a ClientApp task (this Python, this fedcare)."""
    root = Path(__file__).resolve().parents[1]
    path = state_dir / "bin" / RUNNER_NAME
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_text(
        f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(root)!r})\n"
        "from client.pinned_app import clientapp_main\n"
        f"raise SystemExit(clientapp_main({str(site_config.resolve())!r}, sys.argv[1:]))\n",
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


def superexec_main(site_config: str, argv: list[str]) -> int:
    """Flower's ``flower-superexec`` (``argv`` are its options) launching ClientApps through the pinned runner."""
    from flwr.supercore import constant
    from flwr.supercore.cli.flower_superexec import flower_superexec

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
