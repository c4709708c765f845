"""``privml certs``: init, client, revoke, list, and one-line refusals of bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from privml.cli import app
from privml.transport import cert_fingerprint, list_clients

runner = CliRunner()


@pytest.fixture(autouse=True)
def _env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRIVML_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COLUMNS", "160")  # room for a whole fingerprint on one line


def _ok(*args: str) -> str:
    res = runner.invoke(app, ["certs", *args])
    assert res.exit_code == 0, res.stderr + res.stdout
    assert "PRIVATE KEY" not in res.stdout  # key material is never printed
    return res.stdout


def _refused(res: Result, needle: str) -> None:
    assert res.exit_code == 2, res.stdout
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], res.stderr
    assert "Traceback" not in res.stderr + res.stdout


def _fp(pem: Path) -> str:
    import ssl

    return cert_fingerprint(ssl.PEM_cert_to_DER_cert(pem.read_text()))


def test_init_client_revoke_list(tmp_path: Path) -> None:
    fed = tmp_path / "fed"
    text = _ok("init", str(fed), "--host", "fl.example.org", "--host", "10.0.0.7",
               "--days", "30")
    assert _fp(fed / "ca.pem") in text and _fp(fed / "server.pem") in text
    assert str(fed / "ca.key") in text
    assert (fed / "ca.key").stat().st_mode & 0o777 == 0o600

    text = _ok("client", str(fed), "alice", "--days", "7")
    assert _fp(fed / "clients" / "alice.pem") in text
    assert (fed / "clients" / "alice.key").stat().st_mode & 0o777 == 0o600
    _ok("client", str(fed), "bob")

    text = _ok("revoke", str(fed), "alice")
    fp = _fp(fed / "clients" / "alice.pem")
    assert fp in text and fp in json.loads((fed / "revoked.json").read_text())["revoked"]

    text = _ok("list", str(fed))
    rows = {line.split()[1]: line for line in text.splitlines() if re.search(r"[0-9a-f]{64}", line)}
    assert set(rows) == {"alice", "bob"}
    assert fp in rows["alice"] and re.search(r"\byes\b", rows["alice"])
    assert re.search(r"\bno\b", rows["bob"]) and _fp(fed / "clients" / "bob.pem") in rows["bob"]
    assert [c.name for c in list_clients(fed) if c.revoked] == ["alice"]


def test_list_of_an_empty_federation(tmp_path: Path) -> None:
    _ok("init", str(tmp_path / "fed"))
    assert "no client certificates" in _ok("list", str(tmp_path / "fed"))


def test_existing_ca_needs_force(tmp_path: Path) -> None:
    fed = tmp_path / "fed"
    _ok("init", str(fed))
    before = (fed / "ca.pem").read_bytes()
    _refused(runner.invoke(app, ["certs", "init", str(fed)]), "already holds a federation CA")
    assert (fed / "ca.pem").read_bytes() == before
    _ok("init", str(fed), "--force")
    assert (fed / "ca.pem").read_bytes() != before


def test_existing_client_needs_force(tmp_path: Path) -> None:
    fed = tmp_path / "fed"
    _ok("init", str(fed))
    _ok("client", str(fed), "carol")
    _refused(runner.invoke(app, ["certs", "client", str(fed), "carol"]), "already exists")
    _ok("client", str(fed), "carol", "--force")


@pytest.mark.parametrize("args, needle", [
    (["client", "{fed}", "bad name"], "client name must match"),
    (["client", "{fed}", "--", "-x"], "client name must match"),
    (["revoke", "{fed}", "../etc"], "client name must match"),
    (["revoke", "{fed}", "nobody"], "no client 'nobody'"),
    (["client", "{fed}", "dave", "--days", "0"], "days must be"),
    (["client", "{missing}", "dave"], "no federation CA"),
    (["revoke", "{missing}", "dave"], "no client 'dave'"),
    (["list", "{missing}"], "no federation CA"),
    (["init", "{fresh}", "--host", "not a host"], "host must be"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], needle: str) -> None:
    fed = tmp_path / "fed"
    _ok("init", str(fed))
    where = {"fed": str(fed), "missing": str(tmp_path / "missing"),
             "fresh": str(tmp_path / "fresh")}
    _refused(runner.invoke(app, ["certs", *(a.format(**where) for a in args)]), needle)
    assert not (tmp_path / "fresh").exists() and not (tmp_path / "missing").exists()


def test_corrupt_revocation_list_is_one_line(tmp_path: Path) -> None:
    fed = tmp_path / "fed"
    _ok("init", str(fed))
    _ok("client", str(fed), "erin")
    (fed / "revoked.json").write_text("{not json")
    _refused(runner.invoke(app, ["certs", "revoke", str(fed), "erin"]), "revocation list")
    _refused(runner.invoke(app, ["certs", "list", str(fed)]), "revocation list")


@pytest.mark.parametrize("cmd", [[], ["init"], ["client"], ["revoke"], ["list"]])
def test_every_command_has_help(cmd: list[str]) -> None:
    res = runner.invoke(app, ["certs", *cmd, "--help"])
    assert res.exit_code == 0 and "Usage" in res.stdout
