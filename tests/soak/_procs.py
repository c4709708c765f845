"""The soak's processes: the coordinator (killed and resumed), the client processes, and
their memory, read from /proc."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def memory_kib(pid: int) -> dict[str, int]:
    """RSS and (where the kernel shows it) PSS of ``pid``, in KiB; {} once it is gone."""
    out: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                out["rss_kib"] = int(line.split()[1])
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                out["pss_kib"] = int(line.split()[1])
    except (OSError, ValueError):
        pass
    return out


@dataclass
class Incarnation:
    """One life of the coordinator process, from start to SIGKILL or its end."""

    number: int
    proc: subprocess.Popen[bytes]
    log: Path
    started: float
    memory: list[tuple[float, int, dict[str, int]]] = field(default_factory=list)
    ended: str = "running"  # "killed" or "exited <rc>"
    rounds_at_start: int = 0


class Coordinator:
    """``privml server`` on fixed loopback ports, over the federation; restarted with
    ``--resume latest`` after each SIGKILL. Each incarnation writes its own log file."""

    def __init__(self, fed: Path, logs: Path, flags: list[str]) -> None:
        self.fed, self.logs, self.flags = fed, logs, flags
        self.ports = (free_port(), free_port())
        self.lives: list[Incarnation] = []

    @property
    def current(self) -> Incarnation:
        return self.lives[-1]

    def start(self, *, resume: bool) -> None:
        n = len(self.lives)
        log = self.logs / f"server-{n:02d}.log"
        cmd = [sys.executable, "-m", "privml", "server", "--federation", str(self.fed),
               "--device-port", str(self.ports[0]), "--web-port", str(self.ports[1]),
               *self.flags, *(["--resume", "latest"] if resume else [])]
        with log.open("wb") as f:
            proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT,
                                    env={**os.environ, "COLUMNS": "200",
                                         "PYTHONUNBUFFERED": "1"})
        self.lives.append(Incarnation(n, proc, log, time.monotonic()))
        self.wait_for("device port (mTLS)", timeout=180)

    def wait_for(self, text: str, *, timeout: float) -> None:
        life = self.current
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in life.log.read_text(errors="replace"):
                return
            if life.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not seen in {life.log}:\n"
                             f"{life.log.read_text(errors='replace')[-3000:]}")

    def kill(self) -> None:
        life = self.current
        life.proc.send_signal(signal.SIGKILL)
        life.proc.wait(60)
        life.ended = "killed"

    def sample_memory(self, now: float) -> None:
        life = self.current
        if life.proc.poll() is None:
            life.memory.append((now, self.rounds_closed(), memory_kib(life.proc.pid)))

    def rounds_closed(self) -> int:
        """Rounds this incarnation has printed as closed."""
        text = self.current.log.read_text(errors="replace")
        return sum(1 for line in text.splitlines() if line.startswith("round "))


@dataclass
class ClientProcs:
    """The client processes: ``names`` split over at most ``procs`` of them."""

    server: str
    fed: Path
    logs: Path
    stop_file: Path
    seed: int
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    memory: list[tuple[float, list[dict[str, int]]]] = field(default_factory=list)

    def start(self, names: list[str], nprocs: int) -> None:
        for i in range(nprocs):
            share = names[i::nprocs]
            out = (self.logs / f"clients-{i}.out").open("wb")
            self.procs.append(subprocess.Popen(
                [sys.executable, str(HERE / "_clients.py"), "--server", self.server,
                 "--federation", str(self.fed), "--names", ",".join(share),
                 "--log", str(self.logs / f"clients-{i}.jsonl"), "--seed",
                 str(self.seed * 100 + i), "--stop", str(self.stop_file)],
                stdout=out, stderr=subprocess.STDOUT,
                env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}))

    def sample_memory(self, now: float) -> None:
        self.memory.append((now, [memory_kib(p.pid) for p in self.procs]))

    def stop(self, timeout: float = 120) -> list[int | None]:
        self.stop_file.touch()
        deadline = time.monotonic() + timeout
        for p in self.procs:
            try:
                p.wait(max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
        return [p.returncode for p in self.procs]
