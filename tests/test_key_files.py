"""Secrets hygiene: every file the CLI writes that holds a key, a token's hash, client
updates or a run's secrets is created 0600 (owner only), whatever the umask, and the folders
of sealed stores 0700. Real CLI processes; the file modes are read from the disk."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from privml.transport._store import CoordinatorStore

SECRET_NAMES = (".key", ".db", ".sqlite", "-wal", "-shm")


def _privml(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # umask 022, the usual default: what a file gets when nobody asks for less
    return subprocess.run([sys.executable, "-m", "privml", *args], capture_output=True,
                          text=True, env=env, timeout=300, check=False,
                          preexec_fn=lambda: os.umask(0o022))


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A work folder after the CLI commands that write secrets have run in it."""
    root = tmp_path_factory.mktemp("keys")
    env = {**os.environ, "PRIVML_HOME": str(root / "home"), "COLUMNS": "200"}
    fed = root / "fed"
    for args in (["certs", "init", str(fed)], ["certs", "client", str(fed), "alice"],
                 ["tokens", "create", str(fed), "--label", "page"],
                 ["tokens", "create", str(fed), "--kind", "admin", "--label", "ops"],
                 ["sim", "--rounds", "1", "--clients", "4", "--per-round", "2", "--epochs", "1",
                  "--no-progress", "--db", str(root / "runs.db"), "--audit-canaries", "4"]):
        res = _privml(*args, env=env)
        assert res.returncode == 0, (args, res.stdout, res.stderr)
    with socket.socket() as s:  # nobody listens: the client makes its sealed store and key,
        s.bind(("127.0.0.1", 0))  # then gives up at once (--retry-for 0)
        port = s.getsockname()[1]
    res = _privml("client", "--server", f"https://127.0.0.1:{port}", "--ca", str(fed / "ca.pem"),
                  "--cert", str(fed / "clients" / "alice.pem"),
                  "--key", str(fed / "clients" / "alice.key"), "--retry-for", "0", env=env)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "could not be reached" in res.stderr  # one clear line, not a traceback
    with CoordinatorStore(fed / "server.db"):  # what `privml server` opens in the federation
        pass
    return root


def test_every_secret_file_is_owner_only(written: Path) -> None:
    files = [p for p in written.rglob("*") if p.is_file() and p.name.endswith(SECRET_NAMES)]
    names = {p.name for p in files}
    # the ones we know must be there: TLS keys, the client's store key and index, the
    # token database, the run database (holding the canaries' secret), the coordinator's
    assert {"ca.key", "server.key", "alice.key", "alice.store.key", "index.sqlite",
            "runs.db", "server.db"} <= names, names
    assert any("token" in n for n in names), names
    loose = {str(p.relative_to(written)): oct(_mode(p)) for p in files if _mode(p) & 0o077}
    assert not loose, f"readable by others: {loose}"


def test_sealed_store_folders_are_owner_only(written: Path) -> None:
    stores = [p.parent for p in written.rglob("index.sqlite")]
    assert stores
    for store in stores:
        assert _mode(store) & 0o077 == 0 and _mode(store / "objects") & 0o077 == 0
