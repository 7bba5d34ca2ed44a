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
    cmd = ["flower-supernode", "--superlink", cfg.coordinator, "--port", str(cfg.runtime_port),
           "--node-config", f'site-config="{config_path.resolve()}"']
    if cfg.insecure:
        return [*cmd, "--insecure"]
    for key, value in (("ca_cert", cfg.ca_cert), ("auth_key", cfg.auth_key)):
        if not Path(value).exists():
            raise ConfigError(f"site.{key}: {value} does not exist")
    return [*cmd, "--root-certificates", cfg.ca_cert, "--auth-supernode-private-key", cfg.auth_key]


def run_daemon(cmd: list[str], *, restart_delay_s: float = 10.0, max_restarts: int | None = None) -> int:
    """Keep the SuperNode running: restart it when it exits with an error (coordinator unreachable,
    a previous session of this site not yet expired, ...). SIGINT/SIGTERM stop it and the daemon.

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

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    restarts = 0
    while True:
        child = subprocess.Popen(cmd)
        code = child.wait()
        if stopping or code == 0:
            return code
        if max_restarts is not None and restarts >= max_restarts:
            return code
        restarts += 1
        log.warning("SuperNode exited with code %d; restarting in %.0f s (restart %d)", code, restart_delay_s,
                    restarts)
        time.sleep(restart_delay_s)
