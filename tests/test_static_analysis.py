"""`make security` (issue 13): bandit on src/, every accepted finding justified on its line.

Each test runs the very command `make security` runs (tools/security_check.py) on a copy of
src/ with something planted in it, and checks that it fails naming the planted line.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tools" / "security_check.py"


def _check(src: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), str(src)], capture_output=True,
                          text=True, timeout=240, check=False)


def _python_only(folder: str, names: list[str]) -> list[str]:
    return [n for n in names if n == "__pycache__"
            or (not n.endswith(".py") and not (Path(folder) / n).is_dir())]


@pytest.fixture
def src_copy(tmp_path: Path) -> Path:
    dst = tmp_path / "src"
    shutil.copytree(ROOT / "src", dst, ignore=_python_only)
    return dst


def _plant(module: Path, lines: list[str]) -> list[int]:
    """Append ``lines`` to ``module``; their line numbers."""
    text = module.read_text("utf-8")
    first = text.count("\n") + 2  # after one blank line
    module.write_text(text + "\n" + "".join(f"{line}\n" for line in lines), "utf-8")
    return list(range(first, first + len(lines)))


def test_the_tree_passes() -> None:
    proc = _check(ROOT / "src")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "security: ok" in proc.stdout


def test_a_planted_finding_fails_naming_its_line(src_copy: Path) -> None:
    module = src_copy / "privml" / "_exceptions.py"
    lines = _plant(module, [
        "import pickle, subprocess",
        "def _planted(data: bytes, cmd: str) -> object:",
        "    subprocess.call(cmd, shell=True)",
        "    eval(cmd)  # nosec B101  # a nosec for another test hides nothing",
        "    return pickle.loads(data)",
    ])
    proc = _check(src_copy)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    for line, test_id in ((lines[2], "B602"), (lines[3], "B307"), (lines[4], "B301")):
        assert f"{module}:{line}: {test_id} " in proc.stdout, proc.stdout
    assert "privml/_exceptions.py" in proc.stdout
    assert all(str(module) in row for row in proc.stdout.splitlines()), proc.stdout


def test_a_nosec_needs_a_test_id_and_a_reason(src_copy: Path) -> None:
    module = src_copy / "privml" / "_exceptions.py"
    lines = _plant(module, [
        "def _planted(cmd: str) -> object:",
        "    eval(cmd)  # nosec",
        "    eval(cmd)  # nosec B307",
        "    eval(cmd)  # nosec B307  #",
        "    eval(cmd)  # nosec: eval of our own constant",
        "    eval(cmd)  # noqa: S307",
        "    return eval(cmd)  # noqa: S307  # nosec B307  # cmd is a literal of this module",
    ])
    proc = _check(src_copy)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    for line in lines[1:5]:
        assert f"{module}:{line}: unjustified nosec" in proc.stdout, proc.stdout
    assert f"{module}:{lines[5]}: B307 " in proc.stdout  # a noqa is no nosec for bandit
    assert f"{module}:{lines[5]}: a noqa of a security rule needs a reason" in proc.stdout
    assert f"{module}:{lines[6]}:" not in proc.stdout  # justified: accepted
