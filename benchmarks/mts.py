"""MTS-Dialog as hospitals: the baseline table of ``fedcare compare`` on real dialogue -> note pairs.

    python -m benchmarks.mts [--data ../shared/data] [--out runs/mts-data] [compare options] [overrides]
    python -m benchmarks.mts --print-overrides          # only write the site files; print the overrides

MTS-Dialog's ``train.csv`` (1,201 doctor-patient dialogues with their note section) is dealt
round-robin to ``--sites`` hospitals (401/400/400 for 3), each holding out 10% for the held-out
loss; ``validation.csv`` (100 pairs) is dealt the same way into the sites' task files (a generation
task: dialogue -> note, ROUGE-L and answer-token loss). Then ``fedcare compare`` runs with those
files, 256-token records, 2 rounds of 6 DP-SGD steps, epsilon 8, and any further overrides and
compare options (``--arm``, ``--no-decode``, ``--reuse-run``) given here. The split is fixed (no
shuffling), so every run sees the same hospitals. ``--print-overrides`` prints the overrides, for
``fedcare simulate``, ``fedcare plan`` or ``python -m benchmarks.levers``.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from benchmarks import SHARED_DATA

COLUMNS = ("dialogue", "section_text")  # prompt -> answer


def split(source: Path, out: Path, stem: str, sites: int) -> list[Path]:
    """Deal ``source``'s rows round-robin into ``sites`` CSV files ``out/<stem>-<i>.csv``; returns their paths."""
    with source.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    missing = [c for c in COLUMNS if rows and c not in rows[0]]
    if not rows or missing:
        raise SystemExit(f"{source}: expected MTS-Dialog rows with columns {', '.join(COLUMNS)}")
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(sites):
        path = out / f"{stem}-{i}.csv"
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["ID", "section_header", *COLUMNS])
            writer.writeheader()
            for row in rows[i::sites]:
                writer.writerow({k: row.get(k, "") for k in writer.fieldnames})
        paths.append(path)
    return paths


def overrides(data: Path, out: Path, sites: int) -> list[str]:
    """Write the site and task files; the ``fedcare`` overrides that train and evaluate on them."""
    root = data / "mts-dialog"
    if not (root / "train.csv").exists():
        raise SystemExit(f"no MTS-Dialog at {root} (train.csv, validation.csv): pass --data")
    train = split(root / "train.csv", out, "site", sites)
    tasks = split(root / "validation.csv", out, "task", sites)
    return [
        f"num_sites={sites}",
        "num_rounds=2",
        "data=files",
        f"data.paths=[{','.join(str(p) for p in train)}]",
        f"data.task_paths=[{','.join(str(p) for p in tasks)}]",
        f"data.prompt_column={COLUMNS[0]}",
        f"data.completion_column={COLUMNS[1]}",
        "data.eval_fraction=0.1",
        "train.max_seq_len=256",
        "train.local_steps=6",
        "privacy.target_epsilon=8",
    ]


def main(argv: list[str] | None = None) -> int:
    from simulations import compare

    parser = argparse.ArgumentParser(prog="python -m benchmarks.mts", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=SHARED_DATA, help="folder holding mts-dialog/")
    parser.add_argument("--out", type=Path, default=Path("runs/mts-data"), help="where the site files go")
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--print-overrides", action="store_true", help="write the site files, print the overrides")
    compare.build_parser(parser)
    args = parser.parse_args(argv)
    base = overrides(args.data, args.out.resolve(), args.sites)
    if args.print_overrides:
        print(" ".join(f"'{o}'" if "[" in o else o for o in [*base, *args.overrides]))
        return 0
    args.overrides = [*base, *args.overrides]
    return compare.main(args)


if __name__ == "__main__":
    sys.exit(main())
