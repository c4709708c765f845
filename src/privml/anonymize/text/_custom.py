"""User-defined recognizers: a regex, a deny list of words, or both."""

from __future__ import annotations

import re
from collections.abc import Iterable

from privml._exceptions import ConfigError
from privml.anonymize.text._span import Span

__all__ = ["PatternRecognizer"]

_ENTITY_NAME = re.compile(r"[A-Z][A-Z0-9_]*")
_CONTEXT_WINDOW = 40  # characters before a match searched for a context word
_CONTEXT_BOOST = 0.1


class PatternRecognizer:
    """Reports every match of ``regex`` and every whole-word occurrence of a ``deny_list``
    entry as ``entity`` with ``score``.

    ``flags`` are :mod:`re` flags for both (``re.IGNORECASE`` makes the deny list match in
    any case). When ``context`` words are given, a match with one of them (whole word, any
    case) in the 40 characters before it scores ``score + 0.1`` (at most 1.0): context
    raises confidence, its absence does not suppress the match. An invalid regex, an empty
    recognizer or a malformed entity name raises :class:`~privml.ConfigError`.
    """

    __slots__ = ("_context", "_deny", "_regex", "context", "entity", "name", "score")

    def __init__(
        self,
        entity: str,
        *,
        regex: str | None = None,
        deny_list: Iterable[str] = (),
        score: float = 0.85,
        name: str | None = None,
        context: Iterable[str] = (),
        flags: int | re.RegexFlag = 0,
    ) -> None:
        if not isinstance(entity, str) or not _ENTITY_NAME.fullmatch(entity):
            raise ConfigError(
                f"entity name {entity!r} must be upper case letters, digits and '_' "
                "(like 'EMPLOYEE_ID')"
            )
        self.entity = entity
        self.name = name if name is not None else f"{entity.lower()}_pattern"
        if isinstance(score, bool) or not isinstance(score, int | float) or not (
            0.0 <= score <= 1.0
        ):
            raise ConfigError(f"recognizer {self.name!r}: score must be in [0, 1], not {score!r}")
        self.score = float(score)
        words = [deny_list] if isinstance(deny_list, str) else list(deny_list)
        if any(not isinstance(w, str) or not w.strip() for w in words):
            raise ConfigError(f"recognizer {self.name!r}: deny_list entries must be non-empty str")
        if regex is None and not words:
            raise ConfigError(f"recognizer {self.name!r} needs a regex or a deny_list")
        self._regex = self._compile(regex, flags) if regex is not None else None
        self._deny = None
        if words:
            alternation = "|".join(re.escape(w) for w in sorted(set(words), key=len, reverse=True))
            self._deny = re.compile(rf"(?<!\w)(?:{alternation})(?!\w)", flags)
        self.context = tuple(str(c).lower() for c in context)
        self._context = None
        if self.context:
            words_re = "|".join(re.escape(c) for c in self.context)
            self._context = re.compile(rf"(?<!\w)(?:{words_re})(?!\w)", re.IGNORECASE)

    def _compile(self, regex: str, flags: int | re.RegexFlag) -> re.Pattern[str]:
        if not isinstance(regex, str) or not regex:
            raise ConfigError(f"recognizer {self.name!r}: regex must be a non-empty str")
        try:
            pattern = re.compile(regex, flags)
        except re.error as exc:
            raise ConfigError(
                f"recognizer {self.name!r}: invalid regex {regex!r}: {exc}"
            ) from None
        if pattern.match(""):
            raise ConfigError(
                f"recognizer {self.name!r}: regex {regex!r} matches the empty string"
            )
        return pattern

    def __repr__(self) -> str:
        return f"PatternRecognizer({self.entity!r}, name={self.name!r})"

    def analyze(self, text: str) -> list[Span]:
        """The matches in ``text`` (possibly overlapping; the analyzer resolves overlaps)."""
        out: list[Span] = []
        for pattern in (self._regex, self._deny):
            if pattern is None:
                continue
            for m in pattern.finditer(text):
                s, e = m.span()
                if s == e:
                    continue
                out.append(Span(s, e, self.entity, self._scored(text, s), self.name))
        return out

    def _scored(self, text: str, s: int) -> float:
        if self._context is None:
            return self.score
        if self._context.search(text, max(0, s - _CONTEXT_WINDOW), s) is None:
            return self.score
        return min(1.0, self.score + _CONTEXT_BOOST)
