"""What a recognizer finds: a span of the text with its entity type and a score."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Span"]


@dataclass(frozen=True, slots=True, order=True)
class Span:
    """``text[start:end]`` is an entity of type ``entity`` (``"EMAIL"``, ``"PERSON"``...),
    found by ``recognizer`` with confidence ``score`` in [0, 1]."""

    start: int
    end: int
    entity: str
    score: float
    recognizer: str = ""
