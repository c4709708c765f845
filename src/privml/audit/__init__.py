"""``privml audit``: security audits of a deployment and privacy audits of a trained model.

Every audit collects findings (:class:`Finding`: id, severity, evidence, fix) into an
:class:`AuditReport` rather than stopping at the first problem.
"""

from privml.audit._findings import AuditReport, Finding, Severity

__all__ = ["AuditReport", "Finding", "Severity"]
