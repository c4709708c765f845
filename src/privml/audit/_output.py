"""An audit report as people and tools read it: a rich table, JSON, SARIF 2.1.0 (code
scanning in CI) and a self-contained HTML page (figures embedded, no external URL).

SARIF: one run of the tool ``privml-audit``; each finding id is a rule, each finding a
result whose level follows the severity (critical/high → error, medium → warning, low/info
→ note) and whose location is the audited target (a file path, or the URL as a logical
location).
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from privml.audit._findings import AuditReport, Severity

__all__ = ["print_report", "to_html", "to_json", "to_sarif"]

_STYLE = {Severity.CRITICAL: "bold white on red", Severity.HIGH: "bold red",
          Severity.MEDIUM: "yellow", Severity.LOW: "cyan", Severity.INFO: "dim"}
_LEVEL = {Severity.CRITICAL: "error", Severity.HIGH: "error", Severity.MEDIUM: "warning",
          Severity.LOW: "note", Severity.INFO: "note"}
_SCORE = {Severity.CRITICAL: "9.5", Severity.HIGH: "8.0", Severity.MEDIUM: "5.5",
          Severity.LOW: "3.0", Severity.INFO: "0.0"}


def print_report(report: AuditReport, console: Console) -> None:
    title = f"privml audit {report.kind}: {report.target}"
    if report.metrics:
        metrics = Table(title=f"{title}: figures", title_justify="left")
        metrics.add_column("figure")
        metrics.add_column("value", justify="right")
        for name, value in report.metrics.items():
            metrics.add_row(name, _fmt(value))
        console.print(metrics)
    if not report.findings:
        console.print(f"[bold green]no findings[/] ({len(report.passed)} checks passed): "
                      f"{report.target}", highlight=False)
        return
    table = Table(title=title, title_justify="left", show_lines=True)
    for column in ("id", "severity", "finding", "evidence", "fix"):
        table.add_column(column, overflow="fold")
    for f in sorted(report.findings, key=lambda f: (-f.severity, f.id)):
        table.add_row(f.id, f"[{_STYLE[f.severity]}]{f.severity.name.lower()}[/]",
                      f.title + (f"\n[dim]{f.target}[/]" if f.target != report.target else ""),
                      f.evidence, f.fix)
    console.print(table)
    console.print(f"{len(report.findings)} findings, {len(report.passed)} checks passed",
                  highlight=False)


def to_json(report: AuditReport) -> str:
    return json.dumps(report.to_dict(), indent=2, default=str) + "\n"


def _location(target: str) -> dict[str, Any]:
    if "://" in target:
        return {"logicalLocations": [{"name": target, "kind": "resource"}]}
    return {"physicalLocation": {"artifactLocation": {"uri": Path(target).as_posix()}}}


def to_sarif(report: AuditReport) -> str:
    rules: dict[str, dict[str, Any]] = {}
    results = []
    for f in report.findings:
        rules.setdefault(f.id, {
            "id": f.id, "shortDescription": {"text": f.title},
            "help": {"text": f.fix},
            "properties": {"security-severity": _SCORE[f.severity], "tags": ["security"]}})
        results.append({
            "ruleId": f.id, "level": _LEVEL[f.severity],
            "message": {"text": f"{f.title}: {f.evidence}. Fix: {f.fix}"},
            "locations": [_location(f.target or report.target)],
            "properties": {"severity": f.severity.name.lower()}})
    sarif = {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json", "version": "2.1.0",
        "runs": [{"tool": {"driver": {"name": "privml-audit", "informationUri":
                                      "https://github.com/privml/privml",
                                      "rules": list(rules.values())}},
                  "results": results,
                  "properties": {"kind": report.kind, "target": report.target,
                                 "passed": report.passed}}]}
    return json.dumps(sarif, indent=2) + "\n"


_CSS = """body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:auto;padding:1rem}
table{border-collapse:collapse;width:100%}td,th{border:1px solid #8886;padding:.3rem .5rem;
vertical-align:top;text-align:left}.critical,.high{color:#b3261e;font-weight:700}
.medium{color:#8a5a00}img{max-width:100%}"""


def to_html(report: AuditReport) -> str:
    """One self-contained page: figures as data: URIs, no script, no external URL."""
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(f.id)}</td><td class='{f.severity.name.lower()}'>"
        f"{f.severity.name.lower()}</td><td>{e(f.title)}<br><small>{e(f.target)}</small></td>"
        f"<td>{e(f.evidence)}</td><td>{e(f.fix)}</td></tr>"
        for f in sorted(report.findings, key=lambda f: (-f.severity, f.id)))
    metrics = "".join(f"<tr><th>{e(str(k))}</th><td>{e(_fmt(v))}</td></tr>"
                      for k, v in report.metrics.items())
    figures = "".join(
        f"<figure><img alt='{e(name)}' src='data:image/png;base64,"
        f"{base64.b64encode(png).decode()}'><figcaption>{e(name)}</figcaption></figure>"
        for name, png in report.figures.items())
    passed = "".join(f"<li>{e(p)}</li>" for p in report.passed)
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>privml audit {e(report.kind)}</title><style>{_CSS}</style></head><body>
<h1>privml audit {e(report.kind)}</h1><p>{e(report.target)}</p>
<h2>Findings ({len(report.findings)})</h2>
{f"<table><tr><th>id</th><th>severity</th><th>finding</th><th>evidence</th><th>fix</th></tr>{rows}</table>" if rows else "<p>No findings.</p>"}
{f"<h2>Figures</h2><table>{metrics}</table>" if metrics else ""}{figures}
<h2>Checks passed ({len(report.passed)})</h2><ul>{passed}</ul></body></html>
"""  # noqa: E501


def _fmt(value: Any) -> str:
    if isinstance(value, tuple | list) and all(isinstance(v, float) for v in value):
        return "[" + ", ".join(f"{v:.4g}" for v in value) + "]"
    return f"{value:.4g}" if isinstance(value, float) else str(value)
