"""Hydra at the edge: compose ``conf/`` with overrides into a plain dict and a typed RunConfig."""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

import conf
from common.config import RunConfig, config_keys, run_config_from_dict
from common.errors import ConfigError

CONF_DIR = Path(conf.__file__).resolve().parent


def compose(overrides: list[str] | tuple[str, ...] = ()) -> tuple[RunConfig, dict[str, Any]]:
    """Compose ``conf/config.yaml`` with Hydra ``overrides`` (e.g. ``num_sites=5``).

    Raises:
        ConfigError: on an override Hydra rejects or a value the typed config rejects.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            composed = hydra_compose(config_name="config", overrides=list(overrides))
        raw = OmegaConf.to_container(composed, resolve=True)
    except (HydraException, OmegaConfBaseException, ValueError) as err:  # ValueError: e.g. the override "=3"
        raise ConfigError(hydra_error_line(str(err), overrides)) from None
    assert isinstance(raw, dict)  # a mapping at the top of config.yaml, by construction
    return run_config_from_dict(raw), raw


def hydra_error_line(text: str, overrides: list[str] | tuple[str, ...] = ()) -> str:
    """Hydra's multi-line error for a bad override as one line naming the key and the nearest valid names."""
    missing = re.search(r"Could not find '([^']+)/([^'/]+)'", text)
    if missing:  # a group option that does not exist, e.g. model=tinyy
        group, option = missing.groups()
        options = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
        return f"{group}={option}: no such option in conf/{group}/" + _nearest(option, options, "options")
    unknown = re.search(r"Could not override '([^']+)'", text) or re.search(r"Key '([^']+)' is not in struct", text)
    if unknown:  # a key or group that does not exist, e.g. num_site=3
        key = unknown.group(1)
        prefix = key.rpartition(".")[0]
        names = [k for k in config_keys() if k.rpartition(".")[0] == prefix]
        if not prefix:
            names += [p.name for p in CONF_DIR.iterdir() if p.is_dir() and not p.name.startswith("_")]
        names = sorted(set(names))
        return f"{key}: unknown key" + _nearest(key, names, "keys here")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("See https://")]
    return f"config override {_unparsable(overrides)!r}: " + ": ".join(lines[:3])


def _unparsable(overrides: list[str] | tuple[str, ...]) -> str:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for override in overrides:
        try:
            parser.parse_override(override)
        except Exception:  # noqa: BLE001 - Hydra's parse errors have several types
            return override
    return " ".join(overrides)


def _nearest(word: str, names: list[str], what: str) -> str:
    near = difflib.get_close_matches(word, names, n=3, cutoff=0.6)
    if near:
        return "; did you mean " + " or ".join(near) + "?"
    return f"; {what}: {', '.join(names)}" if names else ""
