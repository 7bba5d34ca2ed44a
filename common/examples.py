"""Records -> token ids with answer-only labels; train/eval splits; Poisson-sampled batches."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from common.errors import DataError
from common.records import ChatRecord

if TYPE_CHECKING:
    import torch

IGNORE_INDEX = -100  # label value torch's cross-entropy skips: prompt and padding tokens


@dataclass(frozen=True)
class TokenizedExample:
    """One training example: ids after the chat template, and labels set on the answer only."""

    input_ids: tuple[int, ...]
    labels: tuple[int, ...]


def tokenize_record(record: ChatRecord, tokenizer: Any, max_seq_len: int) -> TokenizedExample:
    """Apply the chat template; label only the completion; cap at ``max_seq_len`` tokens.

    A long prompt is cut from the left (its end is closest to the answer) so that at least a
    quarter of the budget remains for answer tokens; the answer is then cut from the right.
    """
    turns = [{"role": role, "content": content} for role, content in record.prompt]
    if getattr(tokenizer, "chat_template", None):
        prompt_ids = list(
            tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=True, return_dict=True)[
                "input_ids"
            ]
        )
        full = turns + [{"role": "assistant", "content": record.completion}]
        full_ids = list(tokenizer.apply_chat_template(full, tokenize=True, return_dict=True)["input_ids"])
        if full_ids[: len(prompt_ids)] != prompt_ids:  # template re-renders earlier turns: fall back
            answer_ids = tokenizer(record.completion, add_special_tokens=False)["input_ids"]
            full_ids = prompt_ids + list(answer_ids) + [tokenizer.eos_token_id]
    else:  # a base model without a chat template: plain "prompt\n" + answer + eos
        prompt_text = "\n".join(content for _, content in record.prompt) + "\n"
        prompt_ids = list(tokenizer(prompt_text)["input_ids"])
        answer_ids = tokenizer(record.completion, add_special_tokens=False)["input_ids"]
        full_ids = prompt_ids + list(answer_ids) + [tokenizer.eos_token_id]
    answer = full_ids[len(prompt_ids) :]
    keep_prompt = min(len(prompt_ids), max_seq_len - min(len(answer), max(1, max_seq_len // 4)))
    prompt_part = prompt_ids[len(prompt_ids) - keep_prompt :] if keep_prompt > 0 else []
    answer_part = answer[: max_seq_len - len(prompt_part)]
    ids = tuple(prompt_part + answer_part)
    labels = tuple([IGNORE_INDEX] * len(prompt_part) + answer_part)
    return TokenizedExample(input_ids=ids, labels=labels)


def tokenize_records(
    records: Sequence[ChatRecord], tokenizer: Any, max_seq_len: int, source: str = "data"
) -> list[TokenizedExample]:
    """Tokenize every record; raises if one ends up with no answer token.

    Raises:
        DataError: naming ``source`` and the record's position, never its text.
    """
    out = []
    for i, record in enumerate(records, start=1):
        example = tokenize_record(record, tokenizer, max_seq_len)
        if all(label == IGNORE_INDEX for label in example.labels):
            raise DataError(f"{source} record {i}: the answer has no tokens after the chat template")
        out.append(example)
    return out


def split_indices(n: int, eval_fraction: float, seed: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Deterministic disjoint (train, eval) index arrays covering ``range(n)``; both non-empty.

    Raises:
        DataError: when there are too few records to hold one out and still train.
    """
    if n < 3:
        raise DataError(f"data: a site needs at least 3 records (2 to train, 1 to evaluate), found {n}")
    order = np.random.default_rng(seed).permutation(n)
    n_eval = min(n - 2, max(1, round(n * eval_fraction)))
    return np.sort(order[n_eval:]), np.sort(order[:n_eval])


def poisson_batches(n: int, sample_rate: float, steps: int, rng: np.random.Generator) -> list[npt.NDArray[np.int64]]:
    """``steps`` batches, each keeping every index independently with probability ``sample_rate``.

    Poisson sampling is what the DP accountant assumes; fixed-size shuffled batches would make the
    reported epsilon an understatement. Batches may be empty.
    """
    return [np.flatnonzero(rng.random(n) < sample_rate) for _ in range(steps)]


def poisson_unit_batches(
    units: Sequence[int], sample_rate: float, steps: int, rng: np.random.Generator
) -> list[npt.NDArray[np.int64]]:
    """Poisson sampling of privacy UNITS (patients): each unit is kept with ``sample_rate`` and brings
    all of its examples, so a patient's records are never split across a sampling decision.

    Args:
        units: the unit id of each example.

    Returns:
        ``steps`` arrays of example indices, grouped unit by unit.
    """
    ids = np.asarray(units)
    distinct = np.unique(ids)
    members = {u: np.flatnonzero(ids == u) for u in distinct.tolist()}
    batches = []
    for _ in range(steps):
        chosen = distinct[rng.random(len(distinct)) < sample_rate]
        parts = [members[u] for u in chosen.tolist()]
        batches.append(np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64))
    return batches


def split_units(units: Sequence[int], eval_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Train/eval example indices split by unit, so no patient is in both."""
    ids = np.asarray(units)
    distinct = np.unique(ids)
    train_u, eval_u = split_indices(len(distinct), eval_fraction, seed)
    train_set = set(distinct[train_u].tolist())
    train = [i for i, u in enumerate(ids.tolist()) if u in train_set]
    evaluation = [i for i, u in enumerate(ids.tolist()) if u not in train_set]
    return train, evaluation


def collate(examples: Sequence[TokenizedExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch into ``input_ids``, ``attention_mask`` and ``labels`` tensors."""
    import torch

    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        ids[row, : len(e.input_ids)] = torch.tensor(e.input_ids)
        labels[row, : len(e.labels)] = torch.tensor(e.labels)
        mask[row, : len(e.input_ids)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
