"""Which records a site trains on: built-in synthetic hospitals, one file per site, or one file split by a field."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.config import DataConfig
from common.errors import ConfigError, printable
from common.examples import split_indices
from common.partition import dirichlet_partition
from common.records import ChatRecord, ColumnMapping, field_values, load_records
from common.synthetic import generate_site_records, site_name


@dataclass(frozen=True)
class SiteData:
    """A site's records and a display name (file name, field value or synthetic hospital)."""

    name: str
    records: list[ChatRecord]


def load_site_data(cfg: DataConfig, site_index: int, num_sites: int) -> SiteData:
    """Records of site ``site_index`` (0-based) among ``num_sites``.

    Raises:
        ConfigError: when the data configuration cannot supply this site.
        DataError: when a file is missing or malformed (file and row named, never text).
    """
    if cfg.kind == "synthetic":
        records = generate_site_records(site_index, cfg.records_per_site, seed=cfg.seed)
        return SiteData(site_name(site_index), records)
    columns = ColumnMapping(cfg.prompt_column, cfg.completion_column) if cfg.prompt_column else None
    if cfg.dirichlet_alpha > 0:
        records, name = _dirichlet_site(cfg, columns, site_index, num_sites)
    elif cfg.partition_field:
        path = cfg.paths[0]
        values = field_values(path, cfg.partition_field)
        if site_index >= len(values):
            raise ConfigError(
                f"data.partition_field: {Path(path).name} has {len(values)} distinct "
                f"'{cfg.partition_field}' values, fewer than num_sites={num_sites}"
            )
        value = values[site_index]
        records = load_records(
            path, columns, where=(cfg.partition_field, value), patient_field=cfg.patient_field or None
        )
        name = value
    else:
        if site_index >= len(cfg.paths):
            raise ConfigError(f"data.paths: no file for site {site_index} ({len(cfg.paths)} given)")
        records = load_records(cfg.paths[site_index], columns, patient_field=cfg.patient_field or None)
        name = Path(cfg.paths[site_index]).stem
    if cfg.max_records_per_site:
        records = records[: cfg.max_records_per_site]
    return SiteData(name, records)


def _dirichlet_site(
    cfg: DataConfig, columns: ColumnMapping | None, site_index: int, num_sites: int
) -> tuple[list[ChatRecord], str]:
    """Site ``site_index``'s share of ``paths[0]`` under a Dirichlet(alpha) split over ``partition_field``."""
    path = cfg.paths[0]
    values = field_values(path, cfg.partition_field) if cfg.partition_field else [None]
    records: list[ChatRecord] = []
    labels: list[str | None] = []
    for value in values:
        part = load_records(
            path,
            columns,
            where=(cfg.partition_field, value) if value is not None else None,
            patient_field=cfg.patient_field or None,
        )
        records += part
        labels += [value] * len(part)
    parts = dirichlet_partition(labels, num_sites, cfg.dirichlet_alpha, seed=cfg.seed, min_size=2)
    return [records[i] for i in parts[site_index]], f"{Path(path).stem}-dirichlet-{site_index}"


def check_trainable(site: SiteData, cfg: DataConfig, batch_size: int) -> None:
    """Refuse, before anything starts, a site whose training split cannot fill one expected batch.

    Raises:
        ConfigError: naming ``train.batch_size``, the site and its training record count.
        DataError: when the site has too few records to split at all.
    """
    n_train = len(split_indices(len(site.records), cfg.eval_fraction, 0)[0])
    if batch_size > n_train:
        raise ConfigError(
            f"train.batch_size: {batch_size} is more than site {printable(site.name)}'s {n_train} "
            f"training records ({len(site.records)} records, data.eval_fraction={cfg.eval_fraction:g}); "
            f"lower train.batch_size to at most {n_train} or give the site more records"
        )
