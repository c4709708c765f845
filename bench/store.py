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


def _evict(path: Path) -> None:
    """Drop the file's pages from the page cache (clean after fsync), so the next read
    comes from the disk: how a value at rest is read after a restart."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


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


def _paired(runs: dict[str, tuple[Callable[[], object], Callable[[], object] | None]],
            rounds: int = 3) -> dict[str, float]:
    """Median seconds of each run, the runs taking turns ``rounds`` times (setups untimed)."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, (fn, setup) in runs.items():
            times[name].append(_time(fn, runs=1, setup=setup))
    return {name: statistics.median(t) for name, t in times.items()}


def measure(size_mb: int, work: Path) -> dict[str, float]:
    chunks = [os.urandom(MB) for _ in range(size_mb)]
    plain = work / "plain.bin"
    store = LocalStore(work / "store", key=os.urandom(32))
    fernet, token_file = Fernet(Fernet.generate_key()), work / "fernet.bin"
    def put() -> None:
        store.put("bench", iter(chunks))

    def sealed_files() -> list[Path]:
        return sorted((work / "store" / "objects").glob("*.seal"))

    def open_views() -> int:
        return sum(len(p) for p in store.open("bench", views=True))

    # Plain and sealed runs alternate, so a slow spell of the disk hits both sides alike.
    out = _paired({
        "plain_write_s": (lambda: _fsync_write(plain, chunks), lambda: plain.unlink(True)),
        "sealed_write_s": (put, lambda: store.delete("bench")),
    })
    out |= _paired({
        "plain_read_s": (lambda: _read(plain), None),
        "sealed_read_s": (open_views, None),
        "sealed_bytes_read_s": (lambda: sum(len(p) for p in store.open("bench")), None),
    })
    out |= _paired({
        "plain_cold_s": (lambda: _read(plain), lambda: _evict(plain)),
        "sealed_cold_s": (open_views, lambda: [_evict(f) for f in sealed_files()]),
    })
    if size_mb <= 1024:
        data = b"".join(chunks)
        out["fernet_write_s"] = _time(lambda: _fsync_write(token_file, fernet.encrypt(data)))
        out["fernet_read_s"] = _time(lambda: len(fernet.decrypt(token_file.read_bytes())))
        del data
    store.close()
    return out


def _rows(size: int, r: dict[str, float]) -> tuple[str, str]:
    def mbs(key: str) -> float:
        return size / r[key] if key in r else float("nan")

    w = (mbs("sealed_write_s"), mbs("plain_write_s"), mbs("fernet_write_s"))
    write = (f"| {size} MB | {w[0]:.0f} MB/s | {w[1]:.0f} MB/s | {w[2]:.0f} MB/s | "
             f"**{w[0] / w[1]:.2f}x** | {w[0] / w[2]:.2f}x |")
    rd = (mbs("sealed_read_s"), mbs("sealed_bytes_read_s"), mbs("plain_read_s"),
          mbs("fernet_read_s"), mbs("sealed_cold_s"), mbs("plain_cold_s"))
    read = (f"| {size} MB | {rd[0]:.0f} MB/s | {rd[1]:.0f} MB/s | {rd[2]:.0f} MB/s | "
            f"{rd[3]:.0f} MB/s | **{rd[0] / rd[2]:.2f}x** | {rd[0] / rd[3]:.2f}x | "
            f"{rd[4]:.0f} MB/s | {rd[5]:.0f} MB/s | **{rd[4] / rd[5]:.2f}x** |")
    return write, read


def _ratios(results: dict[str, dict[str, float]]) -> dict[str, float]:
    """The worst sealed / plain ratio over the sizes, per operation."""
    return {op: min(r[f"plain_{op}_s"] / r[f"sealed_{op}_s"] for r in results.values())
            for op in ("write", "read", "cold")}


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
    lines = [START, "## Sealed store throughput: privml vs plain files vs Fernet", "",
             f"`.venv/bin/python bench/store.py --sizes {' '.join(map(str, args.sizes))}` "
             "(results: `bench/results/store.json`). Same random bytes, median of 3, plain and "
             "sealed runs taking turns; writes "
             "end with fsync on every side; privml's include the index transactions. Sealed "
             "reads stream with `LocalStore.open(name, views=True)` (reused buffers); the "
             "`open()` column yields a new bytes object per 1 MiB segment. "
             f"Python {sys.version.split()[0]}, 2 cores. Aim: sealed >= 0.8x plain.", "",
             "| size | sealed write | plain write | Fernet write | sealed / plain | "
             "sealed / Fernet |", "|" + "---|" * 6]
    rows = [_rows(int(s), r) for s, r in results.items()]
    lines += [w for w, _ in rows]
    lines += ["", "| size | sealed read (cached) | `open()` (cached) | plain read (cached) | "
              "Fernet read | sealed / plain | sealed / Fernet | sealed read (disk) | "
              "plain read (disk) | sealed / plain (disk) |", "|" + "---|" * 10]
    lines += [rd for _, rd in rows]
    worst = _ratios(results)
    names = {"write": "write", "read": "read from the page cache",
             "cold": "read from the disk (pages evicted with posix_fadvise)"}
    lines += [""] + [f"- Worst sealed / plain {names[op]}: **{v:.2f}x** "
                     f"({'aim reached' if v >= 0.8 else 'aim NOT reached'})."
                     for op, v in worst.items()]
    lines += ["", "A cached plain read is a memory copy (~10 GB/s here); AES-GCM opens at "
              "about 2.5 GB/s per core (`decrypt_into`, measured on this machine), so on two "
              "cores no authenticated read can come near it. Read from the disk, the gap is "
              "the ratio above.", END]
    write_section(START, END, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
