"""Towns and cities by name: a list of 31,000 places of GeoNames, in capitalised text or in capitals after a cue.

Part of fedcare's rule detector (common.deid.rules). The list (places.json, built by benchmarks/deid_names.py
from GeoNames' towns and cities of 15,000 people or more, CC BY 4.0) holds no lower-case English word, eponym,
country, clinical word or drug, so "Reading", "Normal" and "Bath" are not in it. A listed place counts when it
is the whole run of capitalised words it stands in ("Harrogate", "Cape Town"; not "Boston Scientific"), and
not before a disease, a test or an eponym head ("Norwalk virus", "Hartford nomogram"). In text written in
capitals it needs a place cue before it ("LIVES IN MORECAMBE", "FROM HARROGATE").
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path

from common.deid import names
from common.deid.base import Finding
from common.deid.words import CITY_PREFIXES, STOP_WORDS

# A run of capitalised words (or words in capitals) on one line: "Cape Town", "Oakfield Nursing Home".
_RUN = re.compile(r"(?<![\w'’-])[A-ZÀ-Þ][\w'’-]*(?:[ \t]+[A-ZÀ-Þ][\w'’-]*)*")
_WORD = re.compile(r"[^\W\d_][\w'’-]*")
# "Epworth 16", "Glasgow 14": a place name before a small number is a score.
_SCORE_AFTER = re.compile(r"[ \t]*[:=]?[ \t]*\d{1,2}(?![\w]|\.\d)")
_CAPS_CUE = re.compile(r"(?:\b(?:IN|FROM|AT|NEAR|TO|OF)|[,(])[ \t]*$")
_LONGEST = 3


@cache
def listed() -> frozenset[str]:
    """The place list, lower case (several words joined by one space)."""
    # JSON (not .txt) so that Flower's app bundle, which carries .json but no .txt, ships it to a site.
    return frozenset(json.loads(Path(__file__).with_name("places.json").read_text(encoding="utf-8")))


def places(text: str, is_eponym: Callable[[str, int, list[str]], bool]) -> Iterator[Finding]:
    """Listed towns and cities in text, as ADDRESS findings.

    Args:
        text: The text.
        is_eponym: rules._is_eponym(text, end, words): whether a run is an eponym or names a disease.
    """
    known = listed()
    for run in _RUN.finditer(text):
        words = list(_WORD.finditer(run.group()))
        if run.group().isupper():
            yield from _in_capitals(text, run.start(), words, known, is_eponym)
            continue
        # A capitalised function word opening a sentence is not part of the place: "In Harrogate", "From Leeds".
        while len(words) > 1 and words[0].group().lower() in STOP_WORDS - CITY_PREFIXES:
            words.pop(0)
        if not 0 < len(words) <= _LONGEST or not all(
            word.group()[1:].islower() or "-" in word.group() for word in words
        ):
            continue
        if " ".join(names._plain(word.group()) for word in words) not in known:
            continue
        start, end = names._strip_possessive(text, run.start() + words[0].start(), run.start() + words[-1].end())
        if is_eponym(text, end, [word.group() for word in words]) or names._TEST_AFTER.match(text, end):
            continue
        if _SCORE_AFTER.match(text, end):
            continue
        yield Finding("ADDRESS", start, end)


def _in_capitals(
    text: str,
    offset: int,
    words: list[re.Match[str]],
    known: frozenset[str],
    is_eponym: Callable[[str, int, list[str]], bool],
) -> Iterator[Finding]:
    # A note in capitals is one long run: look for listed places after a cue word inside it.
    if not names._mostly_capitals(text, offset):
        return
    index = 0
    while index < len(words):
        for size in range(min(_LONGEST, len(words) - index), 0, -1):
            chunk = words[index : index + size]
            start, end = offset + chunk[0].start(), offset + chunk[-1].end()
            key = " ".join(names._plain(word.group()) for word in chunk)
            if (
                key in known
                and len(key) >= 4
                and _CAPS_CUE.search(text, max(0, start - 8), start)
                and not is_eponym(text, end, [word.group() for word in chunk])
                and not names._TEST_AFTER.match(text, end)
                and not _SCORE_AFTER.match(text, end)
            ):
                yield Finding("ADDRESS", *names._strip_possessive(text, start, end))
                index += size
                break
        else:
            index += 1
