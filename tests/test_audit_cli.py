"""The ``privml audit model`` and ``privml audit deps`` commands: exit codes and reports."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from privml.cli import app
from privml.models import save_model, zoo

OSV = Path(__file__).parent / "fixtures" / "advisories" / "osv.json"


class _Payload:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("touch PWNED",))


def test_audit_model_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "evil.pt").write_bytes(pickle.dumps({"w": _Payload()}, protocol=4))
    spec = zoo("logreg", input_shape=(4,), num_classes=2)
    save_model(folder / "good.safetensors", spec,
               {"dense1.weight": np.zeros((2, 4), np.float32),
                "dense1.bias": np.zeros(2, np.float32)})
    runner = CliRunner()
    monkeypatch.chdir(tmp_path)  # where the payload would write
    done = runner.invoke(app, ["audit", "model", str(folder), "--sarif", "m.sarif"])
    assert done.exit_code == 1 and "PMA-MODEL-001" in done.output
    assert not (tmp_path / "PWNED").exists()
    results = json.loads((tmp_path / "m.sarif").read_text())["runs"][0]["results"]
    assert {r["ruleId"] for r in results} == {"PMA-MODEL-001"}
    uri = results[0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
    assert uri.endswith("evil.pt")
    (folder / "evil.pt").unlink()
    assert runner.invoke(app, ["audit", "model", str(folder)]).exit_code == 0


def test_audit_deps_cli(tmp_path: Path) -> None:
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("six==1.15.0\nidna==2.8\n")
    runner = CliRunner()
    done = runner.invoke(app, ["audit", "deps", "-r", str(reqs), "--advisories", str(OSV),
                               "--json", str(tmp_path / "d.json")])
    assert done.exit_code == 1, done.output
    found = json.loads((tmp_path / "d.json").read_text())["findings"]
    assert [(f["id"], f["target"]) for f in found] == [("PMA-DEPS-001", "six==1.15.0")]
    reqs.write_text("idna==2.8\n")
    assert runner.invoke(app, ["audit", "deps", "-r", str(reqs), "--advisories",
                               str(OSV)]).exit_code == 0
