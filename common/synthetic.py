"""Deterministic, entirely fake clinical chat records for simulating non-IID hospital sites."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from common.errors import ConfigError
from common.records import ChatRecord

_T = TypeVar("_T")


@dataclass(frozen=True)
class _Condition:
    name: str
    definition: str
    symptoms: tuple[str, str]
    test: str
    medication: str


@dataclass(frozen=True)
class _Medication:
    name: str
    purpose: str
    side_effect: str
    advice: str


@dataclass(frozen=True)
class _Specialty:
    conditions: tuple[_Condition, ...]
    medications: tuple[_Medication, ...]
    labs: tuple[str, ...]
    # Shares of (documentation, patient communication, medical Q&A); differing shares make sites non-IID.
    task_mix: tuple[float, float, float]


_C = _Condition
_M = _Medication

_DATA: dict[str, _Specialty] = {
    "cardiology": _Specialty(
        conditions=(
            _C(
                "atrial fibrillation",
                "an irregular and often rapid heart rhythm",
                ("palpitations", "shortness of breath"),
                "an electrocardiogram",
                "apixaban",
            ),
            _C(
                "heart failure",
                "a condition in which the heart does not pump blood as well as it should",
                ("ankle swelling", "breathlessness when lying flat"),
                "an echocardiogram",
                "furosemide",
            ),
            _C(
                "stable angina",
                "chest pain caused by reduced blood flow to the heart muscle",
                ("chest tightness on exertion", "pain spreading to the left arm"),
                "an exercise stress test",
                "nitroglycerin",
            ),
            _C(
                "hypertension",
                "persistently raised blood pressure in the arteries",
                ("morning headaches", "blurred vision"),
                "ambulatory blood pressure monitoring",
                "amlodipine",
            ),
        ),
        medications=(
            _M(
                "apixaban",
                "prevent blood clots",
                "easy bruising",
                "take it at the same times every day",
            ),
            _M(
                "furosemide",
                "remove extra fluid",
                "frequent urination",
                "take it in the morning",
            ),
            _M(
                "nitroglycerin",
                "relieve chest pain",
                "a brief headache",
                "sit down before using it",
            ),
            _M(
                "amlodipine",
                "lower blood pressure",
                "ankle swelling",
                "do not stop it suddenly",
            ),
        ),
        labs=("troponin", "BNP", "LDL cholesterol"),
        task_mix=(0.55, 0.25, 0.20),
    ),
    "endocrinology": _Specialty(
        conditions=(
            _C(
                "type 2 diabetes",
                "a long-term condition in which the body does not use insulin properly",
                ("increased thirst", "frequent urination"),
                "an HbA1c test",
                "metformin",
            ),
            _C(
                "hypothyroidism",
                "an underactive thyroid gland that makes too little thyroid hormone",
                ("tiredness", "feeling cold"),
                "a TSH blood test",
                "levothyroxine",
            ),
            _C(
                "hyperthyroidism",
                "an overactive thyroid gland that makes too much thyroid hormone",
                ("weight loss", "a racing heartbeat"),
                "a free T4 blood test",
                "methimazole",
            ),
            _C(
                "adrenal insufficiency",
                "a condition in which the adrenal glands make too little cortisol",
                ("dizziness on standing", "salt craving"),
                "a morning cortisol test",
                "hydrocortisone",
            ),
        ),
        medications=(
            _M(
                "metformin",
                "lower blood sugar",
                "an upset stomach",
                "take it with meals",
            ),
            _M(
                "levothyroxine",
                "replace thyroid hormone",
                "a racing heartbeat if the dose is high",
                "take it on an empty stomach",
            ),
            _M(
                "methimazole",
                "slow thyroid hormone production",
                "a mild rash",
                "report any sore throat",
            ),
            _M(
                "hydrocortisone",
                "replace cortisol",
                "trouble sleeping",
                "never skip a dose",
            ),
        ),
        labs=("HbA1c", "TSH", "fasting glucose"),
        task_mix=(0.20, 0.55, 0.25),
    ),
    "pulmonology": _Specialty(
        conditions=(
            _C(
                "asthma",
                "a long-term inflammation that narrows the airways",
                ("wheezing", "night-time cough"),
                "spirometry",
                "budesonide",
            ),
            _C(
                "COPD",
                "a chronic lung disease that blocks airflow out of the lungs",
                ("a productive cough", "breathlessness on exertion"),
                "spirometry",
                "tiotropium",
            ),
            _C(
                "community-acquired pneumonia",
                "an infection of the lung tissue picked up outside hospital",
                ("fever", "a cough with phlegm"),
                "a chest X-ray",
                "amoxicillin",
            ),
            _C(
                "obstructive sleep apnea",
                "repeated collapse of the upper airway during sleep",
                ("loud snoring", "daytime sleepiness"),
                "a sleep study",
                "CPAP therapy",
            ),
        ),
        medications=(
            _M(
                "budesonide",
                "calm airway inflammation",
                "a hoarse voice",
                "rinse your mouth after each use",
            ),
            _M(
                "tiotropium",
                "keep the airways open",
                "a dry mouth",
                "use it once a day",
            ),
            _M(
                "amoxicillin",
                "treat a bacterial infection",
                "loose stools",
                "finish the whole course",
            ),
            _M(
                "albuterol",
                "quickly relieve wheezing",
                "a shaky feeling",
                "keep it with you",
            ),
        ),
        labs=("oxygen saturation", "peak flow", "arterial blood gas"),
        task_mix=(0.35, 0.25, 0.40),
    ),
    "nephrology": _Specialty(
        conditions=(
            _C(
                "chronic kidney disease",
                "a gradual loss of kidney function over months or years",
                ("swollen legs", "foamy urine"),
                "an eGFR blood test",
                "lisinopril",
            ),
            _C(
                "kidney stones",
                "hard mineral deposits that form inside the kidneys",
                ("sharp flank pain", "blood in the urine"),
                "a CT scan",
                "tamsulosin",
            ),
            _C(
                "hyperkalemia",
                "a higher than normal level of potassium in the blood",
                ("muscle weakness", "an irregular heartbeat"),
                "a potassium blood test",
                "patiromer",
            ),
            _C(
                "nephrotic syndrome",
                "a kidney disorder that lets too much protein leak into the urine",
                ("puffy eyes", "weight gain from fluid"),
                "a urine protein test",
                "prednisone",
            ),
        ),
        medications=(
            _M(
                "lisinopril",
                "protect the kidneys and lower blood pressure",
                "a dry cough",
                "have your potassium checked",
            ),
            _M(
                "tamsulosin",
                "help a stone pass",
                "dizziness on standing",
                "stand up slowly",
            ),
            _M(
                "patiromer",
                "lower potassium",
                "constipation",
                "take it apart from other medicines",
            ),
            _M(
                "prednisone",
                "reduce inflammation",
                "a bigger appetite",
                "take it in the morning with food",
            ),
        ),
        labs=("creatinine", "eGFR", "potassium"),
        task_mix=(0.30, 0.45, 0.25),
    ),
    "neurology": _Specialty(
        conditions=(
            _C(
                "migraine",
                "a recurring headache disorder often with sensitivity to light",
                ("throbbing one-sided headache", "nausea"),
                "a neurological examination",
                "sumatriptan",
            ),
            _C(
                "epilepsy",
                "a tendency to have repeated unprovoked seizures",
                ("brief staring spells", "jerking of the limbs"),
                "an EEG",
                "levetiracetam",
            ),
            _C(
                "Parkinson disease",
                "a progressive disorder affecting movement control",
                ("a resting tremor", "slowness of movement"),
                "a neurological examination",
                "levodopa",
            ),
            _C(
                "peripheral neuropathy",
                "damage to the nerves outside the brain and spinal cord",
                ("numb feet", "burning pain in the toes"),
                "a nerve conduction study",
                "gabapentin",
            ),
        ),
        medications=(
            _M(
                "sumatriptan",
                "stop a migraine attack",
                "tingling",
                "take it at the first sign of pain",
            ),
            _M("levetiracetam", "prevent seizures", "irritability", "do not miss doses"),
            _M("levodopa", "improve movement", "nausea", "take it at regular times"),
            _M(
                "gabapentin",
                "ease nerve pain",
                "drowsiness",
                "avoid driving until you know how it affects you",
            ),
        ),
        labs=("vitamin B12", "sodium", "drug level"),
        task_mix=(0.50, 0.20, 0.30),
    ),
    "oncology": _Specialty(
        conditions=(
            _C(
                "breast cancer",
                "a malignant growth that starts in the cells of the breast",
                ("a breast lump", "skin dimpling"),
                "a mammogram with biopsy",
                "tamoxifen",
            ),
            _C(
                "colorectal cancer",
                "a malignant growth in the lining of the colon or rectum",
                ("a change in bowel habit", "blood in the stool"),
                "a colonoscopy",
                "capecitabine",
            ),
            _C(
                "lymphoma",
                "a cancer of the lymphocytes in the lymphatic system",
                ("painless swollen glands", "night sweats"),
                "a lymph node biopsy",
                "rituximab",
            ),
            _C(
                "neutropenia",
                "a low level of neutrophils that raises the risk of infection",
                ("fever", "mouth ulcers"),
                "a complete blood count",
                "filgrastim",
            ),
        ),
        medications=(
            _M(
                "tamoxifen",
                "block the effect of estrogen on the tumor",
                "hot flashes",
                "take it every day",
            ),
            _M(
                "capecitabine",
                "slow the growth of cancer cells",
                "sore hands and feet",
                "take it within 30 minutes after a meal",
            ),
            _M(
                "ondansetron",
                "prevent nausea",
                "constipation",
                "take it before treatment",
            ),
            _M(
                "filgrastim",
                "raise the white blood cell count",
                "bone pain",
                "keep it in the fridge",
            ),
        ),
        labs=("neutrophil count", "hemoglobin", "CEA"),
        task_mix=(0.25, 0.50, 0.25),
    ),
    "gastroenterology": _Specialty(
        conditions=(
            _C(
                "GERD",
                "a condition in which stomach acid flows back into the esophagus",
                ("heartburn", "a sour taste in the mouth"),
                "an upper endoscopy",
                "omeprazole",
            ),
            _C(
                "Crohn disease",
                "a chronic inflammation that can affect any part of the gut",
                ("abdominal cramps", "diarrhea"),
                "a colonoscopy",
                "infliximab",
            ),
            _C(
                "irritable bowel syndrome",
                "a common disorder of gut function without visible damage",
                ("bloating", "alternating bowel habits"),
                "a clinical assessment",
                "mebeverine",
            ),
            _C(
                "fatty liver disease",
                "a build-up of fat in the liver cells",
                ("tiredness", "discomfort under the right ribs"),
                "a liver ultrasound",
                "lifestyle changes",
            ),
        ),
        medications=(
            _M(
                "omeprazole",
                "reduce stomach acid",
                "a headache",
                "take it before breakfast",
            ),
            _M(
                "infliximab",
                "calm gut inflammation",
                "a higher risk of infection",
                "keep your infusion dates",
            ),
            _M(
                "mebeverine",
                "relax the gut muscles",
                "mild dizziness",
                "take it before meals",
            ),
            _M("lactulose", "soften the stool", "wind", "drink plenty of water"),
        ),
        labs=("ALT", "fecal calprotectin", "bilirubin"),
        task_mix=(0.40, 0.30, 0.30),
    ),
    "dermatology": _Specialty(
        conditions=(
            _C(
                "atopic eczema",
                "a long-term condition that makes the skin dry, itchy and inflamed",
                ("itchy patches", "dry cracked skin"),
                "a skin examination",
                "hydrocortisone cream",
            ),
            _C(
                "psoriasis",
                "an immune condition that causes raised scaly plaques on the skin",
                ("silvery scales", "red plaques on the elbows"),
                "a skin examination",
                "calcipotriol",
            ),
            _C(
                "acne",
                "a blockage and inflammation of the hair follicles and oil glands",
                ("pimples on the face", "oily skin"),
                "a skin examination",
                "adapalene",
            ),
            _C(
                "cellulitis",
                "a bacterial infection of the deeper layers of the skin",
                ("a warm red patch", "swelling of the leg"),
                "a blood count",
                "cephalexin",
            ),
        ),
        medications=(
            _M(
                "hydrocortisone cream",
                "calm itchy inflamed skin",
                "thinning of the skin with overuse",
                "apply a thin layer",
            ),
            _M(
                "calcipotriol",
                "slow the growth of skin cells",
                "mild stinging",
                "wash your hands after applying it",
            ),
            _M(
                "adapalene",
                "unblock the pores",
                "dryness",
                "use sunscreen during the day",
            ),
            _M(
                "cephalexin",
                "treat a skin infection",
                "nausea",
                "finish the whole course",
            ),
        ),
        labs=("vitamin D", "CRP", "IgE"),
        task_mix=(0.30, 0.25, 0.45),
    ),
    "rheumatology": _Specialty(
        conditions=(
            _C(
                "rheumatoid arthritis",
                "an autoimmune disease that inflames the lining of the joints",
                ("morning stiffness", "swollen finger joints"),
                "a rheumatoid factor test",
                "methotrexate",
            ),
            _C(
                "gout",
                "a form of arthritis caused by uric acid crystals in a joint",
                ("a hot swollen big toe", "sudden joint pain at night"),
                "a joint fluid test",
                "allopurinol",
            ),
            _C(
                "lupus",
                "an autoimmune disease that can affect the skin, joints and organs",
                ("a facial rash", "joint aches"),
                "an ANA blood test",
                "hydroxychloroquine",
            ),
            _C(
                "polymyalgia rheumatica",
                "an inflammatory condition causing shoulder and hip stiffness",
                ("shoulder stiffness", "hip pain in the morning"),
                "an ESR blood test",
                "prednisone",
            ),
        ),
        medications=(
            _M(
                "methotrexate",
                "calm the immune system",
                "mouth sores",
                "take folic acid as advised",
            ),
            _M("allopurinol", "lower uric acid", "a skin rash", "drink plenty of water"),
            _M(
                "hydroxychloroquine",
                "control autoimmune inflammation",
                "an upset stomach",
                "have yearly eye checks",
            ),
            _M(
                "prednisone",
                "reduce inflammation",
                "a bigger appetite",
                "take it in the morning with food",
            ),
        ),
        labs=("ESR", "uric acid", "CRP"),
        task_mix=(0.45, 0.35, 0.20),
    ),
    "infectious-disease": _Specialty(
        conditions=(
            _C(
                "urinary tract infection",
                "a bacterial infection of the bladder or urinary tract",
                ("burning on urination", "needing to pass urine often"),
                "a urine culture",
                "nitrofurantoin",
            ),
            _C(
                "Lyme disease",
                "a tick-borne bacterial infection",
                ("an expanding circular rash", "fever and aches"),
                "a Lyme antibody test",
                "doxycycline",
            ),
            _C(
                "shingles",
                "a reactivation of the chickenpox virus in a nerve",
                ("a painful band-like rash", "tingling skin"),
                "a clinical examination",
                "valacyclovir",
            ),
            _C(
                "influenza",
                "a contagious viral infection of the airways",
                ("high fever", "muscle aches"),
                "a rapid flu test",
                "oseltamivir",
            ),
        ),
        medications=(
            _M(
                "nitrofurantoin",
                "treat a bladder infection",
                "dark urine",
                "take it with food",
            ),
            _M(
                "doxycycline",
                "treat a bacterial infection",
                "sun sensitivity",
                "take it with a full glass of water",
            ),
            _M(
                "valacyclovir",
                "slow the virus",
                "a headache",
                "start it as early as possible",
            ),
            _M(
                "oseltamivir",
                "shorten the flu",
                "nausea",
                "take it within two days of symptoms",
            ),
        ),
        labs=("white cell count", "CRP", "procalcitonin"),
        task_mix=(0.35, 0.30, 0.35),
    ),
}

SPECIALTIES: tuple[str, ...] = tuple(_DATA)

_DURATIONS = (
    "two days",
    "five days",
    "one week",
    "two weeks",
    "three weeks",
    "a month",
)
_FOLLOW_UP_WEEKS = (1, 2, 4, 6)
# Each result level has one fixed meaning and action so a model can learn the mapping.
_LEVELS: dict[str, tuple[str, str]] = {
    "normal": (
        "is within the expected range",
        "No change to your treatment is needed.",
    ),
    "slightly high": (
        "is a little above the expected range",
        "We will repeat the test at your next visit.",
    ),
    "high": (
        "is above the expected range",
        "Please book an appointment this week so we can review it.",
    ),
    "low": (
        "is below the expected range",
        "Please book an appointment this week so we can review it.",
    ),
}
_QUESTION_KINDS = ("what", "symptoms", "treatment")


def site_name(site_index: int) -> str:
    """Name a simulated hospital after its index and specialty.

    Args:
        site_index: Zero-based site number.

    Returns:
        A name such as "hospital-00-cardiology".

    Raises:
        ConfigError: site_index is negative.
    """
    return f"hospital-{_check_index(site_index):02d}-{_specialty_name(site_index)}"


def generate_site_records(site_index: int, num_records: int, *, seed: int = 0) -> list[ChatRecord]:
    """Generate a site's fake clinical chat records.

    Each site draws from its specialty's conditions, medications and labs and mixes clinical
    documentation, patient communication and medical Q&A in specialty-dependent shares, so sites are non-IID.
    Answers follow fixed templates filled from the prompt, so a little fine-tuning lowers held-out loss.

    Args:
        site_index: Zero-based site number; the specialty is SPECIALTIES[site_index % len(SPECIALTIES)].
        num_records: How many records to generate.
        seed: Experiment seed; together with site_index it fixes every record.

    Returns:
        num_records records, each a single user turn and an assistant answer.

    Raises:
        ConfigError: site_index or num_records is negative.
    """
    _check_index(site_index)
    if num_records < 0:
        raise ConfigError(f"num_records must be >= 0, got {num_records}")
    specialty = _DATA[_specialty_name(site_index)]
    rng = np.random.default_rng([seed, site_index])
    builders = (_documentation, _communication, _question_answer)
    kinds = rng.choice(len(builders), size=num_records, p=np.asarray(specialty.task_mix))
    # A share of closed-answer triage questions, the same kind the site's task set asks.
    triage = rng.random(num_records) < TRIAGE_SHARE
    return [
        _triage_record(_triage(specialty, rng)) if t else builders[kind](specialty, rng)
        for kind, t in zip(kinds, triage, strict=True)
    ]


def generate_site_task(site_index: int, num_items: int, *, seed: int = 0) -> list[dict[str, str]]:
    """A site's closed-answer test set: yes/no triage questions ("seen urgently today?") with subgroups.

    Drawn from a random stream separate from the training records'. Each row has ``question``,
    ``label`` ("yes"/"no"), ``age_band`` ("18-44", "45-64", "65+") and ``sex``, the shape
    ``fedcare evaluate`` reads as a choice task (``--group-column age_band``). The label follows
    one rule for every site: a red-flag symptom means "yes".

    Raises:
        ConfigError: site_index or num_items is negative.
    """
    _check_index(site_index)
    if num_items < 0:
        raise ConfigError(f"num_items must be >= 0, got {num_items}")
    specialty = _DATA[_specialty_name(site_index)]
    rng = np.random.default_rng([seed, site_index, 7919])
    return [_triage(specialty, rng) for _ in range(num_items)]


def write_jsonl(records: list[ChatRecord], path: str | Path) -> None:
    """Write records as chat rows ({"messages": [...]}) that load_records reads back unchanged.

    Args:
        records: The records to write.
        path: Destination .jsonl file; missing parent folders are created.
    """
    destination = Path(path)
    destination.parent.mkdir(parents=True, exist_ok=True)
    with destination.open("w", encoding="utf-8", newline="\n") as handle:
        for record in records:
            messages = [{"role": role, "content": content} for role, content in record.prompt]
            messages.append({"role": "assistant", "content": record.completion})
            handle.write(json.dumps({"messages": messages}, ensure_ascii=False) + "\n")


def _check_index(site_index: int) -> int:
    if site_index < 0:
        raise ConfigError(f"site_index must be >= 0, got {site_index}")
    return site_index


def _specialty_name(site_index: int) -> str:
    return SPECIALTIES[site_index % len(SPECIALTIES)]


def _pick(rng: np.random.Generator, options: tuple[_T, ...]) -> _T:
    return options[int(rng.integers(len(options)))]


def _record(prompt: str, completion: str) -> ChatRecord:
    return ChatRecord(prompt=(("user", prompt),), completion=completion)


def _documentation(specialty: _Specialty, rng: np.random.Generator) -> ChatRecord:
    condition: _Condition = _pick(rng, specialty.conditions)
    duration = _pick(rng, _DURATIONS)
    weeks = _pick(rng, _FOLLOW_UP_WEEKS)
    main, other = condition.symptoms
    has_other = bool(rng.integers(2))
    prompt = (
        "Write a clinical note for this visit.\n"
        "Doctor: What brings you in today?\n"
        f"Patient: I have had {main} for {duration}.\n"
        f"Doctor: Have you noticed any {other}?\n"
        f"Patient: {'Yes, sometimes.' if has_other else 'No, not at all.'}\n"
        f"Doctor: This looks like {condition.name}. We will arrange {condition.test}, "
        f"start {condition.medication}, and see you in {weeks} weeks."
    )
    completion = (
        f"Chief complaint: {main} for {duration}.\n"
        f"History: {other} {'reported' if has_other else 'denied'}.\n"
        f"Assessment: {condition.name}.\n"
        f"Plan: {condition.test}; start {condition.medication}; follow up in {weeks} weeks."
    )
    return _record(prompt, completion)


def _communication(specialty: _Specialty, rng: np.random.Generator) -> ChatRecord:
    medication: _Medication = _pick(rng, specialty.medications)
    if rng.integers(2):
        lab = _pick(rng, specialty.labs)
        level = _pick(rng, tuple(_LEVELS))
        meaning, action = _LEVELS[level]
        prompt = (
            f"Patient message: My {lab} result came back {level}. I take {medication.name}. What does this mean for me?"
        )
        completion = (
            f"Thank you for your message. A {level} {lab} result means the value {meaning}. {action} "
            f"Please keep taking {medication.name} as prescribed and call the clinic if you feel unwell."
        )
    else:
        prompt = f"Patient message: I just started {medication.name}. What is it for and what should I watch for?"
        completion = (
            f"Thank you for your message. {medication.name.capitalize()} is used to {medication.purpose}. "
            f"A common side effect is {medication.side_effect}. To get the most from it, {medication.advice}. "
            "Call the clinic if you have any concerns."
        )
    return _record(prompt, completion)


TRIAGE_SHARE = 0.25  # share of training records that are triage questions
TRIAGE_OPTIONS = ("no", "yes")
_RED_FLAGS = (
    "chest pain at rest",
    "fainting",
    "sudden weakness on one side of the body",
    "coughing up blood",
    "severe shortness of breath",
    "confusion that started today",
    "a seizure",
    "vomiting blood",
)


def _age_band(age: int) -> str:
    return "18-44" if age < 45 else "45-64" if age < 65 else "65+"


def _triage(specialty: _Specialty, rng: np.random.Generator) -> dict[str, str]:
    condition: _Condition = _pick(rng, specialty.conditions)
    urgent = bool(rng.random() < 0.4)
    symptom = _pick(rng, _RED_FLAGS) if urgent else _pick(rng, condition.symptoms)
    age = int(rng.integers(18, 95))
    sex = _pick(rng, ("female", "male"))
    duration = _pick(rng, _DURATIONS)
    question = (
        f"Triage question from the referral desk. A {age}-year-old {sex} patient known to have "
        f"{condition.name} calls and reports {symptom} for {duration}. The patient takes "
        f"{condition.medication}. Does this patient need to be seen urgently today?"
    )
    return {"question": question, "label": "yes" if urgent else "no", "age_band": _age_band(age), "sex": sex}


def _triage_record(row: dict[str, str]) -> ChatRecord:
    # The same closing line the evaluator adds to a choice prompt (common.evaluation).
    return _record(f"{row['question']}\nAnswer with one of: {', '.join(TRIAGE_OPTIONS)}.", row["label"])


def _question_answer(specialty: _Specialty, rng: np.random.Generator) -> ChatRecord:
    condition: _Condition = _pick(rng, specialty.conditions)
    kind = _pick(rng, _QUESTION_KINDS)
    first, second = condition.symptoms
    name = condition.name[0].upper() + condition.name[1:]
    if kind == "what":
        question = f"What is {condition.name}?"
        completion = (
            f"{name} is {condition.definition}. Common symptoms include {first} and {second}. "
            f"It is usually confirmed with {condition.test}, and treatment often includes {condition.medication}."
        )
    elif kind == "symptoms":
        question = f"What are the typical symptoms of {condition.name}, and how is it diagnosed?"
        completion = (
            f"Typical symptoms of {condition.name} are {first} and {second}. "
            f"The diagnosis is usually confirmed with {condition.test}, together with a clinical history. "
            f"Anyone with {first} that lasts more than a few days should see a doctor."
        )
    else:
        question = f"How is {condition.name} usually treated?"
        completion = (
            f"{name} is {condition.definition}. Treatment often includes {condition.medication}, "
            "chosen together with the care team, and regular follow-up to check the response. "
            f"Symptoms such as {first} usually improve as treatment takes effect."
        )
    prompt = f"Answer this medical question in a few sentences.\nQuestion: {question}"
    return _record(prompt, completion)
