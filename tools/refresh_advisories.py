"""Refresh the advisory snapshot that `make audit` checks the locked pins against.

    python tools/refresh_advisories.py requirements/dev.lock requirements/nodeps.lock
    (or: make advisories)

writes ``security/advisories.osv.json``, a JSON list of OSV records (what ``privml audit deps
--advisories`` reads), and ``security/advisories.coverage.json``, which says for every pin
where its advisories came from, or that no source covered it (then `make audit` cannot vouch
for it: the pin is listed, never silently passed). Sources, the first that answers:

1. OSV (``POST https://api.osv.dev/v1/querybatch``, then ``GET /v1/vulns/ID``): the full
   records, with their ranges and severities.
2. PyPI's JSON API, whose ``vulnerabilities`` field is OSV's data for one release:
   ``/pypi/NAME/VERSION/json``, or ``/pypi/NAME/json`` when the pin is the latest release
   (some mirrors answer only that one). Each entry becomes an OSV record naming the pinned
   version (``versions``), with a range up to the first later fix PyPI names, if any.

A local version (``torch==2.13.0+cpu``) is looked up as its public one (2.13.0).

``--check`` (which `make audit` runs first) refreshes nothing: it fails when a pin of the
lock files is missing from the coverage file (the snapshot is older than the lock: run
`make advisories`), and lists the pins no source covered.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

OSV_API = "https://api.osv.dev/v1"
PYPI_API = "https://pypi.org/pypi"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")
ROOT = Path(__file__).resolve().parent.parent


def read_pins(locks: list[Path]) -> dict[str, str]:
    """``name -> version`` of every ``name==version`` line of the lock files."""
    pins: dict[str, str] = {}
    for lock in locks:
        for line in lock.read_text(encoding="utf-8").splitlines():
            if m := PIN.match(line.strip()):
                pins[canonicalize_name(m[1])] = m[2]
    return pins


def _get(url: str, body: Any = None, timeout: float = 30) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={
        "Content-Type": "application/json", "User-Agent": "privml-refresh-advisories"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def from_osv(pins: dict[str, str]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Every record OSV has for the pins (raises OSError when OSV cannot be reached)."""
    names = sorted(pins)
    queries = [{"package": {"name": n, "ecosystem": "PyPI"},
                "version": Version(pins[n]).public} for n in names]
    ids: set[str] = set()
    for start in range(0, len(queries), 500):  # querybatch takes at most 1,000 queries
        answer = _get(f"{OSV_API}/querybatch", {"queries": queries[start:start + 500]})
        ids.update(v["id"] for r in answer["results"] for v in r.get("vulns", []))
    with ThreadPoolExecutor(8) as pool:
        records = list(pool.map(lambda i: _get(f"{OSV_API}/vulns/{i}"), sorted(ids)))
    return records, {f"{n}=={pins[n]}": "osv" for n in names}


def _pypi(name: str, version: str) -> tuple[list[dict[str, Any]] | None, str]:
    """PyPI's vulnerabilities of ``name`` at ``version``, and where they came from."""
    public = Version(version).public
    try:
        return _get(f"{PYPI_API}/{name}/{public}/json")["vulnerabilities"], "pypi-version"
    except urllib.error.HTTPError as exc:
        if exc.code != 404:
            return None, f"not covered: PyPI answered {exc.code}"
    except (OSError, ValueError, KeyError) as exc:
        return None, f"not covered: {exc}"
    try:
        project = _get(f"{PYPI_API}/{name}/json")
        latest = project["info"]["version"]
    except (OSError, ValueError, KeyError) as exc:
        return None, f"not covered: {exc}"
    if Version(latest) != Version(public):
        return None, (f"not covered: PyPI gives advisories of the latest release only "
                      f"({latest}) and OSV was unreachable")
    return project["vulnerabilities"], "pypi-latest"


def _record(name: str, version: str, vuln: dict[str, Any]) -> dict[str, Any]:
    versions = sorted({version, Version(version).public})
    affected: dict[str, Any] = {"package": {"name": name, "ecosystem": "PyPI"},
                                "versions": versions}
    later = []
    for fix in vuln.get("fixed_in") or []:
        try:
            if Version(fix) > Version(version):
                later.append(Version(fix))
        except InvalidVersion:
            pass
    if later:
        affected["ranges"] = [{"type": "ECOSYSTEM", "events": [
            {"introduced": Version(version).public}, {"fixed": str(min(later))}]}]
    return {
        "id": vuln["id"], "aliases": sorted(vuln.get("aliases") or []),
        "summary": vuln.get("summary") or "", "details": vuln.get("details") or "",
        "affected": [affected],
        "references": [{"type": "ADVISORY", "url": vuln["link"]}] if vuln.get("link") else [],
        "database_specific": {"source": "PyPI JSON API", "fixed_in": vuln.get("fixed_in") or []},
    }


def from_pypi(pins: dict[str, str]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    names = sorted(pins)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda n: _pypi(n, pins[n]), names))
    records: dict[str, dict[str, Any]] = {}
    coverage = {}
    for name, (vulns, source) in zip(names, answers, strict=True):
        coverage[f"{name}=={pins[name]}"] = source
        for vuln in vulns or []:
            if vuln.get("withdrawn"):
                continue
            record = _record(name, pins[name], vuln)
            if vuln["id"] in records:  # one advisory, several locked packages
                records[vuln["id"]]["affected"].extend(record["affected"])
            else:
                records[vuln["id"]] = record
    return list(records.values()), coverage


def check(pins: dict[str, str], coverage_file: Path) -> int:
    """0 if the snapshot covers every pin (or says why not), 1 if it is older than the lock."""
    try:
        coverage = json.loads(coverage_file.read_text(encoding="utf-8"))
        seen, missing = coverage["pins"], coverage["not_covered"]
    except (OSError, ValueError, KeyError) as exc:
        print(f"no advisory coverage record ({exc}): run `make advisories`", file=sys.stderr)
        return 1
    stale = sorted(f"{n}=={v}" for n, v in pins.items() if f"{n}=={v}" not in seen)
    print(f"advisory snapshot: {coverage['source']}, {coverage['refreshed']}, "
          f"{coverage['records']} advisories for {len(seen)} pins")
    for pin, why in sorted(missing.items()):
        if pin.split("==")[0] in pins:
            print(f"  warning: {pin} {why}", file=sys.stderr)
    if stale:
        print(f"the advisory snapshot predates the lock ({', '.join(stale)}): run "
              "`make advisories`", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("locks", nargs="+", type=Path, help="lock files (name==version pins)")
    parser.add_argument("--out", type=Path, default=ROOT / "security" / "advisories.osv.json")
    parser.add_argument("--coverage", type=Path,
                        default=ROOT / "security" / "advisories.coverage.json")
    parser.add_argument("--check", action="store_true",
                        help="refresh nothing: fail if the snapshot misses a pin of the locks")
    args = parser.parse_args(argv)
    pins = read_pins(args.locks)
    if args.check:
        return check(pins, args.coverage)
    try:
        records, coverage = from_osv(pins)
        source = f"OSV ({OSV_API})"
    except (OSError, ValueError, KeyError) as exc:
        print(f"OSV unreachable ({exc}): PyPI's JSON API instead", file=sys.stderr)
        records, coverage = from_pypi(pins)
        source = f"PyPI JSON API ({PYPI_API})"
    records.sort(key=lambda r: r["id"])
    args.out.write_text(json.dumps(records, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    missing = {pin: why for pin, why in coverage.items() if why.startswith("not covered")}
    args.coverage.write_text(json.dumps({
        "refreshed": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": "make advisories", "source": source,
        "locks": [str(p) for p in args.locks], "records": len(records),
        "not_covered": missing, "pins": coverage}, indent=1) + "\n", encoding="utf-8")
    print(f"{len(records)} advisories for {len(pins)} pins from {source} -> {args.out}")
    for pin, why in missing.items():
        print(f"  {pin}: {why}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
