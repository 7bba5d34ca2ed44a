"""The coordinator on Flower's deployment engine: SuperLink command lines, the CLI connection, enrolment, runs.

fedcare does not move bytes itself: the SuperLink (``flower-superlink``) serves the Fleet, Control and
ServerApp APIs on one port (8000 by default) with TLS from the consortium CA and SuperNode
authentication; runs are submitted with ``flwr run`` and sites enrolled with ``flwr supernode register``.
"""

from __future__ import annotations

import json
import os
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path

import tomli_w

from common.credentials import CredentialPaths
from common.errors import ConfigError

CONNECTION = "fedcare"  # name of the connection fedcare writes into $FLWR_HOME/config.toml
APP_DIR = Path(__file__).resolve().parents[1]  # the Flower app: this checkout's pyproject.toml + packages
DEFAULT_PORT = 8000


@dataclass(frozen=True)
class SuperLinkOptions:
    """How ``fedcare coordinator start`` runs the SuperLink."""

    certs: Path | None  # folder made by ``fedcare certs`` (ca.crt, server.crt, server.key); None = insecure
    state_dir: Path  # SuperLink database (registered sites, runs)
    host: str = "0.0.0.0"  # interface to listen on
    port: int = DEFAULT_PORT


def superlink_command(opts: SuperLinkOptions) -> list[str]:
    """The ``flower-superlink`` argv: TLS + SuperNode authentication, or --insecure without certs.

    App dependencies are never installed at run time: the coordinator runs the fedcare it has
    installed (runtime installation would pull CUDA builds of torch onto a CPU machine).
    """
    cmd = [
        "flower-superlink",
        "--database",
        str(opts.state_dir / "superlink.db"),
        "--host",
        opts.host,
        "--port",
        str(opts.port),
        "--disable-runtime-dependency-installation",
    ]
    if opts.certs is None:
        return [*cmd, "--insecure"]
    paths = CredentialPaths(opts.certs)
    for path in (paths.ca_cert, paths.server_cert, paths.server_key):
        if not path.exists():
            raise ConfigError(f"coordinator: {path} is missing; create it with `fedcare certs --out {opts.certs}`")
    return [
        *cmd,
        "--ssl-ca-certfile",
        str(paths.ca_cert),
        "--ssl-certfile",
        str(paths.server_cert),
        "--ssl-keyfile",
        str(paths.server_key),
        "--enable-supernode-auth",
    ]


def write_connection(address: str, ca_cert: Path | None, flwr_home: Path | None = None) -> Path:
    """Add or replace the ``fedcare`` connection in ``$FLWR_HOME/config.toml``; returns its path.

    Without ``ca_cert`` the connection is insecure (local experiments only).
    """
    home = flwr_home or Path(os.environ.get("FLWR_HOME", Path.home() / ".flwr"))
    home.mkdir(parents=True, exist_ok=True)
    path = home / "config.toml"
    config = tomllib.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    links = config.setdefault("superlink", {})
    entry: dict[str, object] = {"address": address}
    if ca_cert is None:
        entry["insecure"] = True
    else:
        entry["root-certificates"] = str(ca_cert.resolve())
    links[CONNECTION] = entry
    links.setdefault("default", CONNECTION)
    path.write_text(tomli_w.dumps(config), encoding="utf-8")
    return path


def enroll_command(public_key: Path) -> list[str]:
    """``flwr supernode register``: the SuperLink will accept the site holding the matching private key."""
    from common.files import read_regular

    first = read_regular(public_key, "site public key", error=ConfigError).split(b" ", 1)[0].decode("ascii", "replace")
    if first != "ecdsa-sha2-nistp384":
        raise ConfigError(f"enroll: {public_key} is not an EC P-384 OpenSSH public key (found {first[:24]!r})")
    return ["flwr", "supernode", "register", str(public_key.resolve()), CONNECTION, "--name", public_key.stem]


def run_command(overrides: list[str], run_config_file: Path, app_signature: str = "") -> list[str]:
    """``flwr run`` of the fedcare app with Hydra overrides carried in the run config key ``overrides``, and the
    consortium's signature over the bundle (``fedcare app build --sign``) in ``app-signature``."""
    text = f"overrides = {json.dumps(shlex.join(overrides))}\n"
    if app_signature:
        text += f"app-signature = {json.dumps(app_signature)}\n"
    run_config_file.write_text(text, encoding="utf-8")
    return ["flwr", "run", str(APP_DIR), CONNECTION, "--run-config", str(run_config_file), "--stream"]
