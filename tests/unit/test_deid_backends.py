"""The library backends as they run at a site: Presidio with fedcare's selection, offline, combined with the rules."""

from __future__ import annotations

import pytest

from benchmarks.deid import load_frozen
from common.deid import detect, find_all, load_detector, scrub

pytest.importorskip("presidio_analyzer")


@pytest.fixture(scope="module")
def default():  # noqa: ANN201 - the default data.deid detector
    return load_detector("presidio+rules")


def test_presidio_plus_rules_finds_names_places_and_structured_identifiers(default) -> None:
    text = "Seen with Chidi Eze at home in Harrogate. NHS No: 943 476 5919, tel 07700 900461, on 14/07/2023."
    scrubbed, counts = scrub(text, default)
    for value in ("Chidi", "Eze", "Harrogate", "943 476 5919", "07700 900461", "14/07/2023"):
        assert value not in scrubbed
    assert counts["NAME"] >= 1 and counts["DATE"] == 1


def test_presidio_spans_that_are_not_names_are_dropped(default) -> None:
    text = (
        "Hb 68 -> 81. Started Sertraline and Keppra. Parkinson's disease. Crohn's disease, 2/3 blood culture bottles."
    )
    assert [text[f.start : f.end] for f in detect(text, default)] == []


def test_library_backends_are_built_once_and_read_the_text_once(default) -> None:
    assert load_detector("presidio") is load_detector("presidio")
    presidio = load_detector("presidio")
    assert presidio.find_again("Seen by Dr Okafor") == []  # type: ignore[attr-defined]
    assert "EMAIL" in [f.kind for f in presidio.find("Write to jane.doe@example.org please.")]


def test_presidio_batches_find_the_same_as_one_text_at_a_time(default) -> None:
    texts = [record.text for record in load_frozen()[:24]]
    presidio = load_detector("presidio")
    assert find_all(texts, presidio) == [presidio.find(text) for text in texts]
    assert find_all(texts, default) == [default.find(text) for text in texts]


def test_presidio_loads_only_spacys_entity_recognizer_and_finds_what_the_whole_pipeline_finds(default) -> None:
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import SpacyNlpEngine

    from common.deid.presidio import SPACY_MODEL, NoContext

    presidio = load_detector("presidio")
    analyzer = presidio._analyzer  # type: ignore[attr-defined]
    # No tok2vec, tagger, parser, attribute_ruler or lemmatizer is loaded, disabled or not.
    assert analyzer.nlp_engine.nlp["en"].component_names == ["ner"]
    whole = AnalyzerEngine(
        nlp_engine=SpacyNlpEngine(models=[{"lang_code": "en", "model_name": SPACY_MODEL}]),
        supported_languages=["en"],
        context_aware_enhancer=NoContext(),
    )
    assert "parser" in whole.nlp_engine.nlp["en"].pipe_names
    texts = [record.text for record in load_frozen()[:24]]
    texts.append("Mr Okafor, NHS number 943 476 5919, lives in Leeds; jane.doe@example.org, 10.0.0.12.")

    def found(engine: AnalyzerEngine, text: str) -> list[tuple[str, int, int, float]]:
        results = engine.analyze(text, language="en", entities=presidio._entities, score_threshold=0.0)  # type: ignore[attr-defined]
        return sorted((r.entity_type, r.start, r.end, r.score) for r in results)

    assert any(found(analyzer, text) for text in texts)
    assert [found(analyzer, text) for text in texts] == [found(whole, text) for text in texts]
