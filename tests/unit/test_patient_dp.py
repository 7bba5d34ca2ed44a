"""Patient-level DP: sampling, splitting and clipping treat all of one patient's records as one unit."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from client.train import DPSettings, average_grad_samples_by_unit, train_round
from common.adapters import adapter_arrays, attach_lora
from common.config import AdapterConfig, TrainConfig
from common.errors import DataError
from common.examples import poisson_unit_batches, split_units, tokenize_records
from common.records import load_records
from common.synthetic import generate_site_records

UNITS = [0, 0, 0, 1, 2, 2, 3, 4, 4, 4, 4, 5]  # patient of each record


def test_a_patient_is_sampled_with_all_or_none_of_their_records() -> None:
    batches = poisson_unit_batches(UNITS, 0.3, 500, np.random.default_rng(0))
    members = {u: {i for i, v in enumerate(UNITS) if v == u} for u in set(UNITS)}
    for batch in batches:
        chosen = set(batch.tolist())
        for unit, rows in members.items():
            assert rows <= chosen or not (rows & chosen), f"patient {unit} split in a batch"
    sizes = [len({UNITS[i] for i in b}) for b in batches]
    assert np.mean(sizes) == pytest.approx(0.3 * 6, rel=0.1)  # q x patients, not q x records


def test_split_units_never_puts_a_patient_in_both_splits() -> None:
    train, evaluation = split_units(UNITS, 0.34, seed=1)
    assert sorted(train + evaluation) == list(range(len(UNITS)))
    assert not {UNITS[i] for i in train} & {UNITS[i] for i in evaluation}


def test_grad_samples_are_averaged_into_one_row_per_patient() -> None:
    p = torch.nn.Parameter(torch.zeros(2))
    p.grad_sample = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 5.0]])
    assert average_grad_samples_by_unit([p], [7, 7, 9]) == 2
    assert torch.equal(p.grad_sample, torch.tensor([[2.0, 0.0], [0.0, 5.0]]))


def test_patient_level_dp_round_trains(tiny) -> None:
    _, base, tokenizer = tiny
    model = attach_lora(copy.deepcopy(base), AdapterConfig(), seed=0)
    examples = tokenize_records(generate_site_records(0, 24), tokenizer, 96)
    units = [i // 3 for i in range(len(examples))]  # 8 patients with 3 records each
    before = adapter_arrays(model)
    dp = DPSettings(noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=2 / 8)
    result = train_round(
        model,
        examples,
        TrainConfig(local_steps=4, batch_size=2),
        precision="fp32",
        pad_id=tokenizer.pad_token_id,
        dp=dp,
        rng=np.random.default_rng(0),
        units=units,
    )
    assert result.update_norm > 0 and result.examples_seen % 3 == 0  # whole patients only
    assert any(not np.array_equal(before[k], v) for k, v in adapter_arrays(model).items())


def test_load_records_reads_patient_ids_and_rejects_missing_ones(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    rows = [{"question": "q", "answer": "a", "mrn": "P-1"}, {"question": "q", "answer": "a", "mrn": 42}]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    assert [r.patient_id for r in load_records(path, patient_field="mrn")] == ["P-1", "42"]
    path.write_text(json.dumps(rows[0]) + "\n" + json.dumps({"question": "Jane Roe", "answer": "a"}))
    with pytest.raises(DataError, match="p.jsonl line 2: field 'mrn'") as info:
        load_records(path, patient_field="mrn")
    assert "Jane" not in str(info.value)
