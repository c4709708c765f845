"""The analyzer: every recognizer over a text, overlaps resolved, spans out.

Overlap rule (deterministic, documented in :class:`Analyzer`): candidates are ranked by
higher score, then longer span, then earlier start, then entity name, then recognizer name;
walking that ranking, a candidate is kept when it overlaps no candidate kept before it. The
kept spans are returned sorted by start.
"""

from __future__ import annotations

import bisect
import functools
import itertools
from collections.abc import Callable, Iterable
from typing import Any

import phonenumbers

from privml._exceptions import ConfigError
from privml.anonymize.text._custom import PatternRecognizer
from privml.anonymize.text._gazetteer import gazetteer
from privml.anonymize.text._names import scan_names
from privml.anonymize.text._patterns import PatternScanner
from privml.anonymize.text._span import Span

__all__ = ["DEFAULT_REGIONS", "ENTITIES", "Analyzer", "analyze"]

ENTITIES: tuple[str, ...] = (
    "EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "US_SSN", "IP", "MAC", "URL", "DATE",
    "DATE_OF_BIRTH", "PERSON", "LOCATION", "STREET_ADDRESS",
)
DEFAULT_REGIONS: tuple[str, ...] = ("US", "GB", "DE", "FR")
_NAME_ENTITIES = frozenset({"PERSON", "LOCATION"})
_RECOGNIZER = {
    "EMAIL": "email", "PHONE": "phone", "CREDIT_CARD": "credit_card", "IBAN": "iban",
    "US_SSN": "us_ssn", "IP": "ip", "MAC": "mac", "URL": "url", "DATE": "date",
    "DATE_OF_BIRTH": "date", "STREET_ADDRESS": "street_address",
}

Hit = tuple[int, int, str, float]
_Candidate = tuple[int, int, str, float, str]


def _rank(c: _Candidate) -> tuple[float, int, int, str, str]:
    return (-c[3], c[0] - c[1], c[0], c[2], c[4])


def resolve(candidates: Iterable[_Candidate]) -> list[Span]:
    """Non-overlapping spans, chosen by the overlap rule, sorted by start."""
    by_start = sorted(candidates)
    if all(a[1] <= b[0] for a, b in itertools.pairwise(by_start)):
        return [Span(*c) for c in by_start]  # nothing overlaps: the common case
    ranked = sorted(by_start, key=_rank)
    starts: list[int] = []
    kept: list[_Candidate] = []
    for c in ranked:
        i = bisect.bisect_right(starts, c[0])
        if i and kept[i - 1][1] > c[0]:
            continue  # the kept span starting at or before it reaches into it
        if i < len(kept) and kept[i][0] < c[1]:
            continue  # the kept span after it starts inside it
        starts.insert(i, c[0])
        kept.insert(i, c)
    return [Span(*c) for c in kept]


class Analyzer:
    """Finds PII in English text, offline.

    ``entities`` restricts what is reported (default: all of :data:`ENTITIES` and the
    entities of ``custom``); ``regions`` are the phone-number regions tried, in order, for
    numbers written without ``+country``; ``custom`` adds :class:`PatternRecognizer` s;
    ``spacy_model`` merges the NER of an *installed* spaCy pipeline (PERSON, GPE/LOC/FAC as
    LOCATION, DATE); spans scoring below ``threshold`` are dropped before overlaps are
    resolved.

    Overlaps are resolved deterministically: higher score wins, then the longer span, then
    the earlier start, then the entity name, then the recognizer name (alphabetical).
    """

    def __init__(
        self,
        *,
        entities: Iterable[str] | None = None,
        regions: Iterable[str] = DEFAULT_REGIONS,
        custom: Iterable[PatternRecognizer] = (),
        spacy_model: str | None = None,
        threshold: float = 0.0,
    ) -> None:
        self.custom = tuple(custom)
        for rec in self.custom:
            if not isinstance(rec, PatternRecognizer):
                raise ConfigError(f"custom recognizers must be PatternRecognizer, not {rec!r}")
        known = (*ENTITIES, *sorted({r.entity for r in self.custom} - set(ENTITIES)))
        if entities is None:
            wanted = frozenset(known)
        else:
            if isinstance(entities, str):
                entities = (entities,)
            wanted = frozenset(entities)
            unknown = sorted(str(e) for e in wanted - set(known))
            if unknown:
                raise ConfigError(
                    f"unknown entity {', '.join(map(repr, unknown))}; known: {', '.join(known)}"
                )
        self.entities = wanted
        self.regions = _regions(regions)
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not (
            0.0 <= threshold <= 1.0
        ):
            raise ConfigError(f"threshold must be in [0, 1], not {threshold!r}")
        self.threshold = float(threshold)
        self._scanner = PatternScanner(wanted, self.regions)
        self._names = bool(wanted & _NAME_ENTITIES)
        self._custom = tuple(r for r in self.custom if r.entity in wanted)
        self._ner: Callable[[str], list[Hit]] | None = None
        if spacy_model is not None:
            from privml.anonymize.text._spacy import load_ner

            self._ner = load_ner(spacy_model)
        if self._names:
            gazetteer()  # build it now, so the first analyze() call is not the slow one

    def __repr__(self) -> str:
        return f"Analyzer(entities={sorted(self.entities)!r}, regions={self.regions!r})"

    def analyze(self, text: str) -> list[Span]:
        """The PII spans of ``text``: sorted by start, never overlapping."""
        if not isinstance(text, str):
            raise ConfigError(f"analyze() takes a str, not {type(text).__name__}")
        hits = self._scanner.scan(text)
        candidates = [(s, e, ent, sc, _RECOGNIZER[ent]) for s, e, ent, sc in hits]
        if self._names:
            blocked = [(h[0], h[1]) for h in hits]
            wanted = self.entities
            candidates += [
                (s, e, ent, sc, "gazetteer")
                for s, e, ent, sc in scan_names(text, gazetteer(), blocked)
                if ent in wanted
            ]
        if self._ner is not None:
            candidates += [
                (s, e, ent, sc, "spacy") for s, e, ent, sc in self._ner(text)
                if ent in self.entities
            ]
        for rec in self._custom:
            candidates += [(sp.start, sp.end, sp.entity, sp.score, sp.recognizer)
                           for sp in rec.analyze(text)]
        if self.threshold > 0.0:
            candidates = [c for c in candidates if c[3] >= self.threshold]
        return resolve(candidates)


def _regions(regions: Iterable[str]) -> tuple[str, ...]:
    if isinstance(regions, str):
        regions = (regions,)
    out = tuple(regions)
    supported = phonenumbers.SUPPORTED_REGIONS
    bad = [r for r in out if not isinstance(r, str) or r.upper() not in supported]
    if bad:
        raise ConfigError(f"unknown phone region(s) {bad!r}: use ISO 3166 codes such as 'US'")
    return tuple(r.upper() for r in out)


def _key(value: Any) -> Any:
    if isinstance(value, list | set | frozenset):
        return tuple(value)
    return value


@functools.lru_cache(maxsize=8)
def _cached(items: tuple[tuple[str, Any], ...]) -> Analyzer:
    return Analyzer(**dict(items))


def analyze(text: str, **kw: Any) -> list[Span]:
    """``Analyzer(**kw).analyze(text)``, with the analyzer built once and cached."""
    items = tuple(sorted((k, _key(v)) for k, v in kw.items()))
    try:
        analyzer = _cached(items)
    except TypeError:  # unhashable options: build one for this call
        analyzer = Analyzer(**kw)
    return analyzer.analyze(text)
