"""``privml anonymize table``: k-anonymity, l-diversity and t-closeness from the command line,
checked by pycanon; bad input is one line and leaves no output file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pycanon import anonymity
from typer.testing import CliRunner

from privml.cli import app

runner = CliRunner()


def _run(*args: str) -> tuple[int, str]:
    res = runner.invoke(app, list(args))
    return res.exit_code, res.output


@pytest.fixture()
def patients(tmp_path: Path) -> Path:
    rng = np.random.default_rng(7)
    n = 1500
    frame = pd.DataFrame({
        "age": rng.integers(18, 90, n),
        "zip": rng.choice(["13053", "13068", "14850", "14853", "10001"], n),
        "sex": rng.choice(["M", "F"], n),
        "diagnosis": rng.choice(["flu", "cold", "hiv", "cancer", "asthma"], n),
    })
    frame.to_csv(tmp_path / "patients.csv", index=False)
    return tmp_path / "patients.csv"


@pytest.mark.parametrize("algorithm", ["mondrian", "fulldomain"])
def test_table_k_l_t_checked_by_pycanon(patients: Path, tmp_path: Path, algorithm: str) -> None:
    dst, report = tmp_path / "out.csv", tmp_path / "report.json"
    code, text = _run("anonymize", "table", str(patients), str(dst), "--k", "10", "--l", "3",
                      "--t", "0.3", "--qi", "age,zip,sex", "--sensitive", "diagnosis",
                      "--algorithm", algorithm, "--report", str(report))
    assert code == 0, text
    released = pd.read_csv(dst, dtype=str)
    assert len(released) == 1500  # one row per record
    qi = ["age", "zip", "sex"]
    assert anonymity.k_anonymity(released, qi) >= 10
    assert anonymity.l_diversity(released, qi, ["diagnosis"]) >= 3
    assert anonymity.t_closeness(released, qi, ["diagnosis"]) <= 0.3 + 1e-9
    achieved = json.loads(report.read_text())["achieved"]
    assert achieved["k"] == anonymity.k_anonymity(released, qi)
    assert "achieved" in text and "GCP" in text


@pytest.mark.parametrize(("extra", "needle"), [
    (["--k", "5000", "--qi", "age"], "larger than the table"),
    (["--k", "5", "--qi", "age,income"], "income"),
    (["--k", "5", "--qi", "age", "--l", "9", "--sensitive", "diagnosis"], "9"),
    (["--k", "5"], "--k and --qi"),
    (["--l", "2"], "need --k"),
    ([], "nothing to do"),
])
def test_table_refusals_leave_no_output(patients: Path, tmp_path: Path, extra: list[str],
                                        needle: str) -> None:
    dst = tmp_path / "out.csv"
    code, text = _run("anonymize", "table", str(patients), str(dst), *extra)
    assert code == 2 and needle in text, text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["patients.csv"]


def test_uncovered_hierarchy_value_and_malformed_rows_are_named(patients: Path,
                                                                tmp_path: Path) -> None:
    (tmp_path / "h.yaml").write_text(
        "zip:\n  levels:\n    - {'13053': '130**', '13068': '130**', '14850': '148**'}\n")
    code, text = _run("anonymize", "table", str(patients), str(tmp_path / "o.csv"), "--k", "5",
                      "--qi", "zip", "--algorithm", "fulldomain", "--hierarchies",
                      str(tmp_path / "h.yaml"))
    assert code == 2 and "does not cover value '10001'" in text and "zip" in text
    bad = tmp_path / "bad.csv"
    bad.write_text("age,zip\n30,13053\n31,13053,extra\n")
    code, text = _run("anonymize", "table", str(bad), str(tmp_path / "o.csv"), "--k", "2",
                      "--qi", "age,zip")
    assert code == 2 and "line 3" in text
    assert not (tmp_path / "o.csv").exists()
