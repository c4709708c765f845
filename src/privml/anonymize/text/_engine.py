"""Applying a policy's operators to the spans found in a text.

:func:`anonymize_text` is pure: text, spans, policy and key in, a :class:`Result` out. The
result's items record where each entity was and where its replacement now is (offsets
only: the original value is never kept). :class:`Anonymizer` adds the analyzer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from privml._exceptions import ConfigError
from privml.anonymize.text._operators import TOKEN_RE, AnonKey, decrypt_token
from privml.anonymize.text._policy import Policy
from privml.anonymize.text._span import Span

__all__ = ["Anonymizer", "Item", "Result", "anonymize_text", "deanonymize_text"]


@dataclass(frozen=True, slots=True)
class Item:
    """One replacement: ``entity`` at ``[start, end)`` of the input is now at
    ``[new_start, new_end)`` of the output, put there by ``operator``."""

    entity: str
    start: int
    end: int
    new_start: int
    new_end: int
    operator: str


@dataclass(frozen=True, slots=True)
class Result:
    text: str
    items: tuple[Item, ...]

    def counts(self) -> dict[str, int]:
        """How many values of each entity type were replaced."""
        return dict(Counter(item.entity for item in self.items))


def _as_key(key: AnonKey | bytes | None) -> AnonKey | None:
    return AnonKey(key) if isinstance(key, bytes) else key


def select_spans(spans: Iterable[Span], length: int) -> list[Span]:
    """``spans`` checked against a text of ``length`` characters, overlaps resolved (the
    higher score wins, then the longer span), sorted by position."""
    spans = list(spans)
    for s in spans:
        if not 0 <= s.start < s.end <= length:
            raise ConfigError(f"span {s.start}:{s.end} ({s.entity}) is outside a text of "
                              f"{length} characters")
    kept: list[Span] = []
    for s in sorted(spans, key=lambda s: (-s.score, s.start - s.end, s.start)):
        if all(s.end <= k.start or k.end <= s.start for k in kept):
            kept.append(s)
    return sorted(kept, key=lambda s: (s.start, s.end))


def anonymize_text(text: str, spans: Iterable[Span], policy: Policy,
                   key: AnonKey | bytes | None = None) -> Result:
    """``text`` with every span replaced by its entity's operator from ``policy``.

    Replacements are computed on the original offsets and stitched together in one pass
    (equivalent to applying them right to left), so every offset stays right."""
    k = _as_key(key)
    pieces: list[str] = []
    items: list[Item] = []
    pos = out_len = 0
    for s in select_spans(spans, len(text)):
        op = policy.operator_for(s.entity)
        new = op.apply(text[s.start:s.end], s.entity, k)
        before = text[pos:s.start]
        pieces += [before, new]
        out_len += len(before)
        items.append(Item(s.entity, s.start, s.end, out_len, out_len + len(new), op.name))
        out_len += len(new)
        pos = s.end
    pieces.append(text[pos:])
    return Result("".join(pieces), tuple(items))


def deanonymize_text(text: str, key: AnonKey | bytes | None) -> Result:
    """``text`` with every ``⟦ENC:TYPE:…⟧`` token decrypted. A token that does not open
    raises :class:`~privml.IntegrityError` and nothing is returned."""
    k = _as_key(key)
    pieces: list[str] = []
    items: list[Item] = []
    pos = out_len = 0
    for m in TOKEN_RE.finditer(text):
        value = decrypt_token(m.group(1), m.group(2), k)
        before = text[pos:m.start()]
        pieces += [before, value]
        out_len += len(before)
        items.append(Item(m.group(1), m.start(), m.end(), out_len, out_len + len(value),
                          "decrypt"))
        out_len += len(value)
        pos = m.end()
    pieces.append(text[pos:])
    return Result("".join(pieces), tuple(items))


class Anonymizer:
    """A policy, its analyzer and a key: ``Anonymizer(policy, key).run(text)``.

    A policy whose operators need a key is refused at once without one, before any text
    is read."""

    def __init__(self, policy: Policy | None = None, key: AnonKey | bytes | None = None):
        from privml.anonymize.text._analyzer import Analyzer

        self.policy = Policy.builtin() if policy is None else policy
        self.key = _as_key(key)
        if self.policy.needs_key and self.key is None:
            keyed = sorted({op.name for op in (self.policy.default,
                                               *self.policy.operators.values())
                            if op.needs_key})
            raise ConfigError(f"the policy uses {', '.join(keyed)}, which need a key (a key "
                              "file, or base64 of 32 random bytes in PRIVML_ANON_KEY)")
        entities = self.policy.entities
        if entities is not None:  # a policy's own recognizers are always looked for
            entities = tuple(dict.fromkeys(
                (*entities, *(r.entity for r in self.policy.recognizers))))
        self.analyzer: Any = Analyzer(
            entities=entities, regions=self.policy.regions,
            custom=tuple(r.build() for r in self.policy.recognizers),
            spacy_model=self.policy.spacy_model, threshold=self.policy.threshold)

    def analyze(self, text: str) -> list[Span]:
        spans: list[Span] = self.analyzer.analyze(text)
        return spans

    def run(self, text: str) -> Result:
        return anonymize_text(text, self.analyze(text), self.policy, self.key)

    def whole(self, value: str, entity: str) -> str:
        """A cell of a column whose every cell is one ``entity``: replaced whole."""
        return self.policy.operator_for(entity).apply(value, entity, self.key)

    def whole_entity(self, value: str) -> str | None:
        """The entity type that covers all of ``value`` (bar surrounding blanks), if any."""
        core = value.strip()
        if not core:
            return None
        lead = len(value) - len(value.lstrip())
        spans = self.analyze(value)
        if len(spans) == 1 and spans[0].start <= lead \
                and spans[0].end >= lead + len(core):
            return spans[0].entity
        return None
