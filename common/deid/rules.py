"""fedcare's own offline detector: regular expressions, context cues and word lists, no model."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator

from common.deid import formats, names, places
from common.deid.base import Finding
from common.deid.words import (
    CITY_PREFIXES,
    COUNTRIES,
    COUNTRY_PHRASES,
    EPONYM_HEADS,
    EPONYMS,
    FIRST_NAMES,
    PARTICLES,
    STOP_WORDS,
    SURNAMES,
    word_set,
)

# Disease-name endings catch the eponyms no list can hold ("Marie Unna congenital hypotrichosis").
_DISEASE_WORD = r"[a-z]{2,}(?:osis|oses|itis|emia|aemia|pathy|plasia|trophy|oma|omas|ism|ia|iasis)"
_EPONYM_AFTER = re.compile(
    r"(?:['’]s|s['’])?[ \t-]+(?:[A-Za-z-]+[ \t]+)?(?:(?i:" + "|".join(EPONYM_HEADS) + rf")|{_DISEASE_WORD})\b"
)

_TITLES = r"(?:Dr|Mr|Mrs|Ms|Mx|Prof|Miss|Mister|Doctor|Madam|Madame)"
_SPAN_GAP = re.compile(r"\n|[ \t]{2,}")
_SPAN_WORD = re.compile(r"[\w][\w'’.-]*")
_CREDENTIAL_WORDS = frozenset({"MD", "RN", "NP", "DO", "PhD", "MBBS", "FRCP"})
# Words a recognizer often takes into a name: relations, roles and honorifics of several languages.
_CUE_WORDS = word_set(
    "son daughter wife husband mum mom mother father dad brother sister partner parents parent grandson "
    "granddaughter niece nephew aunt uncle friend neighbour neighbor carer guardian officer pc sr sister smt shri "
    "sri frau herr dhr mevr sig sig.ra signora signor paciente patiente madame monsieur rev father fr master "
    "miss baby nurse consultant registrar pharmacist physio chaplain interpreter seen reviewed discussed called "
    "paramedic worker carer amhp anp ot physiotherapist dietitian student rx",
    lower=True,
)
_TITLE_WORDS = frozenset({"dr", "mr", "mrs", "ms", "mx", "prof", "miss", "mister", "doctor", "madam", "madame"})
_UPPER = "A-ZÀ-ÖØ-Þ"
_LOWER = "a-zß-öø-ÿ"
# One name word: "Smith", "O'Brien", "McDonald", "DeLuca", "Smith-Jones", "José".
_NAME_WORD = rf"(?:[{_UPPER}]['’])?[{_UPPER}][{_LOWER}]+(?:[{_UPPER}][{_LOWER}]+)?(?:-[{_UPPER}][{_LOWER}]+)*"
# A name word ends at a non-word character; an apostrophe ends it only as a possessive ("Smith's"), so that
# "O'Brien" is not cut to "O".
_WORD_END = r"(?![\w-]|['’](?![sS]\b))"
_RUN_WORD = re.compile(
    rf"[ \t]+(?:(?P<word>{_NAME_WORD}){_WORD_END}|(?P<initial>[{_UPPER}]\.?)(?=[ \t])"
    rf"|(?P<particle>[a-z]{{2,4}})(?=[ \t]+[a-z{_UPPER}]))"
)
_CREDENTIALS = (
    r"(?:M\.D\.|MD|D\.O\.|DO|RN|NP|PA-C|PhD|Ph\.D\.|APRN|CNP|CNM|DNP|PharmD|LPN|LCSW|MSW|FACP|FACC|FACS|DDS|DMD|"
    r"DPM|CRNA|MPH|MBBS)"
)

# Cue words before a name. "Family" cues accept a lone word ("her son Michael"); role cues ("patient",
# "nurse") also precede ordinary capitalised words ("Patient Education"), so a lone word after them must be a
# listed name or be followed by a content word ("Nurse Ingrid gave report").
_FAMILY_CUES = (
    r"son|daughter|wife|husband|mother|father|brother|sister|spouse|partner|fianc[ée]e?|grandson|granddaughter|"
    r"grandmother|grandfather|grandma|grandpa|niece|nephew|aunt|uncle|cousin|friend|neighbou?r|caregiver|"
    r"guardian|roommate|boyfriend|girlfriend|stepson|stepdaughter|mom|dad|named|name\s+is|name\s*:|"
    r"goes\s+by|next\s+of\s+kin|NOK|emergency\s+contact|POA|proxy"
)
_ROLE_CUES = (
    r"patient|pt\.?|seen\s+by|referred\s+by|signed\s+by|dictated\s+by|transcribed\s+by|accompanied\s+by|"
    r"evaluated\s+by|discussed\s+with|spoke\s+with|spoke\s+to|talked\s+(?:with|to)|voicemail\s+for|"
    r"message\s+for|attending|resident|intern|PCP|physician|surgeon|provider|nurse|therapist|pharmacist|"
    r"interpreter|translator|chaplain|technician|aide|midwife|dietitian|counsel+or|social\s+worker|case\s+manager"
)
_CUE_NAME = re.compile(
    # The leading look-ahead lets the regex engine skip non-letters quickly; it does not change what matches.
    rf"(?=[A-Za-z])(?<![\w])(?:(?P<family>{_FAMILY_CUES})|(?P<role>{_ROLE_CUES}))(?![\w])[ \t]*(?P<punct>[:,]?)"
    rf"(?=[ \t])",
    re.IGNORECASE,
)
_LOWER_WORD_NEXT = re.compile(r"[ \t]+(?P<word>[a-z]{2,})\b")
_NAME_CUE_BLOCKERS = re.compile(
    r"(?:brand|generic|trade|drug|common|street|chemical|scientific|product|proprietary|disease|gene|file|user)"
    r"[ \t]+$",
    re.IGNORECASE,
)
_TITLE_NAME = re.compile(rf"(?<![\w])(?P<title>{_TITLES})\.?(?=[ \t])")
# Spelled-out titles also start headings ("Talk With Your Doctor Before ..."), so they need more evidence.
_SPELLED_TITLES = frozenset({"Doctor", "Mister", "Miss", "Madam", "Madame"})
_ANY_CASE_WORD = (
    rf"(?:(?i:(?:van|von|de|del|della|der|den|di|da|du|la|le)[ \t]+){{0,2}}(?:{_NAME_WORD}|[A-Z][A-Z'’-]*[A-Z]))"
)
_LAST_FIRST = re.compile(
    rf"(?<![\w])(?P<cue>(?i:name|patient|pt))\.?[ \t]*:[ \t]*"
    rf"(?P<name>{_ANY_CASE_WORD}(?:[ \t]+{_ANY_CASE_WORD})?,[ \t]*{_ANY_CASE_WORD}(?:[ \t]+[A-Z]\.?(?![\w]))?)",
)
_NAME_BEFORE = (
    rf"(?P<name>{_NAME_WORD}(?:[ \t]+(?:[{_UPPER}]\.|{_NAME_WORD}|(?:de|del|la|van|von|der|da|di)(?=[ \t])))*)"
)
_CREDENTIAL_NAME = re.compile(rf"{_NAME_BEFORE}(?P<comma>,?)[ \t]+{_CREDENTIALS}(?![\w-])")
_AGE_SENTENCE_NAME = re.compile(
    rf"{_NAME_BEFORE}[ \t]+(?:is|was)[ \t]+an?[ \t]+(?:\d{{1,3}}|\[AGE\])[ \t-]*(?:year|yr|y/o|yo|month|week)",
)
_VERB_NAME = re.compile(
    rf"{_NAME_BEFORE}[ \t]+(?:presents|presented|reports|reported|complains|complained|states|stated|denies|"
    rf"denied|returns|returned|arrived|underwent|tolerated|was\s+seen|was\s+admitted|was\s+discharged|"
    rf"is\s+seen|comes\s+in|came\s+in|called|agrees|agreed)\b"
)
_PLACE_BEFORE = re.compile(r"(?:St\.?|Saint|San|Santa|Fort|Ft\.?|Lake|Mount|Mt\.?|Port|Camp)[ \t]+$")


# Capitalised words are looked up in the name sets, which is much faster than one alternation per list.
_CAPITALISED = re.compile(rf"(?<![\w'’-]){_NAME_WORD}{_WORD_END}")
_COMMA_WORD = re.compile(rf",[ \t]*(?P<word>{_NAME_WORD}){_WORD_END}")
_WORD_BEFORE = re.compile(rf"(?<![\w'’-])(?P<word>{_NAME_WORD})[ \t]+(?:[{_UPPER}]\.[ \t]+)?$")

# ---------------------------------------------------------------------------------------------------------------
# Dates
# ---------------------------------------------------------------------------------------------------------------

_MONTH_NAMES = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
    "Sept",
    "Jan",
    "Feb",
    "Mar",
    "Apr",
    "Jun",
    "Jul",
    "Aug",
    "Sep",
    "Oct",
    "Nov",
    "Dec",
)
# First letter upper case, the rest in any case: "March", "MARCH", "Mar." but not the verb "march" or "may".
_MONTH = "(?:" + "|".join(name[0] + "(?i:" + name[1:] + ")" for name in _MONTH_NAMES) + r")\.?"
_DAY = r"(?P<day>[0-3]?\d)(?:st|nd|rd|th)?"
_YEAR4 = r"(?:1[89]\d\d|2[01]\d\d)"
_NUMERIC_DATE = re.compile(
    r"(?<![\w/.-])(?P<a>\d{1,2})(?P<sep>[/.-])(?P<b>\d{1,2})(?P=sep)(?P<year>\d{4}|\d{2})(?![\w/-]|[.]\d)"
)
_ISO_DATE = re.compile(r"(?<![\w/.-])(?P<year>\d{4})(?P<sep>[/.-])(?P<a>\d{1,2})(?P=sep)(?P<b>\d{1,2})(?!\d|[/.-]\d)")
_NUMERIC_MONTH_YEAR = re.compile(rf"(?<![\w/.-])(?P<a>0?[1-9]|1[0-2])/{_YEAR4}(?![\w/-]|[.]\d)")
_MONTH_DAY = re.compile(rf"(?<![\w]){_MONTH}[ \t]+{_DAY}(?![\w:])(?:,?[ \t]*(?:{_YEAR4}|'\d\d)(?![\w]))?")
_DAY_MONTH = re.compile(rf"(?<![\w/.-]){_DAY}(?:[ \t]+of)?[ \t]+{_MONTH}(?![\w])(?:,?[ \t]+{_YEAR4}(?![\w]))?")
_DAY_MON_DASHED = re.compile(rf"(?<![\w/.-]){_DAY}-{_MONTH}(?:-(?:{_YEAR4}|\d\d))?(?![\w-])")
_MONTH_YEAR = re.compile(rf"(?<![\w]){_MONTH},?[ \t]+(?:of[ \t]+)?{_YEAR4}(?![\w])")
# Month/day without a year is a date only after a cue; otherwise "5/5 strength" and "1/2 tablet" would match.
_CUED_MONTH_DAY = re.compile(
    r"(?<![\w])(?i:on|dated|dob|dos|date|since|until|through|thru)[ \t]*:?[ \t]+"
    r"(?P<md>(?P<a>\d{1,2})/(?P<b>\d{1,2}))(?![\w/]|[.]\d)"
    r"(?![ \t]*(?i:mg|mcg|g\b|ml|tab|tablets?|units?|strength|pain|scale|dose|of\b))"
)

_AGE_NUMBER = r"(?P<age>9\d|1[0-2]\d)"
_AGE_PATTERNS = (
    re.compile(rf"(?<![\w.]){_AGE_NUMBER}(?:[ \t]*|-)(?:years?|yrs?|yr\.)(?:[ \t]*|-)old\b", re.IGNORECASE),
    re.compile(rf"(?<![\w.]){_AGE_NUMBER}[ \t]*-?(?:yo|y/o|y\.o\.?|yoa)(?![\w/])", re.IGNORECASE),
    re.compile(rf"(?<![\w.]){_AGE_NUMBER}[ \t]+(?:years?|yrs?)[ \t]+of[ \t]+age\b", re.IGNORECASE),
    re.compile(rf"(?<![\w])(?:age|aged)[ \t]*(?:of[ \t]+)?[:=]?[ \t]*{_AGE_NUMBER}(?![\w%]|\.\d)", re.IGNORECASE),
    re.compile(
        r"(?<![\w-])(?P<age>ninety(?:[- ](?:one|two|three|four|five|six|seven|eight|nine))?|one[ -]hundred"
        r"(?:(?:[ -]and)?[ -](?:one|two|three|four|five|six|seven|eight|nine|ten))?)"
        r"[ \t-]+(?:years?|yrs?)(?:[ \t-]+old|[ \t]+of[ \t]+age)\b",
        re.IGNORECASE,
    ),
    re.compile(
        r"(?<![\w])(?:in[ \t]+(?:his|her|their)[ \t]+(?:early[ \t]+|mid-?|late[ \t]+)?)(?P<age>90s|nineties)\b",
        re.IGNORECASE,
    ),
)

# ---------------------------------------------------------------------------------------------------------------
# Contact details, network addresses, numbers
# ---------------------------------------------------------------------------------------------------------------

_PHONE = re.compile(
    r"(?<![\w+])(?<![\d][-.])(?:\+?1[ \t.-]?)?(?:\(\d{3}\)[ \t]?|\d{3}[ \t.-])\d{3}[ \t.-]\d{4}"
    r"(?:[ \t]?(?:x|ext\.?|extension)[ \t]?\d{1,5})?(?![\w]|[-.]\d)"
)
_CUED_BARE_PHONE = re.compile(
    r"(?i:\b(?:phone|tel|telephone|cell|mobile|call|pager|fax)\b)[^\d\n]{0,15}"
    r"(?P<number>(?:\+?1)?\d{10}|(?<![\d-])\d{3}-\d{4})(?![\d-])"
)
_PHONE_CUE = re.compile(
    r"\b(?P<fax>fax(?:ed|ing)?|facsimile|F(?=[ \t]*[:#)]))\b|\b(?P<phone>phone|ph|tel|telephone|cell|mobile|call|"
    r"pager|beeper|contact|reached|P(?=[ \t]*[:#)]))\b",
    re.IGNORECASE,
)
_FAX_AFTER = re.compile(r"[ \t]*[(\[]?[ \t]*fax\b", re.IGNORECASE)
_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_URL = re.compile(r"(?<![\w@])(?:https?://|www\.)[^\s<>\"'()\[\]{}]+", re.IGNORECASE)
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)")
_IPV6 = re.compile(r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![\w:])")
_SSN = re.compile(r"(?<![\w-])(?P<number>(?!000|666)\d{3}-(?!00)\d{2}-(?!0000)\d{4})(?![\w-])")
_CUED_SSN = re.compile(
    r"(?i:\b(?:SSN|SS#|S\.S\.N\.?|social[ \t]+security(?:[ \t]+(?:number|no\.?|#))?))"
    r"[ \t]*(?:[:#]|(?i:is|no\.?|number))?[ \t]*(?P<number>\d{3}[ \t-]?\d{2}[ \t-]?\d{4})(?![\w-])"
)

# Identifier cues: (kind, pattern). Acronyms are matched in upper case only so "vin" or "dea" in prose do not
# count. Order matters where cues share words: "license plate" is a vehicle, other licences are licences.
_ID_CUES: tuple[tuple[str, str], ...] = (
    (
        "VEHICLE_ID",
        r"VIN|(?i:vehicle[ \t]+identification(?:[ \t]+number)?|licen[sc]e[ \t]+plates?(?:[ \t]+(?:number|no\.?|#))?"
        r"|plate[ \t]+(?:number|no\.?|#)|plates?|tag[ \t]+(?:number|no\.?|#)|vehicle[ \t]+(?:registration|reg\.?))",
    ),
    (
        "DEVICE_ID",
        r"UDI|S/N|SN(?=[ \t]*[:#])|(?i:serial(?:[ \t]+(?:number|no\.?|num|#))?|device[ \t]+(?:ID|identifier|number|"
        r"no\.?|serial(?:[ \t]+number)?)|unique[ \t]+device[ \t]+identifier|implant[ \t]+(?:ID|serial|number))",
    ),
    (
        "LICENSE",
        r"DEA|DL|CDL|(?i:(?:driver['’]?s[ \t]+)?licen[sc]e(?![ \t]+plate)(?:[ \t]+(?:number|no\.?|num|#))?|"
        r"certificate(?:[ \t]+(?:number|no\.?|#))?|cert\.?[ \t]*(?:number|no\.?|#))",
    ),
    (
        "HEALTH_PLAN",
        r"MBI|(?i:member[ \t]+(?:ID|number|no\.?|#)|subscriber[ \t]+(?:ID|number|no\.?|#)|policy(?:[ \t]+(?:number|"
        r"no\.?|#|ID))?|health[ \t]+plan(?:[ \t]+(?:ID|number|no\.?|#|beneficiary[ \t]+number))?|insurance[ \t]+"
        r"(?:ID|number|no\.?|#|policy)|beneficiary(?:[ \t]+(?:ID|identifier|number|no\.?|#))?|medicare(?:[ \t]+"
        r"(?:ID|number|no\.?|#|beneficiary[ \t]+identifier))?|medicaid(?:[ \t]+(?:ID|number|no\.?|#))?|"
        r"group[ \t]+(?:number|no\.?|#))",
    ),
    (
        "ACCOUNT",
        r"FIN|(?i:account(?:[ \t]+(?:number|no\.?|num|#))?|acct\.?(?:[ \t]+(?:number|no\.?|num|#))?|billing[ \t]+"
        r"(?:ID|number|no\.?|#)|encounter[ \t]+(?:number|no\.?|#)|visit[ \t]+(?:number|no\.?|#))",
    ),
    (
        "MRN",
        r"MRN|MR[ \t]*#|(?i:medical[ \t]+record(?:[ \t]+(?:number|no\.?|num|#))?|med\.?[ \t]+rec\.?(?:[ \t]+"
        r"(?:number|no\.?|#))?|record[ \t]*(?:#|number|no\.?)|chart[ \t]+(?:number|no\.?|#)|patient[ \t]+"
        r"(?:ID|identifier|number)|hospital[ \t]+(?:number|no\.?|#|ID)|unit[ \t]+(?:number|no\.?))",
    ),
)
# Cue words that are also everyday words ("serial imaging", "take into account") need a stronger identifier
# when nothing but a space separates them from it.
_WEAK_CUE_ENDS = word_set(
    "serial account policy plate plates record license licence certificate beneficiary medicare medicaid"
)
_ID_GAP = r"(?P<gap>(?:[ \t]*(?:[:#=]|\((?:[A-Z]{2,4})\)|(?i:no|num|nbr|number|ID|is|was)\b\.?))*[ \t]*)"
_ID_VALUE = r"(?P<value>(?:\(\d{2}\)[A-Za-z0-9]+){2,}|[A-Za-z0-9](?:[A-Za-z0-9]|[-/](?=[A-Za-z0-9]))*)(?![\w-])"
# Plates are often written in two groups ("ABC 1234"); other identifiers never contain a space here.
_PLATE_VALUE = (
    r"(?P<value>[A-Z0-9]{2,4}[ ][A-Z0-9]{2,4}(?![\w-])|[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9]))*(?![\w-]))"
)
_ID_PATTERNS = tuple(
    (
        kind,
        re.compile(rf"(?<![\w])(?P<cue>{cue})(?![\w]){_ID_GAP}{_PLATE_VALUE if kind == 'VEHICLE_ID' else _ID_VALUE}"),
    )
    for kind, cue in _ID_CUES
)
_VIN = re.compile(
    r"(?<![\w])(?:VIN|(?i:vehicle[ \t]+identification[ \t]+number))[ \t:#]*(?P<value>[A-HJ-NPR-Z0-9]{17})\b"
)

# ---------------------------------------------------------------------------------------------------------------
# Addresses and ZIP codes
# ---------------------------------------------------------------------------------------------------------------

_STATE_CODES = sorted(
    word_set(
        "AL AK AZ AR CA CO CT DE DC FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ NM NY NC ND "
        "OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY PR GU VI"
    )
)
_STATE_NAMES = (
    "Alabama|Alaska|Arizona|Arkansas|California|Colorado|Connecticut|Delaware|Florida|Georgia|Hawaii|Idaho|"
    "Illinois|Indiana|Iowa|Kansas|Kentucky|Louisiana|Maine|Maryland|Massachusetts|Michigan|Minnesota|Mississippi|"
    "Missouri|Montana|Nebraska|Nevada|New Hampshire|New Jersey|New Mexico|New York|North Carolina|North Dakota|"
    "Ohio|Oklahoma|Oregon|Pennsylvania|Rhode Island|South Carolina|South Dakota|Tennessee|Texas|Utah|Vermont|"
    "Virginia|Washington|West Virginia|Wisconsin|Wyoming|Puerto Rico"
)
_STATE = rf"(?:{'|'.join(_STATE_CODES)}|{_STATE_NAMES})"
_STATE_ONLY = re.compile(rf"(?:the[ \t]+)?(?:{_STATE_NAMES})", re.IGNORECASE)
_ZIP_VALUE = r"(?P<zip>\d{5}(?:-\d{4})?)(?![\w-])"
_STATE_ZIP = re.compile(rf"(?<![\w]){_STATE}\.?,?[ \t]+{_ZIP_VALUE}")
_CUED_ZIP = re.compile(rf"(?i:\b(?:zip(?:[ \t]*code)?|zipcode|postal[ \t]+code)\b)[ \t]*[:#]?[ \t]*{_ZIP_VALUE}")
_STREET_SUFFIX = (
    r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Place|Pl|Terrace|Ter|Way|Circle|Cir|"
    r"Parkway|Pkwy|Highway|Hwy|Square|Sq|Trail|Trl|Plaza|Plz|Crescent|Loop|Pike|Turnpike|Row|Alley)"
)
_STREET_WORD = rf"(?:{_NAME_WORD}|[{_UPPER}]\.|\d{{1,3}}(?:st|nd|rd|th)|Jr\.?|Sr\.?)"
_UNIT = r"(?:,?[ \t]*(?:Apt|Apartment|Suite|Ste|Unit|Rm|Room|Bldg|Building|Floor|Fl|#)\.?[ \t]*#?[ \t]*[A-Za-z0-9-]+)"
_STREET = re.compile(
    rf"(?<![\w/.-])\d{{1,6}}[A-Z]?(?:-\d{{1,4}})?[ \t]+(?:(?:[NSEW]|N[EW]|S[EW]|North|South|East|West)\.?[ \t]+)?"
    rf"(?:{_STREET_WORD}[ \t]+){{1,4}}(?P<suffix>{_STREET_SUFFIX})(?![\w])\.?"
)
_UNIT_AFTER = re.compile(_UNIT + r"(?![\w])")
_CITY_AFTER = re.compile(rf",[ \t]*(?P<city>{_NAME_WORD}(?:[ \t]+{_NAME_WORD}){{0,2}})(?=,?[ \t]+{_STATE}(?![\w]))")
_CITY_STATE_ZIP = re.compile(
    rf"(?<![\w])(?P<city>{_NAME_WORD}(?:[ \t]+{_NAME_WORD}){{0,2}}),[ \t]*{_STATE}[ \t]+\d{{5}}"
)
_PO_BOX = re.compile(r"(?<![\w])(?i:P\.?[ \t]?O\.?[ \t]*Box|Post[ \t]+Office[ \t]+Box)[ \t]+#?\d{1,6}(?![\w])")
_AFTER_DR = re.compile(rf"\.?[ \t]+(?P<word>{_NAME_WORD})")


_LINE = re.compile(r"[^\n]+")


class RuleDetector:
    """The built-in offline backend: regular expressions, context cues and word lists, no model.

    Precision is favoured where an identifier has a shape of its own (phones, dates, addresses) and context is
    required where it does not (record and plan numbers need a cue word, names need a title, a relation word, a
    listed name or a clinical verb). Medical eponyms and capitalised clinical words are kept out explicitly.
    """

    def find(self, text: str) -> list[Finding]:
        """Find identifier spans in text.

        Args:
            text: Clinical text; placeholders like "[DATE]" from an earlier pass are ignored by scrub.

        Returns:
            Findings in text order; spans of different rules may overlap (scrub resolves them).
        """
        findings: list[Finding] = []
        for rule in _RULES:
            findings.extend(rule(text))
        # Dates carry the weekday before them and an "at" time after them; scores shaped like dates are dropped.
        findings = [
            formats.widen(text, f) if f.kind == "DATE" else f
            for f in findings
            if f.kind != "DATE" or not formats.not_a_date(text, f.start)
        ]
        # Names lose the titles and cue words the rules took in ("Officer Ramirez", "Frau Müller").
        trimmed = []
        for finding in findings:
            if finding.kind == "NAME":
                span = trim_name_or_place(text, finding.start, finding.end, "NAME", stop_words=False)
                if span is None:
                    continue
                finding = Finding("NAME", *span)
            trimmed.append(finding)
        findings = trimmed
        return sorted(findings, key=lambda finding: (finding.start, finding.end, finding.kind))

    def find_again(self, text: str) -> list[Finding]:
        """Later scrub passes: find on the lines that hold a placeholder, the only lines an earlier pass changed.

        A placeholder can complete a rule's context ("[NAME] was seen"); the rules match within a line, so the
        other lines cannot hold anything new. This halves the rules' cost on long records.
        """
        findings: list[Finding] = []
        for line in _LINE.finditer(text):
            if "[" in line.group():
                start = line.start()
                findings.extend(Finding(f.kind, f.start + start, f.end + start) for f in self.find(line.group()))
        return findings


def _emails(text: str) -> Iterator[Finding]:
    for match in _EMAIL.finditer(text):
        yield Finding("EMAIL", match.start(), match.end())


def _urls(text: str) -> Iterator[Finding]:
    for match in _URL.finditer(text):
        # Sentence punctuation after a link is not part of it.
        end = match.end()
        while end > match.start() and text[end - 1] in ".,;:!?'\"":
            end -= 1
        yield Finding("URL", match.start(), end)


def _ips(text: str) -> Iterator[Finding]:
    for match in _IPV4.finditer(text):
        if all(int(part) <= 255 for part in match.group().split(".")):
            yield Finding("IP", match.start(), match.end())
    for match in _IPV6.finditer(text):
        candidate = match.group()
        # The parse below rejects times ("10:30:00": no "::" and not eight groups); fragments such as "1::2"
        # parse but are too short to be an address anyone writes down.
        if sum(1 for group in candidate.split(":") if group) < 3:
            continue
        try:
            ipaddress.IPv6Address(candidate)
        except ValueError:
            continue
        yield Finding("IP", match.start(), match.end())


def _ssns(text: str) -> Iterator[Finding]:
    for pattern in (_SSN, _CUED_SSN):
        for match in pattern.finditer(text):
            yield Finding("SSN", match.start("number"), match.end("number"))


def _phones(text: str) -> Iterator[Finding]:
    spans = [(match.start(), match.end()) for match in _PHONE.finditer(text)]
    spans += [(match.start("number"), match.end("number")) for match in _CUED_BARE_PHONE.finditer(text)]
    spans.sort()
    previous_end = 0
    for start, end in spans:
        yield Finding(_phone_kind(text, start, end, previous_end), start, end)
        previous_end = max(previous_end, end)


def _phone_kind(text: str, start: int, end: int, previous_end: int) -> str:
    # The nearest cue word before the number decides, but never one that belongs to the number before it:
    # in "phone 555-0100, fax 555-0101" the second number is the fax.
    window_start = max(previous_end, start - 40)
    cues = list(_PHONE_CUE.finditer(text, window_start, start))
    if cues:
        return "FAX" if cues[-1].group("fax") else "PHONE"
    if _FAX_AFTER.match(text, end):
        return "FAX"
    return "PHONE"


def _cued_ids(text: str) -> Iterator[Finding]:
    for match in _VIN.finditer(text):
        yield Finding("VEHICLE_ID", match.start("value"), match.end("value"))
    for kind, pattern in _ID_PATTERNS:
        for match in pattern.finditer(text):
            if _plausible_id(match):
                yield Finding(kind, match.start("value"), match.end("value"))


def _plausible_id(match: re.Match[str]) -> bool:
    value = match.group("value")
    digits = sum(character.isdigit() for character in value)
    if len(value) < 4 or digits < 3:
        return False
    if value.isdigit() and len(value) < 5:
        return False
    if _NUMERIC_DATE.fullmatch(value) or _ISO_DATE.fullmatch(value):
        return False
    cue_end = match.group("cue").split()[-1].lower().rstrip(".")
    bare_gap = not match.group("gap").strip()
    return not (bare_gap and cue_end in _WEAK_CUE_ENDS and digits < 4)


def _valid_day_month(month: int, day: int) -> bool:
    return 1 <= month <= 12 and 1 <= day <= 31


def _dates(text: str) -> Iterator[Finding]:
    for match in _NUMERIC_DATE.finditer(text):
        first, second = int(match.group("a")), int(match.group("b"))
        # A dotted date needs a four-digit year; "1.2.10" is a version or a list number.
        if match.group("sep") == "." and len(match.group("year")) != 4:
            continue
        if _valid_day_month(first, second) or _valid_day_month(second, first):
            yield Finding("DATE", match.start(), match.end())
    for match in _ISO_DATE.finditer(text):
        year = int(match.group("year"))
        if 1800 <= year <= 2199 and _valid_day_month(int(match.group("a")), int(match.group("b"))):
            yield Finding("DATE", match.start(), match.end())
    for match in _NUMERIC_MONTH_YEAR.finditer(text):
        yield Finding("DATE", match.start(), match.end())
    for pattern in (_MONTH_DAY, _DAY_MONTH, _DAY_MON_DASHED):
        for match in pattern.finditer(text):
            if 1 <= int(match.group("day")) <= 31:
                yield Finding("DATE", match.start(), match.end())
    for match in _MONTH_YEAR.finditer(text):
        yield Finding("DATE", match.start(), match.end())
    for match in _CUED_MONTH_DAY.finditer(text):
        if _valid_day_month(int(match.group("a")), int(match.group("b"))):
            yield Finding("DATE", match.start("md"), match.end("md"))


def _ages(text: str) -> Iterator[Finding]:
    for pattern in _AGE_PATTERNS:
        for match in pattern.finditer(text):
            yield Finding("AGE", match.start("age"), match.end("age"))


def _zips(text: str) -> Iterator[Finding]:
    for pattern in (_STATE_ZIP, _CUED_ZIP):
        for match in pattern.finditer(text):
            yield Finding("ZIP", match.start("zip"), match.end("zip"))


def _addresses(text: str) -> Iterator[Finding]:
    for match in _STREET.finditer(text):
        end = match.end()
        if match.group("suffix") == "Dr" and not _street_dr(text, match):
            continue
        unit = _UNIT_AFTER.match(text, end)
        if unit:
            end = unit.end()
        city = _CITY_AFTER.match(text, end)
        if city:
            end = city.end("city")
        elif not unit and text[end - 1] == ".":
            # "St." at the end of a sentence: the full stop stays in the text, outside the placeholder.
            end -= 1
        yield Finding("ADDRESS", match.start(), end)
    for match in _PO_BOX.finditer(text):
        yield Finding("ADDRESS", match.start(), match.end())
    for match in _CITY_STATE_ZIP.finditer(text):
        words = match.group("city").split()
        # Keep the words after the last ordinary or street word: "Visit Springfield" and "Security Boulevard
        # Baltimore" keep only the city, "New York" stays whole.
        for index in range(len(words) - 1, -1, -1):
            if words[index].lower() in STOP_WORDS and words[index].lower() not in CITY_PREFIXES:
                words = words[index + 1 :]
                break
        if words:
            yield Finding("ADDRESS", match.end("city") - len(" ".join(words)), match.end("city"))
    yield from places.places(text, _is_eponym)


def _street_dr(text: str, match: re.Match[str]) -> bool:
    # "12 Elm Dr." is a street, "Dr. Smith" a title: a suffix "Dr" followed by a capitalised word is kept only
    # when that word is an ordinary one (a new sentence), not a possible name.
    after = _AFTER_DR.match(text, match.end("suffix"))
    return after is None or after.group("word").lower() in STOP_WORDS


# ---------------------------------------------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------------------------------------------


def _name_run(
    text: str, position: int, limit: int = 4, *, particle_first: bool = False
) -> tuple[int, int, list[str]] | None:
    """Capitalised name words from position on: (start, end, words), or None when none follows."""
    start: int | None = None
    end: int | None = None
    words: list[str] = []
    for _ in range(limit + 2):
        match = _RUN_WORD.match(text, position)
        if match is None:
            break
        if match.group("word"):
            word = match.group("word")
            if word.lower() in STOP_WORDS:
                break
            words.append(word)
            end = match.end()
        elif match.group("particle") and (
            match.group("particle") not in PARTICLES or (start is None and not particle_first)
        ):
            # A particle ("van", "de la") belongs to a name when a name word follows it; only after a title
            # may it start one ("Dr. van der Berg").
            break
        if start is None:
            start = match.start() + len(match.group()) - len(match.group().lstrip(" \t"))
        position = match.end()
        if len(words) >= limit:
            break
    if end is None or start is None or not words:
        return None
    return start, end, words


def _verb_follows(text: str, end: int) -> bool:
    # "Nurse Ingrid gave report" continues with a content word; headings continue with a function word
    # ("Patient Guide to ...", "Talk with ...").
    after = _LOWER_WORD_NEXT.match(text, end)
    return after is not None and after.group("word") not in STOP_WORDS


def _listed(word: str) -> bool:
    return word in FIRST_NAMES or word in SURNAMES


def _is_eponym(text: str, end: int, words: list[str]) -> bool:
    # Each part of a hyphenated eponym counts: "Arnold-Chiari", "Creutzfeldt-Jakob".
    parts = (part for word in words for part in re.split(r"[-'’]", word.lower()))
    return any(part in EPONYMS for part in parts) or _EPONYM_AFTER.match(text, end) is not None


def trim_name_or_place(
    text: str, start: int, end: int, kind: str, *, stop_words: bool = True
) -> tuple[int, int] | None:
    """A language model's NAME or ADDRESS span without titles and cue words, or None when it cannot be one.

    Args:
        text: The whole text.
        start: The span's first character.
        end: Just past its last character.
        kind: "NAME" or "ADDRESS".
        stop_words: Also trim stop words ("Patient", "The"); the rules' own names keep them ("Dr Will Parker").

    Returns:
        (start, end) trimmed of leading titles, relation or role words ("Dr", "daughter", "Patient") and of
        anything after a line break or a column gap; None for spans left with only stop words, eponyms
        ("Parkinson", "Crohn's disease"), countries or US states.
    """
    gap = _SPAN_GAP.search(text, start, end)
    if gap and gap.start() > start:
        end = gap.start()
    words = [match for match in _SPAN_WORD.finditer(text, start, end)]
    # Places keep a capitalised first word that is also a stop word: "New Delhi", "Old Airport Road".
    lead_stop = stop_words and kind == "NAME"
    while words and (_ignorable(words[0].group(), lead_stop or words[0].group().islower())):
        words.pop(0)
    while words and (
        _ignorable(words[-1].group(), stop_words)
        or words[-1].group() in _CREDENTIAL_WORDS
        or len(words[-1].group()) == 1
    ):
        words.pop()
    if not words:
        return None
    start, end = words[0].start(), words[-1].end()
    plain = [word.group().strip("'’").removesuffix("'s").removesuffix("’s") for word in words]
    if kind == "NAME":
        return None if _is_eponym(text, end, plain) else (start, end)
    if _EPONYM_AFTER.match(text, end):  # "Baller-Gerold syndrome", "Hantaan virus", "Laing distal myopathy"
        return None
    value = " ".join(text[start:end].lower().split())
    if value in COUNTRY_PHRASES or all(word.lower() in COUNTRIES for word in plain):
        return None
    return None if _STATE_ONLY.fullmatch(value) else (start, end)


_HEAD_WORDS = frozenset(EPONYM_HEADS)
_DISEASE_END = re.compile(rf"(?i:{_DISEASE_WORD}|[a-z]*(?:plasia|trophy|emia|aemia|uria|algia|ectomy|otomy|scopy))$")
# Greek and Latin combining forms of medical words ("Microcephaly", "Ventricular", "Streptococcus", "Biopsy",
# "Symptomatic"): a word of eight letters or more that ends in one names no person or place.
_MEDICAL_FORM = re.compile(
    r"(?i:[a-z-]{4,}(?:cephaly|megaly|cocc(?:us|i|al)|plasma|cular|opsy|inine|ectasis|trophic|genic|ology|ologist|"
    r"atic|itic|otic|ysin|osin|ytes?|oid|ious|ative|ual|ive|ates))$"
)


def plausible_entity(value: str, kind: str) -> bool:
    """Whether a language model's NAME or ADDRESS span looks like one in clinical text.

    Names and places hold no digits and no disease words ("atresia", "Hypoplasia"); lower-case spans and
    spans in capitals count only when fedcare's name list knows a word of them (the model reads "Hb 68",
    "DIFF TOXIN" or "amox + clari" as names); a single word is a name only when listed, or a role word
    ("Paediatrician") is not one.
    """
    words = re.findall(r"[^\W\d_][\w'’-]*", value)
    if not words or any(character.isdigit() for character in value) or len(value.strip(". ")) < 2:
        return False
    if any(
        _DISEASE_END.match(word)
        or (len(word) >= 8 and _MEDICAL_FORM.match(word))
        or word.lower() in _HEAD_WORDS
        or word.lower().rstrip("s") in EPONYMS
        for word in words
    ):
        return False
    # A name or place of several words has every word capitalised ("Rohit Verma", "Cape Town"; not "L flank").
    if len(words) > 1 and not all(word[:1].isupper() or word.lower() in PARTICLES for word in words):
        return False
    known = names.listed()
    is_listed = any(names._listed_word(names._plain(word), known) for word in words)
    if all(word.islower() for word in words) or all(word.isupper() for word in words):
        return is_listed and len(words) > 1 if all(word.isupper() for word in words) else is_listed
    if any(names._ROLE_WORD.match(word) or word.lower() in STOP_WORDS for word in words if len(words) == 1):
        return False
    if kind == "NAME" and len(words) == 1:
        return is_listed
    return not (kind == "ADDRESS" and _is_eponym(value, len(value), words))


def _ignorable(word: str, stop_words: bool = True) -> bool:
    lowered = word.lower().rstrip(".")
    return (stop_words and lowered in STOP_WORDS) or lowered in _TITLE_WORDS or lowered in _CUE_WORDS


def _names(text: str) -> Iterator[Finding]:
    yield from names.names(text, STOP_WORDS, _is_eponym)
    yield from _title_names(text)
    yield from _cued_names(text)
    yield from _listed_names(text)
    yield from _context_names(text)


def _title_names(text: str) -> Iterator[Finding]:
    for match in _TITLE_NAME.finditer(text):
        run = _name_run(text, match.end(), limit=3, particle_first=True)
        if run is None:
            continue
        start, end, words = run
        if match.group("title") in _SPELLED_TITLES and len(words) < 2 and not _listed(words[0]):
            continue
        # A title names a person even when the surname is an eponym ("Dr. Parkinson"), unless a disease follows.
        if _EPONYM_AFTER.match(text, end) and any(word.lower() in EPONYMS for word in words):
            continue
        yield Finding("NAME", start, end)


def _cued_names(text: str) -> Iterator[Finding]:
    for match in _LAST_FIRST.finditer(text):
        words = re.findall(r"[\w'’-]+", match.group("name"))
        if any(word.lower() in STOP_WORDS or word.lower() in EPONYMS for word in words):
            continue
        # "Patient: Augmentin, Lasix" is a dialogue turn; after "patient:" a listed or upper-case name is needed.
        strong = match.group("cue").lower().startswith("name") or match.group("name").isupper()
        if strong or any(_listed(word) for word in words):
            yield Finding("NAME", match.start("name"), match.end("name"))
    for match in _CUE_NAME.finditer(text):
        family = match.group("family")
        if (
            family
            and "name" in family.lower()
            and _NAME_CUE_BLOCKERS.search(text, max(0, match.start() - 20), match.start())
        ):
            continue
        run = _name_run(text, match.end(), limit=3)
        if run is None:
            continue
        start, end, words = run
        if _is_eponym(text, end, words):
            continue
        # A lone unlisted word after a role cue is a name only inside a sentence ("Nurse Ingrid gave report"),
        # not in a heading ("Patient Education Materials") nor after a speaker label ("Patient: Probably not").
        lone = match.group("role") and len(words) < 2 and not _listed(words[0])
        if lone and (match.group("punct") == ":" or not _verb_follows(text, end)):
            continue
        yield Finding("NAME", start, end)


def _listed_names(text: str) -> Iterator[Finding]:
    for match in _CAPITALISED.finditer(text):
        word = match.group()
        if word in FIRST_NAMES:
            yield from _after_first_name(text, match)
        if word in SURNAMES:
            yield from _around_surname(text, match)


def _after_first_name(text: str, match: re.Match[str]) -> Iterator[Finding]:
    if _PLACE_BEFORE.search(text, max(0, match.start() - 8), match.start()):
        return
    run = _name_run(text, match.end(), limit=3)
    if run is not None and not _is_eponym(text, run[1], [match.group(), *run[2]]):
        yield Finding("NAME", match.start(), run[1])


def _around_surname(text: str, match: re.Match[str]) -> Iterator[Finding]:
    # "Garcia, Maria": a listed surname, a comma and a listed first name.
    comma = _COMMA_WORD.match(text, match.end())
    if comma and comma.group("word") in FIRST_NAMES:
        yield Finding("NAME", match.start(), comma.end("word"))
    # "Xavier Nguyen": any ordinary capitalised word before a listed surname.
    before = _WORD_BEFORE.search(text, max(0, match.start() - 40), match.start())
    if before is None:
        return
    lowered = before.group("word").lower()
    if lowered in STOP_WORDS or lowered in EPONYMS or lowered in CITY_PREFIXES:
        return
    if _PLACE_BEFORE.search(text, max(0, before.start() - 8), before.start()):
        return
    if not _is_eponym(text, match.end(), [match.group()]):
        yield Finding("NAME", before.start(), match.end())


def _context_names(text: str) -> Iterator[Finding]:
    for pattern, least in ((_CREDENTIAL_NAME, 1), (_AGE_SENTENCE_NAME, 1), (_VERB_NAME, 2)):
        for match in pattern.finditer(text):
            span = _trim_name(text, match.start("name"), match.end("name"))
            if span is None:
                continue
            start, end, words = span
            # "Becker MD" is muscular dystrophy; a lone word takes a credential only after a comma.
            if pattern is _CREDENTIAL_NAME and not match.group("comma") and len(words) < 2:
                continue
            if len(words) >= least and not _is_eponym(text, end, words):
                yield Finding("NAME", start, end)


def _trim_name(text: str, start: int, end: int) -> tuple[int, int, list[str]] | None:
    # The pattern may have swallowed ordinary capitalised words before the name ("Signed John Smith, MD"):
    # keep only the trailing words that are neither stop words nor eponyms, and no leading particle.
    kept: list[re.Match[str]] = []
    for piece in reversed(list(re.finditer(r"\S+", text[start:end]))):
        if piece.group().lower() in STOP_WORDS or piece.group().lower() in EPONYMS:
            break
        kept.insert(0, piece)
    while kept and kept[0].group().lower() in PARTICLES:
        kept.pop(0)
    words = [piece.group() for piece in kept if piece.group().lower() not in PARTICLES]
    if not any(len(word.rstrip(".")) > 1 for word in words):
        return None
    return start + kept[0].start(), start + kept[-1].end(), words


def _formats(text: str) -> Iterator[Finding]:
    yield from formats.dates(text)
    yield from formats.phones(text)
    yield from formats.numbers(text)
    yield from formats.ages(text)
    yield from formats.urls(text)
    yield from formats.addresses(text, STOP_WORDS | EPONYMS)


_RULES: tuple[Callable[[str], Iterator[Finding]], ...] = (
    _formats,
    _emails,
    _urls,
    _ips,
    _ssns,
    _phones,
    _cued_ids,
    _dates,
    _ages,
    _zips,
    _addresses,
    _names,
)
