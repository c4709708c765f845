"""The optional spaCy plug-in: PERSON, LOCATION and DATE from an installed pipeline's NER.

Nothing is ever downloaded: the pipeline must already be installed (``spacy.load`` of a
package or a path). When spaCy or the pipeline is missing, construction fails with a
:class:`~privml.ConfigError` that names it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from privml._exceptions import ConfigError

__all__ = ["load_ner"]

# spaCy label -> privml entity
LABELS = {"PERSON": "PERSON", "GPE": "LOCATION", "LOC": "LOCATION", "FAC": "LOCATION",
          "DATE": "DATE"}
_SCORE = 0.7

Hit = tuple[int, int, str, float]


def load_ner(model: str) -> Callable[[str], list[Hit]]:
    """A function from text to (start, end, entity, score) hits of the pipeline ``model``."""
    if not isinstance(model, str) or not model:
        raise ConfigError(f"spacy_model must be the name of an installed pipeline, not {model!r}")
    try:
        import spacy  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        raise ConfigError(
            f"spaCy pipeline {model!r} is not available: spaCy is not installed "
            f"(pip install spacy, then install the {model!r} pipeline package; privml "
            "never downloads models)"
        ) from None
    try:
        nlp: Any = spacy.load(model, exclude=["lemmatizer", "textcat"])
    except (OSError, ImportError, ValueError) as exc:
        raise ConfigError(
            f"spaCy pipeline {model!r} is not installed or does not load ({exc}); install "
            "its package first (privml never downloads models)"
        ) from None
    if "ner" not in nlp.pipe_names:
        raise ConfigError(f"spaCy pipeline {model!r} has no 'ner' component")

    def ner(text: str) -> list[Hit]:
        return [
            (ent.start_char, ent.end_char, LABELS[ent.label_], _SCORE)
            for ent in nlp(text).ents
            if ent.label_ in LABELS
        ]

    return ner
