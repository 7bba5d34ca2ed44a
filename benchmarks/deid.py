"""De-identification benchmark: candidates side by side on labelled clinical text it was not tuned on.

For each candidate detector (a `data.deid` spec such as "rules", "presidio", "presidio+rules") it reports
recall per identifier type and overall, character precision, the share of words of public medical text
(MedQuAD answers, MTS-Dialog dialogues and notes) that it would scrub, and throughput on ~1,300-character
records. Data sets: the frozen hand-labelled set (benchmarks/data/deid_frozen.txt, see its README), Presidio's
public synthetic evaluation set (benchmarks/data/presidio_synth_v2.jsonl) and the i2b2-style notes that ship
inside philter-lite (when installed).

    python -m benchmarks.deid                                  # all candidates, all data sets
    python -m benchmarks.deid --candidates rules,presidio+rules --errors frozen
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import re
import resource
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import SHARED_DATA
from common.deid import Detector, Finding, deidentify, detect, load_detector, scrub_records
from common.records import ChatRecord

HERE = Path(__file__).resolve().parent
FROZEN = HERE / "data" / "deid_frozen.txt"
PRESIDIO_SYNTH = HERE / "data" / "presidio_synth_v2.jsonl"
TYPES = ("NAME", "DATE", "AGE", "PHONE", "EMAIL", "URL", "ID", "ADDRESS")
CANDIDATES = ("rules", "philter", "philter+rules", "presidio", "presidio+rules")
_MARK = re.compile(r"\{\{(?P<optional>~?)(?P<kind>[A-Z]+)\|(?P<text>[^{}]*)\}\}")
_ALNUM = re.compile(r"[^\W_]")
_WORD = re.compile(r"[^\W\d_]+")
_WORD_OR_NUMBER = re.compile(r"[^\W_]+")
# Words inside a labelled span that identify nothing ("the 9th", "in January"): leaving them is no leak.
_FUNCTION_WORDS = frozenset({"the", "of", "in", "at", "on", "and"})


@dataclass(frozen=True)
class Span:
    """A labelled stretch of text: an identifier that must go (required) or may go without penalty."""

    kind: str
    start: int
    end: int
    required: bool = True


@dataclass(frozen=True)
class Labelled:
    """One labelled record."""

    name: str
    text: str
    spans: tuple[Span, ...]


@dataclass
class Score:
    """What one detector did on one labelled set."""

    total: Counter[str] = field(default_factory=Counter)
    recalled: Counter[str] = field(default_factory=Counter)
    predicted_chars: int = 0
    correct_chars: int = 0
    missed: list[tuple[str, str, str]] = field(default_factory=list)  # (record, kind, text)
    wrong: list[tuple[str, str]] = field(default_factory=list)  # (record, text)
    seconds: float = 0.0

    @property
    def recall(self) -> float:
        return sum(self.recalled.values()) / max(1, sum(self.total.values()))

    @property
    def precision(self) -> float:
        return self.correct_chars / self.predicted_chars if self.predicted_chars else 1.0


# ---------------------------------------------------------------------------------------------------------------
# Data sets
# ---------------------------------------------------------------------------------------------------------------


def parse_markup(name: str, body: str) -> Labelled:
    """A record of the frozen set: `{{TYPE|text}}` required, `{{~TYPE|text}}` optional spans."""
    pieces: list[str] = []
    spans: list[Span] = []
    cursor = length = 0
    for match in _MARK.finditer(body):
        plain = body[cursor : match.start()]
        pieces.append(plain)
        length += len(plain)
        value = match.group("text")
        spans.append(Span(match.group("kind"), length, length + len(value), not match.group("optional")))
        pieces.append(value)
        length += len(value)
        cursor = match.end()
    pieces.append(body[cursor:])
    return Labelled(name, "".join(pieces), tuple(spans))


def load_frozen(path: Path = FROZEN) -> list[Labelled]:
    """The frozen hand-labelled set: records start at lines "### <id> <style>"; '#' lines before are comments."""
    records = []
    for chunk in re.split(r"^### ", path.read_text(encoding="utf-8"), flags=re.MULTILINE)[1:]:
        header, _, body = chunk.partition("\n")
        records.append(parse_markup(header.split()[0], body.strip("\n")))
    return records


# Presidio's synthetic set labels general PII; Safe Harbor does not cover organisations, nationalities,
# titles, countries or ages under 90, so those are optional here, as are its DATE_TIMEs that hold no day or month.
_PRESIDIO_KINDS = {
    "PERSON": "NAME",
    "STREET_ADDRESS": "ADDRESS",
    "ZIP_CODE": "ADDRESS",
    "PHONE_NUMBER": "PHONE",
    "EMAIL_ADDRESS": "EMAIL",
    "DOMAIN_NAME": "URL",
    "CREDIT_CARD": "ID",
    "IBAN_CODE": "ID",
    "US_SSN": "ID",
    "IP_ADDRESS": "ID",
    "US_DRIVER_LICENSE": "ID",
    "DATE_TIME": "DATE",
}


def load_presidio_synth(path: Path = PRESIDIO_SYNTH) -> list[Labelled]:
    """Presidio-research's generated evaluation set (data/synth_dataset_v2.json, MIT), as JSONL."""
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        row = json.loads(line)
        spans = []
        for kind, start, end in row["spans"]:
            value = row["text"][start:end]
            mapped = _PRESIDIO_KINDS.get(kind)
            if kind == "DATE_TIME" and re.fullmatch(r"\s*(?:\d{4}|\d{2}s|\d{4}s)\s*", value):
                mapped = None
            if kind == "AGE" and value.strip().isdigit() and int(value) > 89:
                mapped = "AGE"
            spans.append(Span(mapped or kind, start, end, mapped is not None))
        records.append(Labelled(f"synth{number:04d}", row["text"], tuple(spans)))
    return records


# i2b2 2014 tags in the notes shipped with philter-lite. Hospitals, organisations, professions, states and
# countries are optional (not Safe Harbor identifiers), as are ages under 90.
_I2B2_KINDS = {
    "PATIENT": "NAME",
    "DOCTOR": "NAME",
    "USERNAME": "ID",
    "DATE": "DATE",
    "PHONE": "PHONE",
    "FAX": "PHONE",
    "EMAIL": "EMAIL",
    "URL": "URL",
    "IPADDR": "ID",
    "MEDICALRECORD": "ID",
    "IDNUM": "ID",
    "DEVICE": "ID",
    "BIOID": "ID",
    "HEALTHPLAN": "ID",
    "ACCOUNT": "ID",
    "LICENSE": "ID",
    "STREET": "ADDRESS",
    "CITY": "ADDRESS",
    "ZIP": "ADDRESS",
    "LOCATION-OTHER": "ADDRESS",
}


def load_philter_i2b2() -> list[Labelled]:
    """The five i2b2-2014-style notes (surrogate PHI, XML tags) inside the philter-lite package; [] if absent."""
    try:
        import philter_lite
    except ImportError:
        return []
    records = []
    for path in sorted((Path(philter_lite.__file__).parent / "data" / "i2b2_xml").glob("*.xml")):
        root = ElementTree.parse(path).getroot()
        text = root.findtext("TEXT") or ""
        spans = []
        for tag in root.find("TAGS") or []:
            kind = tag.get("TYPE", "")
            start, end = int(tag.get("start", 0)), int(tag.get("end", 0))
            mapped = _I2B2_KINDS.get(kind)
            if kind == "AGE" and text[start:end].strip().isdigit() and int(text[start:end]) > 89:
                mapped = "AGE"
            spans.append(Span(mapped or kind, start, end, mapped is not None))
        records.append(Labelled(path.stem, text, tuple(spans)))
    return records


def medquad_answers(root: Path, limit: int) -> list[str]:
    """`limit` MedQuAD answers spread evenly over the file (all nine NIH sources)."""
    path = root / "medquad" / "medquad.jsonl"
    if not path.exists() or limit <= 0:
        return []
    answers = [json.loads(line)["answer"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    step = max(1, len(answers) // limit)
    return [answer for answer in answers[::step][:limit] if isinstance(answer, str)]


def mts_texts(root: Path, limit: int) -> list[str]:
    """The dialogue and the note section of the first `limit` MTS-Dialog training rows."""
    path = root / "mts-dialog" / "train.csv"
    if not path.exists():
        return []
    with path.open(encoding="utf-8", newline="") as file:
        rows = list(csv.DictReader(file))[:limit]
    return [text for row in rows for text in (row.get("dialogue") or "", row.get("section_text") or "") if text]


# ---------------------------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------------------------


def _covered(findings: list[Finding], length: int) -> list[bool]:
    mask = [False] * length
    for finding in findings:
        mask[finding.start : finding.end] = [True] * (finding.end - finding.start)
    return mask


def evaluate(detector: Detector, records: Iterable[Labelled]) -> Score:
    """Score a detector on labelled records.

    An identifier is recalled when every letter and digit of it lies inside a detected span of any kind (a
    half-removed name still leaks), function words ("the 9th", "in January") excepted. Precision is on
    characters: of the letters and digits the detector removed,
    the share inside a required or optional labelled span. Spans are those scrub applies (common.deid.detect).
    """
    score = Score()
    for record in records:
        started = time.perf_counter()
        findings = detect(record.text, detector)
        score.seconds += time.perf_counter() - started
        mask = _covered(findings, len(record.text))
        labelled = _covered([Finding("NAME", s.start, s.end) for s in record.spans], len(record.text))
        for span in record.spans:
            if not span.required:
                continue
            score.total[span.kind] += 1
            chars = [
                i
                for word in _WORD_OR_NUMBER.finditer(record.text, span.start, span.end)
                if word.group().lower() not in _FUNCTION_WORDS
                for i in range(word.start(), word.end())
            ]
            if all(mask[i] for i in chars):
                score.recalled[span.kind] += 1
            else:
                score.missed.append((record.name, span.kind, record.text[span.start : span.end]))
        for finding in findings:
            chars = [i for i in range(finding.start, finding.end) if _ALNUM.match(record.text[i])]
            score.predicted_chars += len(chars)
            inside = sum(labelled[i] for i in chars)
            score.correct_chars += inside
            if inside < len(chars):
                score.wrong.append((record.name, record.text[finding.start : finding.end]))
    return score


def words_scrubbed(detector: Detector, texts: list[str]) -> tuple[int, int, Counter[str]]:
    """(words touched by a finding, words in total, the touched words) on text that should hold no identifier."""
    flagged = total = 0
    touched: Counter[str] = Counter()
    for text in texts:
        mask = _covered(detect(text, detector), len(text))
        for match in _WORD.finditer(text):
            total += 1
            if any(mask[match.start() : match.end()]):
                flagged += 1
                touched[match.group()] += 1
    return flagged, total, touched


def speed_records(records: list[Labelled], count: int, size: int = 1300) -> list[str]:
    """`count` records of about `size` characters, each a run of consecutive frozen-set records."""
    texts = [record.text for record in records]
    out: list[str] = []
    index = 0
    while len(out) < count:
        parts: list[str] = []
        while sum(map(len, parts)) < size:
            parts.append(texts[index % len(texts)])
            index += 1
        out.append("\n\n".join(parts))
    return out


def site_records(records: list[Labelled], extra: list[str], count: int, size: int = 1300) -> list[ChatRecord]:
    """`count` training records (one user turn each) of `size` characters, cut at a space from the frozen set's
    records and `extra` texts (MTS-Dialog dialogues) taken in turn."""
    texts = [record.text for record in records]
    mixed = [text for i in range(max(len(texts), len(extra))) for text in (texts[i % len(texts)], *extra[i : i + 1])]
    stream = "\n\n".join(mixed)
    out: list[ChatRecord] = []
    cursor = laps = 0
    while len(out) < count:
        if cursor + size >= len(stream):
            laps += 1
            cursor = (laps * 211) % size  # each lap cuts elsewhere, so no two records are the same text
        end = stream.rfind(" ", cursor + size // 2, cursor + size) + 1 or cursor + size
        out.append(ChatRecord(prompt=(("user", stream[cursor:end].strip()),), completion=""))
        cursor = end
    return out


def site_run(spec: str, records: list[ChatRecord], workers: int) -> dict[str, float]:
    """De-identify records as a site does (common.deid.deidentify) and time it: wall seconds, CPU seconds of this
    process and its worker processes, load average of the machine before and after."""
    before = os.getloadavg()
    wall = time.perf_counter()
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    found: Counter[str] = Counter()
    for _, counts in deidentify(records, spec, workers=workers):
        found.update(counts)
    wall = time.perf_counter() - wall
    own_after, children_after = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = sum(
        after.ru_utime + after.ru_stime - start.ru_utime - start.ru_stime
        for start, after in ((own, own_after), (children, children_after))
    )
    return {
        "records": len(records),
        "chars_per_record": sum(len(r.prompt[0][1]) for r in records) / max(1, len(records)),
        "wall_s": wall,
        "cpu_s": cpu,
        "identifiers": sum(found.values()),
        "load_before": before[0],
        "load_after": os.getloadavg()[0],
    }


def throughput(detector: Detector, texts: list[str]) -> tuple[float, float]:
    """(records per second of wall time, CPU seconds per record) through scrub_records, what a site runs, in
    this process (batches of 64 records).

    CPU time is the fairer number on a machine other processes load: wall time then counts their share too.
    """
    records = [ChatRecord(prompt=(("user", text),), completion="") for text in texts]
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in scrub_records(records, detector):
        pass
    return len(texts) / (time.perf_counter() - wall), (time.process_time() - cpu) / len(texts)


# ---------------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------------


def _pct(numerator: int, denominator: int) -> str:
    return f"{100 * numerator / denominator:.1f}" if denominator else "-"


def recall_table(title: str, scores: dict[str, Score]) -> str:
    """Markdown table: recall per type (found/total), overall recall and character precision per candidate."""
    kinds = [kind for kind in TYPES if any(score.total[kind] for score in scores.values())]
    any_score = next(iter(scores.values()))
    header = ["candidate", *(f"{kind} ({any_score.total[kind]})" for kind in kinds), "recall %", "precision %"]
    lines = [f"**{title}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, score in scores.items():
        cells = [_pct(score.recalled[kind], score.total[kind]) for kind in kinds]
        totals = f" | {100 * score.recall:.1f} | {100 * score.precision:.1f} |"
        lines.append(f"| {name} | " + " | ".join(cells) + totals)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.deid", description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", default=",".join(CANDIDATES), help="comma-separated data.deid specs")
    parser.add_argument("--data", type=Path, default=SHARED_DATA, help="folder with medquad/ and mts-dialog/")
    parser.add_argument("--fp-texts", type=int, default=300, help="MedQuAD answers and MTS-Dialog rows (each)")
    parser.add_argument("--speed", type=int, default=200, help="~1,300-character records timed per candidate")
    parser.add_argument("--sets", default="frozen,presidio-synth,philter-i2b2", help="labelled sets to score")
    parser.add_argument("--errors", default="", help="print misses and false positives on this set")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument(
        "--site-run",
        type=int,
        default=0,
        metavar="N",
        help="only time a site de-identifying N records of ~1,300 characters (frozen set and MTS-Dialog in turn)",
    )
    parser.add_argument("--workers", type=int, default=0, help="--site-run: data.deid_workers (0 = auto)")
    args = parser.parse_args(argv)
    if args.site_run:
        dialogues = mts_texts(args.data, 10_000)
        records = site_records(load_frozen(), dialogues, args.site_run)
        for spec in [part.strip() for part in args.candidates.split(",") if part.strip()]:
            row = site_run(spec, records, args.workers)
            print(
                f"site run {spec}: {row['records']:,} records of {row['chars_per_record']:,.0f} characters, "
                f"workers {args.workers or 'auto'} ({os.cpu_count()} cores): wall {row['wall_s']:.1f} s "
                f"({row['wall_s'] / 60:.2f} min), CPU {row['cpu_s']:.1f} s ({1000 * row['cpu_s'] / row['records']:.1f}"
                f" ms/record), {row['identifiers']:,} identifiers replaced; load average "
                f"{row['load_before']:.1f} before, {row['load_after']:.1f} after",
                flush=True,
            )
        return 0

    frozen = load_frozen()
    sets = {"frozen": frozen, "presidio-synth": load_presidio_synth(), "philter-i2b2": load_philter_i2b2()}
    sets = {name: sets[name] for name in args.sets.split(",") if sets.get(name)}
    medquad, mts = medquad_answers(args.data, args.fp_texts), mts_texts(args.data, args.fp_texts)
    timed = speed_records(frozen, args.speed)
    commit = (
        subprocess.run(
            ["git", "log", "-1", "--format=%h", "--", str(FROZEN)],
            capture_output=True,
            text=True,
            cwd=HERE,
            check=False,
        ).stdout.strip()
        or "unknown"
    )
    digest = hashlib.sha256(FROZEN.read_bytes()).hexdigest()[:16]
    print(
        f"frozen set: {len(frozen)} records, commit {commit}, sha256 {digest}...; "
        + "; ".join(f"{name}: {len(records)} records" for name, records in sets.items())
    )

    results: dict[str, dict[str, Score]] = {name: {} for name in sets}
    summary: dict[str, dict[str, object]] = {}
    for spec in [part.strip() for part in args.candidates.split(",") if part.strip()]:
        started = time.perf_counter()
        detector = load_detector(spec)
        load_s = time.perf_counter() - started
        row: dict[str, object] = {"load_s": round(load_s, 1)}
        for name, records in sets.items():
            score = evaluate(detector, records)
            results[name][spec] = score
            row[name] = {
                "recall": score.recall,
                "precision": score.precision,
                "per_type": {k: [score.recalled[k], score.total[k]] for k in TYPES if score.total[k]},
            }
        for label, texts in (("medquad", medquad), ("mts", mts)):
            if texts:
                flagged, total, touched = words_scrubbed(detector, texts)
                row[label] = {"flagged": flagged, "words": total, "top": touched.most_common(12)}
        rate, cpu = throughput(detector, timed) if timed else (0.0, 0.0)
        row["records_per_s"] = round(rate, 1)
        row["cpu_ms_per_record"] = round(1000 * cpu, 1)
        row["chars_per_record"] = round(sum(map(len, timed)) / max(1, len(timed)))
        summary[spec] = row
        print(
            f"  measured {spec}: load {load_s:.1f} s, {rate:.1f} records/s, {1000 * cpu:.1f} ms CPU/record", flush=True
        )

    print()
    for name, scores in results.items():
        print(recall_table(f"{name}: recall per type (%), overall recall and character precision", scores))
        print()
    header = (
        "| candidate | MedQuAD words scrubbed | MTS-Dialog words scrubbed | records/s (wall, 1 process) "
        "| CPU ms/record | 10,000 records on 2 cores (CPU time / 2) |"
    )
    size = next(iter(summary.values()))["chars_per_record"] if summary else 0
    print(f"**medical text wrongly scrubbed, throughput** (records of ~{size:,} characters)")
    print()
    print(header)
    print("|---|---|---|---|---|---|")
    for spec, row in summary.items():
        cells = []
        for label in ("medquad", "mts"):
            data = row.get(label)
            cells.append(
                f"{data['flagged']}/{data['words']} ({100 * data['flagged'] / data['words']:.2f}%)"
                if isinstance(data, dict)
                else "skipped (data absent)"
            )
        rate, cpu_ms = float(row["records_per_s"]), float(row["cpu_ms_per_record"])  # type: ignore[arg-type]
        minutes = 10_000 * cpu_ms / 2000 / 60
        print(f"| {spec} | {cells[0]} | {cells[1]} | {rate:.1f} | {cpu_ms:.1f} | {minutes:.1f} min |")
    print()
    for spec, row in summary.items():
        for label in ("medquad", "mts"):
            data = row.get(label)
            if isinstance(data, dict) and data["top"]:
                print(f"{spec} {label} most scrubbed: " + ", ".join(f"{w} {n}" for w, n in data["top"]))
    if args.errors and args.errors in results:
        for spec, score in results[args.errors].items():
            print(f"\n== {spec} on {args.errors}: {len(score.missed)} missed, {len(score.wrong)} wrong spans")
            for record, kind, text in score.missed:
                print(f"  MISS {record} {kind}: {text!r}")
            for record, text in score.wrong:
                print(f"  FP   {record}: {text!r}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
