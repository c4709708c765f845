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


def test_text_file_default_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PRIVML_ANON_KEY", raising=False)
    src = tmp_path / "notes.txt"
    src.write_text("Mail jane.doe@example.org or call +44 20 7946 0958.\n"
                   "SSN 219-45-6789, card 5555 5555 5555 4444.\n")
    code, text = _run("anonymize", "text", str(src), str(tmp_path / "out.txt"))
    assert code == 0, text
    released = (tmp_path / "out.txt").read_text()
    for secret in ("jane.doe@example.org", "219-45-6789", "5555 5555 5555 4444", "7946 0958"):
        assert secret not in released
    assert "EMAIL" in text and "CREDIT_CARD" in text and "2 rows" in text


def test_table_pii_policy_then_k_anonymity(tmp_path: Path) -> None:
    import base64
    import os

    rng = np.random.default_rng(3)
    n = 400
    emails = [f"user{i}@corp-mail.com" for i in range(n)]
    pd.DataFrame({
        "email": emails, "age": rng.integers(20, 70, n),
        "sex": rng.choice(["M", "F"], n),
        "note": [f"Spoke with Maria Lopez on 12/03/2021 about case {i}" for i in range(n)],
    }).to_csv(tmp_path / "t.csv", index=False)
    (tmp_path / "p.yaml").write_text(
        "operators:\n  default: replace\n  EMAIL: pseudonymize\n"
        "columns: {email: EMAIL, note: text, age: keep, sex: keep}\n")
    key = tmp_path / "anon.key"
    key.write_text(base64.b64encode(os.urandom(32)).decode())
    args = ["anonymize", "table", str(tmp_path / "t.csv"), str(tmp_path / "o.csv"), "--policy",
            str(tmp_path / "p.yaml"), "--k", "5", "--qi", "age,sex"]
    code, text = _run(*args)  # pseudonyms need a key
    assert code == 2 and "key" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["anon.key", "p.yaml", "t.csv"]
    code, text = _run(*args, "--key-file", str(key))
    assert code == 0, text
    out = pd.read_csv(tmp_path / "o.csv", dtype=str)
    assert not set(out["email"]) & set(emails)  # every address replaced...
    assert out["email"].str.contains("@").all()  # ...by a realistic surrogate
    assert not out["note"].str.contains("Maria Lopez").any()
    assert anonymity.k_anonymity(out, ["age", "sex"]) >= 5
