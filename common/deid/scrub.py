"""Scrubbing: resolve a detector's overlapping findings, replace them by typed placeholders, load backends."""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import importlib
import multiprocessing
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor

from common.deid.base import PHI_TYPES, RANK, Detector, Finding
from common.deid.rules import RuleDetector
from common.errors import ConfigError
from common.records import ChatRecord

_PLACEHOLDER = re.compile(r"\[(?:" + "|".join(PHI_TYPES) + r")\]")
# RuleDetector holds no state, so one instance serves every call that names no detector.
_BUILT_IN = RuleDetector()


def find_all(texts: Sequence[str], detector: Detector | None = None) -> list[list[Finding]]:
    """A detector's findings for each of several texts, in one batch where the backend offers find_many.

    A language-model backend (Presidio's spaCy pipeline) runs faster on a batch of texts than on one text at a
    time; rule backends simply run find on each.
    """
    backend = detector if detector is not None else _BUILT_IN
    many = getattr(backend, "find_many", None)
    if many is None:
        return [backend.find(text) for text in texts]
    found = many(list(texts))
    if len(found) != len(texts):
        raise ConfigError(f"detector {type(backend).__name__} returned findings for {len(found)} of {len(texts)} texts")
    return found


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
    return _select(text, backend.find(text), backend)


def _select(text: str, found: list[Finding], backend: object) -> list[Finding]:
    placeholders = [(match.start(), match.end()) for match in _PLACEHOLDER.finditer(text)]
    candidates: list[Finding] = []
    for finding in found:
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
    backend = detector if detector is not None else _BUILT_IN
    return _scrub(text, backend.find(text), backend, surrogates)


def scrub_texts(
    texts: Sequence[str], detector: Detector | None = None, surrogates: Callable[[str, str], str] | None = None
) -> list[tuple[str, Counter[str]]]:
    """scrub for each of several texts, the first pass over all of them in one batch (see find_all)."""
    backend = detector if detector is not None else _BUILT_IN
    return [
        _scrub(text, found, backend, surrogates) for text, found in zip(texts, find_all(texts, backend), strict=True)
    ]


def _scrub(
    text: str, found: list[Finding], backend: Detector, surrogates: Callable[[str, str], str] | None
) -> tuple[str, Counter[str]]:
    # found: the backend's findings in text (the first pass); later passes call its find_again.
    counts: Counter[str] = Counter()
    # The value behind each placeholder of the current text, in text order (None: it was there to begin with).
    originals: list[tuple[str, str] | None] = [None] * len(_PLACEHOLDER.findall(text))
    again = _again(backend)
    while True:
        findings = _select(text, found, backend)
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
        found = again(text)
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
    return next(scrub_records([record], detector, (lambda: surrogates) if surrogates is not None else None))


def scrub_records(
    records: Iterable[ChatRecord],
    detector: Detector | None = None,
    surrogates: Callable[[], Callable[[str, str], str]] | None = None,
    batch: int = 64,
) -> Iterator[tuple[ChatRecord, Counter[str]]]:
    """scrub_record for each record, the turns of `batch` records at a time through the detector in one batch.

    Args:
        records: The records to scrub.
        detector: Backend to use; the built-in RuleDetector when None.
        surrogates: Makes one surrogate mapping per record (e.g. common.deid.surrogates.Surrogates), or None for
            typed placeholders.
        batch: Records whose texts go through the detector together.

    Yields:
        (scrubbed record, identifiers replaced per kind), in the order of records.
    """
    backend = detector if detector is not None else _BUILT_IN
    chunk: list[ChatRecord] = []
    for record in records:
        chunk.append(record)
        if len(chunk) >= batch:
            yield from _scrub_chunk(chunk, backend, surrogates)
            chunk = []
    if chunk:
        yield from _scrub_chunk(chunk, backend, surrogates)


def _scrub_chunk(
    chunk: list[ChatRecord], backend: Detector, surrogates: Callable[[], Callable[[str, str], str]] | None
) -> Iterator[tuple[ChatRecord, Counter[str]]]:
    texts = [text for record in chunk for text in (*(content for _, content in record.prompt), record.completion)]
    found = iter(find_all(texts, backend))
    cursor = iter(texts)
    for record in chunk:
        fakes = surrogates() if surrogates is not None else None
        counts: Counter[str] = Counter()
        turns: list[tuple[str, str]] = []
        for role, _ in record.prompt:
            scrubbed, seen = _scrub(next(cursor), next(found), backend, fakes)
            turns.append((role, scrubbed))
            counts.update(seen)
        completion, seen = _scrub(next(cursor), next(found), backend, fakes)
        counts.update(seen)
        yield dataclasses.replace(record, prompt=tuple(turns), completion=completion), counts


# Records below which a site de-identifies in its own process: starting a worker and loading a spaCy pipeline in
# it takes seconds, which only pays off on a few thousand records (about a minute of work).
PARALLEL_MIN_RECORDS = 2000


def deidentify(
    records: Sequence[ChatRecord], spec: str, replace: str = "placeholder", workers: int = 0
) -> Iterator[tuple[ChatRecord, Counter[str]]]:
    """scrub_records for a site's records, on several CPU cores when there are many records.

    Args:
        records: The records to scrub.
        spec: The detector, as for load_detector ("presidio+rules", "rules", ...).
        replace: "placeholder" for typed placeholders, "surrogate" for consistent fakes (one mapping per record).
        workers: Processes to scrub in; 0 picks one per CPU core this process may use when there are at least
            PARALLEL_MIN_RECORDS records, else 1. Each worker builds its own detector from spec.

    Yields:
        (scrubbed record, identifiers replaced per kind), in the order of records.
    """
    count = workers or (_usable_cores() if len(records) >= PARALLEL_MIN_RECORDS else 1)
    count = max(1, min(count, len(records) // _CHUNK + 1))
    if count == 1:
        yield from scrub_records(records, load_detector(spec), _surrogates(replace))
        return
    # "spawn": the site process may hold threads (torch, Ray, gRPC) that a forked child would inherit locked.
    context = multiprocessing.get_context("spawn")
    chunks = [records[start : start + _CHUNK] for start in range(0, len(records), _CHUNK)]
    with ProcessPoolExecutor(count, mp_context=context, initializer=_start_worker, initargs=(spec,)) as pool:
        for done in pool.map(_scrub_in_worker, chunks, [replace] * len(chunks)):
            yield from done


_CHUNK = 256  # records a worker scrubs per task
_worker_detector: Detector | None = None
_worker_error: ConfigError | None = None


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _surrogates(replace: str) -> Callable[[], Callable[[str, str], str]] | None:
    if replace != "surrogate":
        return None
    from common.deid.surrogates import Surrogates

    return Surrogates


# glibc malloc: keep freed blocks up to these sizes in the heap. spaCy's network allocates and frees arrays of a
# few MB per batch; by default glibc maps each one fresh and unmaps it after, so every page is faulted in and
# zeroed again (about 1,270 page faults and 4 ms of system time per ~1,300-character record).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, <malloc.h>
_KEEP_BYTES = 64 << 20


def _keep_freed_memory() -> None:
    """In a de-identification worker (a process of its own): tell glibc malloc to reuse freed memory."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_MMAP_THRESHOLD, _KEEP_BYTES)
        libc.mallopt(_M_TRIM_THRESHOLD, 4 * _KEEP_BYTES)
    except (OSError, AttributeError):  # not glibc: keep the allocator's defaults
        pass


def _start_worker(spec: str) -> None:
    global _worker_detector, _worker_error
    _keep_freed_memory()
    try:
        _worker_detector = load_detector(spec)
    except ConfigError as error:  # raised with the first task: an initializer's exception only breaks the pool
        _worker_error = error


def _scrub_in_worker(chunk: Sequence[ChatRecord], replace: str) -> list[tuple[ChatRecord, Counter[str]]]:
    if _worker_error is not None:
        raise _worker_error
    return list(scrub_records(chunk, _worker_detector, _surrogates(replace)))


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

    def find_many(self, texts: list[str]) -> list[list[Finding]]:
        """Findings of every member detector for each text, each member batching where it can (see find_all)."""
        combined: list[list[Finding]] = [[] for _ in texts]
        for detector in self.detectors:
            for findings, more in zip(combined, find_all(texts, detector), strict=True):
                findings.extend(more)
        return combined

    def find_again(self, text: str) -> list[Finding]:
        """Later scrub passes: each member's find_again where it has one (see scrub)."""
        return [finding for detector in self.detectors for finding in _again(detector)(text)]


def _again(detector: Detector) -> Callable[[str], list[Finding]]:
    return getattr(detector, "find_again", detector.find)


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
