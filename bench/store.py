"""Sealed store throughput against plain files and Fernet, in one run.

    .venv/bin/python bench/store.py                 # 100 MB and 1 GB
    .venv/bin/python bench/store.py --sizes 100     # 100 MB only

For each size: write then read the same random bytes (a) as a plain file (1 MiB writes,
fsync), (b) through ``LocalStore.put`` / ``LocalStore.open`` (sealed segments, fsync, index
transaction), (c) with ``cryptography``'s Fernet (whole value in memory, as Fernet works,
then one file with fsync). Median of 3 runs each; throughput in MB/s and privml's as a ratio
of the others. Writes ``bench/results/store.json`` and the ``store`` section of
``BENCHMARKS.md``. Aim: sealed at >= 0.8 of plain-file speed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.fernet import Fernet
from rich.progress import Progress

from _report import write_section
from privml.store import LocalStore

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
START, END = "<!-- bench:store:start -->", "<!-- bench:store:end -->"
MB = 1 << 20


def _fsync_write(path: Path, chunks: list[bytes] | bytes) -> None:
    with open(path, "wb") as fh:
        for c in chunks if isinstance(chunks, list) else [chunks]:
            fh.write(c)
        fh.flush()
        os.fsync(fh.fileno())


def _read(path: Path) -> int:
    n = 0
    with open(path, "rb") as fh:
        while piece := fh.read(MB):
            n += len(piece)
    return n


def _time(fn: Callable[[], object], runs: int = 3,
          setup: Callable[[], object] | None = None) -> float:
    times = []
    for _ in range(runs):
        if setup is not None:
            setup()  # not timed
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(size_mb: int, work: Path) -> dict[str, float]:
    chunks = [os.urandom(MB) for _ in range(size_mb)]
    plain = work / "plain.bin"
    store = LocalStore(work / "store", key=os.urandom(32))
    fernet, token_file = Fernet(Fernet.generate_key()), work / "fernet.bin"
    out = {
        "plain_write_s": _time(lambda: _fsync_write(plain, chunks)),
        "plain_read_s": _time(lambda: _read(plain)),
        "sealed_write_s": _time(lambda: store.put("bench", iter(chunks)),
                                setup=lambda: store.delete("bench")),
        "sealed_read_s": _time(lambda: sum(len(p) for p in store.open("bench"))),
    }
    if size_mb <= 1024:
        data = b"".join(chunks)
        out["fernet_write_s"] = _time(lambda: _fsync_write(token_file, fernet.encrypt(data)))
        out["fernet_read_s"] = _time(lambda: len(fernet.decrypt(token_file.read_bytes())))
        del data
    store.close()
    return out


def _row(size: int, r: dict[str, float]) -> str:
    def mbs(key: str) -> float:
        return size / r[key]

    cells = [f"{size} MB"]
    for op in ("write", "read"):
        ours, plain = mbs(f"sealed_{op}_s"), mbs(f"plain_{op}_s")
        fern = mbs(f"fernet_{op}_s") if f"fernet_{op}_s" in r else float("nan")
        cells += [f"{ours:.0f} MB/s", f"{plain:.0f} MB/s", f"{fern:.0f} MB/s",
                  f"**{ours / plain:.2f}x**", f"{ours / fern:.2f}x"]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1024], help="MB")
    args = ap.parse_args()
    results: dict[str, dict[str, float]] = {}
    with Progress() as bar, tempfile.TemporaryDirectory(dir=HERE) as tmp:
        task = bar.add_task("sizes", total=len(args.sizes))
        for size in args.sizes:
            results[str(size)] = measure(size, Path(tmp) / str(size))
            bar.advance(task)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "store.json").write_text(json.dumps(results, indent=2) + "\n")
    head = ("| size | sealed write | plain write | Fernet write | sealed / plain | "
            "sealed / Fernet | sealed read | plain read | Fernet read | sealed / plain | "
            "sealed / Fernet |")
    lines = [START, "## Sealed store throughput: privml vs plain files vs Fernet", "",
             f"`.venv/bin/python bench/store.py --sizes {' '.join(map(str, args.sizes))}` "
             "(results: `bench/results/store.json`). Same random bytes, median of 3; writes "
             "end with fsync on every side; privml's include the index transaction. "
             f"Python {sys.version.split()[0]}, 2 cores. Aim: sealed >= 0.8x plain.", "",
             head, "|" + "---|" * 11]
    lines += [_row(int(s), r) for s, r in results.items()]
    worst = min(min(r["plain_write_s"] / r["sealed_write_s"],
                    r["plain_read_s"] / r["sealed_read_s"]) for r in results.values())
    lines += ["", f"Worst sealed / plain ratio: {worst:.2f}x "
              f"({'aim reached' if worst >= 0.8 else 'aim NOT reached'}).", END]
    write_section(START, END, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
