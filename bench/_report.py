"""Shared by the benchmarks: replace one benchmark's section of ``BENCHMARKS.md`` in place."""

from __future__ import annotations

from pathlib import Path

BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"


def write_section(start: str, end: str, section: str, path: Path = BENCHMARKS_MD) -> None:
    """``section`` (which begins with ``start`` and ends with ``end``) replaces the text
    between those markers, or is appended; every other section is kept as it was."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)
