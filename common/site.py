"""A hospital site's own configuration (site.yaml): its data, its privacy budget, its state and credentials.

Values here always win over what the coordinator's round plan asks for: a site never trains on
data or with a privacy budget that it did not configure itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from common.config import DataConfig, PrivacyConfig, build_dataclass
from common.errors import ConfigError


@dataclass(frozen=True)
class SiteConfig:
    """Everything a site daemon needs; built from ``site.yaml``."""

    site_id: str  # display name, e.g. "st-mary-cardiology"; stays at the site
    site_index: int  # numeric id the site reports with its metrics (0, 1, ...)
    state_dir: str  # privacy ledger and egress log live here; back it up, never share it
    coordinator: str  # SuperLink address host:port (its Fleet API; 8000 by default)
    data: DataConfig  # this site's file (kind files, one path) and its column mapping
    ca_cert: str = ""  # consortium CA certificate that signed the coordinator's TLS certificate
    auth_key: str = ""  # the site's EC P-384 private key (OpenSSH format) registered with the coordinator
    insecure: bool = False  # no TLS, no authentication: local experiments only
    runtime_port: int = 9094  # local port of the SuperNode's ClientApp runtime (loopback)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)

    def __post_init__(self) -> None:
        if self.data.kind != "files" or len(self.data.paths) != 1 or self.data.partition_field:
            raise ConfigError("site.data: expected kind 'files' with exactly one file in paths")
        if not self.insecure and not (self.ca_cert and self.auth_key):
            raise ConfigError("site: ca_cert and auth_key are required unless insecure: true")

    @property
    def ledger_path(self) -> Path:
        return Path(self.state_dir) / "privacy_ledger.json"

    @property
    def egress_log_path(self) -> Path:
        return Path(self.state_dir) / "egress.jsonl"


def load_site_config(path: str | Path) -> SiteConfig:
    """Read and validate ``site.yaml``; relative paths in it are relative to the file's folder.

    Raises:
        ConfigError: when the file is missing, not YAML, or has a bad value (the key is named).
    """
    path = Path(path)
    try:
        raw: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the site configuration ({type(err).__name__})") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({type(err).__name__})") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    base = path.resolve().parent
    for key in ("state_dir", "ca_cert", "auth_key"):
        if raw.get(key):
            raw[key] = str((base / str(raw[key])).resolve())
    data = dict(raw.get("data") or {})
    data.setdefault("kind", "files")
    data["paths"] = [str((base / str(p)).resolve()) for p in data.get("paths", [])]
    raw["data"] = data
    return build_dataclass(SiteConfig, raw, "site.")
