"""Shared test configuration: hypothesis profiles and the one expensive fixture per session."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# `make test` selects "ci": fewer, derandomized examples so the suite is quick and repeatable.
settings.register_profile(
    "ci", max_examples=40, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


# ---- one real demo run per test session, shared by every test that needs it ----------------

import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


@dataclass(frozen=True)
class DemoRun:
    home: Path
    out: Path
    summary: dict[str, object]
    stdout: str
    stderr: str


def privml_exe() -> list[str]:
    exe = shutil.which("privml", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "privml"]


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """`privml demo` as a user runs it: a real process, its own PRIVML_HOME."""
    base = tmp_path_factory.mktemp("demo")
    home, out = base / "home", base / "out"
    env = {**os.environ, "PRIVML_HOME": str(home), "COLUMNS": "120"}
    proc = subprocess.run(
        [*privml_exe(), "demo", "--out", str(out), "--json", str(out / "summary.json"),
         "--no-progress"], env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    return DemoRun(home, out, summary, proc.stdout, proc.stderr)
