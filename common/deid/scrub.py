"""Scrubbing: resolve a detector's overlapping findings, replace them by typed placeholders, load backends."""

from __future__ import annotations

import dataclasses
import functools
import importlib
import re
from collections import Counter
from collections.abc import Callable

from common.deid.base import PHI_TYPES, RANK, Detector, Finding
from common.deid.rules import RuleDetector
from common.errors import ConfigError
from common.records import ChatRecord

_PLACEHOLDER = re.compile(r"\[(?:" + "|".join(PHI_TYPES) + r")\]")
# RuleDetector holds no state, so one instance serves every call that names no detector.
_BUILT_IN = RuleDetector()


def detect(text: str, detector: Detector | None = None) -> list[Finding]:
    """Find the identifier spans scrub would replace in one pass: non-overlapping, in text order.

    Overlaps are resolved by keeping the longest span, then the kind earlier in the priority order
    (cue-labelled identifiers, then contact details, dates, ages, places and names). Spans touching an existing
    placeholder are dropped so that placeholders are never altered.

    Args:
        text: The text to examine.
        detector: Backend to use; the built-in RuleDetector when None.

    Returns:
        The selected findings, sorted by start offset.

    Raises:
        ConfigError: The detector returned a finding of a kind outside PHI_TYPES.
    """
    backend = detector if detector is not None else _BUILT_IN
    placeholders = [(match.start(), match.end()) for match in _PLACEHOLDER.finditer(text)]
    candidates: list[Finding] = []
    for finding in backend.find(text):
        if finding.kind not in RANK:
            # The kind is not echoed: a faulty backend could have put record text in it.
            raise ConfigError(f"detector {type(backend).__name__} returned a finding of a kind not in PHI_TYPES")
        start, end = max(0, finding.start), min(len(text), finding.end)
        if start >= end or any(start < p_end and p_start < end for p_start, p_end in placeholders):
            continue
        candidates.append(Finding(finding.kind, start, end))
    candidates.sort(key=lambda finding: (finding.start - finding.end, RANK[finding.kind], finding.start))
    chosen: list[Finding] = []
    for finding in candidates:
        if all(finding.end <= kept.start or kept.end <= finding.start for kept in chosen):
            chosen.append(finding)
    return sorted(chosen, key=lambda finding: finding.start)


def scrub(
    text: str, detector: Detector | None = None, surrogates: Callable[[str, str], str] | None = None
) -> tuple[str, Counter[str]]:
    """Replace every identifier in text by a typed placeholder such as "[DATE]", or by a surrogate.

    Passes repeat until the detector finds nothing new, so scrub(scrub(x)[0])[0] == scrub(x)[0] for the rules.
    This ends: every pass turns at least one character outside placeholders into a placeholder and never touches
    one. Passes after the first call a detector's find_again(text) where it has one: a language model reads the
    text once (reading it again after replacement would double the cost for little gain). Surrogates replace
    the placeholders once the passes are done, so a fake value is never scanned again.

    Args:
        text: The text to scrub.
        detector: Backend to use; the built-in RuleDetector when None.
        surrogates: (kind, original value) -> replacement, e.g. a common.deid.surrogates.Surrogates; None keeps
            typed placeholders.

    Returns:
        (scrubbed text, number of identifiers replaced per kind). The counts never carry values.

    Raises:
        ConfigError: The detector returned a finding of a kind outside PHI_TYPES.
    """
    counts: Counter[str] = Counter()
    # The value behind each placeholder of the current text, in text order (None: it was there to begin with).
    originals: list[tuple[str, str] | None] = [None] * len(_PLACEHOLDER.findall(text))
    backend: Detector = detector if detector is not None else _BUILT_IN
    while True:
        findings = detect(text, backend)
        backend = _Again(backend)
        if not findings:
            break
        existing = [match.start() for match in _PLACEHOLDER.finditer(text)]
        events = sorted(
            [(start, original) for start, original in zip(existing, originals, strict=True)]
            + [(f.start, (f.kind, text[f.start : f.end])) for f in findings],
            key=lambda e: e[0],
        )
        originals = [original for _, original in events]
        pieces: list[str] = []
        cursor = 0
        for finding in findings:
            pieces.append(text[cursor : finding.start])
            pieces.append(f"[{finding.kind}]")
            cursor = finding.end
            counts[finding.kind] += 1
        pieces.append(text[cursor:])
        text = "".join(pieces)
    if surrogates is None or not counts:
        return text, counts
    replacements = iter(originals)

    def fake(match: re.Match[str]) -> str:
        original = next(replacements)
        return match.group() if original is None else surrogates(*original)

    return _PLACEHOLDER.sub(fake, text), counts


def scrub_record(
    record: ChatRecord, detector: Detector | None = None, surrogates: Callable[[str, str], str] | None = None
) -> tuple[ChatRecord, Counter[str]]:
    """Scrub every prompt turn and the completion of a training record.

    Args:
        record: The record to scrub; roles and the patient id are kept as they are.
        detector: Backend to use; the built-in RuleDetector when None.
        surrogates: As for scrub; pass one mapping per record so a value gets the same fake in every turn.

    Returns:
        (scrubbed record, identifiers replaced per kind, summed over all turns).
    """
    counts: Counter[str] = Counter()
    turns: list[tuple[str, str]] = []
    for role, content in record.prompt:
        scrubbed, found = scrub(content, detector, surrogates)
        turns.append((role, scrubbed))
        counts.update(found)
    completion, found = scrub(record.completion, detector, surrogates)
    counts.update(found)
    return dataclasses.replace(record, prompt=tuple(turns), completion=completion), counts


# Library backends, by the name a site configures; imported only when named (they pull in spaCy or NLTK data).
BACKENDS: dict[str, str] = {
    "presidio": "common.deid.presidio:PresidioDetector",
    "presidio-defaults": "common.deid.presidio:PresidioDefaults",
    "philter": "common.deid.philter:PhilterDetector",
}


class Union:
    """Several detectors as one: every finding of each; detect() keeps the longest of overlapping spans."""

    def __init__(self, detectors: list[Detector]) -> None:
        self.detectors = tuple(detectors)

    def find(self, text: str) -> list[Finding]:
        """Findings of every member detector, in no particular order."""
        return [finding for detector in self.detectors for finding in detector.find(text)]

    def find_again(self, text: str) -> list[Finding]:
        """Later scrub passes: each member's find_again where it has one (see scrub)."""
        return [finding for detector in self.detectors for finding in _again(detector)(text)]


def _again(detector: Detector) -> Callable[[str], list[Finding]]:
    return getattr(detector, "find_again", detector.find)


class _Again:
    def __init__(self, detector: Detector) -> None:
        self.find = _again(detector)


def load_detector(spec: str) -> Detector:
    """Build a de-identification backend from a configuration string.

    Args:
        spec: One part or several joined by "+" (their findings are combined, e.g. "presidio+rules"). A part is
            "rules" (the built-in RuleDetector), a library backend named in BACKENDS ("presidio", "philter"),
            or "package.module:ClassName" for a site's own backend; a class is instantiated without arguments
            and must have a find(text) -> list[Finding] method. Library backends are built once per process.

    Returns:
        The detector.

    Raises:
        ConfigError: A part is none of these forms, its module or class cannot be loaded, or it has no find.
    """
    parts = [part.strip() for part in spec.split("+")]
    if not all(parts):
        raise ConfigError(
            f"unknown de-identification detector {spec!r}; use 'rules', 'presidio', 'philter', "
            "'package.module:ClassName' or several joined by '+'"
        )
    detectors = [_part(part) for part in parts]
    return detectors[0] if len(detectors) == 1 else Union(detectors)


def _part(spec: str) -> Detector:
    if spec == "rules":
        return _BUILT_IN
    if spec in BACKENDS:
        return _library_backend(spec)
    return _build(spec)


@functools.cache
def _library_backend(name: str) -> Detector:
    # Loading a spaCy pipeline takes seconds; every site of a simulation shares one stateless instance.
    return _build(BACKENDS[name])


def _build(spec: str) -> Detector:
    module_name, separator, class_name = spec.partition(":")
    if not separator or not module_name or not class_name.isidentifier():
        raise ConfigError(
            f"unknown de-identification detector {spec!r}; use 'rules', 'presidio', 'philter', "
            "'package.module:ClassName' or several joined by '+'"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(f"de-identification detector module {module_name!r} cannot be imported ({error})") from None
    factory = getattr(module, class_name, None)
    if factory is None or not callable(factory):
        raise ConfigError(f"module {module_name!r} has no class {class_name!r} for de-identification")
    try:
        detector = factory()
    except ConfigError:
        raise
    except Exception as error:  # noqa: BLE001 - any failure of third-party construction is a configuration problem
        raise ConfigError(f"de-identification detector {spec!r} cannot be created ({type(error).__name__})") from None
    if not isinstance(detector, Detector):
        raise ConfigError(f"de-identification detector {spec!r} has no find(text) method")
    return detector
