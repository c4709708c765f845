"""PII in free text and table columns: recognizers (:class:`Analyzer`), operators, YAML
policies (:class:`Policy`), and batch files (:func:`anonymize_file`)."""

from privml.anonymize.text._analyzer import DEFAULT_REGIONS, ENTITIES, Analyzer, analyze
from privml.anonymize.text._batch import BatchSummary, anonymize_file
from privml.anonymize.text._custom import PatternRecognizer
from privml.anonymize.text._engine import (
    Anonymizer,
    Item,
    Result,
    anonymize_text,
    deanonymize_text,
)
from privml.anonymize.text._operators import (
    AnonKey,
    Encrypt,
    Hash,
    Mask,
    Pseudonymize,
    Redact,
    Replace,
)
from privml.anonymize.text._policy import Policy
from privml.anonymize.text._span import Span

__all__ = [
    "DEFAULT_REGIONS",
    "ENTITIES",
    "Analyzer",
    "AnonKey",
    "Anonymizer",
    "BatchSummary",
    "Encrypt",
    "Hash",
    "Item",
    "Mask",
    "PatternRecognizer",
    "Policy",
    "Pseudonymize",
    "Redact",
    "Replace",
    "Result",
    "Span",
    "analyze",
    "anonymize_file",
    "anonymize_text",
    "deanonymize_text",
]
