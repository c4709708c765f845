"""``privml tokens`` and ``privml server``: one-line refusals, and real runs in subprocesses
(two ports over TLS 1.3 on loopback, two client processes, an admin stop)."""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner, Result

import privml
from privml.cli import app
from privml.transport._tokens import TokenStore, default_tokens_path
from privml.transport.tls import client_ssl_context, init_federation, issue_client

runner = CliRunner()
HDR = {"X-Privml-Protocol": "1"}


@pytest.fixture(autouse=True)
def _env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRIVML_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COLUMNS", "160")


def _refused(res: Result, needle: str) -> None:
    assert res.exit_code == 2, res.stdout
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], res.stderr
    assert "Traceback" not in res.stderr + res.stdout


# ---- privml tokens --------------------------------------------------------------------------

def test_tokens_create_list_revoke(tmp_path: Path) -> None:
    fed = tmp_path / "fed"
    fed.mkdir()
    res = runner.invoke(app, ["tokens", "create", str(fed), "--kind", "admin", "--label", "ops",
                              "--ttl", "600"])
    assert res.exit_code == 0, res.stderr
    token = res.stdout.strip()
    assert re.fullmatch(r"pma_[A-Za-z0-9_-]{43}", token) and res.stderr == ""
    res = runner.invoke(app, ["tokens", "create", str(fed), "--label", "browser"])
    client_token = res.stdout.strip()
    assert client_token.startswith("pmt_")
    store = TokenStore(default_tokens_path(fed))
    assert store.verify(token, "admin") == "ops"

    listing = runner.invoke(app, ["tokens", "list", str(fed)])
    assert listing.exit_code == 0
    assert "ops" in listing.stdout and "browser" in listing.stdout
    assert "admin" in listing.stdout and "active" in listing.stdout
    raw = default_tokens_path(fed).read_bytes()
    for secret in (token, client_token):
        assert secret not in listing.stdout and secret[4:].encode() not in raw
    import hashlib

    assert hashlib.sha256(token.encode()).hexdigest() not in listing.stdout

    assert runner.invoke(app, ["tokens", "revoke", str(fed), "ops"]).exit_code == 0
    assert "revoked" in runner.invoke(app, ["tokens", "list", str(fed)]).stdout
    with pytest.raises(Exception, match="revoked"):
        store.verify(token, "admin")


@pytest.mark.parametrize("args, needle", [
    (["create", "{fed}", "--kind", "root"], "kind"),
    (["create", "{fed}", "--ttl", "0"], "ttl"),
    (["create", "{fed}", "--label", "bad label"], "label"),
    (["create", "{missing}"], "does not exist"),
    (["revoke", "{fed}", "nobody"], "no token labelled"),
])
def test_tokens_refusals_are_one_line(tmp_path: Path, args: list[str], needle: str) -> None:
    (tmp_path / "fed").mkdir()
    where = {"fed": str(tmp_path / "fed"), "missing": str(tmp_path / "missing")}
    _refused(runner.invoke(app, ["tokens", *(a.format(**where) for a in args)]), needle)


# ---- privml server: refusals ----------------------------------------------------------------

def test_server_without_certificates_refuses_to_start(tmp_path: Path) -> None:
    _refused(runner.invoke(app, ["server", "--federation", str(tmp_path), "--rounds", "1",
                                 "--clients-per-round", "1"]), "no certificates")


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "example.org"])
def test_insecure_dev_is_loopback_only(tmp_path: Path, host: str) -> None:
    _refused(runner.invoke(app, ["server", "--federation", str(tmp_path), "--rounds", "1",
                                 "--clients-per-round", "1", "--insecure-dev",
                                 "--host", host]), "loopback only")


# ---- privml server: real runs ---------------------------------------------------------------

class Proc:
    """A subprocess whose stdout lines are read in a thread, so a test can wait for one."""

    def __init__(self, args: list[str], *, log: Path) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
        self.log = log.open("wb")
        self.p = subprocess.Popen([sys.executable, "-m", "privml", *args], env=env,
                                  stdout=subprocess.PIPE, stderr=self.log)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.p.stdout is not None
        for raw in self.p.stdout:
            self.lines.put(raw.decode(errors="replace").rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                assert self.p.poll() is None, f"exited {self.p.returncode}: {self.seen}"
                continue
            self.seen.append(line)
            if m := re.search(pattern, line):
                return m
        raise AssertionError(f"no line matching {pattern!r} in {self.seen}")

    def close(self) -> None:
        if self.p.poll() is None:
            self.p.terminate()
            self.p.wait(10)
        self.log.close()


@pytest.fixture()
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for p in started:
        p.close()


def _server_args(fed: Path, *extra: str) -> list[str]:
    return ["server", "--federation", str(fed), "--device-port", "0", "--web-port", "0",
            "--model", "logreg", "--epochs", "1", "--round-timeout", "30", *extra]


# "plain" and "secagg" are kept out of `make test` (-m slow runs them): plain runs with real
# client processes in test_server_resume.py, secagg in the two DP variants below, and both
# in-process over real mTLS in test_server.py.
@pytest.mark.parametrize("secagg", [
    pytest.param([], marks=pytest.mark.slow), pytest.param(["--secagg"], marks=pytest.mark.slow),
    ["--noise-multiplier", "1.0"],
    ["--secagg", "--dp-unit", "example", "--target-epsilon", "5", "--dp-sample-rate", "0.2"],
    ["--secagg", "--target-epsilon", "20", "--clip-norm", "0.5"]],
    ids=["plain", "secagg", "dp", "example-dp-secagg", "distributed-dp"])
def test_server_runs_two_rounds_with_two_client_processes(tmp_path: Path, procs: list[Proc],
                                                         secagg: list[str]) -> None:
    paths = init_federation(tmp_path / "fed")
    for i in range(2):
        issue_client(paths.dir, f"client-{i}")
    admin = TokenStore(default_tokens_path(paths.dir)).create("admin")
    np.save(tmp_path / "eval.npy", np.arange(6.0).reshape(2, 3))
    server = Proc(_server_args(paths.dir, "--rounds", "2", "--clients-per-round", "2",
                               "--share", f"eval={tmp_path / 'eval.npy'}", *secagg),
                  log=tmp_path / "server.log")
    procs.append(server)
    run_id = server.wait_for(r"^run ([0-9a-f]{32})$", timeout=60).group(1)
    device = server.wait_for(r"device port \(mTLS\): (https://\S+)").group(1)
    cert0, key0 = paths.client("client-0")  # a shared dataset, over mutual TLS
    shared = privml.load(f"{device}/v1/data/eval",
                         tls={"ca": paths.ca_cert, "cert": cert0, "key": key0})
    np.testing.assert_array_equal(shared, np.arange(6.0).reshape(2, 3))
    web = server.wait_for(r"web port \(tokens\): (https://\S+)").group(1)
    with httpx.Client(verify=client_ssl_context(paths.ca_cert), timeout=10) as h:
        r = h.get(f"{web}/v1/admin/status", headers={**HDR, "Authorization": f"Bearer {admin}"})
        assert r.status_code == 200 and r.json()["run"] == run_id
        assert h.get(f"{web}/v1/status", headers=HDR).status_code == 401
    for i in range(2):
        cert, key = paths.client(f"client-{i}")
        procs.append(Proc(["client", "--server", device, "--ca", str(paths.ca_cert),
                           "--cert", str(cert), "--key", str(key), "--partition", str(i),
                           "--of", "2"], log=tmp_path / f"client-{i}.log"))
    server.wait_for(r"^finished after 2 rounds; model: ", timeout=90)
    if "--noise-multiplier" in secagg or "20" in secagg:
        server.wait_for(r"^client-level DP: epsilon = \d+\.\d+ at delta = 1e-05")
    if "example" in secagg:  # the whole budget is spent over the run's two rounds
        server.wait_for(r"^example-level DP: epsilon = (4\.99\d\d|5\.0000) at delta = 1e-05")
    assert server.p.wait(30) == 0
    model_file = paths.dir / "runs" / run_id / "model.safetensors"
    from privml.models import load_model

    spec, params = load_model(model_file)
    assert set(params) and spec.to_json()
    for client in procs[1:]:
        assert client.p.wait(30) == 0, (tmp_path / "client-0.log").read_text()
    _check_sealed_client_store(paths.client("client-0")[1])


def _check_sealed_client_store(tls_key: Path) -> None:
    """Each client kept its partition and its model copy sealed beside its TLS key."""
    from privml import params as pm
    from privml.store import LocalStore, key_from_file
    from privml.store._url import decode_value

    key = key_from_file(tls_key.with_name(f"{tls_key.stem}.store.key"))
    assert tls_key.with_name(f"{tls_key.stem}.store.key").stat().st_mode & 0o077 == 0
    with LocalStore(tls_key.with_name(f"{tls_key.stem}.store"), key=key, create=False) as st:
        names = set(st.list())
        assert {"model", "partition/train/x", "partition/train/y", "partition/eval/x",
                "partition/eval/y"} <= names
        assert 1 <= len(st.versions("model")) <= 2  # older copies pruned
        assert pm.decode(st.get("model"))
        x = decode_value(st.get("partition/train/x"))
        sealed = b"".join(p.read_bytes() for p in (st.path / "objects").glob("*.seal"))
        assert x[0].tobytes()[:64] not in sealed  # no plaintext row on disk


def test_insecure_dev_server_stops_on_admin_request(tmp_path: Path, procs: list[Proc]) -> None:
    fed = tmp_path / "fed"
    fed.mkdir()
    admin = TokenStore(default_tokens_path(fed)).create("admin")
    client_token = TokenStore(default_tokens_path(fed)).create("client")
    server = Proc(_server_args(fed, "--rounds", "5", "--clients-per-round", "2",
                               "--insecure-dev"), log=tmp_path / "server.log")
    procs.append(server)
    run_id = server.wait_for(r"^run ([0-9a-f]{32})$", timeout=60).group(1)
    web = server.wait_for(r"web port \(tokens\): (https://127\.0\.0\.1:\d+)").group(1)
    ca = Path(server.wait_for(r"CA certificate: (\S+)").group(1))
    assert not ca.is_relative_to(fed)  # a throwaway federation, not the real folder
    with httpx.Client(verify=client_ssl_context(ca), timeout=10) as h:
        stop = h.post(f"{web}/v1/admin/stop",
                      headers={**HDR, "Authorization": f"Bearer {client_token}"})
        assert stop.status_code == 403
        bogus = "pma_" + "x" * 43  # a guessed token: refused, and never written anywhere
        assert h.post(f"{web}/v1/admin/stop", headers={
            **HDR, "Authorization": f"Bearer {bogus}"}).status_code == 401
        stop = h.post(f"{web}/v1/admin/stop", headers={**HDR, "Authorization": f"Bearer {admin}"})
        assert stop.status_code == 200
    server.wait_for(r"^stopped by an admin after 0 rounds; model: ")
    # Tokens never reach a log: not the server's output, not the stored security log.
    from privml.transport._store import CoordinatorStore

    with CoordinatorStore(fed / "server.db") as store:
        codes = {e["code"] for e in store.security_events()}
    assert {"forbidden", "unauthorized"} <= codes  # the refusals were stored...
    stored = b"".join(p.read_bytes() for p in fed.glob("server.db*"))  # ...without tokens
    for token in (admin, client_token, bogus):
        assert token not in (tmp_path / "server.log").read_text()
        assert token.encode() not in stored
    assert server.p.wait(30) == 0
    assert (fed / "runs" / run_id / "model.safetensors").is_file()
    assert not ca.exists()  # the throwaway federation is deleted at exit
    banner = (tmp_path / "server.log").read_text()
    assert "INSECURE DEVELOPMENT MODE" in banner and "THROWAWAY" in banner


def test_server_refuses_a_busy_port_and_bad_run_settings(tmp_path: Path) -> None:
    import socket

    paths = init_federation(tmp_path / "fed")
    base = ["server", "--federation", str(paths.dir), "--model", "logreg", "--web-port", "0"]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        _refused(runner.invoke(app, [*base, "--device-port", port, "--rounds", "1",
                                     "--clients-per-round", "1"]), "cannot bind the device port")
    _refused(runner.invoke(app, [*base, "--device-port", "0", "--rounds", "0",
                                 "--clients-per-round", "1"]), "round")
    _refused(runner.invoke(app, [*base, "--device-port", "70000", "--rounds", "1",
                                 "--clients-per-round", "1"]), "0..65535")
    _refused(runner.invoke(app, [*base, "--device-port", "0", "--rounds", "1",
                                 "--clients-per-round", "500", "--secagg",
                                 "--secagg-clip", "1e9"]), "wrap")
    (tmp_path / "x.pkl").write_bytes(b"\x80\x04N.")
    for share, needle in (("eval", "NAME=FILE"), (f"eval={tmp_path / 'none.npy'}", "cannot read"),
                          (f"eval={tmp_path / 'x.pkl'}", ".npy, .parquet or .csv")):
        _refused(runner.invoke(app, [*base, "--device-port", "0", "--rounds", "1",
                                     "--clients-per-round", "1", "--share", share]), needle)
    for half in (["--rounds", "1"], ["--clients-per-round", "1"]):  # a run needs both
        _refused(runner.invoke(app, [*base, "--device-port", "0", *half]), "give both")
