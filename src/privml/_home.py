"""Where privml keeps its own files: ``$PRIVML_HOME`` or ``~/.privml``."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["private_file", "privml_home"]


def privml_home() -> Path:
    """The privml home folder (created with mode 0700 on first use)."""
    home = Path(os.environ.get("PRIVML_HOME") or Path.home() / ".privml")
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    return home


def private_file(path: Path) -> Path:
    """Make sure ``path`` exists, created with mode 0600 (owner only) if it did not: for
    files that hold keys, hashes of tokens, updates or run secrets (a database created by
    sqlite would get 0644 under the usual umask; its -wal and -shm files take the mode of
    the database). An existing file is left as it is."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return path
    os.close(fd)
    return path
