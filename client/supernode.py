"""A hospital's site daemon on Flower's deployment engine: the ``flower-supernode`` command line.

The SuperNode dials out to the coordinator (no inbound port at the hospital), over TLS pinned to
the consortium CA, authenticated by the site's EC P-384 key. The site's own ``site.yaml`` reaches
the ClientApp through the node config, so its data path, privacy budget and state never leave it.
"""

from __future__ import annotations

from pathlib import Path

from common.errors import ConfigError
from common.site import SiteConfig


def supernode_command(cfg: SiteConfig, config_path: Path) -> list[str]:
    """The ``flower-supernode`` argv for a site.

    Raises:
        ConfigError: when a credential file named in site.yaml is missing.
    """
    if not cfg.coordinator:
        raise ConfigError("site.coordinator: the SuperLink address host:port is required to start a site daemon")
    cmd = [
        "flower-supernode",
        "--superlink",
        cfg.coordinator,
        "--host",
        "127.0.0.1",
        "--port",
        str(cfg.runtime_port),
        "--node-config",
        f'site-config="{config_path.resolve()}"',
    ]
    if cfg.pins_apps:  # the site runs the ClientApp process itself (superexec_command), never Flower's default
        cmd += ["--isolation", "process"]
    if cfg.insecure:
        return [*cmd, "--insecure"]
    if not (cfg.ca_cert and cfg.auth_key):
        raise ConfigError("site: ca_cert and auth_key are required unless insecure: true")
    for key, value in (("ca_cert", cfg.ca_cert), ("auth_key", cfg.auth_key)):
        if not Path(value).exists():
            raise ConfigError(f"site.{key}: {value} does not exist")
    return [*cmd, "--root-certificates", cfg.ca_cert, "--auth-supernode-private-key", cfg.auth_key]


def superexec_command(cfg: SiteConfig, config_path: Path) -> list[str]:
    """The site's own SuperExec (Flower's, see client/pinned_app.py): it launches each ClientApp task
    through the pinned runner, which refuses any app bundle not pinned or signed by a trusted key."""
    import sys

    return [
        sys.executable,
        "-m",
        "client.pinned_app",
        str(config_path.resolve()),
        "--runtime-api-address",
        f"127.0.0.1:{cfg.runtime_port}",
        "--insecure",
    ]


def run_daemon(
    cmd: list[str], *, restart_delay_s: float = 10.0, max_restarts: int | None = None, helper: list[str] | None = None
) -> int:
    """Keep the SuperNode running: restart it when it exits with an error (coordinator unreachable,
    a previous session of this site not yet expired, ...). SIGINT/SIGTERM stop it and the daemon.
    ``helper`` (the pinned-app SuperExec) runs beside it and is restarted with it.

    Returns:
        The SuperNode's exit code once it stops for good (0 after a clean stop).
    """
    import logging
    import signal
    import subprocess
    import time

    log = logging.getLogger("fedcare.site")
    stopping = False
    child: subprocess.Popen[bytes] | None = None
    side: subprocess.Popen[bytes] | None = None

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for proc in (child, side):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    restarts = 0
    while True:
        child = subprocess.Popen(cmd)
        side = subprocess.Popen(helper) if helper else None
        code = child.wait()
        if side is not None and side.poll() is None:
            side.terminate()
            side.wait()
        if stopping or code == 0:
            return code
        if max_restarts is not None and restarts >= max_restarts:
            return code
        restarts += 1
        log.warning("SuperNode exited with code %d; restarting in %.0f s (restart %d)", code, restart_delay_s, restarts)
        time.sleep(restart_delay_s)
