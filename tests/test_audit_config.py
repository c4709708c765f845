"""``privml audit config``: every weakness of a federation's settings reported by id."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from privml._exceptions import ConfigError
from privml.audit import Severity
from privml.audit._config import audit_config

GOOD: dict[str, Any] = {
    "rounds": 30, "clients_per_round": 20, "secagg": True, "target_epsilon": 8.0,
    "delta": 1e-6, "dp_unit": "client", "clients": 1000,
    "tls": {"min_version": "1.3", "mtls": True}}


def _audit(tmp_path: Path, settings: dict[str, Any], suffix: str = ".json") -> set[str]:
    path = tmp_path / f"fed{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(settings))
    else:
        import yaml

        path.write_text(yaml.safe_dump(settings))
    return {f.id for f in audit_config(path).findings}


def test_a_sane_configuration_has_no_finding(tmp_path: Path) -> None:
    assert _audit(tmp_path, GOOD) == set()
    assert _audit(tmp_path, GOOD, ".yaml") == set()


@pytest.mark.parametrize(("change", "expect"), [
    ({"secagg": False}, "PMA-CFG-001"),
    ({"target_epsilon": None}, "PMA-CFG-002"),
    ({"target_epsilon": None, "noise_multiplier": 0.2}, "PMA-CFG-003"),
    ({"target_epsilon": None, "noise_multiplier": 1.0}, "PMA-CFG-004"),
    ({"target_epsilon": 50.0}, "PMA-CFG-004"),
    ({"delta": 0.01}, "PMA-CFG-005"),
    ({"min_survivors": 3}, "PMA-CFG-006"),
    ({"shamir_threshold": 2, "secagg_neighbours": 10}, "PMA-CFG-007"),
    ({"shamir_threshold": 30}, "PMA-CFG-007"),
    ({"dp_unit": None}, "PMA-CFG-008"),
    ({"tls": {"min_version": "1.2", "mtls": True}}, "PMA-CFG-009"),
    ({"tls": {"mtls": False}}, "PMA-CFG-009"),
    ({"insecure_dev": True}, "PMA-CFG-009"),
    ({"secagg_clipp": 1.0}, "PMA-CFG-010"),
    ({"clients_per_round": 0}, "PMA-CFG-011"),
])
def test_each_weakness_is_reported_by_id(tmp_path: Path, change: dict[str, Any],
                                         expect: str) -> None:
    settings = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    assert expect in _audit(tmp_path, settings)


def test_coordinator_config_shape_and_cli_exit_codes(tmp_path: Path) -> None:
    from privml.transport._runconfig import RunConfig

    weak = RunConfig(rounds=5, clients_per_round=4).to_dict()  # no secagg, no DP
    path = tmp_path / "admin-status.json"
    path.write_text(json.dumps({"config": weak}))  # as GET /v1/admin/status gives it
    report = audit_config(path)
    assert {f.id for f in report.failing(Severity.HIGH)} == {"PMA-CFG-001", "PMA-CFG-002"}
    from typer.testing import CliRunner

    from privml.cli import app

    runner = CliRunner()
    base = ["audit", "config", str(path)]
    done = runner.invoke(app, [*base, "--html", str(tmp_path / "r.html")])
    assert done.exit_code == 1 and "PMA-CFG-001" in done.output
    assert "PMA-CFG-002" in (tmp_path / "r.html").read_text()
    assert runner.invoke(app, [*base, "--fail-on", "critical"]).exit_code == 0
    done = runner.invoke(app, [*base, "--fail-on", "severe"])
    assert done.exit_code == 2 and "severity must be one of" in done.output
    # The installed command, once, as CI would run it.
    done = subprocess.run([sys.executable, "-m", "privml", *base, "--json",
                           str(tmp_path / "r.json")], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 1
    assert {f["id"] for f in json.loads((tmp_path / "r.json").read_text())["findings"]} >= {
        "PMA-CFG-001", "PMA-CFG-002"}


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", "- a\n- b\n"])
def test_malformed_files_are_refused(tmp_path: Path, content: str) -> None:
    path = tmp_path / ("bad.json" if content.startswith(("{", "[")) else "bad.yaml")
    path.write_text(content)
    with pytest.raises(ConfigError):
        audit_config(path)
    with pytest.raises(ConfigError, match="does not exist"):
        audit_config(tmp_path / "missing.yaml")
