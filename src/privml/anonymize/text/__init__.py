"""PII in free text and table columns: recognizers, operators, policies and batch files."""

from privml.anonymize.text._span import Span

__all__ = ["Span"]
