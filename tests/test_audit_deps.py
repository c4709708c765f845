"""`privml audit deps`: pip-audit driven against a local OSV endpoint, never the network's.

The advisories are made up (tests/fixtures/advisories/osv.json); the packages are real: a
throwaway venv holds six 1.15.0 and idna 2.8 from PyPI, and requirements lists pin the same.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from privml._exceptions import ConfigError
from privml.audit import Severity
from privml.audit._deps import _cvss3, audit_deps, load_advisories, serve_advisories
from privml.audit._findings import AuditReport, Finding

OSV = Path(__file__).parent / "fixtures" / "advisories" / "osv.json"


def by_id(report: AuditReport, finding_id: str) -> list[Finding]:
    return [f for f in report.findings if f.id == finding_id]


def one(report: AuditReport, finding_id: str, target_prefix: str) -> Finding:
    found = [f for f in by_id(report, finding_id) if f.target.startswith(target_prefix)]
    assert len(found) == 1, report.to_dict()
    return found[0]


@pytest.fixture(scope="module")
def old_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv (no pip in it): six 1.15.0 and idna 2.8 from PyPI, and an editable checkout."""
    venv = tmp_path_factory.mktemp("deps") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=60)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
         "--quiet", "--disable-pip-version-check", "--no-deps", "six==1.15.0", "idna==2.8"],
        capture_output=True, text=True, timeout=180, check=False)
    # PyPI is reachable wherever `make test` can install privml itself: a failure here is
    # a failure, not a reason to skip the one test that audits a real environment.
    assert proc.returncode == 0, f"cannot install from PyPI: {proc.stderr[-400:]}"
    # What `pip install -e ./localtool` leaves behind (PEP 610), without building anything.
    (site,) = (venv / "lib").glob("python3*/site-packages")
    info = site / "localtool-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: localtool\nVersion: 0.1\n")
    (info / "RECORD").write_text("localtool-0.1.dist-info/METADATA,,\n")
    (info / "direct_url.json").write_text(json.dumps(
        {"url": (venv.parent / "localtool").as_uri(), "dir_info": {"editable": True}}))
    return venv


@pytest.fixture(scope="module")
def osv_url() -> Iterator[str]:
    with serve_advisories(load_advisories(OSV)) as url:
        yield url


def query(url: str, body: bytes) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def ids(url: str, name: str, version: str) -> list[str]:
    status, body = query(url, json.dumps(
        {"package": {"name": name, "ecosystem": "PyPI"}, "version": version}).encode())
    assert status == 200
    return [v["id"] for v in body.get("vulns", [])]


# ---- a real environment and a requirements list, audited offline -------------------------

@pytest.mark.parametrize("given", ["venv", "interpreter"])
def test_venv_vulnerable_package_is_a_finding_and_clean_one_passes(old_env: Path,
                                                                   given: str) -> None:
    python = old_env if given == "venv" else old_env / "bin" / "python"
    report = audit_deps(python=python, advisories=str(OSV), timeout=120)
    assert report.kind == "deps"
    assert report.target == str(old_env / "bin" / "python")
    finding = one(report, "PMA-DEPS-001", "six")
    assert finding.target == "six==1.15.0"
    assert finding.severity is Severity.HIGH  # the advisory gives none: the default
    assert "six==1.15.0" in finding.evidence
    assert "PRIVML-TEST-0001" in finding.evidence and "CVE-2099-0001" in finding.evidence
    assert "fixed in: 1.16.0" in finding.evidence
    assert finding.fix == "upgrade six to >= 1.16.0"
    assert report.passed == ["idna==2.8"]  # PRIVML-TEST-0004 names 2.5 and 2.6 only
    editable = one(report, "PMA-DEPS-002", "localtool")  # no release to look up
    assert editable.severity is Severity.MEDIUM and "editable" in editable.evidence
    assert sorted(f.id for f in report.findings) == ["PMA-DEPS-001", "PMA-DEPS-002"]
    assert report.metrics["packages"] == 3


def test_this_environment_is_the_default() -> None:
    report = audit_deps(advisories=str(OSV), timeout=120)
    assert report.target == sys.executable
    assert not by_id(report, "PMA-DEPS-003")
    assert any(p.startswith("pip-audit==") for p in report.passed)


def test_requirements_list_is_audited_as_written(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "localpkg").mkdir()
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("six==1.15.0\nidna==2.8\nurllib3==1.26.4\nrequests==2.19.1\n"
                    "./localpkg\nwidget @ https://example.invalid/widget-1.0.tar.gz\n")
    calls: list[list[str]] = []
    real_run = subprocess.run

    def spy(cmd: list[str], **kwargs: Any) -> Any:
        calls.append(list(cmd))
        return real_run(cmd, **kwargs)

    monkeypatch.setattr(subprocess, "run", spy)
    report = audit_deps(requirements=reqs, advisories=str(OSV), timeout=120)

    assert len(calls) == 1 and calls[0][1:3] == ["-m", "pip_audit"]  # one process: no pip
    assert {"--no-deps", "--disable-pip", "-r"} <= set(calls[0])
    six = one(report, "PMA-DEPS-001", "six")
    assert six.target == "six==1.15.0" and "PRIVML-TEST-0001" in six.evidence
    assert six.fix == "upgrade six to >= 1.16.0"
    urllib3 = one(report, "PMA-DEPS-001", "urllib3")  # CVSS 9.8 in the advisory
    assert urllib3.severity is Severity.CRITICAL
    assert urllib3.fix == "upgrade urllib3 to >= 1.26.5"  # not 1.25.9: an older branch
    requests = one(report, "PMA-DEPS-001", "requests")  # database_specific MODERATE
    assert requests.severity is Severity.MEDIUM
    assert "no fixed release for PRIVML-TEST-0003" in requests.fix
    assert report.passed == ["idna==2.8"]
    skipped = {f.target: f for f in by_id(report, "PMA-DEPS-002")}
    assert set(skipped) == {"./localpkg", "widget"}
    assert all(f.severity is Severity.MEDIUM for f in skipped.values())
    assert "URL" in skipped["widget"].evidence


def test_advisory_url_is_passed_through(tmp_path: Path, osv_url: str) -> None:
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("six==1.15.0\nurllib3==1.26.4\n")
    report = audit_deps(requirements=reqs, advisories=osv_url, timeout=120)
    assert report.metrics["advisories"] == osv_url
    assert {f.target for f in by_id(report, "PMA-DEPS-001")} == {"six==1.15.0",
                                                                  "urllib3==1.26.4"}
    # Through a URL the records are not in hand: every finding takes the default severity.
    assert {f.severity for f in report.findings} == {Severity.HIGH}


# ---- nothing is ever a silent pass --------------------------------------------------------

def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def erroring_url() -> Iterator[str]:
    class Broken(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.send_error(500)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Broken)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/v1/query"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("down", ["closed", "erroring"])
def test_advisory_endpoint_down_is_a_finding(tmp_path: Path, down: str,
                                             request: pytest.FixtureRequest) -> None:
    url = (f"http://127.0.0.1:{closed_port()}/v1/query" if down == "closed"
           else request.getfixturevalue("erroring_url"))
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("six==1.15.0\nidna==2.8\n")
    report = audit_deps(requirements=reqs, advisories=url, timeout=60)
    assert [f.id for f in report.findings] == ["PMA-DEPS-003"]
    assert report.findings[0].severity is Severity.HIGH
    assert "unreachable or erroring" in report.findings[0].title
    assert report.passed == []


def test_empty_and_unpinned_requirements_are_findings(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing here\n")
    report = audit_deps(requirements=empty, advisories=str(OSV), timeout=60)
    assert [(f.id, f.title) for f in report.findings] == [
        ("PMA-DEPS-002", "no packages found to audit")]
    unpinned = tmp_path / "unpinned.txt"
    unpinned.write_text("six>=1.0\n")
    report = audit_deps(requirements=unpinned, advisories=str(OSV), timeout=60)
    assert [f.id for f in report.findings] == ["PMA-DEPS-003"]
    assert "not pinned" in report.findings[0].evidence
    assert report.findings[0].title == "pip-audit failed: nothing was checked"


def test_a_timeout_is_a_finding(tmp_path: Path) -> None:
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("six==1.15.0\n")
    report = audit_deps(requirements=reqs, advisories=str(OSV), timeout=0.01)
    assert [f.id for f in report.findings] == ["PMA-DEPS-003"]
    assert "did not finish" in report.findings[0].evidence


def test_bad_arguments_raise(tmp_path: Path) -> None:
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("six==1.15.0\n")
    with pytest.raises(ConfigError, match="not both"):
        audit_deps(requirements=reqs, python=Path(sys.executable))
    with pytest.raises(ConfigError, match="not found"):
        audit_deps(requirements=tmp_path / "missing.txt")
    with pytest.raises(ConfigError, match="not found"):
        audit_deps(python=tmp_path)  # a folder with no bin/python
    with pytest.raises(ConfigError, match="not a readable JSON"):
        audit_deps(requirements=reqs, advisories=str(tmp_path / "missing.json"))


# ---- the local OSV endpoint ---------------------------------------------------------------

@pytest.mark.parametrize(("name", "version", "expected"), [
    ("six", "1.15.0", ["PRIVML-TEST-0001"]),  # introduced "0"
    ("Six", "1.0", ["PRIVML-TEST-0001"]),  # names compare canonicalized
    ("six", "1.16.0rc1", ["PRIVML-TEST-0001"]),  # a pre-release sorts before the fix
    ("six", "1.16.0", []),  # fixed
    ("urllib3", "1.24.3", []),  # before introduced
    ("urllib3", "1.25.0", ["PRIVML-TEST-0002"]),
    ("urllib3", "1.25.9", []),  # first range fixed ...
    ("urllib3", "1.25.11", []),  # ... and stays fixed until the next introduced
    ("urllib3", "1.26.4", ["PRIVML-TEST-0002"]),
    ("urllib3", "1.26.5", []),
    ("requests", "2.19.1", ["PRIVML-TEST-0003"]),  # last_affected is included
    ("requests", "2.19.2", []),  # and nothing after it; the GIT range is not read
    ("requests", "1.2.3", []),
    ("idna", "2.6", ["PRIVML-TEST-0004"]),  # explicit versions
    ("idna", "2.6.0", ["PRIVML-TEST-0004"]),  # compared as versions, not strings
    ("idna", "2.7", []),
    ("leftpad", "1.0", []),
])
def test_osv_endpoint_matches_versions(osv_url: str, name: str, version: str,
                                       expected: list[str]) -> None:
    assert ids(osv_url, name, version) == expected


def test_osv_endpoint_answers_pip_audits_query_shape(osv_url: str) -> None:
    status, body = query(osv_url, json.dumps(
        {"package": {"name": "six", "ecosystem": "PyPI"}, "version": "1.15.0"}).encode())
    assert status == 200
    (vuln,) = body["vulns"]
    assert vuln["aliases"] == ["CVE-2099-0001"]
    assert vuln["affected"][0]["package"] == {"ecosystem": "PyPI", "name": "six"}  # canonical
    status, body = query(osv_url, json.dumps(
        {"package": {"name": "six", "ecosystem": "npm"}, "version": "1.0.0"}).encode())
    assert (status, body) == (200, {})  # OSV's answer when nothing matches
    assert query(osv_url, b"not json")[0] == 400
    assert query(osv_url, json.dumps({"package": {"name": "six"}, "version": "x y"}).encode()
                 )[0] == 400
    assert query(osv_url.replace("/v1/query", "/v1/querybatch"), b"{}")[0] == 404


def record(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"id": "X-1", "affected": [
        {"package": {"ecosystem": "PyPI", "name": "six"},
         "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1.0"}]}]}]}
    return {**base, **changes}


def ranges(*events: dict[str, str], kind: str = "ECOSYSTEM") -> list[dict[str, Any]]:
    return [{"package": {"ecosystem": "PyPI", "name": "six"},
             "ranges": [{"type": kind, "events": list(events)}]}]


@pytest.mark.parametrize(("content", "match"), [
    ("{not json", "not a readable JSON"),
    (b"\xff\xfe[]", "not a readable JSON"),
    ({"vulns": []}, "JSON list of OSV records, not a dict"),
    (["X-1"], "must be an object"),
    ([record(id="")], "no 'id'"),
    ([{"affected": record()["affected"]}], "no 'id'"),
    ([record(affected=[])], r"\(X-1\): no 'affected'"),
    ([{"id": "X-1"}], "no 'affected'"),
    ([record(aliases="CVE-1")], "'aliases' must be a list"),
    ([record(affected=[{"ranges": []}])], "package name and ecosystem"),
    ([record(affected=[{"package": {"ecosystem": "PyPI", "name": "six"}}])],
     "needs 'ranges' or 'versions'"),
    ([record(affected=ranges({"introduced": "0"}, kind="SEMVERISH"))], "type must be one of"),
    ([record(affected=ranges())], "needs 'events'"),
    ([record(affected=ranges({"introduced": "0", "fixed": "1"}))], "bad range event"),
    ([record(affected=ranges({"introduced": "0"}, {"patched": "1"}))], "bad range event"),
    ([record(affected=ranges({"introduced": "0"}, {"fixed": "not a version"}))],
     "bad version 'not a version'"),
    ([record(affected=ranges({"fixed": "1.0"}))], "needs an 'introduced' event"),
])
def test_malformed_advisory_files_raise(tmp_path: Path, content: Any, match: str) -> None:
    path = tmp_path / "osv.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(ConfigError, match=match):
        load_advisories(path)
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("six==1.15.0\n")
    with pytest.raises(ConfigError, match=match):  # the audit refuses it before running
        audit_deps(requirements=reqs, advisories=str(path))


def test_fixture_and_git_ranges_load() -> None:
    records = load_advisories(OSV)
    assert [r["id"] for r in records] == [f"PRIVML-TEST-000{i}" for i in range(1, 6)]


@pytest.mark.parametrize(("vector", "score"), [  # values from FIRST's v3.1 calculator
    ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 9.8),
    ("CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N", 6.1),
    ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H", 7.5),
    ("CVSS:3.0/AV:L/AC:H/PR:H/UI:R/S:U/C:L/I:N/A:N", 1.8),
    ("CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:C/C:H/I:H/A:H", 9.9),
    ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:N", 0.0),
    ("CVSS:2.0/AV:N/AC:L/Au:N/C:P/I:P/A:P", None),
    ("CVSS:3.1/AV:X/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", None),
])
def test_cvss3_base_scores(vector: str, score: float | None) -> None:
    assert _cvss3(vector) == score
