"""`privml server` killed with SIGKILL mid-run and restarted with --resume: the run completes,
no accepted update is lost or counted twice, and the final model equals an uninterrupted run's.
Real processes throughout: the server, two clients, over mutual TLS on loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from privml import params as pm
from privml.models import load_model
from privml.transport._store import CoordinatorStore
from privml.transport.tls import init_federation, issue_client

ROUNDS = 6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(fed: Path, ports: tuple[int, int], *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "privml", "server", "--federation", str(fed),
         "--rounds", str(ROUNDS), "--clients-per-round", "2", "--epochs", "1",
         "--round-timeout", "60", "--device-port", str(ports[0]), "--web-port", str(ports[1]),
         *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "COLUMNS": "200"})


def wait_for(proc: subprocess.Popen[str], text: str, timeout: float = 120) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if text in line:
            return lines
    raise AssertionError(f"{text!r} not seen; output: {''.join(lines)}")


def start_clients(fed: Path, port: int) -> list[subprocess.Popen[bytes]]:
    procs = []
    for i in range(2):
        cert, key = fed / "clients" / f"c{i}.pem", fed / "clients" / f"c{i}.key"
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "privml", "client", "--server", f"https://127.0.0.1:{port}",
             "--ca", str(fed / "ca.pem"), "--cert", str(cert), "--key", str(key),
             "--partition", str(i), "--of", "2"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return procs


def run(fed: Path, *, kill_after_round: int | None) -> Path:
    init_federation(fed)
    for i in range(2):
        issue_client(fed, f"c{i}")
    ports = (free_port(), free_port())
    server = start_server(fed, ports)
    wait_for(server, "device port")
    clients = start_clients(fed, ports[0])
    try:
        if kill_after_round is not None:
            wait_for(server, f"round {kill_after_round}/{ROUNDS}")
            time.sleep(0.3)  # let the next round start and take an update or two
            server.send_signal(signal.SIGKILL)
            server.wait(30)
            server = start_server(fed, ports, "--resume", "latest")
            wait_for(server, "resuming run")
        out = "".join(wait_for(server, "finished after", timeout=240))
        assert server.wait(60) == 0, out
        for c in clients:
            assert c.wait(60) == 0
    finally:
        for p in (server, *clients):
            if p.poll() is None:
                p.kill()
    models = list((fed / "runs").glob("*/model.safetensors"))
    assert len(models) == 1
    return models[0]


@pytest.mark.timeout(600)
def test_killed_server_resumes_to_the_same_model(tmp_path: Path) -> None:
    resumed = run(tmp_path / "killed", kill_after_round=2)
    straight = run(tmp_path / "straight", kill_after_round=None)
    _, a = load_model(resumed)
    _, b = load_model(straight)
    np.testing.assert_allclose(pm.flatten(a), pm.flatten(b), atol=1e-5)
    with CoordinatorStore(tmp_path / "killed" / "server.db") as store:
        (run_id,) = store.run_ids()
        ups = store.updates(run_id)
        keys = [(u.client_id, u.round) for u in ups]
        assert len(keys) == len(set(keys)) == 2 * ROUNDS  # each counted exactly once


@pytest.mark.timeout(300)
def test_killed_client_process_round_closes_at_deadline_with_the_others(tmp_path: Path) -> None:
    fed = tmp_path / "fed"
    init_federation(fed)
    for i in range(3):
        issue_client(fed, f"c{i}")
    ports = (free_port(), free_port())
    server = subprocess.Popen(
        [sys.executable, "-m", "privml", "server", "--federation", str(fed), "--rounds", "3",
         "--clients-per-round", "3", "--epochs", "1", "--round-timeout", "6",
         "--device-port", str(ports[0]), "--web-port", str(ports[1])],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "COLUMNS": "200"})
    clients: list[subprocess.Popen[bytes]] = []
    try:
        wait_for(server, "device port")
        for i in range(3):
            cert, key = fed / "clients" / f"c{i}.pem", fed / "clients" / f"c{i}.key"
            clients.append(subprocess.Popen(
                [sys.executable, "-m", "privml", "client", "--server",
                 f"https://127.0.0.1:{ports[0]}", "--ca", str(fed / "ca.pem"), "--cert",
                 str(cert), "--key", str(key), "--partition", str(i), "--of", "3"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        first = "".join(wait_for(server, "round 1/3"))
        assert "3 updates" in first
        clients[2].send_signal(signal.SIGKILL)  # gone without a word, mid-run
        rest = "".join(wait_for(server, "finished after", timeout=120))
        # c2 may have sent its round-2 update before the kill landed; round 3 it cannot have.
        assert "round 2/3: completed" in rest
        assert "round 3/3: completed, 2 updates" in rest
        assert server.wait(60) == 0
        assert [c.wait(60) for c in clients[:2]] == [0, 0]
    finally:
        for p in (server, *clients):
            if p.poll() is None:
                p.kill()
