"""Measurements of fedcare: ``python -m benchmarks.<name>``."""

from pathlib import Path

# ../shared/data beside the checkout (MedQuAD, PubMedQA, MTS-Dialog): benchmarks use it where present.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
