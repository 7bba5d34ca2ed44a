"""Consistent surrogates: realistic fake values instead of typed placeholders, the same fake for the same value.

A model trained on "[NAME] was seen by [NAME]" learns placeholder tokens; one trained on surrogates learns the
shape of real notes. Within one record (every turn of it), the same original value always gets the same fake
one, so "Ingrid Okafor ... Ms Okafor" stays coherent where the values repeat. Fakes come from Faker (a
dependency of fedcare's `deid` extra), seeded from the operating system's random source, never from the
original value: a fake says nothing about the value it replaced.
"""

from __future__ import annotations

import functools
import random
import re
from typing import Any

from common.errors import ConfigError

_DIGIT_KINDS = frozenset(
    {"PHONE", "FAX", "SSN", "MRN", "ACCOUNT", "HEALTH_PLAN", "LICENSE", "DEVICE_ID", "VEHICLE_ID", "IP", "ZIP", "OTHER"}
)
_NUMERIC_DATE = re.compile(r"\d{1,4}([/.-])\d{1,2}(?:\1\d{2,4})?")


class Surrogates:
    """One record's mapping from original values to fakes.

    Args:
        seed: Seed for the fakes; None draws one from the operating system (the default for training data).
    """

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed if seed is not None else random.SystemRandom().getrandbits(64))
        self._faker = _faker()
        self._faker.seed_instance(self._rng.getrandbits(64))
        self._given: dict[tuple[str, str], str] = {}

    def __call__(self, kind: str, original: str) -> str:
        """The fake for an original value of a kind; the same one every time this record repeats the value."""
        key = (kind, " ".join(original.lower().split()))
        if key not in self._given:
            self._given[key] = self._fake(kind, original)
        return _same_case(original, self._given[key])

    def _fake(self, kind: str, original: str) -> str:
        fake = self._faker
        if kind == "NAME":
            return str(fake.last_name()) if len(original.split()) == 1 else f"{fake.first_name()} {fake.last_name()}"
        if kind == "DATE":
            day = fake.date_between(start_date="-80y", end_date="today")
            if _NUMERIC_DATE.fullmatch(original.strip()):
                separator = next((c for c in original if c in "/.-"), "/")
                return separator.join((f"{day.day:02d}", f"{day.month:02d}", str(day.year)))
            return f"{day.day} {day:%B %Y}"
        if kind == "AGE":
            return str(self._rng.randint(90, 99))
        if kind == "EMAIL":
            return str(fake.email())
        if kind == "URL":
            return str(fake.domain_name())
        if kind == "ADDRESS":
            return str(fake.city()) if len(original.split()) == 1 else str(fake.street_address()).replace("\n", ", ")
        if kind in _DIGIT_KINDS:
            return self._same_shape(original)
        return f"[{kind}]"

    def _same_shape(self, original: str) -> str:
        # Digits become other digits and letters other letters, so "943 476 5919" stays an NHS-number shape.
        out = []
        for character in original:
            if character.isdigit():
                out.append(str(self._rng.randint(0, 9)))
            elif character.isalpha():
                letter = chr(self._rng.randint(ord("A"), ord("Z")))
                out.append(letter if character.isupper() else letter.lower())
            else:
                out.append(character)
        return "".join(out)


@functools.cache
def _faker() -> Any:
    # Building a Faker takes milliseconds; one per process serves every record (each reseeds it).
    try:
        from faker import Faker
    except ImportError:
        raise ConfigError("data.deid_replace=surrogate needs Faker (pip install 'fedcare[deid]')") from None
    return Faker("en_GB")


def _same_case(original: str, fake: str) -> str:
    letters = [c for c in original if c.isalpha()]
    if letters and all(c.isupper() for c in letters) and len(letters) > 1:
        return fake.upper()
    if letters and all(c.islower() for c in letters):
        return fake.lower()
    return fake
