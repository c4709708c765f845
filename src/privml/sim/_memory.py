"""Memory of a whole process tree, measured as PSS (proportional set size).

RSS counts a page shared by k processes k times (forked workers, a memory-mapped dataset,
torch's libraries); PSS charges each process 1/k of it, so the PSS of every process of a
tree adds up to the memory the tree really holds. Read from ``/proc/<pid>/smaps_rollup``
(Linux); elsewhere the functions return None.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from types import TracebackType

__all__ = ["PeakSampler", "process_tree", "tree_pss"]


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    task = Path(f"/proc/{pid}/task")
    try:
        threads = list(task.iterdir())
    except OSError:
        return kids
    for thread in threads:
        try:
            kids.extend(int(c) for c in (thread / "children").read_text().split())
        except OSError:
            continue
    return kids


def process_tree(pid: int | None = None) -> list[int]:
    """``pid`` (default: this process) and all its descendants."""
    root = os.getpid() if pid is None else pid
    seen, todo = [], [root]
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.append(p)
        todo.extend(_children(p))
    return seen


def _pss_kib(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:  # gone meanwhile, or not ours to read
        return 0
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def tree_pss(pid: int | None = None) -> int | None:
    """PSS in bytes of ``pid``'s process tree (default: this process's), None off Linux."""
    if not Path("/proc/self/smaps_rollup").exists():
        return None
    return 1024 * sum(_pss_kib(p) for p in process_tree(pid))


class PeakSampler:
    """The peak :func:`tree_pss` seen while the ``with`` block runs (a background thread
    samples every ``interval`` seconds, and once more at the end)."""

    def __init__(self, pid: int | None = None, interval: float = 0.05) -> None:
        self.pid, self.interval = pid, interval
        self.peak: int | None = None
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pss-sampler", daemon=True)

    def sample(self) -> None:
        value = tree_pss(self.pid)
        if value is not None:
            self.peak = value if self.peak is None else max(self.peak, value)
            self.samples += 1

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> PeakSampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()
