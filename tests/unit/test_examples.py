"""Tokenization with answer-only labels, splits and Poisson batches."""

from __future__ import annotations

import numpy as np
import pytest

from common.errors import DataError
from common.examples import IGNORE_INDEX, collate, poisson_batches, split_indices, tokenize_record
from common.records import ChatRecord

RECORD = ChatRecord(prompt=(("user", "What is HbA1c?"),), completion="A 3-month average of blood glucose.")


def test_labels_cover_exactly_the_answer_tokens(tiny) -> None:
    _, _, tokenizer = tiny
    ex = tokenize_record(RECORD, tokenizer, 256)
    n_answer = sum(1 for label in ex.labels if label != IGNORE_INDEX)
    answer = tokenizer.decode([t for t, lab in zip(ex.input_ids, ex.labels, strict=True) if lab != IGNORE_INDEX])
    assert answer.startswith(RECORD.completion)  # the answer, then the end-of-turn token(s)
    assert n_answer < len(ex.input_ids)
    prompt = tokenizer.decode([t for t, lab in zip(ex.input_ids, ex.labels, strict=True) if lab == IGNORE_INDEX])
    assert "What is HbA1c?" in prompt and RECORD.completion not in prompt


def test_long_records_are_capped_and_keep_answer_tokens(tiny) -> None:
    _, _, tokenizer = tiny
    long = ChatRecord(prompt=(("user", "symptom " * 200),), completion="plan " * 200)
    ex = tokenize_record(long, tokenizer, 64)
    assert len(ex.input_ids) == 64
    assert sum(1 for label in ex.labels if label != IGNORE_INDEX) >= 16


def test_split_indices_are_disjoint_cover_all_and_deterministic() -> None:
    train, evaluation = split_indices(50, 0.2, seed=3)
    assert len(evaluation) == 10
    assert sorted(np.concatenate([train, evaluation]).tolist()) == list(range(50))
    again = split_indices(50, 0.2, seed=3)
    assert np.array_equal(train, again[0])


def test_split_indices_rejects_too_few_records() -> None:
    with pytest.raises(DataError, match="at least 3 records"):
        split_indices(2, 0.2, seed=0)


def test_poisson_batches_have_the_expected_mean_size() -> None:
    batches = poisson_batches(100, 0.1, 2000, np.random.default_rng(0))
    sizes = [len(b) for b in batches]
    assert np.mean(sizes) == pytest.approx(10, rel=0.05)
    assert np.var(sizes) == pytest.approx(9, rel=0.15)  # binomial variance n q (1 - q): not fixed-size


def test_collate_pads_right_and_masks_padding(tiny) -> None:
    _, _, tokenizer = tiny
    a = tokenize_record(RECORD, tokenizer, 256)
    b = tokenize_record(ChatRecord(prompt=(("user", "Hi"),), completion="Hello"), tokenizer, 256)
    batch = collate([a, b], pad_id=tokenizer.pad_token_id)
    assert batch["input_ids"].shape == (2, len(a.input_ids))
    assert int(batch["attention_mask"][1].sum()) == len(b.input_ids)
    assert (batch["labels"][1, len(b.input_ids) :] == IGNORE_INDEX).all()
