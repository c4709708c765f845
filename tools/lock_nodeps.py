"""Lock packages installed without their dependencies: ``name==version --hash=sha256:...``.

    python tools/lock_nodeps.py requirements/nodeps.in requirements/nodeps.lock
    (`make lock` runs it, with the pip of its pip-tools venv)

pip-compile resolves dependencies and has no ``--no-deps``: pycanon's exact numpy/pandas
pins would hold back the whole dev lock. Each ``name==version`` line of the input is
downloaded (``pip download --no-deps``, through pip's own configuration, so the file is the
one ``make setup`` will install) and its sha256 written next to the pin.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

from packaging.requirements import Requirement


def main(src: Path, out: Path) -> int:
    lines = [ln.split("#", 1)[0].strip() for ln in src.read_text(encoding="utf-8").splitlines()]
    reqs = [Requirement(ln) for ln in lines if ln]
    for req in reqs:
        if not str(req.specifier).startswith("=="):
            sys.exit(f"{src}: pin {req.name} with ==")
    locked = []
    for req in reqs:
        with tempfile.TemporaryDirectory(prefix="privml-lock-") as tmp:
            subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                            "--disable-pip-version-check", "-d", tmp, str(req)], check=True)
            hashes = sorted(hashlib.sha256(f.read_bytes()).hexdigest()
                            for f in Path(tmp).iterdir())
        locked.append(" \\\n".join([str(req), *(f"    --hash=sha256:{h}" for h in hashes)]))
    out.write_text(f"# Installed with --require-hashes --no-deps (see {src}).\n"
                   f"# Made by `make lock` (python tools/lock_nodeps.py {src} {out}).\n"
                   + "\n".join(locked) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
