"""Shared by the benchmarks: a peer's own virtual environment under ``bench/.venvs/NAME``.

Peers (flwr, opacus, ...) never enter privml's dependencies: flwr pins older fastapi, uvicorn,
typer and ray. Each gets a venv made here on first use and reused after (a stamp file records
that the install finished), and its side of a benchmark runs in a subprocess of that venv.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


@dataclass(frozen=True)
class PeerVenv:
    """``requirements``: pip install groups, in order. ``versions_code``: Python that prints
    one JSON object of versions on its last line. ``extra_env``: added to the subprocess
    environment (e.g. no usage statistics)."""

    name: str
    requirements: Sequence[tuple[str, ...]]
    versions_code: str
    extra_env: dict[str, str] = field(default_factory=dict)
    say: Callable[[str], None] = lambda line: print(line, file=sys.stderr)

    @property
    def dir(self) -> Path:
        return HERE / ".venvs" / self.name

    @property
    def python(self) -> Path:
        return self.dir / "bin" / "python"

    @property
    def stamp(self) -> Path:
        return self.dir / ".bench-installed"

    def env(self) -> dict[str, str]:
        """os.environ without privml's venv, unbuffered, ``extra_env``, the peer's bin first."""
        env = {k: v for k, v in os.environ.items()
               if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
        env.update(PYTHONUNBUFFERED="1", **self.extra_env,
                   PATH=f"{self.dir / 'bin'}{os.pathsep}{env.get('PATH', '')}")
        return env

    def versions(self) -> dict[str, str]:
        done = subprocess.run([str(self.python), "-c", self.versions_code],
                              capture_output=True, text=True, check=False, env=self.env())
        if done.returncode != 0:
            raise RuntimeError(f"the {self.name} venv does not import: "
                               f"{done.stderr.strip()[-500:]}")
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))

    def ensure(self) -> dict[str, str]:
        """Make the venv if it is missing or incomplete; return its versions."""
        if self.stamp.exists():
            try:
                return self.versions()
            except RuntimeError as exc:
                self.say(f"{exc}; reinstalling")
        self.say(f"Setting up {self.name}'s virtual environment in "
                 f"{self.dir.relative_to(ROOT)}")
        results = HERE / "results"
        results.mkdir(exist_ok=True)
        log = results / f"{self.name}-venv-setup.log.tmp"
        log.unlink(missing_ok=True)
        if not self.python.exists():
            # `python3 -m venv` from whichever interpreter runs this: a venv made from
            # privml's venv still links to the base interpreter and starts empty.
            subprocess.run([sys.executable, "-m", "venv", str(self.dir)], check=True)
        for group in self.requirements:
            self._pip(*group, log=log)
        versions = self.versions()
        self.stamp.write_text(json.dumps(versions) + "\n")
        return versions

    def _pip(self, *args: str, log: Path) -> None:
        cmd = [str(self.python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
               *args]
        self.say(f"  $ {' '.join(cmd[2:])}")
        with log.open("a") as fh:
            fh.write(f"$ {' '.join(cmd)}\n")
            fh.flush()
            done = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"`{' '.join(cmd[2:])}` failed (exit {done.returncode}); "
                               f"see {log}")
