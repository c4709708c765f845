"""``privml store``: init, put, get, ls, rm, rotate-key; a tampered value writes nothing."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from privml.cli import app

runner = CliRunner()


@pytest.fixture()
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PRIVML_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PRIVML_STORE_KEY", raising=False)
    monkeypatch.setenv("PASS", "correct horse battery staple")
    return tmp_path


def _run(*args: str) -> tuple[int, str]:
    res = runner.invoke(app, list(args))
    return res.exit_code, res.output


def test_store_commands_round_trip(env: Path) -> None:
    k = ("--passphrase-env", "PASS")
    assert _run("store", "init", *k)[0] == 0
    src = env / "model.bin"
    src.write_bytes(os.urandom(3_000_000))
    code, text = _run("store", "put", "model", str(src), *k)
    assert code == 0 and "model v1" in text
    assert _run("store", "put", "model", str(src), *k)[1].strip().endswith("model v2")
    code, text = _run("store", "ls", *k)
    assert code == 0 and "model" in text
    dst = env / "back.bin"
    assert _run("store", "get", "model", "-o", str(dst), "--version", "1", *k)[0] == 0
    assert dst.read_bytes() == src.read_bytes()
    # a new key file: the old passphrase no longer opens the store
    key_file = env / "store.key"
    key_file.write_text(base64.b64encode(os.urandom(32)).decode())
    assert _run("store", "rotate-key", *k, "--new-key-file", str(key_file))[0] == 0
    code, text = _run("store", "ls", *k)
    assert code == 2 and "integrity" in text
    assert _run("store", "get", "model", "-o", str(dst), "--key-file", str(key_file))[0] == 0
    assert dst.read_bytes() == src.read_bytes()
    code, text = _run("store", "rm", "model", "--key-file", str(key_file))
    assert code == 0 and "2 versions" in text
    code, text = _run("store", "rm", "model", "--key-file", str(key_file))
    assert code == 2 and "no record" in text


def test_a_tampered_record_writes_no_output(env: Path) -> None:
    k = ("--passphrase-env", "PASS")
    _run("store", "init", *k)
    src = env / "v.bin"
    src.write_bytes(b"secret" * 500_000)
    _run("store", "put", "v", str(src), *k)
    (obj,) = (env / "home" / "store" / "objects").glob("*.seal")
    raw = bytearray(obj.read_bytes())
    raw[-5] ^= 1  # in the last segment: the first ones would open
    obj.write_bytes(bytes(raw))
    dst = env / "out.bin"
    code, text = _run("store", "get", "v", "-o", str(dst), *k)
    assert code == 2 and "integrity" in text and not dst.exists()
    assert sorted(p.name for p in env.iterdir()) == ["home", "v.bin"]  # no temporary left
    dst.write_bytes(b"kept")  # an existing output is left as it was
    assert _run("store", "get", "v", "-o", str(dst), *k)[0] == 2
    assert dst.read_bytes() == b"kept"


def test_store_refusals_are_one_line(env: Path) -> None:
    code, text = _run("store", "ls", "--passphrase-env", "PASS")
    assert code == 2 and "no store" in text
    code, text = _run("store", "init", "--passphrase-env", "UNSET_VARIABLE")
    assert code == 2 and "UNSET_VARIABLE" in text
    bad = env / "bad.key"
    bad.write_text("too short")
    code, text = _run("store", "init", "--key-file", str(bad))
    assert code == 2 and "32 bytes" in text
