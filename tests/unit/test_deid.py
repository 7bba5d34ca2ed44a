"""Unit tests for common.deid and benchmarks.deid_synthetic: rules per type, scrubbing, backends and the benchmark."""

from __future__ import annotations

import dataclasses
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from benchmarks.deid import Labelled, Span, evaluate, load_frozen, parse_markup, words_scrubbed
from common.deid import (
    PHI_TYPES,
    Detector,
    Finding,
    RuleDetector,
    deidentify,
    detect,
    load_detector,
    scrub,
    scrub_record,
    scrub_records,
    scrub_texts,
)
from common.errors import ConfigError
from common.records import ChatRecord

PLACEHOLDER = re.compile(r"\[(?:" + "|".join(PHI_TYPES) + r")\]")


class UpperDetector:
    """A toy site backend: every all-capitals word of three letters or more is a NAME."""

    def find(self, text: str) -> list[Finding]:
        return [Finding("NAME", match.start(), match.end()) for match in re.finditer(r"\b[A-Z]{3,}\b", text)]


class NoFind:
    """Not a detector: it has no find method."""


class BadKind:
    """A faulty backend that reports a kind outside PHI_TYPES."""

    def find(self, text: str) -> list[Finding]:
        return [Finding("SECRET-Jane", 0, 1)]


class Overlapping:
    """Reports every match of each (kind, pattern), overlapping or not, to exercise overlap resolution."""

    def __init__(self, rules: list[tuple[str, str]]) -> None:
        self.rules = rules

    def find(self, text: str) -> list[Finding]:
        return [
            Finding(kind, match.start(), match.end())
            for kind, pattern in self.rules
            for match in re.finditer(pattern, text)
        ]


def _found(text: str) -> list[tuple[str, str]]:
    return [(finding.kind, text[finding.start : finding.end]) for finding in detect(text)]


# Positive examples: (text, kind, exact value that must be found with that kind).
POSITIVES = [
    ("Pt: John Smith was seen.", "NAME", "John Smith"),
    ("Seen by Dr. Priya Raman today.", "NAME", "Priya Raman"),
    ("Mrs. Okonkwo reports pain.", "NAME", "Okonkwo"),
    ("Name: Garcia, Maria", "NAME", "Garcia, Maria"),
    ("Her daughter Siobhan visited.", "NAME", "Siobhan"),
    ("Signed: Anneliese Kowalczyk, MD", "NAME", "Anneliese Kowalczyk"),
    ("Attending: Dr. van der Berg", "NAME", "van der Berg"),
    ("DOB: 03/14/1931.", "DATE", "03/14/1931"),
    ("Admitted 3/14/24 for chest pain.", "DATE", "3/14/24"),
    ("Surgery on 2024-03-14.", "DATE", "2024-03-14"),
    ("Seen on March 14, 2024.", "DATE", "March 14, 2024"),
    ("Seen on 14 March 2024.", "DATE", "14 March 2024"),
    ("Returned Mar 14 for review.", "DATE", "Mar 14"),
    ("Fell on 14th of March at home.", "DATE", "14th of March"),
    ("Colonoscopy in March 2024 was normal.", "DATE", "March 2024"),
    ("Drawn 14-MAR-2024.", "DATE", "14-MAR-2024"),
    ("Sutures out on 3/14.", "DATE", "3/14"),
    ("A 92-year-old woman.", "AGE", "92"),
    ("Patient, age 95, fell.", "AGE", "95"),
    ("Widowed, aged 91.", "AGE", "91"),
    ("93 yo male.", "AGE", "93"),
    ("94 y/o female.", "AGE", "94"),
    ("A ninety-two-year-old man.", "AGE", "ninety-two"),
    ("Call (555) 123-4567 today.", "PHONE", "(555) 123-4567"),
    ("Cell 555-123-4567.", "PHONE", "555-123-4567"),
    ("Tel 555.123.4567.", "PHONE", "555.123.4567"),
    ("Reach at +1 555 123 4567.", "PHONE", "+1 555 123 4567"),
    ("Fax: 555-123-4568", "FAX", "555-123-4568"),
    ("Phone 555-123-4567, fax 555-123-4568.", "FAX", "555-123-4568"),
    ("Email jane.doe@example.org today.", "EMAIL", "jane.doe@example.org"),
    ("SSN 123-45-6789 on file.", "SSN", "123-45-6789"),
    ("SSN: 123456789", "SSN", "123456789"),
    ("MRN: 00482913", "MRN", "00482913"),
    ("Medical record number A1234567.", "MRN", "A1234567"),
    ("Account #: 88123004", "ACCOUNT", "88123004"),
    ("Acct 5512-99812 billed.", "ACCOUNT", "5512-99812"),
    ("Member ID: XJH882910033", "HEALTH_PLAN", "XJH882910033"),
    ("Policy no. BCB-44-1928.", "HEALTH_PLAN", "BCB-44-1928"),
    ("License no. MA-RN-228190.", "LICENSE", "MA-RN-228190"),
    ("DEA # AB1234563", "LICENSE", "AB1234563"),
    ("Pacemaker serial SN-77A-10928.", "DEVICE_ID", "SN-77A-10928"),
    ("UDI (01)00844588003288(21)A1B2C3 logged.", "DEVICE_ID", "(01)00844588003288(21)A1B2C3"),
    ("VIN 1HGCM82633A004352 on the report.", "VEHICLE_ID", "1HGCM82633A004352"),
    ("License plate 7ABC123 noted.", "VEHICLE_ID", "7ABC123"),
    ("See https://portal.example.org/p/1.", "URL", "https://portal.example.org/p/1"),
    ("See www.example.com for videos.", "URL", "www.example.com"),
    ("Login from 192.168.1.20 flagged.", "IP", "192.168.1.20"),
    ("Monitor at 2001:db8:85a3::8a2e:370:7334 offline.", "IP", "2001:db8:85a3::8a2e:370:7334"),
    ("Lives at 1234 Oak Street.", "ADDRESS", "1234 Oak Street"),
    ("Lives at 56 N. Main St., Apt 4B.", "ADDRESS", "56 N. Main St., Apt 4B"),
    ("Lives at 789 Elm Dr. She walks daily.", "ADDRESS", "789 Elm Dr"),
    ("Lives in Springfield, MA 01103.", "ZIP", "01103"),
    ("Zip code 60614.", "ZIP", "60614"),
    ("Moved from Harrogate last year.", "ADDRESS", "Harrogate"),
    ("Old notes from the clinic (Cape Town) state TB.", "ADDRESS", "Cape Town"),
    ("WALKS WITH STICK, LIVES IN BUNGALOW IN MORECAMBE.", "ADDRESS", "MORECAMBE"),
    ("PT JOHNSON, MARK. BIBA WITH SOB.", "NAME", "JOHNSON, MARK"),
    ("Patient: S-M-I-T-H, that's my surname.", "NAME", "S-M-I-T-H"),
    ("Reviewed with Van der Merwe today.", "NAME", "Van der Merwe"),
    ("Ms Sinead Byrne 91, lives alone.", "AGE", "91"),
]

# Near misses: nothing in these may be flagged.
NEGATIVES = [
    "Continue hydrocodone-acetaminophen 5/325 mg every 6 hours.",
    "BP 120/80, HR 95, SpO2 97% on room air.",
    "Diagnosed with type 2 diabetes (E11.9) in 2019.",
    "Age 45 at diagnosis; a 67-year-old sister; aged 89 now.",
    "History of Parkinson disease and Hodgkin lymphoma.",
    "Crohn's disease, Bell's palsy, Down syndrome and Graves disease.",
    "Stevens-Johnson syndrome; Charles Bonnet syndrome; Lou Gehrig's disease.",
    "Strength 5/5 bilaterally. Pain 3/10. Take 1/2 tablet.",
    "Glucose 104 mg/dL, platelets 245000, billed as CPT 99214.",
    "Weight 92 kg, temperature 98.6 F.",
    "Started Lipitor 40 mg and Eliquis 5 mg daily.",
    "Serial troponins and serial 12-lead ECGs were normal; iron loss may account for it.",
    "Epinephrine 1:1000; ECG at 10:45:30; version 2.1.4.",
    "Talk With Your Doctor Before Starting Treatment.",
    "Patient Education provided on Heart Failure.",
    "CA 19-9 pending; May cause drowsiness.",
    "Norwalk virus outbreak; gentamicin level per Hartford nomogram; Epworth 16.",
    "The tiny hairs called cilia (SIL-e-ah) and Coccidioidomycosis (kok-sid-e-OY-do-mi-KO-sis).",
    "Arnold-Chiari malformation; a German shepherd bit him.",
    "Born in nineteen ninety-two; a score of two thousand and ninety.",
    "the A-V node and an x-ray of the L-S spine.",
]


@pytest.mark.parametrize(("text", "kind", "value"), POSITIVES, ids=[f"{k}-{v}" for _, k, v in POSITIVES])
def test_rule_detector_finds_each_type(text: str, kind: str, value: str) -> None:
    assert (kind, value) in _found(text)


@pytest.mark.parametrize("text", NEGATIVES)
def test_rule_detector_leaves_near_misses_alone(text: str) -> None:
    assert _found(text) == []


def test_every_type_has_a_positive_example() -> None:
    assert {kind for _, kind, _ in POSITIVES} == set(PHI_TYPES) - {"ID", "OTHER"}  # OTHER: a backend's untyped finding


def test_dr_is_a_title_before_a_name_and_a_suffix_after_a_street() -> None:
    text = "Lives at 12 Elm Dr, seen by Dr. Smith."
    assert _found(text) == [("ADDRESS", "12 Elm Dr"), ("NAME", "Smith")]
    assert scrub("Dr. Smith saw her.")[0] == "Dr. [NAME] saw her."


def test_scrub_replaces_with_typed_placeholders_and_counts_kinds() -> None:
    scrubbed, counts = scrub("Pt: John Smith, MRN: 00482913, call 555-123-4567 or 555-123-4568.")
    assert scrubbed == "Pt: [NAME], MRN: [MRN], call [PHONE] or [PHONE]."
    assert counts == Counter({"NAME": 1, "MRN": 1, "PHONE": 2})


def test_scrub_never_alters_placeholders() -> None:
    text = "MRN: [MRN]. Dr. [NAME] on [DATE] at [ADDRESS], MA [ZIP]."
    assert scrub(text) == (text, Counter())


def test_scrub_is_idempotent_and_counts_match_placeholders_over_the_frozen_set() -> None:
    for record in load_frozen():
        once, counts = scrub(record.text)
        assert sum(counts.values()) == len(PLACEHOLDER.findall(once)) - len(PLACEHOLDER.findall(record.text))
        assert scrub(once) == (once, Counter())


def test_findings_carry_no_text() -> None:
    assert [field.name for field in dataclasses.fields(Finding)] == ["kind", "start", "end"]
    finding = detect("Call 555-123-4567.")[0]
    assert not hasattr(finding, "text")
    with pytest.raises(dataclasses.FrozenInstanceError):
        finding.kind = "NAME"  # type: ignore[misc]


def test_overlaps_keep_the_longest_span_then_the_priority_order() -> None:
    longest = Overlapping([("AGE", r"2024"), ("DATE", r"2024-03-14"), ("NAME", r"14 ok")])
    assert scrub("on 2024-03-14 ok", longest) == ("on [DATE] ok", Counter({"DATE": 1}))
    tie = Overlapping([("PHONE", r"\d{3}-\d{3}-\d{4}"), ("MRN", r"\d{3}-\d{3}-\d{4}")])
    assert scrub("MRN 555-123-4567", tie) == ("MRN [MRN]", Counter({"MRN": 1}))


def test_scrub_record_scrubs_every_turn_and_keeps_roles() -> None:
    record = ChatRecord(
        prompt=(("system", "Be brief."), ("user", "Summarise: Pt John Smith, DOB 03/14/1931.")),
        completion="Dr. Okafor will call 555-123-4567.",
    )
    scrubbed, counts = scrub_record(record)
    assert scrubbed.prompt == (("system", "Be brief."), ("user", "Summarise: Pt [NAME], DOB [DATE]."))
    assert scrubbed.completion == "Dr. [NAME] will call [PHONE]."
    assert counts == Counter({"NAME": 2, "DATE": 1, "PHONE": 1})


class BatchCounting(UpperDetector):
    """A toy batching backend: counts how many find_many calls and texts it saw."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def find_many(self, texts: list[str]) -> list[list[Finding]]:
        self.batches.append(len(texts))
        return [self.find(text) for text in texts]


def test_scrub_records_batches_the_first_pass_and_equals_scrub_record() -> None:
    texts = [record.text for record in load_frozen()[:40]]
    records = [ChatRecord(prompt=(("system", "Be brief."), ("user", text)), completion=text[:80]) for text in texts]
    rules = load_detector("rules")
    assert list(scrub_records(records, rules, batch=16)) == [scrub_record(record, rules) for record in records]
    assert scrub_texts(texts, rules) == [scrub(text, rules) for text in texts]
    counting = BatchCounting()
    both = load_detector("rules+tests.unit.test_deid:UpperDetector")
    assert len(list(scrub_records(records, counting, batch=16))) == 40
    assert counting.batches == [48, 48, 24]  # three texts per record, 16 records per batch
    union = [scrub_record(record, both) for record in records]
    assert list(scrub_records(records, both, batch=16)) == union


def test_deidentify_in_one_process_equals_scrub_records() -> None:
    records = [ChatRecord(prompt=(("user", r.text),), completion="") for r in load_frozen()[:30]]
    assert list(deidentify(records, "rules", workers=1)) == list(scrub_records(records, load_detector("rules")))
    with pytest.raises(ConfigError, match="unknown de-identification detector"):
        list(deidentify(records, "nonsense", workers=1))


@pytest.mark.slow
def test_deidentify_in_worker_processes_equals_one_process() -> None:
    records = [ChatRecord(prompt=(("user", r.text),), completion="") for r in load_frozen()] * 2
    assert list(deidentify(records, "rules", workers=2)) == list(deidentify(records, "rules", workers=1))
    with pytest.raises(ConfigError, match="cannot be imported"):
        list(deidentify(records, "no_such_module:Detector", workers=2))


def test_load_detector_builds_the_rules_backend() -> None:
    detector = load_detector("rules")
    assert isinstance(detector, RuleDetector)
    assert isinstance(detector, Detector)


def test_load_detector_imports_a_site_backend() -> None:
    detector = load_detector("tests.unit.test_deid:UpperDetector")
    assert isinstance(detector, UpperDetector)
    assert scrub("Seen by JONES today", detector) == ("Seen by [NAME] today", Counter({"NAME": 1}))


@pytest.mark.parametrize(
    "spec",
    [
        "regex",
        "",
        "tests.unit.test_deid:",
        "no_such_module_xyz:Detector",
        "tests.unit.test_deid:Missing",
        "tests.unit.test_deid:NoFind",
    ],
)
def test_load_detector_rejects_unknown_specs(spec: str) -> None:
    with pytest.raises(ConfigError):
        load_detector(spec)


def test_a_backend_reporting_an_unknown_kind_is_a_config_error_that_echoes_nothing() -> None:
    with pytest.raises(ConfigError) as error:
        scrub("Jane", BadKind())
    assert "Jane" not in str(error.value)


def test_frozen_set_parses_into_labelled_spans() -> None:
    records = load_frozen()
    assert len(records) >= 200
    assert len({record.name for record in records}) == len(records)
    kinds = Counter(span.kind for record in records for span in record.spans if span.required)
    assert set(kinds) == {"NAME", "DATE", "AGE", "PHONE", "EMAIL", "URL", "ID", "ADDRESS"}
    assert sum(1 for record in records if not any(span.required for span in record.spans)) >= 50
    for record in records:
        assert "{{" not in record.text and "}}" not in record.text
        for span in record.spans:
            value = record.text[span.start : span.end]
            assert value and value == value.strip(), record.name


def test_parse_markup_keeps_offsets_and_optional_spans() -> None:
    record = parse_markup("x", "Dr {{NAME|Okafor}} at {{~FACILITY|Mater}} on {{DATE|3/5/21}}.")
    assert record.text == "Dr Okafor at Mater on 3/5/21."
    assert [(s.kind, record.text[s.start : s.end], s.required) for s in record.spans] == [
        ("NAME", "Okafor", True),
        ("FACILITY", "Mater", False),
        ("DATE", "3/5/21", True),
    ]


def test_evaluate_needs_every_character_removed_and_scores_precision_on_characters() -> None:
    text = "Ingrid Okafor at Mater, BP 120/80."
    record = Labelled("r", text, (Span("NAME", 0, 13), Span("FACILITY", 17, 22, required=False)))
    half = Overlapping([("NAME", r"Okafor"), ("NAME", r"Mater"), ("DATE", r"120/80")])
    score = evaluate(half, [record])
    assert (score.recalled["NAME"], score.total["NAME"]) == (0, 1)  # "Ingrid" leaks
    assert score.precision == (6 + 5) / (6 + 5 + 5)  # "12080" is not an identifier
    full = evaluate(Overlapping([("NAME", r"Ingrid"), ("NAME", r"Okafor")]), [record])
    assert full.recall == 1.0 and full.precision == 1.0 and full.total["FACILITY"] == 0


def test_words_scrubbed_counts_touched_words() -> None:
    flagged, total, touched = words_scrubbed(RuleDetector(), ["Parkinson disease is treated with levodopa."])
    assert (flagged, total) == (0, 6)
    flagged, total, touched = words_scrubbed(RuleDetector(), ["Dr. Smith saw the Hodgkin lymphoma patient."])
    assert (flagged, total, touched) == (1, 7, Counter({"Smith": 1}))


def test_medquad_answers_survive(medquad: Path) -> None:
    answers = []
    with medquad.open(encoding="utf-8") as file:
        for line in file:
            if line.strip():
                answers.append(json.loads(line)["answer"])
            if len(answers) == 40:
                break
    flagged, total, _ = words_scrubbed(RuleDetector(), answers)
    assert total > 5_000
    assert flagged / total < 0.01


def test_surrogates_are_consistent_within_a_record_and_keep_shapes() -> None:
    from common.deid.surrogates import Surrogates

    record = ChatRecord(
        prompt=(("user", "Summarise: Pt John Smith, MRN: 00482913, seen 03/14/2023 by Dr. Okafor."),),
        completion="John Smith will call Dr. Okafor on 555-123-4567. [NAME] stays.",
    )
    clean, counts = scrub_record(record, surrogates=Surrogates(seed=4))
    text = clean.prompt[0][1] + " " + clean.completion
    for value in ("John Smith", "00482913", "03/14/2023", "Okafor", "555-123-4567"):
        assert value not in text
    assert "[NAME] stays." in clean.completion and not PLACEHOLDER.search(clean.prompt[0][1])
    first = re.search(r"Pt (.+?), MRN", clean.prompt[0][1]).group(1)
    assert clean.completion.startswith(first + " will call")  # the same fake for the same name in both turns
    assert re.search(r"MRN: \d{8},", clean.prompt[0][1]) and re.search(r"on \d{3}-\d{3}-\d{4}\.", clean.completion)
    assert re.search(r"seen \d\d/\d\d/\d{4} by", clean.prompt[0][1])
    assert counts == scrub_record(record)[1]
    assert scrub_record(record, surrogates=Surrogates(seed=4)) == (clean, counts)  # seeded: reproducible


def test_surrogates_follow_the_case_of_the_original() -> None:
    from common.deid.surrogates import Surrogates

    fakes = Surrogates(seed=1)
    assert fakes("NAME", "OKAFOR, INGRID").isupper()
    assert fakes("NAME", "ingrid").islower()
    assert fakes("NAME", "ingrid").capitalize() == fakes("NAME", "Ingrid")  # same value, any case: one fake
    assert 90 <= int(fakes("AGE", "95")) <= 99


def test_detectors_combine_with_plus() -> None:
    combined = load_detector("rules+tests.unit.test_deid:UpperDetector")
    assert scrub("Seen by JONES, call 555-123-4567.", combined)[0] == "Seen by [NAME], call [PHONE]."
    with pytest.raises(ConfigError):
        load_detector("rules+")


def test_library_backends_are_not_imported_by_the_core() -> None:
    import ast

    root = Path(__file__).resolve().parents[2] / "common"
    libraries = {"presidio_analyzer", "presidio_anonymizer", "philter_lite", "spacy", "nltk", "faker"}
    allowed = {"deid/presidio.py", "deid/philter.py", "deid/surrogates.py"}
    for path in root.rglob("*.py"):
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])
        relative = path.relative_to(root).as_posix()
        if relative not in allowed:
            assert not imported & libraries, relative
            assert not {"common.deid.presidio", "common.deid.philter"} & {
                node.module for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.ImportFrom)
            }, relative
