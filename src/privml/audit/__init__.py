"""``privml audit``: security audits of a deployment and privacy audits of a trained model.

Every audit collects findings (:class:`Finding`: id, severity, evidence, fix) into an
:class:`AuditReport` rather than stopping at the first problem:

- :func:`audit_deployment` probes a running coordinator (TLS, certificates, auth, headers);
- :func:`audit_config` reads a federation's settings;
- :func:`audit_model` scans model files without loading them;
- :func:`audit_deps` checks packages against advisories (pip-audit, offline with OSV files);
- :func:`audit_privacy` checks a run's ledger and measures membership leakage of its model.
"""

from privml.audit._config import audit_config
from privml.audit._deployment import audit_deployment
from privml.audit._deps import audit_deps
from privml.audit._findings import AuditReport, Finding, Severity
from privml.audit._model import audit_model
from privml.audit._privacy import audit_privacy

__all__ = ["AuditReport", "Finding", "Severity", "audit_config", "audit_deployment",
           "audit_deps", "audit_model", "audit_privacy"]
