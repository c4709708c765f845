"""What every audit returns: findings collected, never the first one raised.

Like opacus's validators, an audit runs every check it can and collects a :class:`Finding`
for each problem — an id that tools can key on (``PMA-<AREA>-<NNN>``, stable across
releases), a severity, what was checked, the evidence seen and the fix. Checks that passed
are listed too (``passed``), so a report shows what was looked at, not only what failed; a
check that could not run is itself a finding (an unchecked thing never passes silently).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from privml._exceptions import ConfigError

__all__ = ["AuditReport", "Finding", "Severity"]

_ID = re.compile(r"PMA-[A-Z]+-\d{3}")


class Severity(IntEnum):
    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @classmethod
    def parse(cls, text: str) -> Severity:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            names = ", ".join(s.name.lower() for s in cls)
            raise ConfigError(f"severity must be one of {names}, got {text!r}") from None


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem: ``id`` (``PMA-AREA-NNN``), ``severity``, a one-line ``title``, the
    ``evidence`` seen, the ``fix``, and the ``target`` (URL, file, package) it is about."""

    id: str
    severity: Severity
    title: str
    evidence: str
    fix: str
    target: str = ""

    def __post_init__(self) -> None:
        if not _ID.fullmatch(self.id):
            raise ConfigError(f"finding id must look like PMA-AREA-001, got {self.id!r}")
        if not isinstance(self.severity, Severity):
            raise ConfigError(f"severity must be a Severity, got {self.severity!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "severity": self.severity.name.lower(), "title": self.title,
                "evidence": self.evidence, "fix": self.fix, "target": self.target}


@dataclass(slots=True)
class AuditReport:
    """The result of one audit (``kind``: deployment, config, model, deps, privacy)."""

    kind: str
    target: str
    findings: list[Finding] = field(default_factory=list)
    passed: list[str] = field(default_factory=list)  # ids/names of checks that passed
    metrics: dict[str, Any] = field(default_factory=dict)  # figures (privacy: AUC, eps...)
    figures: dict[str, bytes] = field(default_factory=dict)  # name -> PNG, for --html

    def add(self, finding: Finding) -> None:
        self.findings.append(finding)

    def ok(self, check: str) -> None:
        self.passed.append(check)

    def worst(self) -> Severity | None:
        return max((f.severity for f in self.findings), default=None)

    def failing(self, threshold: Severity) -> list[Finding]:
        return [f for f in self.findings if f.severity >= threshold]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "target": self.target,
                "findings": [f.to_dict() for f in sorted(
                    self.findings, key=lambda f: (-f.severity, f.id))],
                "passed": list(self.passed), "metrics": dict(self.metrics)}
