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
