"""Names beyond capitalised text: a 37,000-name list of many cultures, names in lower case and ALL CAPS, cues.

Part of fedcare's rule detector (common.deid.rules runs these with its own name rules). The list
(names.json, a JSON list built by benchmarks/deid_names.py from Faker's name providers) holds only names that are no
lower-case English word, drug, eponym or clinical abbreviation, so a listed word is a name on its own; words
that are also ordinary words ("Grace", "Will", "Winter") need a title or a relation before them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path

from common.deid.base import Finding

_WORD = re.compile(r"[A-Za-zÀ-ÖØ-öø-ÿĀ-ž][\w'’-]*")
# Titles and relations, in any case, of the languages the notes mix in: a word after one is a name even when
# it is an ordinary word ("Dr Hope", "wife Grace") or written in lower case or capitals ("dr fernandes").
_TITLE = (
    r"dr|mr|mrs|ms|mx|miss|prof|professor|sr|sister|smt|shri|sri|frau|herr|dhr|mevr|sig\.ra|sig|signora|"
    r"signor|sra|sr\.?a|mme|madame|monsieur|rev|revd|reverend|father|fr|pc|officer|master|baby[ \t]+of|"
    r"baby[ \t]+girl|baby[ \t]+boy|baby|surname|forename|first[ \t]+name|last[ \t]+name|dear"
)
# Relations and roles: a capitalised or listed word after one is a name ("husband Tunde", "carer Gwen").
_RELATION = (
    r"son|daughter|wife|husband|mum|mom|mother|father|dad|brother|sister|partner|spouse|parents?|"
    r"grandson|granddaughter|granddad|grandma|grandpa|niece|nephew|aunt|uncle|cousin|friend|"
    r"neighbou?r|carer|guardian|flatmate|housemate|boyfriend|girlfriend|fianc[ée]e?|s/o|d/o|w/o|"
    r"nok|interpreter|pharmacist|physio|chaplain|paramedic|registrar|consultant|nurse|"
    r"anp|hca|f1|f2|fy1|fy2|spr|sho|named|participant|initials|signed[ \t]+by|seen[ \t]+by|seen[ \t]+with|"
    r"spoke[ \t]+(?:to|with)|discussed[ \t]+with|reviewed[ \t]+by|called|rang|phoned|"
    r"collateral[ \t]+from|ex|pt|w/|thanks|thank[ \t]+you|regards|wishes|cheers|sincerely"
)
_CUE = re.compile(
    rf"(?<![\w])(?:(?P<title>(?i:{_TITLE}))\.?|(?P<relation>(?i:{_RELATION})))(?![\w'’])"
    r"[ \t]*[(:,]?[ \t]*(?=\S)"
)
_RELATION_TITLES = frozenset({"father", "sister", "master"})
_ROLE_WORD = re.compile(r"(?i:.*(?:ician|ologist|ology|iatrist|aedic|aedics|edic|edics|ist|ists|ics|ery|ary))$")
_NOT_NAMES = frozenset(
    {
        "colleague",
        "colleagues",
        "sir",
        "madam",
        "doctor",
        "team",
        "all",
        "parent",
        "parents",
        "carer",
        "nurse",
        "patient",
        "friend",
        "gp",
        "consultant",
        "registrar",
    }
)
# A clinical sign or test named after a person: "Barlow and Ortolani negative", "Phalen's and Tinel's signs".
_TEST_AFTER = re.compile(
    r"(?:['’]s)?(?:[ \t]+(?:and|&|/)?[ \t]*[A-Z][a-z]+(?:['’]s)?){0,2}[ \t]+"
    r"(?i:negative|positive|signs?|tests?|manoeuvres?|maneuvers?|reflex|procedure|triangle|"
    r"solution|nomogram|pattern|fluid|score|criteria|classification)\b"
)
_PARTICLES = frozenset(
    {
        "van",
        "von",
        "de",
        "der",
        "den",
        "del",
        "della",
        "di",
        "da",
        "du",
        "la",
        "le",
        "al",
        "el",
        "bin",
        "ibn",
        "binti",
        "ben",
        "dos",
        "das",
        "mac",
        "st",
    }
)
# Words after which a listed word names a place or a thing, not a person ("Victoria Road", "Grace Ward").
_NOT_A_PERSON_AFTER = re.compile(
    r"[ \t]+(?:Road|Rd|Street|St|Avenue|Ave|Lane|Close|Grove|Gardens|Crescent|Drive|Way|Court|House|Hospital|"
    r"Ward|Unit|Centre|Center|Clinic|Surgery|Practice|Infirmary|Hall|Park|Square|Place|Terrace|Estate|Building|"
    r"Wing|Suite|Trust|University|College|School|Primary|Academy|Street)\b"
)
_NOT_A_PERSON_BEFORE = re.compile(r"(?:St\.?|Saint|San|Santa|Fort|Lake|Mount|Mt\.?|Port|Ward|Bay|Bed)[ \t]+$")


@cache
def listed() -> frozenset[str]:
    """The name list, lower case."""
    # JSON (not .txt) so that Flower's app bundle, which carries .json but no .txt, ships it to a site.
    path = Path(__file__).with_name("names.json")
    return frozenset(json.loads(path.read_text(encoding="utf-8")))


def names(text: str, ordinary: frozenset[str], is_eponym: object) -> Iterator[Finding]:
    """Names after titles and relations in any case, listed names, and "SURNAME, FIRST" in capitals.

    Args:
        text: The text.
        ordinary: Lower-case words that are never names (stop words, note headings, function words).
        is_eponym: rules._is_eponym(text, end, words): whether a name-like run is an eponym.
    """
    names_ = listed()
    ordinary = ordinary | _NOT_NAMES
    for cue in _CUE.finditer(text):
        title = bool(cue.group("title"))
        # "Father O'Brien", "Sister Mary" are titles; in lower case ("his father died") they are relations.
        if title and cue.group("title").lower() in _RELATION_TITLES and cue.group("title")[:1].islower():
            title = False
        # "MS, QRS" and "mild MR, RVSP": a title in capitals followed by punctuation is an abbreviation.
        if title and cue.group("title").isupper() and re.search(r"[(:,]", text[cue.end("title") : cue.end()]):
            continue
        run = _run(text, cue.end(), ordinary, names_, after_title=title, capitalised_first=not title)
        if run and not is_eponym(text, run[1], run[2]) and not _TEST_AFTER.match(text, run[1]):  # type: ignore[operator]
            yield Finding("NAME", run[0], run[1])
    for match in _WORD.finditer(text):
        word = match.group()
        lowered = _plain(word)
        if not _listed_word(lowered, names_) or lowered in ordinary or len(lowered) < 3:
            continue
        if word.isupper() and (len(word) < 4 or not _mostly_capitals(text, match.start())):
            continue  # "NASH" in ordinary text is an acronym; "SON DAVID" in a note in capitals is a name
        if word.islower() and not _BOUNDARY_BEFORE.search(text, max(0, match.start() - 4), match.start()):
            continue  # "aloe vera"; a lower-case name counts at the start of a sentence or after a cue
        if _NOT_A_PERSON_AFTER.match(text, match.end()) or _NOT_A_PERSON_BEFORE.search(
            text, max(0, match.start() - 8), match.start()
        ):
            continue
        if is_eponym(text, match.end(), [word]) or _TEST_AFTER.match(text, match.end()):  # type: ignore[operator]
            continue
        start, end = match.start(), match.end()
        # The word before a listed name, if it is capitalised like a name, an initial or a particle
        # ("Siân Griffiths", "K. Hassan", "Van der Merwe").
        before = _BEFORE_NAME.search(text, max(0, start - 40), start)
        if before and word[:1].isupper() and _plain(before.group("word")) not in _NOT_BEFORE | ordinary:
            start = before.start("word")
        # The words after a listed name that are also names, or capitalised like it: "Isla Mae Fraser".
        run = _run(text, end, ordinary, names_, after_title=False, same_case_as=word)
        if run and run[0] - end <= 2:
            if is_eponym(text, run[1], run[2]) or _TEST_AFTER.match(text, run[1]):  # type: ignore[operator]
                continue  # "Cornelia de Lange syndrome"
            end = run[1]
        yield Finding("NAME", *_strip_possessive(text, start, end))
    for pattern in (_SPELLED, _PARTICLE_NAME):
        for match in pattern.finditer(text):
            if pattern is _SPELLED and sum(c.isalpha() for c in match.group()) < 4:
                continue
            if not (is_eponym(text, match.end(), match.group().split()) or _TEST_AFTER.match(text, match.end())):  # type: ignore[operator]
                yield Finding("NAME", match.start(), match.end())
    for match in _CAPS_LAST_FIRST.finditer(text):
        words = list(_WORD.finditer(match.group("name")))
        while words and (_plain(words[-1].group()) in ordinary or words[-1].group() in _CAPS_NOT_NAMES):
            words.pop()
        # At the start of a line the cue itself may open the match ("PT JOHNSON, MARK"): it is no part of the name.
        while len(words) > 2 and _plain(words[0].group()) in ordinary:
            words.pop(0)
        parts = {part for word in words for part in re.split(r"[-'’]", _plain(word.group()))}
        if len(words) >= 2 and parts & names_ and not any(_plain(w.group()) in ordinary for w in words):
            yield Finding("NAME", match.start("name") + words[0].start(), match.start("name") + words[-1].end())


# "OKAFOR, INGRID", "GARCIA-LOPEZ, MARIA JOSE", "O'Brien, Siobhan": at the start of a line or after a cue.
_CAPS_LAST_FIRST = re.compile(
    r"(?:^|(?<![\w])(?i:pt|patient|name|attending|physician|surgeon|consultant|by|re)\.?[ \t]*:?[ \t]+|:[ \t]*)"
    r"(?P<name>[A-Z][A-Z'’-]+(?:[ \t][A-Z][A-Z'’-]+)?,[ \t]*[A-Z][A-Z'’-]+(?:[ \t][A-Z][A-Z'’-]+)?(?![\w'’-])"
    r"|[A-Z][a-z'’]*[A-Z]?[a-z'’-]+,[ \t]*[A-Z][a-z'’-]+(?![\w'’-]))",
    re.MULTILINE,
)


# A name spelled out letter by letter ("V-A-N D-E-R M-E-R-W-E", "S-M-I-T-H"), of four letters or more.
_SPELLED = re.compile(r"(?<![\w-])[A-Za-z](?:-[A-Za-z])+(?:[ \t]+[A-Za-z](?:-[A-Za-z])+)*(?![\w-])")
# A surname that opens with a two-word particle ("Van der Merwe", "de la Cruz"), with no title or listed name.
_PARTICLE_NAME = re.compile(
    r"(?<![\w'’-])(?:[Vv]an|[Vv]on|[Dd]e)[ \t]+(?:der|den|de|la|los|las)[ \t]+[A-Z][a-z'’]+(?:-[A-Z][a-z'’]+)?(?![\w-])"
)


_BEFORE_NAME = re.compile(
    r"(?<![\w'’-])(?P<word>(?:[A-Z]\.|[A-ZÀ-Þ][a-zß-ÿ'’-]+|(?:[Vv]an|[Vv]on|[Dd]e|[Dd]el|[Dd]er|[Dd]i|[Dd]a|[Ll]a|[Ll]e)"
    r"(?:[ \t]+(?:der|den|de|la|du))?))[ \t]+$"
)
_NOT_BEFORE = frozenset(
    {
        "dr",
        "mr",
        "mrs",
        "ms",
        "the",
        "a",
        "an",
        "and",
        "or",
        "with",
        "by",
        "to",
        "from",
        "of",
        "in",
        "on",
        "at",
        "for",
        "dear",
        "hi",
        "hello",
        "thanks",
        "seen",
        "saw",
        "pt",
        "patient",
    }
)
_CAPS_NOT_NAMES = frozenset({"MD", "MRN", "DOB", "NHS", "RN", "ID", "UR", "DO", "NP", "PA", "MBBS", "FRCP"})


_BOUNDARY_BEFORE = re.compile(r"(?:^|[.:;,!?\n]|\bw/|\bpt)[ \t]*$")


def _mostly_capitals(text: str, position: int) -> bool:
    letters = [c for c in text[max(0, position - 40) : position + 40] if c.isalpha()]
    return sum(c.isupper() for c in letters) >= 0.8 * len(letters)


def _plain(word: str) -> str:
    lowered = word.lower()
    for suffix in ("'s", "’s"):
        lowered = lowered.removesuffix(suffix)
    return lowered.strip("'’-")


def _strip_possessive(text: str, start: int, end: int) -> tuple[int, int]:
    if text[max(start, end - 2) : end] in ("'s", "’s"):
        end -= 2
    return start, end


def _run(
    text: str,
    position: int,
    ordinary: frozenset[str],
    names_: frozenset[str],
    *,
    after_title: bool,
    same_case_as: str | None = None,
    capitalised_first: bool = False,
) -> tuple[int, int, list[str]] | None:
    """Up to three name words from position: (start, end, words), or None.

    After a title any word that is not ordinary counts (the title says a name follows); otherwise a word must
    be listed, or written like the first word of the run (capitalised after capitalised, capitals after capitals).
    """
    words: list[str] = []
    start = end = None
    cursor = position
    first = same_case_as
    for _ in range(4):
        match = re.compile(r"[ \t]*").match(text, cursor)
        gap = match.end() if match else cursor
        if words and gap == cursor and same_case_as is None:
            break
        word_match = _WORD.match(text, gap)
        if word_match is None:
            break
        word = word_match.group()
        lowered = _plain(word)
        if lowered in _PARTICLES and (words or after_title or same_case_as):
            if start is None:
                start = word_match.start()
            cursor = word_match.end()
            continue
        if any(c.isdigit() for c in word) or len(lowered) < 2:
            break
        if lowered in ordinary:
            # "Dr Will Parker": after a title, a capitalised ordinary word starts a name when one follows it.
            following = re.compile(r"[ \t]+([^\W\d_][\w'’-]+)").match(text, word_match.end())
            if not (
                after_title
                and not words
                and word[:1].isupper()
                and following
                and following.group(1)[:1].isupper()
                and _plain(following.group(1)) not in ordinary
            ):
                break
            words.append(word)
            start = word_match.start() if start is None else start
            end = cursor = word_match.end()
            first = first or word
            continue
        shape_ok = first is not None and _same_shape(first, word)
        capitalised = word[:1].isupper() and (word[1:].islower() or "-" in word or "'" in word or "’" in word)
        opens = not words and (after_title or (capitalised_first and capitalised)) and not _ROLE_WORD.match(word)
        if not (_listed_word(lowered, names_) or opens or shape_ok):
            break
        if first is None:
            first = word
        if start is None:
            start = word_match.start()
        words.append(word)
        end = word_match.end()
        cursor = end
        if len(words) >= 3:
            break
    if start is None or end is None:
        return None
    start, end = _strip_possessive(text, start, end)
    return start, end, words


def _listed_word(lowered: str, names_: frozenset[str]) -> bool:
    # A hyphenated name is listed when its first part is ("Olivia-Rose", "Kerry-Ann"); a spelled pronunciation
    # ("SIL-e-ah", "kok-sid-e-OY-do-mi-KO-sis") has more parts or a one-letter part.
    parts = lowered.split("-")
    return lowered in names_ or (len(parts) == 2 and min(map(len, parts)) >= 2 and parts[0] in names_)


def _same_shape(first: str, word: str) -> bool:
    if first.isupper():
        return word.isupper() and len(word) > 1
    if first[:1].isupper():
        return word[:1].isupper() and not word.isupper()
    return False
