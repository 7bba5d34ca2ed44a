"""Per-process caches of a site worker: the LoRA-wrapped base model and each site's tokenized data.

A simulation worker serves many virtual hospitals over many rounds; the base model is loaded once
per process and the adapter weights are overwritten from each round's message, so no round ever
reloads the model.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch

from common.adapters import adapter_arrays, attach_lora, load_adapter_arrays
from common.config import AdapterConfig, DataConfig, ModelConfig, SitePlan
from common.datasets import load_site_data
from common.deid import deidentify
from common.examples import TokenizedExample, split_indices, split_units, tokenize_records
from common.model import load_model_and_tokenizer, resolve_device, resolve_precision

log = logging.getLogger("fedcare.site")
_lock = threading.Lock()
_model: tuple[Any, Any, Any, Any] | None = None  # (key, peft model, tokenizer, the adapter's seeded init)
_sites: dict[Any, SiteExamples] = {}


@dataclass(frozen=True)
class SiteExamples:
    """A site's tokenized records, split once into training and held-out evaluation examples."""

    name: str
    train: list[TokenizedExample]
    eval: list[TokenizedExample]
    phi_counts: dict[str, int]  # identifiers scrubbed per type (counts only, never values)
    train_units: list[int] | None = None  # patient (privacy unit) of each training example, when known
    eval_units: list[int] | None = None  # patient of each held-out example, when known


def model_for(model_cfg: ModelConfig, lora_cfg: AdapterConfig, seed: int, *, initial: bool = False) -> tuple[Any, Any]:
    """The cached (PeftModel, tokenizer); built on first use or when the model/LoRA config changes.

    The adapter holds whatever was last loaded or trained into it in this process (a site always
    loads the received arrays first). ``initial=True`` resets it to its seeded init, what the
    coordinator starts a run from: for code that trains from the start after sites of this process
    trained (``fedcare compare`` after an in-process run).
    """
    global _model
    key = (model_cfg, lora_cfg, seed)
    with _lock:
        if _model is None or _model[0] != key:
            _model = None  # free the old model before loading another
            if model_cfg.num_threads:
                torch.set_num_threads(model_cfg.num_threads)
            base, tokenizer = load_model_and_tokenizer(model_cfg)
            peft_model = attach_lora(base, lora_cfg, seed=seed)
            _model = (key, peft_model, tokenizer, adapter_arrays(peft_model))
            log.info(
                "loaded base model %s (%s on %s) with LoRA r=%d on %s",
                model_cfg.name_or_path,
                precision_for(model_cfg),
                resolve_device(model_cfg.device),
                lora_cfg.rank,
                ",".join(lora_cfg.target_modules),
            )
        if initial:
            load_adapter_arrays(_model[1], _model[3])
        return _model[1], _model[2]


def precision_for(model_cfg: ModelConfig) -> str:
    """The precision this site computes in: ``model.precision`` with ``auto`` resolved for its hardware."""
    return resolve_precision(model_cfg.precision, resolve_device(model_cfg.device))


def examples_for(data_cfg: DataConfig, site_index: int, num_sites: int, plan: SitePlan, tokenizer: Any) -> SiteExamples:
    """Load, validate, tokenize and split a site's records once per process."""
    key = (data_cfg, num_sites, site_index, plan.model.name_or_path, plan.train.max_seq_len)
    with _lock:
        if key not in _sites:
            data = load_site_data(data_cfg, site_index, num_sites)
            records, counts = data.records, Counter[str]()
            if data_cfg.deid != "off":  # scrub identifiers before any token is made from the text
                records = []
                for clean, found in deidentify(
                    data.records, data_cfg.deid, data_cfg.deid_replace, data_cfg.deid_workers
                ):
                    records.append(clean)
                    counts.update(found)
                log.info(
                    "site %s: de-identification replaced %d identifiers (%s)",
                    data.name,
                    sum(counts.values()),
                    ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none found",
                )
            examples = tokenize_records(records, tokenizer, plan.train.max_seq_len, source=data.name)
            seed = data_cfg.seed + site_index
            if all(r.patient_id is not None for r in data.records):
                codes = {pid: n for n, pid in enumerate(dict.fromkeys(r.patient_id for r in data.records))}
                units = [codes[r.patient_id] for r in data.records]
                train_idx, eval_idx = split_units(units, data_cfg.eval_fraction, seed)  # no patient in both
                train_units: list[int] | None = [units[i] for i in train_idx]
                eval_units: list[int] | None = [units[i] for i in eval_idx]
            else:
                train_idx, eval_idx = (list(a) for a in split_indices(len(examples), data_cfg.eval_fraction, seed))
                train_units = eval_units = None
            _sites[key] = SiteExamples(
                data.name,
                [examples[i] for i in train_idx],
                [examples[i] for i in eval_idx],
                dict(counts),
                train_units,
                eval_units,
            )
        return _sites[key]
