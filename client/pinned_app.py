"""The site runs only the app bundle (FAB) it approved, with Flower's own process isolation.

``fedcare site start`` with ``trusted_apps`` in site.yaml runs ``flower-supernode --isolation
process``: the SuperNode then starts no ClientApp itself. The site daemon runs Flower's SuperExec
(:func:`superexec_main`, Flower's ``run_superexec``) with one change: ClientApp tasks are launched
with this module's runner (a small executable written into the site's state dir) instead of
``flwr-clientapp``. The runner (:func:`clientapp_main`) is Flower's ``flwr-clientapp`` with a check
at the one point where the bundle enters: before Flower installs the FAB (nothing of it is
extracted, imported or run before), its SHA-256 must be one of the site's ``trusted_apps`` and
equal the hash the SuperLink claims for it. A refused bundle is answered with an error reply that
names the hash, so the refusal shows in the coordinator's log as well as the site's.

Why not ``--trusted-entities``: in flwr 1.42 it checks signatures that Flower Hub attaches to a
FAB; a FAB submitted straight to a consortium's SuperLink has none and is always refused. The
consortium builds and hashes (optionally signs) its approved FAB with ``fedcare app build``; a site
reviews it with ``fedcare site review``.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from pathlib import Path
from typing import Any

from common.errors import FedcareError
from common.site import load_site_config

log = logging.getLogger("fedcare.site")

RUNNER_NAME = "fedcare-clientapp"  # the executable SuperExec launches for each ClientApp task


class AppRefusedError(FedcareError):
    """The coordinator shipped an app bundle this site did not approve."""


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


def check_bundle(content: bytes, claimed_hash: str, trusted: tuple[str, ...], site_id: str) -> str:
    """The bundle's SHA-256, if the site trusts it.

    Raises:
        AppRefusedError: naming the hash when it is not in ``trusted`` or differs from the claimed one.
    """
    digest = hashlib.sha256(content).hexdigest()
    if claimed_hash and claimed_hash != digest:
        raise AppRefusedError(
            f"site {site_id} refused the app bundle: its content hashes to sha256 {digest}, "
            f"not the {claimed_hash} the SuperLink claims"
        )
    if digest not in trusted:
        raise AppRefusedError(
            f"site {site_id} refused the app bundle sha256 {digest}: not one of the apps its "
            "site.yaml trusts (trusted_apps); nothing of it was installed or run"
        )
    return digest


def clientapp_main(site_config: str, argv: list[str]) -> int:
    """Flower's ``flwr-clientapp`` for one task, refusing any bundle the site did not approve."""
    import flwr.supernode.runtime.run_clientapp as runner
    from flwr.supernode.cli.flwr_clientapp import flwr_clientapp

    from common.console import configure_logging

    configure_logging()
    cfg = load_site_config(site_config)
    claimed: dict[str, str] = {}
    pull, install = runner.pull_task_input, runner.install_from_fab

    def pull_task_input(client: Any) -> Any:
        message, context, run, fab = pull(client)
        claimed["hash"] = fab.hash_str
        return message, context, run, fab

    def install_from_fab(fab_file: Any, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(fab_file, bytes):
            raise AppRefusedError("site: the app bundle did not arrive as bytes; refused")
        try:
            digest = check_bundle(fab_file, claimed.get("hash", ""), cfg.trusted_apps, cfg.site_id)
        except AppRefusedError as err:
            log.error("%s", err)
            raise
        log.info("site %s: app bundle sha256 %s is approved; installing it", cfg.site_id, digest[:16])
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
    if not cfg.trusted_apps:
        raise AppRefusedError(f"{site_config}: trusted_apps is empty; the pinned runner would refuse every app")
    runner = write_runner(Path(cfg.state_dir), Path(site_config))
    constant.TASK_TYPE_TO_COMMAND[constant.TaskType.CLIENT_APP] = str(runner)
    log.info(
        "site %s: ClientApps run only from approved bundles %s",
        cfg.site_id,
        ", ".join(h[:16] for h in cfg.trusted_apps),
    )
    sys.argv = ["flower-superexec", *argv]
    flower_superexec()
    return 0


if __name__ == "__main__":  # python -m client.pinned_app SITE_YAML [flower-superexec options]
    raise SystemExit(superexec_main(sys.argv[1], sys.argv[2:]))
