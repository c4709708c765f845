"""Where privml keeps its own files: ``$PRIVML_HOME`` or ``~/.privml``."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["privml_home"]


def privml_home() -> Path:
    """The privml home folder (created with mode 0700 on first use)."""
    home = Path(os.environ.get("PRIVML_HOME") or Path.home() / ".privml")
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    return home
