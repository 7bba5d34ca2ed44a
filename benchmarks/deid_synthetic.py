"""Synthetic PHI benchmark: fictional clinical notes with planted identifiers, scored per type for a detector."""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.deid import PHI_TYPES, Detector, Finding, RuleDetector, detect
from common.errors import ConfigError

# Kinds whose planted span counts as recalled on any overlap: their boundaries are a matter of taste
# ("Dr. Smith" vs "Smith", "1 Oak St, Springfield" vs "1 Oak St"), unlike a number's.
_LOOSE_KINDS = frozenset({"NAME", "ADDRESS", "DATE"})
_SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
_WORD = re.compile(r"[^\W\d_]+")


@dataclass(frozen=True)
class PlantedNote:
    """A synthetic note and the exact spans of the identifiers planted in it.

    Attributes:
        text: The note.
        spans: One Finding per planted identifier, in text order.
    """

    text: str
    spans: tuple[Finding, ...]


@dataclass(frozen=True)
class TypeScore:
    """How a detector did on one kind of identifier.

    Attributes:
        kind: One of PHI_TYPES.
        planted: Identifiers of this kind planted in the notes.
        found: Findings of this kind the detector reported (after overlap resolution).
        true_positive: Findings of this kind that overlap a planted span of the same kind.
        recall: Share of planted spans recalled (1.0 when none were planted).
        precision: true_positive / found (1.0 when nothing was found).
    """

    kind: str
    planted: int
    found: int
    true_positive: int
    recall: float
    precision: float


# ---------------------------------------------------------------------------------------------------------------
# Fictional values. Deliberately independent of common.deid's word lists: many names below are in no list there,
# so the benchmark measures the cue rules as well as the lists.
# ---------------------------------------------------------------------------------------------------------------


def _split(text: str) -> list[str]:
    return text.split()


_FIRST = _split(
    "Maria Robert Linda Michael Susan Kevin Patricia Daniel Karen Jose Emily Thomas Nancy Harold Dolores Marguerite "
    "Cornelius Winifred Ezekiel Beatriz Hiroshi Aaliyah Oluwaseun Thanh Siobhan Dmitri Ingrid Rafael Yusuf Anjali "
    "Bogdan Chidi Esperanza Hamza Ines Kofi Leilani Mateo Nadia Pavel Rohan Sakura Tariq Valentina Wen Ximena "
    "Zainab Anne-Marie Jean-Luc Gertrude Lucinda Barnaby Octavia Desmond Rosalind Ignatius Philippa"
)
_LAST = _split(
    "Okonkwo Nakamura Kowalski Haddad Lindqvist Brennan Delacroix Ferreira Gallagher Ivanova Jablonski Khoury Mbeki "
    "Nasser Oyelaran Petrov Quintero Rasmussen Sato Thorsen Vukovic Whitfield Yilmaz Zielinski O'Malley McAllister "
    "Smith-Hughes Garcia Johnson Nguyen Patel Williams Rodriguez Kim Thompson Robinson Lewis Hernandez Chen Moore "
    "Baptiste Abernathy Castellanos Fitzgerald Hollingsworth Szymanski Achterberg Bergstrom Kaczmarek Mwangi"
) + ["de la Cruz", "van der Berg"]
_MIDDLE = "ABCDEFGHJKLMNPRSTW"
_STREETS = _split(
    "Oak Maple Cedar Elm Birch Chestnut Willow Sunset Riverside Kingsley Prospect Harbor Lincoln Hawthorne Juniper "
    "Magnolia Sycamore Bayview Orchard Meadowbrook"
) + ["Cedar Ridge", "Willow Creek", "Harbor View", "Martin Luther King Jr.", "5th", "21st", "Old Mill"]
_SUFFIXES = _split(
    "Street St St. Avenue Ave Ave. Road Rd Boulevard Blvd Lane Ln Drive Dr Court Ct Place Way Terrace Circle Parkway"
)
_UNITS = ("Apt 4B", "Apt. 12", "Suite 210", "Unit 7", "#3C", "Apartment 18")
_CITIES = _split(
    "Springfield Riverton Fairview Lakewood Millbrook Ashford Brookhaven Greenville Kingsport Oakdale Westbury"
) + ["Cedar Falls", "Port Haven", "East Lyme"]
_STATES = _split("MA NY CA TX OH IL PA GA WA MN NC AZ") + ["Ohio", "Oregon", "New Jersey"]
_MONTHS = _split("January February March April May June July August September October November December")
_DOMAINS = ("example.org", "mail.example.com", "stlukes-health.test", "patientmail.example.net", "clinic.example.edu")
_HOSTS = ("portal.examplehealth.org", "mychart.riverton-med.example", "www.fairview-clinic.example.com")

# Non-PHI sentences a careless detector would flag: doses, blood pressure, years, ages under 90, eponyms,
# capitalised drug names, lab values, codes and scores.
_DISTRACTORS = (
    "Continue hydrocodone-acetaminophen 5/325 mg every 6 hours as needed.",
    "BP {bp}, HR {hr}, SpO2 {sat}% on room air.",
    "Diagnosed with type 2 diabetes (E11.9) in {year}.",
    "History of Parkinson disease and Hodgkin lymphoma in {year}.",
    "Father had Crohn's disease; mother, {young} years old, has Alzheimer disease.",
    "Her brother, a {young}-year-old, was treated for Graves disease.",
    "Bell's palsy resolved in {year}; Down syndrome screening was declined.",
    "Strength 5/5 in all extremities. Pain 3/10.",
    "Started Lipitor 40 mg, Eliquis 5 mg and Januvia 100 mg daily.",
    "Glucose {glucose} mg/dL, sodium 138, potassium 4.1, platelets 245000, WBC 10.2.",
    "Weight 92 kg, temperature 98.6 F, respiratory rate 18.",
    "Quit smoking in {year} after 30 pack-years.",
    "ICD-10 I10 and J45.909 reviewed; billed as CPT 99214.",
    "Positive Murphy sign; Babinski sign negative.",
    "Foley catheter removed; Holter monitor for 48 hours.",
    "Gleason score 3+4=7; Glasgow Coma Scale 15.",
    "Stevens-Johnson syndrome after lamotrigine in {year}.",
    "Screened for Turner syndrome, Cushing syndrome and Addison disease.",
    "Lou Gehrig's disease in the family history.",
    "Whipple procedure in {year}, followed by Wilson disease work-up.",
    "Dose reduced to 1/2 tablet of Synthroid; Lasix 40 mg IV given.",
    "Age 45 at diagnosis of Hashimoto thyroiditis.",
    "Seen in the Cardiology Clinic for NYHA class II heart failure.",
    "Takes vitamin D 2000 units and Ozempic 0.5 mg weekly.",
    "Tetralogy of Fallot repaired in infancy; Kawasaki disease ruled out.",
    "Troponin 0.04 ng/mL at 14:30; repeat at 20:30.",
    "Fracture classified as Salter-Harris II; Apgar scores were 8 and 9.",
    "Keytruda cycle 4 of 6; Humira held.",
    "Her A1c was 7.2% in {year} and 6.8% in {year}.",
    "Non-Hodgkin lymphoma stage II; Burkitt lymphoma excluded.",
    "Pain 10/10 on arrival and 4/10 after morphine.",
    "Take 1-2 tablets every 4-6 hours; follow up in 2-3 weeks.",
    "Visual acuity 20/20 OU; arterial pH 7.35.",
    "Epinephrine 1:1000 at the bedside; ECG at 10:45:30 showed sinus rhythm.",
    "Serial troponins and serial 12-lead ECGs were unremarkable.",
    "Iron loss may account for the anemia; the fall policy was reviewed with staff.",
    "May cause drowsiness. March of Dimes pamphlet given.",
    "Grandmother lived in her 80s in a nursing home; he grew up in the 1990s.",
    "Room 1204, bed 2; order set version 2.1.4.",
    "Patient Education provided on Heart Failure and Low Sodium Diet.",
    "Second opinion at Mayo Clinic in {year}.",
    "Uses a Dexcom G7 and a Lantus SoloStar pen; Tylenol PM at bedtime.",
    "Vitamin B12 400 pg/mL, ferritin 12, urine output 2150 mL.",
    "CA 19-9 and CEA pending; LOINC 2345-7 ordered.",
    "Aged 89, she still lives independently.",
    "Charcot-Marie-Tooth disease and Guillain-Barre syndrome in relatives.",
    "Marcus Gunn pupil absent; Raynaud phenomenon in cold weather.",
    "Charles Bonnet syndrome suspected; Graves' disease in remission.",
    "Wolff-Parkinson-White pattern on ECG; Barrett esophagus on EGD.",
    "Huntington disease gene testing declined; Tourette syndrome since childhood.",
    "Ewing sarcoma survivor; Paget disease of bone on X-ray.",
    "Hemoglobin 13.5 g/dL in {year} and 11.2 g/dL in {year}.",
)

_HEADERS = (
    "Patient: {NAME:full}   MRN: {MRN}   DOB: {DATE}\n",
    "Name: {NAME:last_first}\nMedical record number {MRN}\nDate of service: {DATE}\n",
    "PATIENT NAME: {NAME:caps_last_first}   MR# {MRN}\n",
    "Pt: {NAME:middle}, MRN {MRN}, admitted {DATE}.\n",
    "Patient Name: {NAME:full}\nRecord # {MRN}\n",
)
_FOOTERS = (
    "",
    "Electronically signed by {NAME:full}, MD on {DATE}.",
    "Dictated by {NAME:middle}, NP.",
    "Attending: Dr. {NAME:last}",
    "",
)

_TEMPLATES: dict[str, tuple[str, ...]] = {
    "NAME": (
        "Seen by Dr. {NAME:last} in clinic.",
        "Referred by {NAME:full}, MD.",
        "Her daughter {NAME:first} was present for the visit.",
        "Husband {NAME:full} at bedside.",
        "Son, {NAME:first}, will drive her home.",
        "Emergency contact: {NAME:full} (sister).",
        "Mr. {NAME:last} tolerated the procedure well.",
        "Mrs. {NAME:last} reports improved sleep.",
        "Ms. {NAME:full} declined the flu vaccine.",
        "{NAME:full} is a 64-year-old with heart failure.",
        "{NAME:full} presents with three days of cough.",
        "Case discussed with Dr. {NAME:middle} from nephrology.",
        "Left voicemail for {NAME:full} about results.",
        "Discussed the plan with {NAME:full} and family.",
        "Interpreter {NAME:full} assisted by phone.",
        "Pharmacist {NAME:full} reviewed the medication list.",
        "PCP: Dr. {NAME:full}",
        "cc: {NAME:middle}, MD",
        "Patient's wife, {NAME:full}, is the health care proxy.",
        "Nurse {NAME:first} gave report to the night shift.",
        "Per {NAME:full}, the wound looks better.",
        "Dr. {NAME:last}'s note was reviewed.",
    ),
    "DATE": (
        "Admitted on {DATE}.",
        "Last colonoscopy {DATE} was normal.",
        "Symptoms started {DATE}.",
        "Follow-up scheduled for {DATE}.",
        "Discharged {DATE} in stable condition.",
        "Surgery performed {DATE} without complication.",
        "Returned on {DATE:md} for suture removal.",
        "Mammogram dated {DATE} showed no change.",
        "Next appointment {DATE:weekday} at 10:30.",
        "Biopsy on {DATE} at 09:15 confirmed the diagnosis.",
        "Flu vaccine given {DATE}; booster due next year.",
    ),
    "AGE": (
        "A {AGE:year_old} woman with atrial fibrillation.",
        "The patient is {AGE:years_old} and lives alone.",
        "Patient, {AGE:age}, presents with a fall.",
        "{AGE:yo} male with pneumonia.",
        "She is {AGE:of_age} and ambulates with a walker.",
        "Widowed, {AGE:aged}, independent in self-care.",
        "A {AGE:words} man seen for confusion.",
        "Age: {AGE:plain}",
        "She still gardens at age {AGE:plain}.",
    ),
    "PHONE": (
        "Call back number {PHONE}.",
        "Patient can be reached at {PHONE}.",
        "Cell: {PHONE}",
        "Daughter's phone {PHONE} (evenings).",
        "Tel {PHONE}.",
        "Please call {PHONE} with questions.",
        "Home phone {PHONE}; prefers text.",
        "Clinic line {PHONE:ext} for scheduling.",
    ),
    "FAX": (
        "Fax: {FAX}",
        "Records faxed to {FAX}.",
        "Please fax results to {FAX}.",
        "FAX # {FAX}",
        "Office phone {PHONE}, fax {FAX}.",
        "Send the referral by fax to {FAX}.",
    ),
    "EMAIL": (
        "Email: {EMAIL}",
        "Patient prefers contact via {EMAIL}.",
        "Results sent to {EMAIL} today.",
    ),
    "SSN": (
        "SSN: {SSN}",
        "Social Security number {SSN} verified.",
        "SSN {SSN:plain} on the intake form.",
        "SS# {SSN:spaced}",
        "Identity verified with {SSN} on file.",
    ),
    "MRN": (
        "MRN: {MRN}",
        "Medical record number {MRN}.",
        "Old chart number {MRN} merged.",
        "Hospital number {MRN} at the outside facility.",
        "MRN#{MRN} (merged record).",
    ),
    "ACCOUNT": (
        "Account #: {ACCOUNT}",
        "Acct {ACCOUNT} billed for the visit.",
        "Billing account number {ACCOUNT}.",
        "Encounter number {ACCOUNT} closed.",
    ),
    "HEALTH_PLAN": (
        "Member ID: {HEALTH_PLAN}",
        "Insurance ID {HEALTH_PLAN} verified.",
        "Policy number {HEALTH_PLAN} is active.",
        "Medicare beneficiary identifier {HEALTH_PLAN:mbi}.",
        "Subscriber ID {HEALTH_PLAN} (spouse).",
    ),
    "LICENSE": (
        "Driver's license {LICENSE} copied at registration.",
        "Prescriber license no. {LICENSE}.",
        "DEA # {LICENSE:dea}",
        "Medical license number {LICENSE}.",
        "Certificate number {LICENSE} on file.",
    ),
    "DEVICE_ID": (
        "Pacemaker serial {DEVICE_ID}.",
        "Device ID: {DEVICE_ID}",
        "UDI {DEVICE_ID:udi} recorded in the implant log.",
        "Insulin pump S/N {DEVICE_ID}.",
        "Serial number {DEVICE_ID} checked.",
        "Neurostimulator serial no. {DEVICE_ID} interrogated.",
    ),
    "VEHICLE_ID": (
        "Arrived by car, license plate {VEHICLE_ID:plate}.",
        "VIN {VEHICLE_ID:vin} noted on the accident report.",
        "Plate number {VEHICLE_ID:plate} recorded by security.",
        "Vehicle identification number {VEHICLE_ID:vin}.",
    ),
    "URL": (
        "Portal link: {URL}",
        "See {URL} for the home exercise video.",
        "Photos uploaded at {URL}.",
    ),
    "IP": (
        "Telehealth session from IP {IP}.",
        "Login from {IP} flagged by IT.",
        "Remote monitor reporting from {IP:v6}.",
        "Home hub at {IP}:8080 went offline.",
    ),
    "ADDRESS": (
        "Lives at {ADDRESS:city}, {STATE} {ZIP}.",
        "Home address: {ADDRESS}.",
        "Discharged to {ADDRESS:unit}.",
        "Mailing address {ADDRESS:pobox}, {STATE} {ZIP}.",
        "Lives at {ADDRESS:dr}. She uses a cane.",
        "Shelter at {ADDRESS:quadrant} until further notice.",
    ),
    "ZIP": (
        "Zip code {ZIP}.",
        "ZIP: {ZIP:plus4}",
        "Moved to {ADDRESS:city}, {STATE} {ZIP:plus4}.",
    ),
}
_SLOT = re.compile(r"\{(?P<kind>[A-Z_]+)(?::(?P<form>\w+))?\}|\{(?P<filler>[a-z]+)\}")


def generate_notes(n: int, *, seed: int = 0) -> list[PlantedNote]:
    """Generate short fictional clinical notes with planted identifiers of every kind in PHI_TYPES.

    Every note has a header (name, record number, usually a date), about six sentences that each plant one kind,
    cycling through all kinds so that every three or so notes cover PHI_TYPES, several non-PHI distractors and
    sometimes a signature. All values are invented.

    Args:
        n: Number of notes.
        seed: Seed for numpy's default_rng; the same (n, seed) always gives the same notes.

    Returns:
        The notes, each with the exact spans of its planted identifiers.

    Raises:
        ConfigError: n is negative.
    """
    if n < 0:
        raise ConfigError(f"number of notes must be >= 0, got {n}")
    rng = np.random.default_rng(seed)
    cycle: list[str] = []
    notes: list[PlantedNote] = []
    for _ in range(n):
        kinds: list[str] = []
        for _ in range(6):
            if not cycle:
                cycle = [PHI_TYPES[index] for index in rng.permutation(len(PHI_TYPES))]
            kinds.append(cycle.pop())
        sentences = [_pick(rng, _TEMPLATES[kind]) for kind in kinds]
        sentences += [_pick(rng, _DISTRACTORS) for _ in range(int(rng.integers(2, 5)))]
        order = rng.permutation(len(sentences))
        body = " ".join(sentences[index] for index in order)
        template = _pick(rng, _HEADERS) + body
        footer = _pick(rng, _FOOTERS)
        if footer:
            template += "\n" + footer
        notes.append(_render(template, rng))
    return notes


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _render(template: str, rng: np.random.Generator) -> PlantedNote:
    pieces: list[str] = []
    spans: list[Finding] = []
    length = 0
    cursor = 0
    for slot in _SLOT.finditer(template):
        literal = template[cursor : slot.start()]
        pieces.append(literal)
        length += len(literal)
        if slot.group("filler"):
            value = _FILLERS[slot.group("filler")](rng)
        elif slot.group("kind") == "STATE":
            value = _pick(rng, _STATES)
        else:
            kind = slot.group("kind")
            value, offset, size = _VALUES[kind](rng, slot.group("form") or "")
            spans.append(Finding(kind, length + offset, length + offset + size))
        pieces.append(value)
        length += len(value)
        cursor = slot.end()
    pieces.append(template[cursor:])
    return PlantedNote(text="".join(pieces), spans=tuple(spans))


def _digits(rng: np.random.Generator, count: int) -> str:
    return "".join(str(int(digit)) for digit in rng.integers(0, 10, count))


def _letters(rng: np.random.Generator, count: int, alphabet: str = "ABCDEFGHJKLMNPRSTUVWXYZ") -> str:
    return "".join(alphabet[int(index)] for index in rng.integers(0, len(alphabet), count))


def _whole(value: str) -> tuple[str, int, int]:
    return value, 0, len(value)


def _name(rng: np.random.Generator, form: str) -> tuple[str, int, int]:
    first, last = _pick(rng, _FIRST), _pick(rng, _LAST)
    if form == "first":
        return _whole(first)
    if form == "last":
        return _whole(last)
    if form == "middle":
        return _whole(f"{first} {_pick(rng, list(_MIDDLE))}. {last}")
    if form == "last_first":
        return _whole(f"{last}, {first}")
    if form == "caps_last_first":
        return _whole(f"{last.upper()}, {first.upper()}")
    return _whole(f"{first} {last}")


def _date(rng: np.random.Generator, form: str) -> tuple[str, int, int]:
    year, month, day = int(rng.integers(1930, 2026)), int(rng.integers(1, 13)), int(rng.integers(1, 29))
    name = _MONTHS[month - 1]
    if form == "md":
        return _whole(f"{month}/{day}")
    if form == "weekday":
        weekday = _pick(rng, ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday"))
        return _whole(f"{weekday}, {name} {day}, {year}")
    ordinal = f"{day}{'th' if 10 <= day % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(day % 10, 'th')}"
    formats = (
        f"{month:02d}/{day:02d}/{year}",
        f"{month}/{day}/{year % 100:02d}",
        f"{month}/{day}/{year}",
        f"{year}-{month:02d}-{day:02d}",
        f"{name} {day}, {year}",
        f"{day} {name} {year}",
        f"{name[:3]} {day}",
        f"{name[:3]}. {day}, {year}",
        f"{ordinal} of {name}",
        f"{name} {year}",
        f"{day:02d}-{name[:3].upper()}-{year}",
        f"{month:02d}/{year}",
        f"{name} {ordinal}",
        f"{month:02d}-{day:02d}-{year}",
        f"{name[:4] if name == 'September' else name[:3]}. {ordinal}, {year}",
        f"{ordinal} {name} {year}",
        f"{year}/{month:02d}/{day:02d}",
        f"{day:02d}.{month:02d}.{year}",
        f"the {ordinal} of {name}, {year}",
    )
    return _whole(_pick(rng, formats))


def _age(rng: np.random.Generator, form: str) -> tuple[str, int, int]:
    number = str(int(rng.integers(90, 108)))
    before, after = {
        "year_old": ("", "-year-old"),
        "years_old": ("", " years old"),
        "age": ("age ", ""),
        "aged": ("aged ", ""),
        "yo": ("", _pick(rng, (" yo", " y/o", "yo", " y.o."))),
        "of_age": ("", " years of age"),
        "plain": ("", ""),
    }.get(form, ("", ""))
    if form == "words":
        units = ("", "-one", "-two", "-three", "-four", "-five", "-six", "-seven", "-eight", "-nine")
        number = "ninety" + units[int(number) - 90] if int(number) < 100 else "one hundred"
        after = "-year-old"
    return before + number + after, len(before), len(number)


def _phone(rng: np.random.Generator, form: str) -> tuple[str, int, int]:
    area = f"{int(rng.integers(2, 10))}{_digits(rng, 2)}"
    exchange = _pick(rng, ("555", f"{int(rng.integers(2, 10))}{_digits(rng, 2)}"))
    line = _digits(rng, 4)
    formats = (
        f"({area}) {exchange}-{line}",
        f"{area}-{exchange}-{line}",
        f"{area}.{exchange}.{line}",
        f"+1 {area} {exchange} {line}",
        f"1-{area}-{exchange}-{line}",
        f"({area}){exchange}-{line}",
        f"{area} {exchange} {line}",
    )
    number = _pick(rng, formats)
    if form == "ext":
        number += _pick(rng, (" x", " ext. ", " ext ")) + _digits(rng, 3)
    return _whole(number)


def _email(rng: np.random.Generator, form: str) -> tuple[str, int, int]:
    first = re.sub(r"[^a-z]", "", _pick(rng, _FIRST).lower())
    last = re.sub(r"[^a-z]", "", _pick(rng, _LAST).lower())
    local = _pick(rng, (f"{first}.{last}", f"{first[0]}{last}{_digits(rng, 2)}", f"{last}_{first}"))
    return _whole(f"{local}@{_pick(rng, _DOMAINS)}")


def _ssn(rng: np.random.Generator, form: str) -> tuple[str, int, int]:
    area = int(rng.integers(1, 900))
    area = 667 if area == 666 else area
    parts = (f"{area:03d}", f"{int(rng.integers(1, 100)):02d}", f"{int(rng.integers(1, 10000)):04d}")
    separator = {"plain": "", "spaced": " "}.get(form, "-")
    return _whole(separator.join(parts))


def _mrn(rng: np.random.Generator, form: str) -> tuple[str, int, int]:
    formats = (
        _digits(rng, 8),
        f"{_letters(rng, 1)}{_digits(rng, 7)}",
        f"{_digits(rng, 4)}-{_digits(rng, 3)}",
        f"MRN-{_digits(rng, 2)}-{_digits(rng, 6)}",
        _digits(rng, 7),
    )
    return _whole(_pick(rng, formats))


def _account(rng: np.random.Generator, form: str) -> tuple[str, int, int]:
    formats = (_digits(rng, 9), f"AC-{_digits(rng, 6)}", f"{_digits(rng, 4)}-{_digits(rng, 5)}", _digits(rng, 10))
    return _whole(_pick(rng, formats))


def _health_plan(rng: np.random.Generator, form: str) -> tuple[str, int, int]:
    if form == "mbi":
        return _whole(
            f"{int(rng.integers(1, 10))}{_letters(rng, 2)}{_digits(rng, 1)}-{_letters(rng, 2)}{_digits(rng, 1)}-"
            f"{_letters(rng, 2)}{_digits(rng, 2)}"
        )
    formats = (
        f"{_letters(rng, 3)}{_digits(rng, 9)}",
        f"{_letters(rng, 1)}{_digits(rng, 7)}",
        f"{_letters(rng, 3)}-{_digits(rng, 2)}-{_digits(rng, 4)}",
        f"MBR{_digits(rng, 7)}",
    )
    return _whole(_pick(rng, formats))


def _license(rng: np.random.Generator, form: str) -> tuple[str, int, int]:
    if form == "dea":
        return _whole(f"{_letters(rng, 2)}{_digits(rng, 7)}")
    formats = (
        f"{_letters(rng, 1)}{_digits(rng, 7)}",
        f"{_pick(rng, ('MA', 'NY', 'TX'))}-RN-{_digits(rng, 6)}",
        f"S{_digits(rng, 2)}-{_digits(rng, 5)}",
        _digits(rng, 9),
    )
    return _whole(_pick(rng, formats))


def _device(rng: np.random.Generator, form: str) -> tuple[str, int, int]:
    if form == "udi":
        tail = _pick(rng, (f"(21){_letters(rng, 2)}{_digits(rng, 4)}", f"(17){_digits(rng, 6)}(10){_digits(rng, 5)}"))
        return _whole(f"(01){_digits(rng, 14)}{tail}")
    formats = (
        f"SN-{_digits(rng, 2)}{_letters(rng, 1)}-{_digits(rng, 5)}",
        f"{_letters(rng, 3)}{_digits(rng, 7)}",
        _digits(rng, 14),
        f"{_letters(rng, 2)}{_digits(rng, 6)}{_letters(rng, 1)}",
    )
    return _whole(_pick(rng, formats))


def _vehicle(rng: np.random.Generator, form: str) -> tuple[str, int, int]:
    if form == "vin":
        return _whole(_letters(rng, 17, "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"))
    formats = (
        f"{int(rng.integers(1, 10))}{_letters(rng, 3)}{_digits(rng, 3)}",
        f"{_letters(rng, 3)}-{_digits(rng, 4)}",
        f"{_letters(rng, 3)} {_digits(rng, 4)}",
    )
    return _whole(_pick(rng, formats))


def _url(rng: np.random.Generator, form: str) -> tuple[str, int, int]:
    host = _pick(rng, _HOSTS)
    formats = (
        f"https://{host}/patients/{_digits(rng, 6)}",
        f"http://{host}/p/{_letters(rng, 6, 'abcdefghjkmnpqrstuvwxyz')}",
        f"www.{host.removeprefix('www.')}/share?id={_digits(rng, 8)}",
        f"https://{host}/results?mrn={_digits(rng, 7)}&tab=labs",
    )
    return _whole(_pick(rng, formats))


def _ip(rng: np.random.Generator, form: str) -> tuple[str, int, int]:
    if form == "v6":
        groups = [f"{int(group):x}" for group in rng.integers(0, 65536, 6)]
        return _whole(_pick(rng, (f"2001:db8:{':'.join(groups)}", f"2001:db8:{groups[0]}::{groups[1]}")))
    return _whole(".".join(str(int(octet)) for octet in rng.integers(1, 255, 4)))


def _address(rng: np.random.Generator, form: str) -> tuple[str, int, int]:
    if form == "pobox":
        return _whole(f"{_pick(rng, ('PO Box', 'P.O. Box'))} {int(rng.integers(1, 9999))}")
    number = int(rng.integers(1, 20000))
    direction = _pick(rng, ("", "", "", "N. ", "S ", "West "))
    suffix = "Dr" if form == "dr" else _pick(rng, _SUFFIXES)
    street = f"{number} {direction}{_pick(rng, _STREETS)} {suffix}"
    if form == "unit":
        street += _pick(rng, (", ", " ")) + _pick(rng, _UNITS)
    if form == "city":
        street += f", {_pick(rng, _CITIES)}"
    if form == "quadrant":
        street += _pick(rng, (" NW", " SE", " NE"))
    return _whole(street)


def _zip(rng: np.random.Generator, form: str) -> tuple[str, int, int]:
    code = _digits(rng, 5)
    return _whole(f"{code}-{_digits(rng, 4)}" if form == "plus4" else code)


_VALUES: dict[str, Callable[[np.random.Generator, str], tuple[str, int, int]]] = {
    "NAME": _name,
    "DATE": _date,
    "AGE": _age,
    "PHONE": _phone,
    "FAX": _phone,
    "EMAIL": _email,
    "SSN": _ssn,
    "MRN": _mrn,
    "ACCOUNT": _account,
    "HEALTH_PLAN": _health_plan,
    "LICENSE": _license,
    "DEVICE_ID": _device,
    "VEHICLE_ID": _vehicle,
    "URL": _url,
    "IP": _ip,
    "ADDRESS": _address,
    "ZIP": _zip,
}
_FILLERS: dict[str, Callable[[np.random.Generator], str]] = {
    "bp": lambda rng: f"{int(rng.integers(100, 181))}/{int(rng.integers(60, 101))}",
    "hr": lambda rng: str(int(rng.integers(50, 111))),
    "sat": lambda rng: str(int(rng.integers(90, 101))),
    "year": lambda rng: str(int(rng.integers(1990, 2026))),
    "young": lambda rng: str(int(rng.integers(18, 90))),
    "glucose": lambda rng: str(int(rng.integers(70, 400))),
}


# ---------------------------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------------------------


def evaluate(detector: Detector, notes: list[PlantedNote]) -> list[TypeScore]:
    """Score a detector per kind on planted notes.

    A planted span is recalled when a finding of the same kind covers at least half of it (NAME, ADDRESS and
    DATE: any overlap). A finding is a true positive when it overlaps a planted span of the same kind. Findings
    are those scrub would apply (overlaps resolved by common.deid.detect).

    Args:
        detector: The backend to score.
        notes: Notes from generate_notes.

    Returns:
        One TypeScore per kind, in PHI_TYPES order.
    """
    planted = dict.fromkeys(PHI_TYPES, 0)
    recalled = dict.fromkeys(PHI_TYPES, 0)
    found = dict.fromkeys(PHI_TYPES, 0)
    true_positive = dict.fromkeys(PHI_TYPES, 0)
    for note in notes:
        findings = detect(note.text, detector)
        for span in note.spans:
            planted[span.kind] += 1
            same = [finding for finding in findings if finding.kind == span.kind]
            needed = 1 if span.kind in _LOOSE_KINDS else (span.end - span.start + 1) // 2
            if any(_overlap(finding, span) >= needed for finding in same):
                recalled[span.kind] += 1
        for finding in findings:
            found[finding.kind] += 1
            if any(span.kind == finding.kind and _overlap(finding, span) > 0 for span in note.spans):
                true_positive[finding.kind] += 1
    return [
        TypeScore(
            kind=kind,
            planted=planted[kind],
            found=found[kind],
            true_positive=true_positive[kind],
            recall=recalled[kind] / planted[kind] if planted[kind] else 1.0,
            precision=true_positive[kind] / found[kind] if found[kind] else 1.0,
        )
        for kind in PHI_TYPES
    ]


def _overlap(left: Finding, right: Finding) -> int:
    return max(0, min(left.end, right.end) - max(left.start, right.start))


def clinical_term_survival(texts: Iterable[str], detector: Detector) -> tuple[int, int]:
    """Count the words a detector would scrub from text expected to hold no PHI.

    Args:
        texts: Clinical or medical text, e.g. MedQuAD answers.
        detector: The backend to check.

    Returns:
        (alphabetic words touched by a finding, alphabetic words in total); the first is the number of
        medical words that would be wrongly scrubbed if the text indeed holds no PHI.
    """
    flagged = total = 0
    for text in texts:
        findings = detect(text, detector)
        words = [match.span() for match in _WORD.finditer(text)]
        total += len(words)
        # Findings are sorted and disjoint, so one sweep pairs words with them.
        index = 0
        for start, end in words:
            while index < len(findings) and findings[index].end <= start:
                index += 1
            if index < len(findings) and findings[index].start < end:
                flagged += 1
    return flagged, total


def format_table(scores: list[TypeScore]) -> str:
    """Render scores as an aligned text table: type, planted, found, recall %, precision %.

    Args:
        scores: Output of evaluate.

    Returns:
        The table, one line per kind after a header line, without a trailing newline.
    """
    lines = [f"{'type':<12} {'planted':>8} {'found':>8} {'recall %':>9} {'precision %':>12}"]
    for score in scores:
        recall = f"{100 * score.recall:.1f}" if score.planted else "n/a"
        precision = f"{100 * score.precision:.1f}" if score.found else "n/a"
        lines.append(f"{score.kind:<12} {score.planted:>8} {score.found:>8} {recall:>9} {precision:>12}")
    return "\n".join(lines)


def _medquad_answers(path: Path, limit: int) -> list[str]:
    answers: list[str] = []
    with path.open(encoding="utf-8") as file:
        for line in file:
            if len(answers) >= limit:
                break
            if line.strip():
                answer = json.loads(line).get("answer")
                if isinstance(answer, str):
                    answers.append(answer)
    return answers


def _mts_sections(path: Path, limit: int) -> list[str]:
    with path.open(encoding="utf-8", newline="") as file:
        rows = csv.DictReader(file)
        return [row.get("section_text") or "" for _, row in zip(range(limit), rows, strict=False)]


def _survival_line(label: str, texts: list[str], detector: Detector) -> str:
    flagged, total = clinical_term_survival(texts, detector)
    share = 100 * flagged / total if total else 0.0
    return f"{label}: flagged {flagged} of {total} words ({share:.3f}%)"


def main(argv: list[str] | None = None) -> int:
    """Print the per-type table for the built-in detector and its word flag rate on public medical text.

    Args:
        argv: Command-line arguments (--notes, --seed, --data); sys.argv[1:] when None.

    Returns:
        The process exit status.
    """
    parser = argparse.ArgumentParser(prog="python -m benchmarks.deid_synthetic", description=__doc__)
    parser.add_argument("--notes", type=int, default=500, help="synthetic notes to generate (default 500)")
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    parser.add_argument("--data", type=Path, default=_SHARED_DATA, help="folder holding medquad/ and mts-dialog/")
    args = parser.parse_args(argv)
    detector = RuleDetector()
    print(f"Synthetic PHI benchmark: {args.notes} notes, seed {args.seed}, detector {type(detector).__name__}")
    print(format_table(evaluate(detector, generate_notes(args.notes, seed=args.seed))))
    medquad = args.data / "medquad" / "medquad.jsonl"
    mts = args.data / "mts-dialog" / "train.csv"
    print()
    if medquad.exists():
        print(_survival_line("MedQuAD, first 500 answers", _medquad_answers(medquad, 500), detector))
    else:
        print(f"MedQuAD survival skipped: {medquad} not found")
    if mts.exists():
        print(_survival_line("MTS-Dialog, first 300 section_text", _mts_sections(mts, 300), detector))
    else:
        print(f"MTS-Dialog survival skipped: {mts} not found")
    return 0


if __name__ == "__main__":
    sys.exit(main())
