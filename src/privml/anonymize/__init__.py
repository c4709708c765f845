"""Anonymization: PII found and neutralised in text and table columns (:mod:`.text`), and
tables made k-anonymous, l-diverse and t-close (:mod:`.tabular`)."""
