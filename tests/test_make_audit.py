"""`make audit` and the lock files it vouches for.

The audit tests run the commands `make audit` runs (the lines `make -n audit` prints, with
ADVISORIES and AUDIT_DIR given on the command line): the check that the advisory snapshot is
not older than the lock, then `privml audit deps` on the project's own environment (.venv,
installed from requirements/*.lock). Against a fixture that marks the locked cryptography
vulnerable it exits 1 and names the pin in the JSON and the SARIF report; against the
snapshot kept in security/ it exits 0 and every locked pin was checked. The lock tests check
that every pin is hashed, that torch is the local CPU wheel, and that every requirement of
pyproject.toml (dependencies and the dev extra) is locked at a version it allows.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from privml.audit._deps import _affects, load_advisories

ROOT = Path(__file__).resolve().parent.parent
LOCKS = [ROOT / "requirements" / "dev.lock", ROOT / "requirements" / "nodeps.lock"]
FIXTURE = Path(__file__).parent / "fixtures" / "advisories" / "locked-pin.osv.json"
SNAPSHOT = ROOT / "security" / "advisories.osv.json"
TORCH_WHEELS = Path("/opt/wheels")


def pins(lock: Path) -> dict[str, tuple[str, list[str]]]:
    """``name -> (version, sha256 hashes)`` of each requirement of a pip-compile lock."""
    found: dict[str, tuple[str, list[str]]] = {}
    for raw in lock.read_text(encoding="utf-8").replace("\\\n", " ").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        head, *hashes = re.split(r"\s+--hash=", line)
        req = Requirement(head)
        assert str(req.specifier).startswith("=="), f"{lock.name}: not pinned: {line}"
        assert hashes, f"{lock.name}: no hash: {head}"
        assert all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in hashes), line
        found[canonicalize_name(req.name)] = (str(req.specifier)[2:], hashes)
    return found


def locked() -> dict[str, str]:
    return {name: version for lock in LOCKS for name, (version, _) in pins(lock).items()}


def test_every_pin_is_hashed() -> None:
    dev, nodeps = (pins(lock) for lock in LOCKS)
    assert len(dev) > 50 and {"pip", "setuptools", "beartype"} <= dev.keys()
    assert list(nodeps) == ["pycanon"]  # installed --no-deps: its exact pins do not apply


def test_torch_is_the_local_cpu_wheel() -> None:
    version, hashes = pins(LOCKS[0])["torch"]
    assert version == "2.13.0+cpu"
    wheels = sorted(TORCH_WHEELS.glob("torch-2.13.0+cpu-*.whl"))
    if not wheels:
        pytest.skip(f"no torch wheel in {TORCH_WHEELS} to compare the hash with")
    digest = hashlib.sha256()
    with wheels[0].open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    assert hashes == [f"sha256:{digest.hexdigest()}"]  # the local file only: no CUDA build


def test_every_requirement_of_pyproject_is_locked() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    versions = locked()
    for text in [*project["dependencies"], *project["optional-dependencies"]["dev"]]:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        assert name in versions, f"{text} is not in the lock: run `make lock`"
        assert req.specifier.contains(versions[name], prereleases=True), (
            f"{text}: the lock pins {versions[name]}: run `make lock`")


def make_audit(advisories: Path, out: Path) -> subprocess.CompletedProcess[str]:
    """Run what `make audit` runs, with these advisories, writing to ``out``."""
    dry = subprocess.run(["make", "-n", "--no-print-directory", "audit",
                          f"ADVISORIES={advisories}", f"AUDIT_DIR={out}"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60, check=True)
    lines = dry.stdout.replace("\\\n", " ").splitlines()
    (check,) = [ln for ln in lines if "refresh_advisories.py --check" in ln]
    (audit,) = [ln for ln in lines if " audit deps " in ln]
    assert lines.index(check) < lines.index(audit)
    # the snapshot is not older than the lock (else `make audit` stops here)
    subprocess.run(shlex.split(check), cwd=ROOT, capture_output=True, timeout=60, check=True)
    cmd = shlex.split(audit)
    assert "--python" in cmd and str(advisories) in cmd, audit
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          check=False)


def reports(out: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    return (json.loads((out / "deps.json").read_text(encoding="utf-8")),
            json.loads((out / "deps.sarif").read_text(encoding="utf-8")))


def test_make_audit_fails_on_a_vulnerable_locked_pin(tmp_path: Path) -> None:
    pin = f"cryptography=={locked()['cryptography']}"
    proc = make_audit(FIXTURE, tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    report, sarif = reports(tmp_path)
    vulnerable = [f for f in report["findings"] if f["id"] == "PMA-DEPS-001"]
    assert [(f["target"], f["severity"]) for f in vulnerable] == [(pin, "critical")]
    assert "PRIVML-TEST-0101" in vulnerable[0]["evidence"]
    assert sarif["version"] == "2.1.0"
    (run,) = sarif["runs"]
    (result,) = [r for r in run["results"] if r["ruleId"] == "PMA-DEPS-001"]
    assert result["level"] == "error" and pin in result["message"]["text"]
    assert result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == pin


def test_make_audit_passes_on_the_snapshot_and_checks_every_pin(tmp_path: Path) -> None:
    proc = make_audit(SNAPSHOT, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report, sarif = reports(tmp_path)
    assert report["kind"] == "deps"
    assert not [f for f in report["findings"] if f["severity"] in ("critical", "high")]
    passed = set(report["passed"])
    missing = {f"{n}=={v}" for n, v in locked().items()} - passed
    assert not missing, f"locked but not installed as locked: {sorted(missing)}"
    assert sarif["version"] == "2.1.0"


def test_a_snapshot_older_than_the_lock_stops_make_audit(tmp_path: Path) -> None:
    lock = tmp_path / "dev.lock"
    lock.write_text(LOCKS[0].read_text(encoding="utf-8")
                    + f"six==1.17.0 \\\n    --hash=sha256:{'0' * 64}\n", encoding="utf-8")
    tool = ROOT / "tools" / "refresh_advisories.py"
    proc = subprocess.run([sys.executable, str(tool), "--check", str(lock), str(LOCKS[1])],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "six==1.17.0" in proc.stderr and "make advisories" in proc.stderr


def test_a_pypi_advisory_becomes_an_osv_record_of_the_pin(tmp_path: Path) -> None:
    """PyPI's JSON API gives OSV data in its own shape: the snapshot keeps OSV's."""
    spec = importlib.util.spec_from_file_location("refresh", ROOT / "tools" /
                                                  "refresh_advisories.py")
    assert spec is not None and spec.loader is not None
    refresh = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(refresh)
    vuln = {"id": "PYSEC-2099-1", "aliases": ["CVE-2099-1"], "details": "made up",
            "summary": None, "fixed_in": ["2.12.5", "2.13.1"], "withdrawn": None,
            "link": "https://osv.dev/vulnerability/PYSEC-2099-1", "source": "osv"}
    snapshot = tmp_path / "osv.json"
    snapshot.write_text(json.dumps([refresh._record("torch", "2.13.0+cpu", vuln)]))
    (record,) = load_advisories(snapshot)  # a valid OSV record
    assert _affects(record, "torch", Version("2.13.0+cpu"))
    assert _affects(record, "torch", Version("2.13.0"))
    assert not _affects(record, "torch", Version("2.13.1"))  # the first later fix
    assert refresh.read_pins(LOCKS) == locked()
