"""Identifier formats beyond the US ones: UK/EU/Indian/Australian dates, phones, postcodes and national numbers.

Part of fedcare's rule detector (common.deid.rules runs these with its own rules). Each rule favours precision:
a number with no shape of its own needs a cue word, dates without a year need a shape no score or dose has.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from common.deid.base import Finding

_WEEKDAY = (
    r"(?:Mon(?:day)?|Tue(?:s(?:day)?)?|Wed(?:nesday)?|Thu(?:r(?:s(?:day)?)?)?|Fri(?:day)?|Sat(?:urday)?|"
    r"Sun(?:day)?)"
)
_MONTHS = (
    "January|February|March|April|May|June|July|August|September|October|November|December|Sept|Jan|Feb|"
    "Mar|Apr|Jun|Jul|Aug|Sep|Oct|Nov|Dec|"
    # German, French, Spanish, Italian and Dutch months that differ from the English ones
    "Januar|Februar|März|Maerz|Mai|Juni|Juli|Oktober|Dezember|janvier|février|fevrier|mars|avril|mai|juin|"
    "juillet|août|aout|septembre|octobre|novembre|décembre|decembre|enero|febrero|marzo|abril|mayo|junio|"
    "julio|agosto|septiembre|octubre|noviembre|diciembre|gennaio|febbraio|aprile|maggio|giugno|luglio|"
    "settembre|ottobre|dicembre|januari|februari|maart|mei|augustus"
)
# Any case, except the lower-case English words that are also months ("may", "mar", "march", "dec").
_MONTH = rf"(?!may\b|mar\b|march\b|dec\b|sept?\b)(?i:{_MONTHS})\.?"
_ORDINAL_WORDS = (
    "first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|eleventh|twelfth|thirteenth|"
    "fourteenth|fifteenth|sixteenth|seventeenth|eighteenth|nineteenth|twentieth|twenty[- ]first|"
    "twenty[- ]second|twenty[- ]third|twenty[- ](?:fourth|fifth|sixth|seventh|eighth|ninth)|"
    "thirtieth|thirty[- ]first"
)
_SPOKEN_YEAR = r"(?:nineteen|twenty)[- ](?:hundred|oh[- ][a-z]+|[a-z]+(?:[- ][a-z]+)?)"
_HOLIDAY = (
    r"(?i:christmas(?:[ \t]+(?:eve|day))?|boxing[ \t]+day|new[ \t]+year['’]?s(?:[ \t]+(?:eve|day))?|"
    r"valentine['’]?s(?:[ \t]+day)?|good[ \t]+friday|easter(?:[ \t]+(?:sunday|monday|day))?|halloween|"
    r"thanksgiving(?:[ \t]+day)?|hogmanay|diwali|st\.?[ \t]+patrick['’]?s[ \t]+day|"
    r"independence[ \t]+day|bonfire[ \t]+night|guy[ \t]+fawkes[ \t]+night)"
)
_WEEKDAY_BEFORE = re.compile(rf"(?<![\w]){_WEEKDAY}\.?,?[ \t]+(?:the[ \t]+)?$")

_DATE_PATTERNS = (
    # "March '19", "Oct '22"
    re.compile(rf"(?<![\w]){_MONTH}[ \t]+['’]\d\d(?![\w])"),
    # "3. Mai 2023", "14 juin 2021", "fourth of June, nineteen sixty-two"
    re.compile(rf"(?<![\w.])\d{{1,2}}\.?[ \t]+{_MONTH}(?:[ \t]+\d{{4}})?(?![\w])"),
    re.compile(rf"(?<![\w])(?i:{_ORDINAL_WORDS})[ \t]+(?i:of[ \t]+)?{_MONTH}(?:,?[ \t]+{_SPOKEN_YEAR})?(?![\w])"),
    # "Christmas Eve 2021", "Boxing Day", "Valentine's Day 1950"
    re.compile(rf"(?<![\w]){_HOLIDAY}(?:[ \t]+(?:19|20)\d\d)?(?![\w])"),
    # "summer 2019"
    re.compile(r"(?<![\w])(?i:spring|summer|autumn|fall|winter)[ \t]+(?:of[ \t]+)?(?:19|20)\d\d(?![\w])"),
    # "the 14th", "Thursday 9th", "Tuesday the 16th", "since the 2nd"
    re.compile(
        rf"(?<![\w])(?:(?:{_WEEKDAY}\.?,?[ \t]+(?:the[ \t]+)?)|(?<=(?i:the)[ \t]))[0-3]?\d(?:st|nd|rd|th)"
        r"(?![\w])(?![ \t]+(?i:centile|percentile|floor|degree|dose|cycle|time|week|day|month|year|trimester|"
        r"rib|toe|finger|metatarsal|attempt|line|generation|birthday|anniversary|grade|stage))"
    ),
    # "2nd - 7th March 2024": the first day of a range
    re.compile(rf"(?<![\w])[0-3]?\d(?:st|nd|rd|th)(?=[ \t]*[-–][ \t]*[0-3]?\d(?:st|nd|rd|th)?[ \t]+{_MONTH})"),
    # a month alone after a preposition: "in May", "since October", "until Feb"
    re.compile(
        r"(?<![\w])(?i:in|since|until|from|during|early|late|mid|last|next|end[ \t]+of|by)[ \t]+"
        r"(?P<d>(?:January|February|March|April|May|June|July|August|September|October|November|December|"
        r"Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept?|Oct|Nov|Dec)\.?)(?![\w])(?![ \t]+(?:\d|['’]\d))"
    ),
)
# 20230503: an eight-digit run that is a valid date from 1900 to 2099.
_COMPACT_DATE = re.compile(r"(?<![\w.,/-])(?P<y>19\d\d|20\d\d)(?P<m>0[1-9]|1[0-2])(?P<d>0[1-9]|[12]\d|3[01])(?![\w])")
# 14.02.23: a dotted date with a two-digit year needs two-digit day and month ("1.2.10" is a version).
_DOTTED_SHORT = re.compile(r"(?<![\w.])(?P<a>[0-3]\d)\.(?P<b>[01]\d)\.\d\d(?![\w.]|\.\d)")
# Day and month without a year, "18/4", "07/02", "Mon 4/3": scores, doses and durations share this shape, so
# it counts only with a weekday before it, when zero-padded, or when one part can only be a day (13-31), the
# other a month, and what follows is not a count.
_DAY_SLASH_MONTH = re.compile(r"(?<![\w/.:-])(?P<a>\d{1,2})/(?P<b>\d{1,2})(?![\w/]|[.,]\d|[ \t]*[-:]\d)")
_NOT_A_DATE_AFTER = re.compile(
    r"[ \t]*(?:\(|-)?[ \t]*(?i:mg|mcg|g\b|ml|tab|tabs|tablets?|units?|puffs?|sets?|bottles?|nodes|cores?|"
    r"strength|power|pain|scale|score|dose|of\b|weeks?|days?|months?|hours?|h\b|hrs?|x\b|in\b|on\b|cm|mm|kg|"
    r"bpm|mmhg|%|positive|negative)"
)
_NOT_A_DATE_BEFORE = re.compile(
    r"(?i:apgars?|gcs|bp|power|score|scores|grade|mmse|moca|amt|acuity|ratio|va|pain|strength|murmur|tinetti|"
    r"barthel|hip|knee|oxford|cage|audit|phq-?9|gad-?7|epworth)[ \t:]*(?:[\d/]+[ \t,]+)?$"
)
_DURATION_DENOMINATORS = frozenset({"7", "12", "40", "52"})  # UK days, months, weeks of gestation, weeks
_SCORE_DENOMINATORS = frozenset({"5", "6", "7", "9", "10", "12", "15", "20", "24", "28", "30", "40", "48", "52"})


def dates(text: str) -> Iterator[Finding]:
    """Dates in British, European and spoken forms, holidays, and weekday/ordinal day references."""
    for pattern in _DATE_PATTERNS:
        for match in pattern.finditer(text):
            group = "d" if "d" in pattern.groupindex else 0
            yield _widen(text, match.start(group), match.end(group))
    for match in _COMPACT_DATE.finditer(text):
        yield _widen(text, match.start(), match.end())
    for match in _DOTTED_SHORT.finditer(text):
        if 1 <= int(match.group("a")) <= 31 and 1 <= int(match.group("b")) <= 12:
            yield _widen(text, match.start(), match.end())
    for match in _DAY_SLASH_MONTH.finditer(text):
        if _day_month(text, match):
            yield _widen(text, match.start(), match.end())


def _day_month(text: str, match: re.Match[str]) -> bool:
    a, b = match.group("a"), match.group("b")
    first, second = int(a), int(b)
    if not ((1 <= first <= 31 and 1 <= second <= 12) or (1 <= first <= 12 and 1 <= second <= 31)):
        return False
    if _WEEKDAY_BEFORE.search(text, max(0, match.start() - 14), match.start()):
        return True
    if _NOT_A_DATE_AFTER.match(text, match.end()) or _NOT_A_DATE_BEFORE.search(
        text, max(0, match.start() - 24), match.start()
    ):
        return False
    if len(a) == 2 and len(b) == 2 and a[0] == "0" or len(b) == 2 and b[0] == "0":
        return True
    one_is_a_day = (first >= 13 and second <= 12) or (second >= 13 and first <= 12)
    if b in _DURATION_DENOMINATORS or (first <= second and b in _SCORE_DENOMINATORS):
        return False  # "13/12" is 13 months, "2/7" two days, "3/6" a murmur grade; "22/6" can only be a day
    return one_is_a_day


def not_a_date(text: str, start: int) -> bool:
    """Whether a date-shaped span is a score instead ("Apgars 9/9/10")."""
    return re.search(r"(?i:apgars?)[ \t:]*(?:[\d/]+[ \t,:]+)?$", text[max(0, start - 24) : start]) is not None


def widen(text: str, finding: Finding) -> Finding:
    """A DATE finding with the weekday before it ("Monday 11 March")."""
    return _widen(text, finding.start, finding.end)


def _widen(text: str, start: int, end: int) -> Finding:
    # A weekday before a date belongs to it: "Monday 11 March".
    before = _WEEKDAY_BEFORE.search(text, max(0, start - 14), start)
    if before:
        start = before.start()
    return Finding("DATE", start, end)


# ---------------------------------------------------------------------------------------------------------------
# Phones: a leading 0 or + and 9-13 digits in groups ("07700 900461", "+44 161 496 0733", "(02) 9876 5432")
# ---------------------------------------------------------------------------------------------------------------

_INTL_PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[ \t.-]?(?:\(0\)[ \t]?)?|\(0\d{1,4}\)[ \t]?|0)\d{1,5}(?:[ \t.-]?\d{2,5}){1,4}"
    r"(?![\w]|[.-]\d)"
)
_EXTENSION = re.compile(r"(?<![\w])(?i:ext\.?|extension|bleep|pager)[ \t:#]*(?P<number>\d{3,5})(?![\w])")


def phones(text: str) -> Iterator[Finding]:
    """Phone numbers in international and national (non-US) formats, and extensions after a cue."""
    for match in _INTL_PHONE.finditer(text):
        digits = sum(character.isdigit() for character in match.group())
        if 9 <= digits <= 13:
            yield Finding("PHONE", match.start(), match.end())
    for match in _EXTENSION.finditer(text):
        yield Finding("PHONE", match.start("number"), match.end("number"))


# ---------------------------------------------------------------------------------------------------------------
# Record and national numbers
# ---------------------------------------------------------------------------------------------------------------

_NUMBER_CUE = (
    r"(?i:hosp(?:ital)?\.?[ \t]*(?:no|number|num|#|id)\.?|UR(?:[ \t]*(?:no|number))?|UHID|IP[ \t]*No\.?|"
    r"OP[ \t]*No\.?|NHS(?:[ \t]*(?:no|number|num))?\.?|CHI(?:[ \t]*(?:no|number))?|IHI|"
    r"Medicare(?:[ \t]*(?:no|number))?|"
    r"Aadhaar(?:[ \t]*(?:no|number))?|PPS[ \t]*No\.?|PPSN|BSN|DNI|NIE|NI[ \t]*(?:no|number)|national[ \t]+insurance"
    r"(?:[ \t]+(?:no|number))?|codice[ \t]+fiscale|insurance[ \t]+(?:no|number)\.?|study[ \t]+(?:no|number|id)|"
    r"subject(?:[ \t]+(?:no|id))?|participant(?:[ \t]+(?:no|id))?|accession(?:[ \t]+(?:no|number))?|specimen[ \t]+"
    r"(?:no|id)|report[ \t]+(?:no|number)|lab[ \t]+(?:no|number)|ref(?:erence)?[ \t]+(?:no|number)|username|"
    r"user[ \t]+name|patient[ \t]+no|pt[ \t]+id|case[ \t]+(?:no|number)|record[ \t]+no|registration[ \t]+no)"
)
_CUED_NUMBER = re.compile(
    rf"(?<![\w]){_NUMBER_CUE}[ \t]*[:#=.]?[ \t]*(?P<value>[A-Za-z0-9]+(?:[-/][A-Za-z0-9]+)*"
    r"(?:[ \t]\d{1,5}(?![\w/.]|[ \t]*(?:mg|ml|years?|y\b|yo\b)))*)(?![\w])"
)
# A word with letters and at least four digits ("K4471902", "RAD-2024-0047711", "gdavies1959") is a code of some
# record; a number with a unit ("1000mg") or a known clinical code shape is not.
_MIXED_ID = re.compile(r"(?<![\w*/.-])(?=[\w/-]*\d)(?=[\w/-]*[A-Za-z])[A-Za-z0-9]+(?:[-/][A-Za-z0-9]+)*(?![\w*-])")
_UNIT_NUMBER = re.compile(r"\d+(?:\.\d+)?(?i:mg|mcg|ug|g|kg|ml|mls|l|units?|iu|mmol|hrs?|h|x|mm|cm|am|pm|k)")
_NOT_AN_ID = re.compile(
    r"(?i:(?:mid|pre|post|early|late)-)?(?:19|20)\d\d['’]?s"  # decades
    r"|(?:19|20)\d\d[-/]\d{1,2}[-/]\d{1,2}|\d{1,2}-[A-Za-z]{3,9}-\d{2,4}"  # dates
)
_LONG_NUMBER = re.compile(r"(?<![\w.,/:-])\d{7,}(?![\w]|[.,/]\d)")
_NI_NUMBER = re.compile(r"(?<![\w])[A-Z]{2}[ \t]?\d{2}[ \t]?\d{2}[ \t]?\d{2}[ \t]?[A-D](?![\w])")
_SPACED_DIGITS = re.compile(r"(?<![\w.,/:-])\d{3,4}(?:[ \t]\d{3,5}){1,3}(?:[ \t]\d)?(?![\w]|[.,/]\d)")


def numbers(text: str) -> Iterator[Finding]:
    """Record, national and study numbers: after a cue word, or by their shape."""
    for match in _CUED_NUMBER.finditer(text):
        value = match.group("value").rstrip()
        if sum(character.isdigit() for character in value) >= 3:
            yield Finding("MRN", match.start("value"), match.start("value") + len(value))
    for match in _MIXED_ID.finditer(text):
        value = match.group()
        # A run of four digits (or a long code such as a codice fiscale): gene symbols ("SLC25A15"), decades
        # ("mid-1980s"), doses ("1000mg") and ISO dates are not record numbers.
        digits = sum(c.isdigit() for c in value)
        if (
            len(value) >= 6
            and (re.search(r"\d{4}", value) or len(value) >= 12 and digits >= 5)
            and not _UNIT_NUMBER.fullmatch(value)
            and not _NOT_AN_ID.fullmatch(value)
        ):
            yield Finding("ID", match.start(), match.end())
    for match in _LONG_NUMBER.finditer(text):
        if not _COMPACT_DATE.fullmatch(match.group()):
            yield Finding("ID", match.start(), match.end())
    for match in _NI_NUMBER.finditer(text):
        yield Finding("MRN", match.start(), match.end())
    for match in _SPACED_DIGITS.finditer(text):
        if 9 <= sum(c.isdigit() for c in match.group()) <= 16:
            yield Finding("ID", match.start(), match.end())


# ---------------------------------------------------------------------------------------------------------------
# Addresses: postcodes, streets with British/European/Indian suffixes, towns after a cue
# ---------------------------------------------------------------------------------------------------------------

_UK_POSTCODE = r"(?:[A-Z]{1,2}\d[A-Z\d]?[ \t]?\d[ABD-HJLNP-UW-Z]{2})"
_POSTCODE = re.compile(rf"(?<![\w]){_UK_POSTCODE}(?![\w])")
_EIRCODE = re.compile(r"(?i:eircode)[ \t:]*(?P<code>[AC-FHKNPRTV-Y]\d{2}|D6W)[ \t]?[0-9AC-FHKNPRTV-Y]{4}(?![\w])")
_AU_STATE_POSTCODE = re.compile(r"(?<![\w])(?:NSW|VIC|QLD|WA|SA|TAS|ACT|NT)[ \t]+(?P<code>\d{4})(?![\w])")
_PIN = re.compile(r",[ \t]*(?P<town>[A-Z][a-z]+)[ \t]*-?[ \t]*(?P<code>[1-8]\d{5})(?![\w])")
_EU_POSTCODE_CITY = re.compile(
    r"(?<![\w.,])(?:\d{5}|\d{4}[ \t][A-Z]{2})[ \t]+[A-ZÀ-Þ][a-zß-ÿ]+(?:[ \t-][A-ZÀ-Þ][a-zß-ÿ]+)?"
)
_STREET_WORDS = (
    r"(?:Street|St|Road|Rd|Avenue|Ave|Lane|Ln|Close|Grove|Gardens|Crescent|Cres|Parade|Mews|Row|Walk|Green|Rise|"
    r"Terrace|Place|Square|Court|Ct|House|Estate|Farm|Cottage|Way|Drive|Hill|Park|View|Vale|Gate|Nagar|Marg|"
    r"Colony|Layout|Sector|Boulevard|Blvd|Highway|Hwy)"
)
# Street names written as one word: "Hauptstraße", "Keizersgracht", "Eastgate"
_COMPOUND_STREET = r"(?:stra(?:ß|ss)e|gracht|straat|laan|weg|gasse|platz|plein|kade|singel|allee|gate)"
_STREET = re.compile(
    rf"(?<![\w])(?:(?:Flat|Apt|Apartment|Unit|Block|Suite|H\.?[ \t]?No\.?)[ \t]*[\w/-]+,?[ \t]+)*"
    rf"(?:\d{{1,5}}[A-Za-z]?(?:/\d{{1,4}})?,?[ \t]+)?(?:(?:[A-Z][\w'’-]+|de|la|du|des|van|von)[ \t]+){{0,3}}"
    rf"(?:{_STREET_WORDS}|[A-Z][a-zß-ÿ]+{_COMPOUND_STREET})(?![\w])(?:[ \t]+\d{{1,5}}[A-Za-z]?(?![\w]))?"
)
_LOWER_STREET = re.compile(
    r"(?<![\w])\d{1,5},?[ \t]+(?:[a-z]+[ \t]+){1,3}(?i:nagar|marg|road|street|lane|colony|layout|sector)(?![\w])"
)
_STREET_PREFIXED = re.compile(
    r"(?<![\w/.])\d{1,5},?[ \t]+(?:rue|Rue|Avenue|Boulevard|Calle|Via|Viale|Piazza|Plaza|Avenida)[ \t]+"
    r"(?:(?:de|des|du|la|le|del|della|di)[ \t]+)*[A-ZÀ-Þ][\w'’-]+"
)
# A town after a cue that leaves no doubt; lower case only after the strongest ("pt from noida").
_STRONG_PLACE_CUE = re.compile(
    r"(?<![\w])(?:(?i:lives?(?:[ \t]+alone)?[ \t]+in|moved[ \t]+(?:back[ \t]+)?(?:from|to)|pt[ \t]+from|"
    r"patient[ \t]+from|"
    r"r/o|resident[ \t]+of)[ \t]+(?P<place>[A-Za-z][a-z'’-]+|[A-Z]{3,})"
    r"|(?i:lives?(?:[ \t]+alone)?[ \t]+(?:at|near)|living[ \t]+(?:in|near)|resides?[ \t]+in|biba[ \t]+from|"
    r"back[ \t]+home[ \t]+to|(?:bungalow|flat|house|caravan|hostel)[ \t]+(?:in|at|near))[ \t]+"
    r"(?P<capital>[A-Z][a-z'’-]+(?:[ \t]+[A-Z][a-z'’-]+)?|[A-Z]{3,}))(?![\w])"
)
_AFTER_PLACE = re.compile(
    rf"(?:,?[ \t]+{_UK_POSTCODE}|,[ \t]*[A-Za-z]+[ \t]+[1-8]\d{{5}}(?![\w])"
    rf"|,[ \t]*[A-Z][a-zß-ÿ'’-]+(?:[ \t]+[A-Z][a-zß-ÿ'’-]+){{0,2}}"
    rf"(?:[ \t]+{_UK_POSTCODE})?)"
)


_LEAD_WORDS = frozenset(
    {
        "the",
        "a",
        "an",
        "at",
        "in",
        "on",
        "to",
        "from",
        "patient",
        "pt",
        "lives",
        "address",
        "seen",
        "and",
        "of",
        "near",
        "home",
        "new",
        "re",
        "tel",
        "mob",
    }
)
_NOT_PLACES = frozenset(
    {
        "remote",
        "rural",
        "bungalow",
        "flat",
        "house",
        "home",
        "care",
        "nursing",
        "supported",
        "sheltered",
        "hospital",
        "community",
        "own",
        "same",
        "temporary",
        "accommodation",
        "hostel",
        "prison",
        "shelter",
        "lodgings",
        "bed",
        "ward",
        "icu",
        "itu",
        "a",
        "an",
        "the",
        "his",
        "her",
    }
)
# Web addresses written without a scheme: "zoom.us/j/938", "portal.nhs-trust.example.uk/login"
_BARE_URL = re.compile(
    r"(?<![\w@./-])(?:[a-z0-9-]+\.)+(?:com|org|net|edu|gov|nhs|uk|us|au|in|ie|za|io|co|info|eu|de|fr|nl|ca|nz)"
    r"(?:\.[a-z]{2})?(?:/[^\s<>\"'()]*)?(?<![.,;:])(?![\w@])",
    re.IGNORECASE,
)


def urls(text: str) -> Iterator[Finding]:
    """Web addresses without a scheme."""
    for match in _BARE_URL.finditer(text):
        yield Finding("URL", match.start(), match.end())


def addresses(text: str, ordinary: frozenset[str]) -> Iterator[Finding]:
    """Postcodes, streets (with what follows them: town, postcode) and towns after a strong cue.

    Args:
        text: The text.
        ordinary: Lower-case words that never start or make a place (stop words, medical words).
    """
    for match in _POSTCODE.finditer(text):
        yield Finding("ZIP", match.start(), match.end())
    for match in _EIRCODE.finditer(text):
        yield Finding("ZIP", match.start("code"), match.end())
    for match in _AU_STATE_POSTCODE.finditer(text):
        yield Finding("ZIP", match.start("code"), match.end())
    for match in _PIN.finditer(text):
        # An Indian PIN code follows ", Town" (not "platelets 150000").
        if match.group("town").lower() not in ordinary:
            yield Finding("ZIP", match.start("code"), match.end())
    for match in _EU_POSTCODE_CITY.finditer(text):
        words = match.group().split()
        if words[-1].lower() not in ordinary:
            yield Finding("ADDRESS", match.start(), match.end())
    for pattern in (_STREET, _STREET_PREFIXED, _LOWER_STREET):
        for match in pattern.finditer(text):
            start = match.start()
            parts = list(re.finditer(r"[A-Za-z][\w'’-]*", match.group()))
            # Leading ordinary words ("The", "Patient") are not part of the street.
            while len(parts) > 1 and parts[0].group().lower() in _LEAD_WORDS and not re.match(r"\d", text[start:]):
                parts.pop(0)
                start = match.start() + parts[0].start()
            if len(parts) < 2 and not re.search(r"\d", match.group()):
                continue
            end = match.end()
            after = _AFTER_PLACE.match(text, end)
            while after and after.end() > end:
                end = after.end()
                after = _AFTER_PLACE.match(text, end)
            yield Finding("ADDRESS", start, end)
    for match in _STRONG_PLACE_CUE.finditer(text):
        group = "place" if match.group("place") else "capital"
        place = match.group(group).lower()
        if place not in ordinary and place not in _NOT_PLACES:
            yield Finding("ADDRESS", match.start(group), match.end(group))


# ---------------------------------------------------------------------------------------------------------------
# Ages over 89 in the forms notes use: "95M", "98y F", "Dorothy Pennington, 93, of", "you're 92 now"
# ---------------------------------------------------------------------------------------------------------------

_OLD = r"(?P<age>9\d|1[01]\d)"
_SPELLED_OLD = (
    r"(?P<age>(?i:ninety(?:[- ](?:one|two|three|four|five|six|seven|eight|nine))?|one[ -]hundred"
    r"(?:(?:[ -]and)?[ -](?:one|two|three|four|five|six|seven|eight|nine|ten))?))"
)
_AGE_PATTERNS = (
    re.compile(rf"(?<![\w.]){_OLD}[ \t]?(?:M|F)(?![\w])"),
    re.compile(rf"(?<![\w.]){_OLD}[ \t]?(?i:y|yr|yrs|y/o|yo|años|ans|jahre|anni|jaar)(?:[ \t]?(?:M|F|old))?(?![\w/])"),
    re.compile(
        rf"(?<![\w])(?i:aged?|i['’]m|i[ \t]+am|you['’]re|you[ \t]+are|(?:he|she)['’]s|(?:he|she)[ \t]+is|"
        rf"turned|turns|turning)[ \t]+{_OLD}(?![\w%.]|\.\d)"
    ),
    re.compile(rf"(?<=[,(])[ \t]*{_OLD}(?=[ \t]*(?:[,.;:)!]|$|[ \t]+(?i:today|now|years?|yrs?|widow(?:er)?|died)\b))"),
    re.compile(rf"(?<![\w-]){_SPELLED_OLD}(?=[ \t]+(?i:in|on|today|now|next|this|last|years?|yrs?)\b|[ \t]*[,.!?])"),
    # "Ms Sinead Byrne 91, Mater": a number after a titled name, before a comma.
    re.compile(rf"(?<![\w])(?:Mr|Mrs|Ms|Mx|Miss|Mister)\.?(?:[ \t]+[A-Z][\w'’-]+){{1,3}}[ \t]+{_OLD}(?=[ \t]*[,;)])"),
)
_TEMPERATURE_BEFORE = re.compile(r"(?<![\w])(?i:t|temp|tmax|temperature|febrile|fever|pyrexia)[ \t:]*$")
# "nineteen ninety-two", "two thousand and ninety": the spelled number is part of a year or a larger number.
_SPELLED_NUMBER_BEFORE = re.compile(r"(?i:eighteen|nineteen|twenty|thousand|hundred)(?:[ \t-]+and)?[ \t-]+$")


def ages(text: str) -> Iterator[Finding]:
    """Ages over 89 written with a sex letter, a year unit in several languages, a verb, or between commas."""
    for pattern in _AGE_PATTERNS:
        for match in pattern.finditer(text):
            if _TEMPERATURE_BEFORE.search(text, max(0, match.start() - 12), match.start("age")):
                continue
            if _SPELLED_NUMBER_BEFORE.search(text, max(0, match.start("age") - 16), match.start("age")):
                continue
            yield Finding("AGE", match.start("age"), match.end("age"))
