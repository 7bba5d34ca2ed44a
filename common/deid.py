"""De-identify clinical text before tokenization: typed placeholders for Safe Harbor identifiers, counts only."""

from __future__ import annotations

import importlib
import ipaddress
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from common.errors import ConfigError
from common.records import ChatRecord

PHI_TYPES: tuple[str, ...] = (
    "NAME",
    "DATE",
    "AGE",
    "PHONE",
    "FAX",
    "EMAIL",
    "SSN",
    "MRN",
    "ACCOUNT",
    "HEALTH_PLAN",
    "LICENSE",
    "DEVICE_ID",
    "VEHICLE_ID",
    "URL",
    "IP",
    "ADDRESS",
    "ZIP",
)

# Tie-break between equally long overlapping spans: a cue-labelled identifier says more about what a number is
# than its shape does (an "MRN 555-123-4567" is a record number, not a phone), and names come last because
# their rules are the least certain.
_PRIORITY: tuple[str, ...] = (
    "EMAIL",
    "URL",
    "IP",
    "MRN",
    "ACCOUNT",
    "HEALTH_PLAN",
    "LICENSE",
    "DEVICE_ID",
    "VEHICLE_ID",
    "SSN",
    "FAX",
    "PHONE",
    "DATE",
    "AGE",
    "ZIP",
    "ADDRESS",
    "NAME",
)
_RANK = {kind: rank for rank, kind in enumerate(_PRIORITY)}
_PLACEHOLDER = re.compile(r"\[(?:" + "|".join(PHI_TYPES) + r")\]")


@dataclass(frozen=True)
class Finding:
    """Where one identifier sits in a text; deliberately holds no text, so findings can be logged and counted.

    Attributes:
        kind: One of PHI_TYPES.
        start: Offset of the first character.
        end: Offset just past the last character.
    """

    kind: str
    start: int
    end: int


@runtime_checkable
class Detector(Protocol):
    """A de-identification backend: reports spans of identifiers, never their text."""

    def find(self, text: str) -> list[Finding]:
        """Return every identifier span found in text; spans may overlap."""
        ...


def _words(text: str, *, lower: bool = False) -> frozenset[str]:
    return frozenset(word.lower() if lower else word for word in text.split())


# ---------------------------------------------------------------------------------------------------------------
# Word lists. Names are US census-style common names; words that are also ordinary or medical words (Grace,
# Gene, Iris, Bell, Graves, Brown, ...) and place names (Virginia, Austin, Washington) are left out on purpose:
# a name list that matches "Graves disease" or "West Virginia" costs more precision than it buys recall.
# ---------------------------------------------------------------------------------------------------------------

_FIRST_NAMES = _words(
    """
    Aaron Abigail Adam Adrian Ahmed Aisha Alan Albert Alejandro Alex Alexander Alexis Alice Alicia Allison Alyssa
    Amanda Amy Ana Andrea Andrew Angela Anita Ann Anna Anne Annie Anthony Antonio Arthur Ashley Audrey Barbara
    Benjamin Betty Beverly Billy Bobby Bonnie Bradley Brandon Brenda Brian Brittany Bruce Bryan Caleb Camila
    Carl Carlos Carmen Carolyn Catherine Charles Chester Clarence
    Cheryl Chloe Christina Christine Christopher Cindy Claire Connie Craig
    Crystal Cynthia Daniel Danielle David Deborah Debra Denise Dennis Diana Diane Donald Donna Doris Dorothy Douglas
    Dylan Edward Eileen Elena Elijah Elizabeth Ella Ellen Emily Emma Eric Erica Erin Esther Ethan Eugene Evelyn
    Fatima Frances Francisco Fred Gabriel Gary George Gerald Gloria Gregory Hannah Harold Harry Heather Helen Henry
    Howard Irene Isaac Isabella Jacob Jacqueline James Jamie Jane Janet Janice Jason Javier Jean Jeffrey Jennifer
    Jeremy Jerry Jesse Jessica Jesus Joan Joanne John Jonathan Jorge Jose Joseph Joshua Joyce Juan Judith Judy
    Julia Julie Justin Karen Katherine Kathleen Kathryn Kayla Keith Kelly Kenneth Kevin Kimberly Kyle Larry Laura
    Lauren Lawrence Leah Linda Lisa Logan Lori Louis Lucas Luis Luke Lynn Manuel Margaret Maria Marie Marilyn
    Marcus Martha Mary Matthew Megan Melissa Michael Michelle Miguel Mohammed Muhammad Nancy Natalie Nathan Nicholas
    Nicole Noah Norma Olivia Omar Oscar Pamela Patricia Patrick Paul Paula Peggy Peter Philip Phyllis Priya Rachel
    Rajesh Ralph Randy Raymond Rebecca Ricardo Richard Rita Robert Roberto Roger Ronald Rosa Ruth Ryan Samantha
    Samuel Sandra Sara Sarah Scott Sean Sharon Shirley Sophia Stephanie Stephen Steven Susan Teresa Terry Theresa
    Thomas Timothy Tina Todd Tyler Valerie Vanessa Victor Vincent Walter Wanda Wayne William Willie Yolanda
    Zachary Zoe Mildred Gladys Edna Ethel Lillian Agnes Bernice Eleanor Marjorie Lucille Harriet Leonard Stanley
    Norman Floyd Lloyd Milton Irving Sidney Theodore Vernon Bernard Marvin Herman Jerome
    """
)

_SURNAMES = _words(
    """
    Adams Aguilar Alexander Ali Allen Alvarez Anderson Andrews Armstrong Bailey Baker Barnes Bennett Berry Boyd
    Bradley Brooks Bryant Burke Butler Campbell Carlson Carpenter Carroll Carter Castillo Castro Chavez Chen Clark
    Cohen Cole Coleman Collins Contreras Cooper Crawford Cruz Cunningham Daniels Davis Delgado Diaz Dixon Duncan
    Dunn Edwards Elliott Ellis Evans Ferguson Fernandez Fisher Flores Foster Freeman Friedman Garcia Gardner Garza
    Gibson Gomez Gonzales Gonzalez Gordon Graham Griffin Guerrero Gupta Gutierrez Guzman Hamilton Hansen
    Harper Harris Harrison Hart Hawkins Hayes Henderson Hernandez Herrera Hicks Hoffman Howard Hudson Hughes
    Jackson Jenkins Jimenez Johnson Johnston Jones Kaur Kelley Kelly Kennedy Khan Kim Kumar Larson Lawrence Lee
    Lewis Li Liu Lopez Lynch Marshall Martin Martinez Mason Matthews McCarthy McDonald Medina Mendez Mendoza Meyer
    Miller Mitchell Moore Morales Moreno Morgan Morris Munoz Murphy Murray Myers Nelson Nguyen Nichols Obrien
    O'Brien O'Connor Olson Ortiz Owens Palmer Parker Patel Patterson Payne Pena Perez Perkins Perry Peters Peterson
    Phillips Pierce Porter Powell Quinn Ramirez Ramos Reyes Reynolds Richards Richardson Riley Rivera Roberts
    Robertson Robinson Rodriguez Rogers Romero Ross Ruiz Russell Ryan Salazar Sanchez Sanders Santos Schmidt
    Schneider Scott Shah Shaw Silva Simmons Simpson Singh Snyder Soto Spencer Stephens Stevens Stewart Sullivan
    Taylor Thomas Thompson Torres Tran Tucker Vargas Vasquez Wagner Walker Wallace Wang Warren Watson Weaver Webb
    Wheeler Williams Willis Wilson Wong Wright Yang Zhang
    """
)

# Capitalised tokens that are eponyms or medical names; never a person in the rules that have no title cue.
_EPONYMS = _words(
    """
    Addison Alport Alzheimer Angelman Apgar Asperger Babinski Barre Barré Barrett Batten Behcet Behçet Bell Breslow
    Broca Brudzinski Brugada Burkitt Canavan Charcot Chiari Conn Creutzfeldt Crohn Cushing Danlos Doppler Down
    Dupuytren Duchenne Ehlers Eisenmenger Epley Ewing Fabry Fallot Fanconi Foley Gaucher Gehrig Glasgow Gleason
    Goodpasture Gram Graves Guillain Hashimoto Heimlich Henoch Hirschsprung Hodgkin Holter Homans Huntington Hurler
    Jakob Kaposi Kawasaki Kernig Klinefelter Korsakoff Krabbe Kussmaul Lewy Lou Lyme Mallory Marfan Meckel Meniere
    Ménière Nissen Niemann Noonan Osler Paget Pap Parkinson Peyronie Pompe Prader Prinzmetal Raynaud Rett Reye
    Romberg Roux Sachs Schonlein Schönlein Sjogren Sjögren Takayasu Takotsubo Tay Tourette Trendelenburg Turner
    Valsalva Wegener Wernicke Whipple Willi Wilms Wolff Zenker Zollinger
    """,
    lower=True,
)

# A run of capitalised words followed by one of these (after an optional possessive and one more word) is an
# eponym ("Hodgkin lymphoma", "Lou Gehrig's disease", "Marcus Gunn jaw-winking syndrome"), not a person.
_EPONYM_HEADS = sorted(
    _words(
        "disease diseases syndrome syndromes palsy lymphoma sarcoma tumor tumour carcinoma leukemia sign signs test "
        "tests maneuver manoeuvre reflex phenomenon score scale criteria classification fracture catheter tube ulcer "
        "esophagus cyst neuroma disorder dystrophy ataxia chorea cell cells body bodies node nodes nodule pupil stain "
        "smear monitor position procedure operation surgery repair technique method index law rule effect triad "
        "angina virus bacillus contracture deformity aneurysm anomaly sequence equation formula block incision line "
        "lines point ring membrane canal duct gland glands pouch hernia valve loop spot spots thyroiditis "
        "encephalopathy dementia neuralgia neuropathy arthritis anemia anaemia ratio curve diverticulum protocol "
        "variant grade grading staging splint fixation granuloma esotropia keratitis tremor type types"
    )
)
# Disease-name endings catch the eponyms no list can hold ("Marie Unna congenital hypotrichosis").
_DISEASE_WORD = r"[a-z]{2,}(?:osis|oses|itis|emia|aemia|pathy|plasia|trophy|oma|omas|ism|ia|iasis)"
_EPONYM_AFTER = re.compile(
    r"(?:['’]s|s['’])?[ \t-]+(?:[A-Za-z-]+[ \t]+)?(?:(?i:" + "|".join(_EPONYM_HEADS) + rf")|{_DISEASE_WORD})\b"
)

# Capitalised words that end or reject a name: function words, dialogue fillers, note headings, departments,
# places and other words that follow a first name or a cue word without being a name.
_STOP_WORDS = _words(
    """
    a about above after again against all also although always am an and another any are around as at away back
    be because been before being below best between both but by can cannot could did do does doing done down during
    each either else enough even ever every for from further get gets getting give given go goes going good got
    great had has have having he hello her here hers herself hi him himself his how however i if in into is it its
    itself just last let like made make many may maybe me might more most much must my myself neither never new
    next no nor not now of off oh ok okay old on once one only or other others our out over own per please quite
    rather really right said same say says see seen she should since so some still such sure than thank thanks
    that the their them themselves then there therefore these they this those though through thus to today
    tomorrow too toward towards um uh under until up upon us very via was we well were what when where whether which
    while who whom whose why will with within without would yes yeah yesterday yet you your yours alright hey
    patient patients pt name names age sex male female man woman boy girl baby infant child children
    history hx assessment plan impression diagnosis diagnoses medications medication meds allergies allergy exam
    examination physical review systems chief complaint present illness past medical surgical family social
    vitals vital signs labs lab laboratory results result imaging procedure procedures findings note notes progress
    discharge discharged admission admitted summary instructions follow followup date time dob mrn account address
    phone fax email insurance policy member provider attending resident nurse doctor physician surgeon clinic
    clinics hospital hospitals center centers centre department dept unit ward room floor service services emergency
    urgent care intensive primary general internal cardiology oncology neurology radiology pathology pediatrics
    psychiatry surgery orthopedics dermatology endocrinology gastroenterology nephrology pulmonology rheumatology
    urology obstetrics gynecology hematology infectious disease diseases syndrome disorder cancer heart lung kidney
    liver brain blood health healthcare medicine medicare medicaid institute institutes national american
    association society foundation university college school library research program programs administration
    agency office board council committee group network alliance coalition control prevention information
    education resources resource support trial trials study studies clinical genetic genetics rare type stage grade
    class level normal abnormal positive negative left right bilateral acute chronic severe mild moderate stable
    unstable other none never always morning evening night week weeks month months year years
    monday tuesday wednesday thursday friday saturday sunday january february march april june july august
    september october november december jan feb mar apr jun jul aug sep sept oct nov dec
    street st avenue ave road rd drive dr lane ln boulevard blvd court ct place pl way suite apt apartment building
    bldg practitioner assistant north south east west miss mister mr mrs ms mx prof madam unfortunately
    fortunately additionally furthermore otherwise currently recently previously overall finally initially
    subsequently apparently basically actually honestly usually probably approximately almost nope yep pretty
    kinda sorry everything nothing something anything two three four five six seven eight nine ten eleven twelve
    twenty thirty forty fifty sixty seventy eighty ninety hundred first second third
    central mount saint lake river park hill valley county city state town village united states america english
    spanish caucasian african hispanic latino latina asian black white native jewish european indian chinese
    japanese korean mexican christian catholic muslim protestant data query alabama alaska arizona arkansas
    california colorado connecticut delaware florida hawaii idaho illinois indiana iowa kansas kentucky louisiana
    maine maryland massachusetts michigan minnesota mississippi missouri montana nebraska nevada ohio oklahoma
    oregon pennsylvania tennessee texas utah vermont wisconsin wyoming
    continue continued start started stop stopped return returned take taking taken call called check recheck
    monitor refer referred consult consulted schedule scheduled signed dictated electronically reviewed discussed
    denies denied reports reported presents presented noted states stated complains complained agrees agreed
    tolerated underwent arrived seen visit visits per regarding re cc attn subject dear sincerely regards
    mg mcg ml tablet tablets capsule capsules dose doses daily twice bid tid qid prn po iv im sc subcutaneous oral
    tylenol advil motrin aspirin lipitor eliquis lasix coumadin warfarin insulin metformin synthroid zoloft
    prozac xanax ativan norco percocet vicodin plavix crestor zocor nexium prilosec protonix
    """
)

_TITLES = r"(?:Dr|Mr|Mrs|Ms|Mx|Prof|Miss|Mister|Doctor|Madam|Madame)"
_UPPER = "A-ZÀ-ÖØ-Þ"
_LOWER = "a-zß-öø-ÿ"
# One name word: "Smith", "O'Brien", "McDonald", "DeLuca", "Smith-Jones", "José".
_NAME_WORD = rf"(?:[{_UPPER}]['’])?[{_UPPER}][{_LOWER}]+(?:[{_UPPER}][{_LOWER}]+)?(?:-[{_UPPER}][{_LOWER}]+)*"
# A name word ends at a non-word character; an apostrophe ends it only as a possessive ("Smith's"), so that
# "O'Brien" is not cut to "O".
_WORD_END = r"(?![\w-]|['’](?![sS]\b))"
_PARTICLES = _words("van von de del della der den di da du la le dos das bin ibn al el")
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
_WEAK_CUE_ENDS = _words(
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
    _words(
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
_CITY_PREFIXES = _words("new north south east west saint st san santa los las el fort lake mount port palm", lower=True)
_PO_BOX = re.compile(r"(?<![\w])(?i:P\.?[ \t]?O\.?[ \t]*Box|Post[ \t]+Office[ \t]+Box)[ \t]+#?\d{1,6}(?![\w])")
_AFTER_DR = re.compile(rf"\.?[ \t]+(?P<word>{_NAME_WORD})")


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
        return sorted(findings, key=lambda finding: (finding.start, finding.end, finding.kind))


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
            if words[index].lower() in _STOP_WORDS and words[index].lower() not in _CITY_PREFIXES:
                words = words[index + 1 :]
                break
        if words:
            yield Finding("ADDRESS", match.end("city") - len(" ".join(words)), match.end("city"))


def _street_dr(text: str, match: re.Match[str]) -> bool:
    # "12 Elm Dr." is a street, "Dr. Smith" a title: a suffix "Dr" followed by a capitalised word is kept only
    # when that word is an ordinary one (a new sentence), not a possible name.
    after = _AFTER_DR.match(text, match.end("suffix"))
    return after is None or after.group("word").lower() in _STOP_WORDS


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
            if word.lower() in _STOP_WORDS:
                break
            words.append(word)
            end = match.end()
        elif match.group("particle") and (
            match.group("particle") not in _PARTICLES or (start is None and not particle_first)
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
    return after is not None and after.group("word") not in _STOP_WORDS


def _listed(word: str) -> bool:
    return word in _FIRST_NAMES or word in _SURNAMES


def _is_eponym(text: str, end: int, words: list[str]) -> bool:
    return any(word.lower() in _EPONYMS for word in words) or _EPONYM_AFTER.match(text, end) is not None


def _names(text: str) -> Iterator[Finding]:
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
        if _EPONYM_AFTER.match(text, end) and any(word.lower() in _EPONYMS for word in words):
            continue
        yield Finding("NAME", start, end)


def _cued_names(text: str) -> Iterator[Finding]:
    for match in _LAST_FIRST.finditer(text):
        words = re.findall(r"[\w'’-]+", match.group("name"))
        if any(word.lower() in _STOP_WORDS or word.lower() in _EPONYMS for word in words):
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
        if word in _FIRST_NAMES:
            yield from _after_first_name(text, match)
        if word in _SURNAMES:
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
    if comma and comma.group("word") in _FIRST_NAMES:
        yield Finding("NAME", match.start(), comma.end("word"))
    # "Xavier Nguyen": any ordinary capitalised word before a listed surname.
    before = _WORD_BEFORE.search(text, max(0, match.start() - 40), match.start())
    if before is None:
        return
    lowered = before.group("word").lower()
    if lowered in _STOP_WORDS or lowered in _EPONYMS or lowered in _CITY_PREFIXES:
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
        if piece.group().lower() in _STOP_WORDS or piece.group().lower() in _EPONYMS:
            break
        kept.insert(0, piece)
    while kept and kept[0].group().lower() in _PARTICLES:
        kept.pop(0)
    words = [piece.group() for piece in kept if piece.group().lower() not in _PARTICLES]
    if not any(len(word.rstrip(".")) > 1 for word in words):
        return None
    return start + kept[0].start(), start + kept[-1].end(), words


_RULES: tuple[Callable[[str], Iterator[Finding]], ...] = (
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
# RuleDetector holds no state, so one instance serves every call that names no detector.
_BUILT_IN = RuleDetector()

# ---------------------------------------------------------------------------------------------------------------
# Scrubbing
# ---------------------------------------------------------------------------------------------------------------


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
        if finding.kind not in _RANK:
            # The kind is not echoed: a faulty backend could have put record text in it.
            raise ConfigError(f"detector {type(backend).__name__} returned a finding of a kind not in PHI_TYPES")
        start, end = max(0, finding.start), min(len(text), finding.end)
        if start >= end or any(start < p_end and p_start < end for p_start, p_end in placeholders):
            continue
        candidates.append(Finding(finding.kind, start, end))
    candidates.sort(key=lambda finding: (finding.start - finding.end, _RANK[finding.kind], finding.start))
    chosen: list[Finding] = []
    for finding in candidates:
        if all(finding.end <= kept.start or kept.end <= finding.start for kept in chosen):
            chosen.append(finding)
    return sorted(chosen, key=lambda finding: finding.start)


def scrub(text: str, detector: Detector | None = None) -> tuple[str, Counter[str]]:
    """Replace every identifier in text by a typed placeholder such as "[DATE]".

    Passes repeat until the detector finds nothing new, so scrub(scrub(x)[0])[0] == scrub(x)[0]. This ends:
    every pass turns at least one character outside placeholders into a placeholder and never touches one.

    Args:
        text: The text to scrub.
        detector: Backend to use; the built-in RuleDetector when None.

    Returns:
        (scrubbed text, number of identifiers replaced per kind). The counts never carry values.

    Raises:
        ConfigError: The detector returned a finding of a kind outside PHI_TYPES.
    """
    counts: Counter[str] = Counter()
    while True:
        findings = detect(text, detector)
        if not findings:
            return text, counts
        pieces: list[str] = []
        cursor = 0
        for finding in findings:
            pieces.append(text[cursor : finding.start])
            pieces.append(f"[{finding.kind}]")
            cursor = finding.end
            counts[finding.kind] += 1
        pieces.append(text[cursor:])
        text = "".join(pieces)


def scrub_record(record: ChatRecord, detector: Detector | None = None) -> tuple[ChatRecord, Counter[str]]:
    """Scrub every prompt turn and the completion of a training record.

    Args:
        record: The record to scrub; roles are kept as they are.
        detector: Backend to use; the built-in RuleDetector when None.

    Returns:
        (scrubbed record, identifiers replaced per kind, summed over all turns).
    """
    counts: Counter[str] = Counter()
    turns: list[tuple[str, str]] = []
    for role, content in record.prompt:
        scrubbed, found = scrub(content, detector)
        turns.append((role, scrubbed))
        counts.update(found)
    completion, found = scrub(record.completion, detector)
    counts.update(found)
    return ChatRecord(prompt=tuple(turns), completion=completion), counts


def load_detector(spec: str) -> Detector:
    """Build a de-identification backend from a configuration string.

    Args:
        spec: "rules" for the built-in RuleDetector, or "package.module:ClassName" for a site's own backend
            (for example a stronger NER model); the class is instantiated without arguments and must have a
            find(text) -> list[Finding] method.

    Returns:
        The detector.

    Raises:
        ConfigError: The spec is neither form, the module or class cannot be loaded, or the object has no find.
    """
    spec = spec.strip()
    if spec == "rules":
        return RuleDetector()
    module_name, separator, class_name = spec.partition(":")
    if not separator or not module_name or not class_name.isidentifier():
        raise ConfigError(f"unknown de-identification detector {spec!r}; use 'rules' or 'package.module:ClassName'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(f"de-identification detector module {module_name!r} cannot be imported ({error})") from None
    factory = getattr(module, class_name, None)
    if factory is None or not callable(factory):
        raise ConfigError(f"module {module_name!r} has no class {class_name!r} for de-identification")
    try:
        detector = factory()
    except Exception as error:  # noqa: BLE001 - any failure of third-party construction is a configuration problem
        raise ConfigError(f"de-identification detector {spec!r} cannot be created ({type(error).__name__})") from None
    if not isinstance(detector, Detector):
        raise ConfigError(f"de-identification detector {spec!r} has no find(text) method")
    return detector
