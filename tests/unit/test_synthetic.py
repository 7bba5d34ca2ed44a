"""Unit tests for common.synthetic: determinism, shape, round trip and non-IID sites."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from common.errors import ConfigError
from common.records import load_records
from common.synthetic import SPECIALTIES, generate_site_records, site_name, write_jsonl


def _words(records: list) -> set[str]:
    text = " ".join(record.completion + " " + " ".join(content for _, content in record.prompt) for record in records)
    return set(re.findall(r"[a-z]+", text.lower()))


def _jaccard(left: set[str], right: set[str]) -> float:
    return len(left & right) / len(left | right)


def test_specialties_are_distinct_and_at_least_eight() -> None:
    assert len(SPECIALTIES) >= 8
    assert len(set(SPECIALTIES)) == len(SPECIALTIES)


def test_site_name_includes_index_and_specialty() -> None:
    assert site_name(0) == f"hospital-00-{SPECIALTIES[0]}"
    assert site_name(3) == f"hospital-03-{SPECIALTIES[3]}"
    assert site_name(len(SPECIALTIES)) == f"hospital-{len(SPECIALTIES):02d}-{SPECIALTIES[0]}"


def test_generate_site_records_is_deterministic() -> None:
    assert generate_site_records(2, 40, seed=5) == generate_site_records(2, 40, seed=5)
    assert generate_site_records(2, 40, seed=5) != generate_site_records(2, 40, seed=6)


def test_generate_site_records_returns_requested_count_and_shape() -> None:
    records = generate_site_records(1, 57)
    assert len(records) == 57
    assert generate_site_records(1, 0) == []
    for record in records:
        assert [role for role, _ in record.prompt] == ["user"]
        assert record.completion.strip()
        words = len(record.prompt[0][1].split()) + len(record.completion.split())
        assert 30 <= words <= 120


def test_generate_site_records_mixes_three_task_kinds() -> None:
    prompts = [record.prompt[0][1] for record in generate_site_records(0, 200)]
    assert any(prompt.startswith("Write a clinical note") for prompt in prompts)
    assert any(prompt.startswith("Patient message:") for prompt in prompts)
    assert any(prompt.startswith("Answer this medical question") for prompt in prompts)
    notes = [record.completion for record in generate_site_records(0, 200) if "Chief complaint:" in record.completion]
    assert notes and all("Assessment:" in note and "Plan:" in note for note in notes)


def test_generate_site_records_differs_between_sites() -> None:
    first, second = generate_site_records(0, 150), generate_site_records(1, 150)
    assert site_name(0) != site_name(1)
    assert _jaccard(_words(first), _words(second)) < _jaccard(_words(first[:75]), _words(first[75:]))


def test_generate_site_records_uses_specialty_vocabulary() -> None:
    cardiology = " ".join(record.completion for record in generate_site_records(0, 100))
    endocrinology = " ".join(record.completion for record in generate_site_records(1, 100))
    assert "atrial fibrillation" in cardiology and "atrial fibrillation" not in endocrinology
    assert "levothyroxine" in endocrinology and "levothyroxine" not in cardiology


def test_generate_site_records_rejects_negative_arguments() -> None:
    with pytest.raises(ConfigError, match="num_records"):
        generate_site_records(0, -1)
    with pytest.raises(ConfigError, match="site_index"):
        generate_site_records(-1, 3)


def test_write_jsonl_round_trips_through_load_records(tmp_path: Path) -> None:
    records = generate_site_records(4, 30, seed=1)
    path = tmp_path / "nested" / f"{site_name(4)}.jsonl"
    write_jsonl(records, path)
    assert load_records(path) == records
