"""The de-identification contract: identifier kinds, where one sits (Finding) and what a backend does (Detector)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

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
    "ID",  # a number or code of some record that no cue names (its shape alone: "K4471902", "943 476 5919")
    "OTHER",  # a backend's identifier of no kind above (Philter removes every word it does not know as safe)
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
    "ID",
    "NAME",
    "OTHER",
)
RANK = {kind: rank for rank, kind in enumerate(_PRIORITY)}


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
