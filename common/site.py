"""A hospital site's own configuration (site.yaml): its data, privacy budget, limits, state and credentials.

Every site reads one: a site daemon its operator's file, a simulated hospital the one the simulation
writes for it into the run directory (:func:`write_simulated_sites`). Values here always win over the
coordinator's round plan: a site never trains on data, with a privacy budget, or beyond limits it did
not configure itself (:func:`check_plan`).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from common.config import DataConfig, ModelConfig, PrivacyConfig, RunConfig, SiteLimits, SitePlan, build_dataclass
from common.errors import ConfigError, PlanRefusedError
from common.safe_yaml import load_yaml_mapping

SITE_FILE = "site.yaml"
TEST_SEEDS_ENV = "FEDCARE_TEST_SEEDS"  # "1" lets privacy.noise_seed be non-zero: the test suite only


@dataclass(frozen=True)
class SiteConfig:
    """Everything a site needs; built from ``site.yaml``."""

    site_id: str  # display name, e.g. "st-mary-cardiology"; stays at the site
    site_index: int  # numeric id the site reports with its metrics (0, 1, ...)
    state_dir: str  # privacy ledger, released updates and egress log live here; back it up, never share it
    data: DataConfig  # this site's file (kind files, one path) and its column mapping
    coordinator: str = ""  # SuperLink address host:port (its Fleet API; 8000 by default); daemons only
    ca_cert: str = ""  # consortium CA certificate that signed the coordinator's TLS certificate
    auth_key: str = ""  # the site's EC P-384 private key (OpenSSH format) registered with the coordinator
    insecure: bool = False  # no TLS, no authentication: local experiments only
    runtime_port: int = 9094  # local port of the SuperNode's ClientApp runtime (loopback)
    model_cache: str = ""  # where the site's base models are converted; "" = $FEDCARE_CACHE or ~/.cache/fedcare
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)  # target_epsilon = the site's LIFETIME budget
    limits: SiteLimits = field(default_factory=SiteLimits)
    trusted_apps: tuple[str, ...] = ()  # SHA-256 of the app bundles (FABs) this site runs (`fedcare app build`);
    trusted_signers: tuple[str, ...] = ()  # Ed25519 public keys (files) whose signature over a bundle approves it
    # (`fedcare app build --sign`); either list non-empty = the ClientApp runs only from an approved bundle
    # (`--isolation process` + client/pinned_app.py)
    revoked_apps: tuple[str, ...] = ()  # SHA-256 of bundles refused even when pinned or signed (retired versions)
    min_app_release: int = 0  # signed bundles need at least this release (`fedcare app build --sign --release N`)
    data_slot: int = 0  # simulation only: which of ``data``'s sites this one is
    data_sites: int = 1  # simulation only: how many sites share ``data``

    def __post_init__(self) -> None:
        if self.site_index < 0:
            raise ConfigError(f"site.site_index: expected >= 0, got {self.site_index}")
        if self.data_sites == 1 and (
            self.data.kind != "files" or len(self.data.paths) != 1 or self.data.partition_field
        ):
            raise ConfigError("site.data: expected kind 'files' with exactly one file in paths")
        if not 0 <= self.data_slot < self.data_sites:
            raise ConfigError(f"site.data_slot: expected in [0, {self.data_sites}), got {self.data_slot}")
        for key in ("trusted_apps", "revoked_apps"):
            bad = [h for h in getattr(self, key) if len(h) != 64 or set(h) - set("0123456789abcdef")]
            if bad:
                raise ConfigError(f"site.{key}: expected SHA-256 hex digests (from `fedcare app build`), got {bad}")
        if self.min_app_release < 0:
            raise ConfigError(f"site.min_app_release: expected >= 0, got {self.min_app_release}")
        if (self.revoked_apps or self.min_app_release) and not self.pins_apps:
            raise ConfigError(
                "site.revoked_apps / site.min_app_release: they bind only a site that approves bundles "
                "(trusted_apps or trusted_signers); without either the site runs whatever bundle arrives"
            )
        if self.privacy.noise_seed and os.environ.get(TEST_SEEDS_ENV) != "1":
            raise ConfigError(
                "site.privacy.noise_seed: must be 0 (noise and sampling from OS entropy); a fixed "
                "seed makes the DP noise predictable and is allowed only in fedcare's tests"
            )

    @property
    def pins_apps(self) -> bool:
        """The site runs only approved app bundles (pinned by hash or signed by a trusted key)."""
        return bool(self.trusted_apps or self.trusted_signers)

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
    raw: Any = load_yaml_mapping(path, "site configuration")
    base = path.resolve().parent
    for key in ("state_dir", "ca_cert", "auth_key", "model_cache"):
        if raw.get(key):
            raw[key] = str((base / str(raw[key])).resolve())
    if isinstance(raw.get("trusted_signers"), list):
        raw["trusted_signers"] = [str((base / str(p)).resolve()) for p in raw["trusted_signers"]]
    data = raw.get("data") or {}
    paths = data.get("paths", []) if isinstance(data, dict) else None
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise ConfigError(f"{path}: site.data: expected a mapping whose 'paths' is a list of file names")
    tasks = data.get("task_paths", [])  # the site's own task set (its first file; fedcare evaluate format)
    if not isinstance(tasks, list) or not all(isinstance(p, str) for p in tasks):
        raise ConfigError(f"{path}: site.data.task_paths: expected a list of file names")
    data = {
        "kind": "files",
        **data,
        "paths": [str((base / p).resolve()) for p in paths],
        "task_paths": [str((base / p).resolve()) for p in tasks],
    }
    raw["data"] = data
    return build_dataclass(SiteConfig, raw, "site.")


def write_site_config(cfg: SiteConfig, path: Path) -> Path:
    """Write ``cfg`` as a site.yaml that :func:`load_site_config` reads back to an equal config."""
    raw = _plain(dataclasses.asdict(cfg))
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_text(
        "# written by fedcare for a simulated hospital; a real site writes its own\n"
        + yaml.safe_dump(raw, sort_keys=False),
        encoding="utf-8",
    )
    return path


def write_simulated_sites(cfg: RunConfig, sites_dir: Path) -> list[Path]:
    """One site.yaml per virtual hospital under ``sites_dir/site-N/``: its data share, the config's
    privacy settings (target_epsilon as its lifetime budget), the config's limits, its own state dir."""
    paths = []
    for index in range(cfg.num_sites):
        folder = (sites_dir / f"site-{index}").resolve()
        site = SiteConfig(
            site_id=f"site-{index}",
            site_index=index,
            state_dir=str(folder),
            data=cfg.data,
            insecure=True,
            model_cache=cfg.model.cache_dir,
            privacy=cfg.privacy,
            limits=cfg.limits,
            data_slot=index,
            data_sites=cfg.num_sites,
        )
        paths.append(write_site_config(site, folder / SITE_FILE))
    return paths


def check_plan(plan: SitePlan, site: SiteConfig) -> None:
    """Refuse a round plan that asks more than the site's limits allow.

    Raises:
        PlanRefusedError: naming the plan's key, the value asked and the site's cap.
    """
    lim = site.limits
    for key, asked, cap_name in (
        ("num_rounds", plan.num_rounds, "max_rounds"),
        ("train.local_steps", plan.train.local_steps, "max_local_steps"),
        ("train.batch_size", plan.train.batch_size, "max_batch_size"),
        ("train.eval_batch_size", plan.train.eval_batch_size, "max_eval_batch_size"),
        ("train.max_seq_len", plan.train.max_seq_len, "max_seq_len"),
        ("model.num_threads", plan.model.num_threads, "max_threads"),
    ):
        cap = getattr(lim, cap_name)
        if asked > cap:
            raise PlanRefusedError(
                f"{key}: the plan asks {asked}, above the site's cap {cap} (limits.{cap_name} in its site.yaml)"
            )
    if plan.model.name_or_path not in lim.models:
        raise PlanRefusedError(
            f"model.name_or_path: the plan asks {plan.model.name_or_path!r}, not one of the "
            f"site's models {list(lim.models)} (limits.models in its site.yaml)"
        )
    if plan.model.cache_dir and plan.model.cache_dir != site.model_cache:
        raise PlanRefusedError(
            "model.cache_dir: a plan may not name a folder at the site; the site uses its own model_cache"
        )


def site_model(plan: SitePlan, site: SiteConfig) -> ModelConfig:
    """The model config a site loads: the plan's (checked) choice in the site's own cache folder."""
    return dataclasses.replace(plan.model, cache_dir=site.model_cache)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
