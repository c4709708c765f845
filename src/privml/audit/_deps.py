"""``privml audit deps``: installed packages, or a pinned requirements list, against advisories.

Theory of operation
-------------------
pip-audit does the auditing, as a subprocess (``python -m pip_audit --format json``): a crash
in it or in pip is a finding, never an exception here. Packages come from this interpreter's
environment (``pip list``), another one (``python=``: it names its ``site-packages`` folders,
which pip-audit lists with ``--path``; no pip needed there), or a requirements list taken as
written (``-r FILE --no-deps --disable-pip``: pinned with ``==``, nothing resolved or
installed). Advisories come from PyPI (pip-audit's default; network), an OSV endpoint URL
(``-s osv --osv-url URL``) or an OSV file, which :func:`serve_advisories` serves on 127.0.0.1
as OSV's ``POST /v1/query`` (``{"package": {"name", "ecosystem"}, "version"}`` → ``{"vulns":
[record, ...]}`` or ``{}``; versions matched against ``versions`` and ECOSYSTEM/SEMVER
``ranges`` as OSV specifies), since pip-audit has no offline mode.

============  =======  ========================================================================
id            sev.     meaning
============  =======  ========================================================================
PMA-DEPS-001  HIGH(*)  a package version has known advisories
PMA-DEPS-002  MEDIUM   a package not checked (editable, not on the index, URL/path, unpinned)
PMA-DEPS-003  HIGH     no report: pip-audit failed or timed out, or the advisory endpoint is down
============  =======  ========================================================================

(*) or the advisory's ``database_specific.severity``, else its CVSS v3 base score. A package
checked and clean is listed in ``report.passed`` as ``name==version``; nothing found to audit
at all is a PMA-DEPS-002 too.
"""

from __future__ import annotations

import json
import math
import os
import subprocess  # nosec B404  # argv lists only, never a shell
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from packaging.utils import canonicalize_name, canonicalize_version
from packaging.version import InvalidVersion, Version

from privml._exceptions import ConfigError
from privml.audit._findings import AuditReport, Finding, Severity

__all__ = ["audit_deps", "load_advisories", "serve_advisories"]

_EVENTS = ("introduced", "fixed", "last_affected", "limit")
_RANGE_TYPES = ("ECOSYSTEM", "SEMVER", "GIT")
_SITE_DIRS = ("import json, sys; print(json.dumps([p for p in sys.path "
              "if p.rstrip('/\\\\').endswith(('site-packages', 'dist-packages'))]))")
_DOWN = ("ConnectionError", "Timeout", "HTTPError", "ServiceError", "Could not connect")


# ---- advisories: load, match, serve -------------------------------------------------------

def load_advisories(path: Path | str) -> list[dict[str, Any]]:
    """Read an OSV file (a JSON list of vulnerability records); ConfigError says what is wrong."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # ValueError: not UTF-8, not JSON
        raise ConfigError(f"advisories file {p} is not a readable JSON file: {exc}") from None
    _need(isinstance(data, list), f"advisories file {p}",
          f"must hold a JSON list of OSV records, not a {type(data).__name__}")
    for i, record in enumerate(data):
        _check_record(record, f"advisories file {p}, record {i}")
    return data  # type: ignore[no-any-return]


def _need(ok: bool, where: str, what: str) -> None:
    if not ok:
        raise ConfigError(f"{where}: {what}")


def _check_record(record: Any, where: str) -> None:
    _need(isinstance(record, dict), where, "an OSV record must be an object")
    _need(isinstance(record.get("id"), str) and bool(record["id"]), where, "no 'id'")
    where = f"{where} ({record['id']})"
    aliases = record.get("aliases", [])
    _need(isinstance(aliases, list) and all(isinstance(a, str) for a in aliases), where,
          "'aliases' must be a list of strings")
    affected = record.get("affected")
    _need(isinstance(affected, list) and bool(affected), where, "no 'affected' list")
    for entry in affected:
        pkg: Any = entry.get("package") if isinstance(entry, dict) else None
        _need(isinstance(pkg, dict) and isinstance(pkg.get("name"), str)
              and isinstance(pkg.get("ecosystem"), str), where,
              "each 'affected' entry needs a package name and ecosystem")
        versions, ranges = entry.get("versions", []), entry.get("ranges", [])
        _need(isinstance(versions, list) and all(isinstance(v, str) for v in versions)
              and isinstance(ranges, list) and bool(ranges or versions), where,
              f"{pkg['name']} needs 'ranges' or 'versions' (a list of version strings)")
        for rng in ranges:
            _check_range(rng, f"{where}, {pkg['name']}", pkg["ecosystem"] == "PyPI")


def _check_range(rng: Any, where: str, pypi: bool) -> None:
    _need(isinstance(rng, dict) and rng.get("type") in _RANGE_TYPES, where,
          f"a range's type must be one of {', '.join(_RANGE_TYPES)}")
    events = rng.get("events")
    _need(isinstance(events, list) and bool(events), where, "a range needs 'events'")
    for event in events:
        _need(isinstance(event, dict) and len(event) == 1 and next(iter(event)) in _EVENTS
              and isinstance(next(iter(event.values())), str), where,
              f"bad range event {event!r} (one of {', '.join(_EVENTS)}, with a version)")
        value = next(iter(event.values()))
        if pypi and rng["type"] != "GIT" and value != "0":  # a git range holds commits
            try:
                Version(value)
            except InvalidVersion:
                raise ConfigError(f"{where}: bad version {value!r} in a range event") from None
    _need(any("introduced" in e for e in events), where, "a range needs an 'introduced' event")


def _affects(record: Mapping[str, Any], name: str, version: Version) -> bool:
    """Whether ``record`` names the canonical ``name`` at ``version``."""
    exact = canonicalize_version(version)  # "2.6" is "2.6.0"; a legacy string stays as is
    return any(
        pkg["ecosystem"] == "PyPI" and canonicalize_name(pkg["name"]) == name and (
            exact in map(canonicalize_version, entry.get("versions", []))
            or any(_in_range(r["events"], version) for r in entry.get("ranges", [])
                   if r["type"] != "GIT"))
        for entry in record["affected"] for pkg in [entry["package"]])


def _in_range(events: Sequence[Mapping[str, str]], version: Version) -> bool:
    # OSV's evaluation: events sorted by version ("0" first), then one pass in which
    # introduced opens, fixed/limit close at their version and last_affected just after it.
    flat = sorted(((kind, v) for e in events for kind, v in e.items()),
                  key=lambda kv: (kv[1] != "0", Version("0" if kv[1] == "0" else kv[1])))
    affected = False
    for kind, text in flat:
        if kind == "introduced":
            affected = affected or text == "0" or version >= Version(text)
        elif (version >= Version(text)) if kind != "last_affected" else (version > Version(text)):
            affected = False
    return affected


class _OsvHandler(BaseHTTPRequestHandler):
    index: Mapping[str, list[dict[str, Any]]] = {}

    def do_POST(self) -> None:
        if urlsplit(self.path).path != "/v1/query":
            return self._reply(404, {"code": 5, "message": "POST queries to /v1/query"})
        try:
            length = int(self.headers.get("Content-Length") or 0)
            query = json.loads(self.rfile.read(min(max(length, 0), 1 << 20)))
            name = canonicalize_name(query["package"]["name"])
            ecosystem, version = query["package"].get("ecosystem"), Version(query["version"])
        except (ValueError, KeyError, TypeError, AttributeError):
            return self._reply(400, {"code": 3, "message": "expected {package: {name, "
                                     "ecosystem}, version}"})
        vulns = [r for r in self.index.get(name, [])
                 if ecosystem == "PyPI" and _affects(r, name, version)]
        self._reply(200, {"vulns": vulns} if vulns else {})

    def _reply(self, status: int, body: Mapping[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the audit report is the record; no access log on stderr


@contextmanager
def serve_advisories(records: Sequence[Mapping[str, Any]]) -> Iterator[str]:
    """Serve OSV ``records`` on 127.0.0.1 (a free port); yields the ``/v1/query`` URL."""
    index: dict[str, list[dict[str, Any]]] = {}
    for i, record in enumerate(records):
        _check_record(record, f"advisory record {i}")
        served = json.loads(json.dumps(record))
        for entry in served["affected"]:
            if entry["package"]["ecosystem"] == "PyPI":
                # pip-audit picks fix versions by the exact canonical name: serve that name.
                name = entry["package"]["name"] = canonicalize_name(entry["package"]["name"])
                if served not in index.setdefault(name, []):
                    index[name].append(served)
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("_H", (_OsvHandler,), {"index": index}))
    thread = threading.Thread(target=server.serve_forever, name="privml-osv", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1/query"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# ---- severity -----------------------------------------------------------------------------

_NAMED = {"CRITICAL": Severity.CRITICAL, "HIGH": Severity.HIGH, "MODERATE": Severity.MEDIUM,
          "MEDIUM": Severity.MEDIUM, "LOW": Severity.LOW}
_CVSS3 = {"AV": {"N": 0.85, "A": 0.62, "L": 0.55, "P": 0.2}, "AC": {"L": 0.77, "H": 0.44},
          "UI": {"N": 0.85, "R": 0.62}, "CIA": {"H": 0.56, "L": 0.22, "N": 0.0}}
_BANDS = ((9.0, Severity.CRITICAL), (7.0, Severity.HIGH), (4.0, Severity.MEDIUM),
          (0.1, Severity.LOW), (0.0, Severity.INFO))


def _severity(record: Mapping[str, Any] | None) -> Severity:
    """database_specific.severity, else the CVSS v3 base score, else HIGH."""
    specific = (record or {}).get("database_specific")
    if isinstance(specific, dict) and str(specific.get("severity", "")).upper() in _NAMED:
        return _NAMED[str(specific["severity"]).upper()]
    for item in (record or {}).get("severity") or []:
        score = _cvss3(str(item.get("score", ""))) if isinstance(item, dict) else None
        if score is not None and item.get("type") == "CVSS_V3":
            return next(s for low, s in _BANDS if score >= low)
    return Severity.HIGH


def _cvss3(vector: str) -> float | None:
    """The CVSS v3.x base score of a vector (FIRST's v3.1 formulas), or None if malformed."""
    try:
        m = dict(part.split(":", 1) for part in vector.split("/")[1:])
        if not vector.startswith("CVSS:3.") or m["S"] not in ("U", "C"):
            return None
        changed = m["S"] == "C"
        pr = {"N": 0.85, "L": 0.68 if changed else 0.62, "H": 0.5 if changed else 0.27}[m["PR"]]
        iss = 1 - math.prod(1 - _CVSS3["CIA"][m[k]] for k in "CIA")
        reach = 8.22 * _CVSS3["AV"][m["AV"]] * _CVSS3["AC"][m["AC"]] * pr * _CVSS3["UI"][m["UI"]]
    except (KeyError, ValueError):
        return None
    impact = 7.52 * (iss - 0.029) - 3.25 * (iss - 0.02) ** 15 if changed else 6.42 * iss
    raw = round(min((1.08 if changed else 1) * (impact + reach), 10) * 100_000) if impact > 0 else 0
    return raw / 100_000 if raw % 10_000 == 0 else (raw // 10_000 + 1) / 10.0  # "Roundup"


# ---- driving pip-audit --------------------------------------------------------------------

def audit_deps(*, requirements: Path | None = None, python: Path | None = None,
               advisories: str | None = None, timeout: float = 300) -> AuditReport:
    """Audit an environment (this one, or ``python``'s) or a pinned ``requirements`` list.

    Bad arguments (both sources, a missing file, a malformed advisory file) raise ConfigError;
    whatever goes wrong in the audit itself is a finding. ``timeout`` bounds the pip-audit run.
    """
    lines: dict[str, str] = {}
    if requirements is not None and python is not None:
        raise ConfigError("audit a requirements list or an environment, not both")
    if requirements is not None:
        _need(Path(requirements).is_file(), f"requirements file {requirements}", "not found")
        source, target = ["-r", str(requirements), "--no-deps", "--disable-pip"], str(requirements)
        # pip-audit names an unpinnable requirement by its canonicalized line ("./pkg" is
        # "-/pkg"): map it back to the line as written, for the finding.
        text = Path(requirements).read_text(encoding="utf-8", errors="replace")
        lines = {canonicalize_name(ln.strip()): ln.strip() for ln in text.splitlines()}
    elif python is not None:
        interpreter, dirs = _site_dirs(Path(python), timeout)
        source, target = [a for d in dirs for a in ("--path", d)], str(interpreter)
    else:
        source, target = [], sys.executable
    report = AuditReport(kind="deps", target=target, metrics={"advisories": advisories or "pypi"})
    records = (None if advisories is None or urlsplit(advisories).scheme in ("http", "https")
               else load_advisories(advisories))
    by_id = {key: r for r in records or [] for key in (*r.get("aliases", []), r["id"])}
    with serve_advisories(records) if records is not None else nullcontext(advisories) as url:
        service = ["-s", "osv", "--osv-url", url] if url else ["-s", "pypi"]
        result = _run_pip_audit([*service, *source], timeout)
    if isinstance(result, str):
        down = any(word in result for word in _DOWN)
        what = "advisory database unreachable or erroring" if down else "pip-audit failed"
        report.add(Finding("PMA-DEPS-003", Severity.HIGH, f"{what}: nothing was checked",
                           result[:500], "make the advisory endpoint answer OSV queries" if down
                           else "fix the cause shown and audit again", target))
    else:
        _read(report, result, by_id, lines)
    return report


def _site_dirs(python: Path, timeout: float) -> tuple[Path, list[str]]:
    """``python`` (an interpreter or a venv folder) and its site-packages folders."""
    if python.is_dir():
        python = next((p for p in (python / "bin" / "python", python / "Scripts" / "python.exe")
                       if p.is_file()), python / "bin" / "python")
    _need(python.is_file(), f"python interpreter {python}", "not found")
    try:
        proc = subprocess.run([str(python), "-E", "-c", _SITE_DIRS], capture_output=True,  # noqa: S603  # nosec B603  # argv list, no shell; the interpreter is the one the user asked to audit
                              text=True, timeout=min(timeout, 60), check=True)
        dirs = {os.path.realpath(d): d for d in json.loads(proc.stdout) if os.path.isdir(d)}
    except (OSError, subprocess.SubprocessError, ValueError, TypeError) as exc:
        raise ConfigError(f"cannot ask {python} for its site-packages: {exc}") from None
    _need(bool(dirs), str(python), "no site-packages folder to audit")
    return python, list(dirs.values())  # one name per folder: lib64 is often a link to lib


def _run_pip_audit(args: list[str], timeout: float) -> dict[str, Any] | str:
    """pip-audit's JSON report, or a one-line reason why there is none."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_AUDIT_", "PIPAPI_"))}
    with tempfile.TemporaryDirectory(prefix="privml-deps-") as tmp:
        out = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip_audit", "--format", "json", "--desc", "on",
               "--aliases", "on", "--progress-spinner", "off", "--output", str(out),
               "--skip-editable",  # a local checkout is no release: report it unchecked
               "--timeout", str(max(1, min(int(timeout), 30))), *args]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,  # noqa: S603  # nosec B603  # argv list, no shell: this Python's pip_audit
                                  env=env, check=False)
        except subprocess.TimeoutExpired:
            return f"pip-audit did not finish within {timeout:g} s"
        except OSError as exc:
            return f"pip-audit could not start: {exc}"
        lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
        last = (lines or [f"exit code {proc.returncode}"])[-1].removeprefix("ERROR:pip_audit._cli:")
        errors = [ln for ln in lines if "Error: " in ln]  # a bare final line: say what raised
        last = f"{last} ({errors[-1]})" if ": " not in last and errors else last
        try:  # exit code 1 with a report means "vulnerabilities found"
            data = json.loads(out.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return last
    if proc.returncode not in (0, 1) or not isinstance(data, dict) or not isinstance(
            data.get("dependencies"), list):
        return f"pip-audit's report is not one it documents ({last})"
    return data


def _read(report: AuditReport, data: Mapping[str, Any],
          by_id: Mapping[str, Mapping[str, Any]], lines: Mapping[str, str]) -> None:
    deps = [d for d in data["dependencies"] if isinstance(d, dict)]
    report.metrics.update(packages=len(deps), skipped=0, vulnerable=0)
    if not deps:
        report.add(Finding("PMA-DEPS-002", Severity.MEDIUM, "no packages found to audit",
                           "pip-audit listed none", "audit the right environment", report.target))
    for dep in deps:
        name = str(dep.get("name"))
        if "skip_reason" in dep or "version" not in dep:
            report.metrics["skipped"] += 1
            name = lines.get(name, name)
            report.add(Finding("PMA-DEPS-002", Severity.MEDIUM, f"{name}: not checked",
                               str(dep.get("skip_reason", "no version")), "pin it to a "
                               "released version from the index, or audit it by hand", name))
        elif not dep.get("vulns"):
            report.ok(f"{name}=={dep['version']}")
        else:
            report.metrics["vulnerable"] += 1
            report.add(_vulnerable(name, str(dep["version"]), dep["vulns"], by_id))


def _vulnerable(name: str, version: str, vulns: Sequence[Mapping[str, Any]],
                by_id: Mapping[str, Mapping[str, Any]]) -> Finding:
    current = upgrade = Version(version)
    severity, notes, unfixed = Severity.INFO, [], []
    for vuln in vulns:
        ids = [str(vuln.get("id")), *sorted(map(str, vuln.get("aliases", [])))]
        severity = max(severity, _severity(next((by_id[i] for i in ids if i in by_id), None)))
        fixes = [Version(v) for v in vuln.get("fix_versions", [])]
        if fixes:  # the first fix above this version (ranges may fix older branches too)
            upgrade = max(upgrade, min([v for v in fixes if v > current] or fixes))
        else:
            unfixed.append(ids[0])
        alias = f" (aliases: {', '.join(ids[1:])})" if ids[1:] else ""
        desc = str(vuln.get("description") or "")[:160]
        notes.append(f"{ids[0]}{alias}, fixed in: {', '.join(map(str, fixes)) or 'none'}"
                     + (f" - {desc}" if desc else ""))
    fix = [f"upgrade {name} to >= {upgrade}"] if upgrade > current else []
    if unfixed:
        fix.append(f"no fixed release for {', '.join(unfixed)}: remove or replace {name}, "
                   "or accept the risk explicitly")
    return Finding("PMA-DEPS-001", severity, f"{name} {version} has {len(vulns)} known "
                   f"vulnerabilit{'y' if len(vulns) == 1 else 'ies'}",
                   f"{name}=={version}: " + "; ".join(notes), "; ".join(fix), f"{name}=={version}")
