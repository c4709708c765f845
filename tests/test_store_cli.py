"""``privml store``: init, put, get, ls, rm, rotate-key; a tampered value writes nothing."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
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


@pytest.fixture()
def file_keyring(env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """keyrings.alt's PlaintextKeyring in a temporary folder: the real ``keyring`` code path,
    with a backend that works without a desktop session."""
    import keyring
    from keyrings.alt.file import PlaintextKeyring

    monkeypatch.setenv("XDG_DATA_HOME", str(env / "xdg"))
    before = keyring.get_keyring()
    keyring.set_keyring(PlaintextKeyring())
    yield env / "xdg"
    keyring.set_keyring(before)


def test_store_keys_kept_in_the_os_keyring(file_keyring: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    src = file_keyring.parent / "v.bin"
    src.write_bytes(os.urandom(100_000))
    # a plain-file backend is no OS keyring: refused unless accepted explicitly
    code, text = _run("store", "init", "--keyring", "team")
    assert code == 2 and "not an OS keyring" in text and "PRIVML_KEYRING_INSECURE_OK" in text
    monkeypatch.setenv("PRIVML_KEYRING_INSECURE_OK", "1")
    assert _run("store", "init", "--keyring", "team")[0] == 0  # makes the key
    assert _run("store", "put", "v", str(src), "--keyring", "team")[0] == 0
    code, text = _run("store", "ls", "--keyring", "other")
    assert code == 2 and "no key 'other'" in text  # only init makes a key
    assert _run("store", "rotate-key", "--keyring", "team", "--new-keyring", "team2")[0] == 0
    code, text = _run("store", "ls", "--keyring", "team")
    assert code == 2 and "integrity" in text
    dst = file_keyring.parent / "back.bin"
    assert _run("store", "get", "v", "-o", str(dst), "--keyring", "team2")[0] == 0
    assert dst.read_bytes() == src.read_bytes()
    import keyring

    b64 = keyring.get_password("privml", "team2")
    assert b64 is not None  # the key lives in the keyring, and nowhere beside the store
    for p in (file_keyring.parent / "home" / "store").rglob("*"):
        if p.is_file():
            assert b64.encode() not in p.read_bytes()
            assert base64.b64decode(b64) not in p.read_bytes()


def test_no_keyring_backend_is_a_clear_refusal(env: Path) -> None:
    import keyring
    from keyring.backends.fail import Keyring as NoBackend

    before = keyring.get_keyring()
    keyring.set_keyring(NoBackend())
    try:
        code, text = _run("store", "init", "--keyring", "team")
    finally:
        keyring.set_keyring(before)
    assert code == 2 and "no OS keyring" in text
