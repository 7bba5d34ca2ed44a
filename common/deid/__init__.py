"""De-identify clinical text before tokenization: typed placeholders for Safe Harbor identifiers, counts only.

The package is the contract (`base`: kinds, Finding, Detector), scrubbing (`scrub`), fedcare's own offline rules
(`rules`, `words`) and optional library backends (`presidio`, `philter`) that are imported only when a site's
configuration names them, so nothing in common/ depends on a third-party NLP library.
"""

from common.deid.base import PHI_TYPES, Detector, Finding
from common.deid.rules import RuleDetector
from common.deid.scrub import (
    deidentify,
    detect,
    find_all,
    load_detector,
    scrub,
    scrub_record,
    scrub_records,
    scrub_texts,
)

__all__ = [
    "PHI_TYPES",
    "Detector",
    "Finding",
    "RuleDetector",
    "deidentify",
    "detect",
    "find_all",
    "load_detector",
    "scrub",
    "scrub_record",
    "scrub_records",
    "scrub_texts",
]
