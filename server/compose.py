"""Hydra at the edge: compose ``conf/`` with overrides into a plain dict and a typed RunConfig."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import conf
from common.config import RunConfig, run_config_from_dict
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
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(f"config overrides {list(overrides)}: {err}") from err
    raw = OmegaConf.to_container(composed, resolve=True)
    assert isinstance(raw, dict)  # a mapping at the top of config.yaml, by construction
    return run_config_from_dict(raw), raw
