"""Anonymizing whole files: CSV, Parquet, JSONL and plain text, streamed in chunks.

Theory of operation. A reader turns the input into chunks of ``chunk_rows`` rows; from each
chunk only the string columns that need work travel to the worker processes (each builds
its analyzer once, in its initializer), and the answers come back in order to a writer.
At most ``2 * workers`` chunks are in flight, so memory stays flat however big the file.

Column treatment is decided on the first chunk: the policy's ``columns:`` map first, then
``text_columns`` (free text), then detection: a string column whose non-empty cells are, for
at least 80 %, wholly one entity type is that type (each cell replaced whole); any other
string column is free text (or kept, when ``text_columns`` names the free-text ones).

The output is written to a hidden temporary file next to ``dst`` and renamed over it only
when everything succeeded: an error leaves no partial output behind.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import multiprocessing.context
import os
import tempfile
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from privml._exceptions import ConfigError, DataError
from privml.anonymize.text._engine import Anonymizer
from privml.anonymize.text._operators import AnonKey
from privml.anonymize.text._policy import Policy

__all__ = ["FORMATS", "BatchSummary", "anonymize_file"]

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl",
           ".ndjson": "jsonl", ".txt": "txt"}
WHOLE_COLUMN_SHARE = 0.8
_SAMPLE = 200  # cells per column looked at to detect a whole-column entity

Columns = dict[str, list[str | None]]


@dataclass(frozen=True)
class BatchSummary:
    """What :func:`anonymize_file` did: ``rows`` read, ``documents`` (non-empty free-text
    cells) analyzed, values replaced per entity type, and each column's treatment
    (``text``, ``keep``, ``drop``, or the entity type of a whole column)."""

    format: str
    rows: int
    documents: int
    entities: dict[str, int] = field(default_factory=dict)
    columns: dict[str, str] = field(default_factory=dict)


@dataclass
class _Chunk:
    native: Any
    rows: int
    strings: Columns  # the string columns, None where a cell is null / not a string


# ---- readers and writers --------------------------------------------------------------------

class _Csv:
    def __init__(self, src: Path, dst: Path) -> None:
        self.src, self.dst = src, dst
        self.fin: TextIO = open(src, newline="", encoding="utf-8-sig")  # noqa: SIM115
        self.reader = csv.reader(self.fin)
        self.fout: TextIO | None = None
        try:
            self.columns = self._header()
        except BaseException:
            self.fin.close()
            raise
        self.string_columns = list(self.columns)

    def _header(self) -> list[str]:
        try:
            columns = next(self.reader)
        except StopIteration:
            raise DataError(f"{self.src}: the file is empty (a CSV needs a header row)") \
                from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise DataError(f"{self.src}: the header row cannot be read: {exc}") from None
        dupes = sorted({c for c in columns if columns.count(c) > 1})
        if dupes:
            raise DataError(f"{self.src}: the header repeats the column(s) {', '.join(dupes)}")
        return columns

    def chunks(self, size: int) -> Iterator[_Chunk]:
        width, rows, row_no = len(self.columns), [], 0
        while True:
            try:
                row = next(self.reader, None)
            except (csv.Error, UnicodeDecodeError) as exc:
                raise DataError(f"{self.src}: row {row_no + 1} (line {self.reader.line_num})"
                                f" cannot be read: {exc}") from None
            if row is not None and not row:
                continue  # a blank line
            if row is not None:
                row_no += 1
                if len(row) != width:
                    raise DataError(f"{self.src}: row {row_no} (line {self.reader.line_num})"
                                    f" has {len(row)} fields; the header has {width}")
                rows.append(row)
            if rows and (row is None or len(rows) == size):
                cols: Columns = {c: [r[i] for r in rows] for i, c in enumerate(self.columns)}
                yield _Chunk(rows, len(rows), cols)
                rows = []
            if row is None:
                return

    def open(self, tmp: Path, keep: list[str]) -> None:
        self.keep = keep
        self.fout = open(tmp, "w", newline="", encoding="utf-8")  # noqa: SIM115
        self.writer = csv.writer(self.fout, lineterminator="\n")
        self.writer.writerow(keep)

    def write(self, chunk: _Chunk, new: Columns) -> None:
        index = {c: i for i, c in enumerate(self.columns)}
        for n, row in enumerate(chunk.native):
            self.writer.writerow([new[c][n] if c in new else row[index[c]] for c in self.keep])

    def close(self) -> None:
        self.fin.close()
        if self.fout is not None:
            self.fout.close()


class _Jsonl:
    def __init__(self, src: Path, dst: Path) -> None:
        self.src, self.dst = src, dst
        self.fin: TextIO = open(src, encoding="utf-8")  # noqa: SIM115
        self.fout: TextIO | None = None
        self.columns: list[str] = []
        self.string_columns: list[str] = []
        self.drop: set[str] = set()
        self._first = True

    def _objects(self) -> Iterator[dict[str, Any]]:
        try:
            for n, line in enumerate(self.fin, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{self.src}: line {n} is not valid JSON: {exc.msg}") \
                        from None
                if not isinstance(obj, dict):
                    raise DataError(f"{self.src}: line {n} is not a JSON object")
                yield obj
        except UnicodeDecodeError as exc:
            raise DataError(f"{self.src}: not UTF-8 text: {exc}") from None

    def chunks(self, size: int) -> Iterator[_Chunk]:
        batch: list[dict[str, Any]] = []
        for obj in self._objects():
            batch.append(obj)
            if len(batch) == size:
                yield self._chunk(batch)
                batch = []
        if batch or self._first:
            yield self._chunk(batch)

    def _chunk(self, objs: list[dict[str, Any]]) -> _Chunk:
        if self._first:  # the first chunk names the columns the summary reports
            self._first = False
            self.columns = list(dict.fromkeys(k for o in objs for k in o))
            self.string_columns = [c for c in self.columns
                                   if any(isinstance(o.get(c), str) for o in objs)]
        names = dict.fromkeys(k for o in objs for k, v in o.items() if isinstance(v, str))
        cols: Columns = {c: [o[c] if isinstance(o.get(c), str) else None for o in objs]
                         for c in names}
        return _Chunk(objs, len(objs), cols)

    def open(self, tmp: Path, keep: list[str]) -> None:
        self.drop = set(self.columns) - set(keep)
        self.fout = open(tmp, "w", encoding="utf-8")  # noqa: SIM115

    def write(self, chunk: _Chunk, new: Columns) -> None:
        assert self.fout is not None  # nosec B101  # narrowing: open() set fout before any write
        for n, obj in enumerate(chunk.native):
            for c, values in new.items():
                if values[n] is not None:
                    obj[c] = values[n]
            for c in self.drop:
                obj.pop(c, None)
            self.fout.write(json.dumps(obj, ensure_ascii=False) + "\n")

    def close(self) -> None:
        self.fin.close()
        if self.fout is not None:
            self.fout.close()


class _Txt(_Jsonl):
    """One document per line, in a single ``text`` column."""

    def __init__(self, src: Path, dst: Path) -> None:
        super().__init__(src, dst)
        self.columns = self.string_columns = ["text"]
        self._first = False

    def _objects(self) -> Iterator[dict[str, Any]]:
        try:
            for line in self.fin:
                yield {"text": line.removesuffix("\n")}
        except UnicodeDecodeError as exc:
            raise DataError(f"{self.src}: not UTF-8 text: {exc}") from None

    def write(self, chunk: _Chunk, new: Columns) -> None:
        assert self.fout is not None  # nosec B101  # narrowing: open() set fout before any write
        lines = new.get("text", [o["text"] for o in chunk.native])
        self.fout.write("".join(f"{line}\n" for line in lines))


class _Parquet:
    def __init__(self, src: Path, dst: Path) -> None:
        import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]
        import pyarrow.parquet as pq  # type: ignore[import-untyped,unused-ignore]

        self.src, self.dst, self.pa = src, dst, pa
        try:
            self.file = pq.ParquetFile(src)
        except (OSError, pa.ArrowException) as exc:
            raise DataError(f"{src}: not a readable Parquet file: {exc}") from None
        self.schema = self.file.schema_arrow
        self.columns = list(self.schema.names)
        self.string_columns = [f.name for f in self.schema
                               if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
        self.writer: Any = None

    def chunks(self, size: int) -> Iterator[_Chunk]:
        try:
            for batch in self.file.iter_batches(batch_size=size):
                cols: Columns = {c: batch.column(c).to_pylist() for c in self.string_columns}
                yield _Chunk(batch, batch.num_rows, cols)
        except (OSError, self.pa.ArrowException) as exc:
            raise DataError(f"{self.src}: a row group cannot be read: {exc}") from None

    def open(self, tmp: Path, keep: list[str]) -> None:
        import pyarrow.parquet as pq  # type: ignore[import-untyped,unused-ignore]

        self.out_schema = self.pa.schema([self.schema.field(c) for c in keep],
                                         metadata=self.schema.metadata)
        self.writer = pq.ParquetWriter(tmp, self.out_schema)

    def write(self, chunk: _Chunk, new: Columns) -> None:
        arrays = [self.pa.array(new[f.name], type=f.type) if f.name in new
                  else chunk.native.column(f.name) for f in self.out_schema]
        self.writer.write_batch(self.pa.RecordBatch.from_arrays(arrays, schema=self.out_schema))

    def close(self) -> None:
        self.file.close()
        if self.writer is not None:
            self.writer.close()


_Format = _Csv | _Jsonl | _Txt | _Parquet
_READERS: dict[str, type[_Format]] = {"csv": _Csv, "jsonl": _Jsonl, "txt": _Txt,
                                      "parquet": _Parquet}


# ---- the work done on each chunk (in a worker process, or here) -----------------------------

_WORKER: Anonymizer | None = None


def _init_worker(policy: Policy, key: AnonKey | None) -> None:
    global _WORKER  # noqa: PLW0603 -- one analyzer per worker process, built once
    _WORKER = Anonymizer(policy, key)


def _work(cols: Columns, treatment: dict[str, str]) -> tuple[Columns, Counter[str], int]:
    assert _WORKER is not None  # nosec B101  # narrowing: the pool initializer set it in this worker
    return process_columns(_WORKER, cols, treatment)


def process_columns(anon: Anonymizer, cols: Columns, treatment: dict[str, str]
                    ) -> tuple[Columns, Counter[str], int]:
    """The anonymized ``cols`` (each treated as ``text`` or as a whole entity), the values
    replaced per entity, and the number of free-text documents analyzed."""
    out: Columns = {}
    counts: Counter[str] = Counter()
    documents = 0
    for name, values in cols.items():
        how = treatment[name]
        new: list[str | None] = []
        for v in values:
            if v is None or not v.strip():
                new.append(v)
            elif how == "text":
                documents += 1
                result = anon.run(v)
                counts.update(result.counts())
                new.append(result.text)
            else:
                counts[how] += 1
                new.append(anon.whole(v, how))
        out[name] = new
    return out, counts, documents


def _detect(anon: Anonymizer, values: Sequence[str | None]) -> str | None:
    cells = [v for v in values if v is not None and v.strip()][:_SAMPLE]
    if not cells:
        return None
    found = Counter(anon.whole_entity(v) for v in cells)
    found.pop(None, None)
    if found:
        entity, n = found.most_common(1)[0]
        if entity is not None and n >= WHOLE_COLUMN_SHARE * len(cells):
            return entity
    return None


def _plan(fmt: _Format, first: _Chunk | None, policy: Policy, anon: Anonymizer,
          text_columns: Sequence[str] | None) -> dict[str, str]:
    """Every column's treatment: text, keep, drop, or an entity name."""
    table = f"{fmt.src}"
    if not isinstance(fmt, _Txt):
        policy.check_columns(fmt.columns, table=table)
    for c in text_columns or ():
        if c not in fmt.columns:
            raise ConfigError(f"text_columns: {table} has no column {c!r}")
    plan: dict[str, str] = {}
    for c in fmt.columns:
        if c in policy.columns:
            plan[c] = policy.columns[c]
        elif isinstance(fmt, _Txt) or (text_columns is not None and c in text_columns):
            plan[c] = "text"
        elif c not in fmt.string_columns:
            plan[c] = "keep"
        else:
            values = first.strings.get(c, []) if first is not None else []
            plan[c] = _detect(anon, values) or ("text" if text_columns is None else "keep")
    return plan


def _mp_context() -> multiprocessing.context.BaseContext:
    # fork when this process runs no other thread: workers start at once, and a script
    # without an `if __name__ == "__main__":` guard still works. Otherwise (a progress
    # bar's refresh thread, a server) a forked child could inherit a lock one of them held:
    # the fork server starts clean processes (which re-import the main module).
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


# ---- the driver -----------------------------------------------------------------------------

def _format_of(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ConfigError(f"{path}: unknown file type {path.suffix!r} (known: "
                          f"{', '.join(FORMATS)})")
    return fmt


def anonymize_file(src: Path | str, dst: Path | str, policy: Policy | None = None, *,
                   key: AnonKey | bytes | None = None,
                   text_columns: Sequence[str] | None = None, chunk_rows: int = 2000,
                   workers: int = 2, progress: Callable[[int], None] | None = None
                   ) -> BatchSummary:
    """Anonymize ``src`` into ``dst`` (same format, from the suffix) under ``policy`` (the
    built-in one by default). ``progress`` is called with the number of rows done after
    each chunk is written. Nothing is written at ``dst`` unless the whole file succeeded."""
    src, dst = Path(src), Path(dst)
    fmt_name = _format_of(src)
    if _format_of(dst) != fmt_name:
        raise ConfigError(f"{dst}: the output must have the input's format ({fmt_name})")
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise ConfigError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be a positive integer, got {workers!r}")
    if not src.is_file():
        raise DataError(f"{src}: no such file")
    if not dst.parent.is_dir():
        raise ConfigError(f"{dst.parent}: no such folder for the output")
    if dst.exists() and dst.resolve() == src.resolve():
        raise ConfigError(f"{dst}: the output would overwrite the input")
    policy = Policy.builtin() if policy is None else policy
    anon = Anonymizer(policy, key)  # refuses a keyed policy without a key, before any work
    try:
        fmt = _READERS[fmt_name](src, dst)
    except OSError as exc:
        raise DataError(f"{src}: cannot be read: {exc.strerror}") from None
    fd, name = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".part")
    os.close(fd)
    tmp = Path(name)
    try:
        try:
            summary = _run(fmt, fmt_name, tmp, policy=policy, anon=anon,
                           text_columns=text_columns, chunk_rows=chunk_rows, workers=workers,
                           progress=progress)
        finally:
            fmt.close()
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return summary


def _run(fmt: _Format, fmt_name: str, tmp: Path, *, policy: Policy, anon: Anonymizer,
         text_columns: Sequence[str] | None, chunk_rows: int, workers: int,
         progress: Callable[[int], None] | None) -> BatchSummary:
    chunks = fmt.chunks(chunk_rows)
    first = next(chunks, None)
    plan = _plan(fmt, first, policy, anon, text_columns)
    fmt.open(tmp, [c for c in fmt.columns if plan[c] != "drop"])
    rows = documents = 0
    counts: Counter[str] = Counter()

    def work_on(chunk: _Chunk) -> dict[str, str]:
        for c in chunk.strings:  # a JSONL key first seen after the first chunk
            plan.setdefault(c, "text" if text_columns is None else "keep")
        return {c: plan[c] for c in chunk.strings if plan[c] not in ("keep", "drop")}

    def finish(chunk: _Chunk, new: Columns, found: Counter[str], docs: int) -> None:
        nonlocal rows, documents
        fmt.write(chunk, new)
        rows += chunk.rows
        documents += docs
        counts.update(found)
        if progress is not None:
            progress(rows)

    def all_chunks() -> Iterator[_Chunk]:
        if first is not None:
            yield first
        yield from chunks

    if workers == 1:
        for chunk in all_chunks():
            todo = work_on(chunk)
            finish(chunk, *process_columns(anon, {c: chunk.strings[c] for c in todo}, todo))
    else:
        pool = ProcessPoolExecutor(workers, mp_context=_mp_context(), initializer=_init_worker,
                                   initargs=(policy, anon.key))
        pending: deque[tuple[_Chunk, Future[tuple[Columns, Counter[str], int]]]] = deque()
        try:
            for chunk in all_chunks():
                todo = work_on(chunk)
                cols = {c: chunk.strings[c] for c in todo}
                pending.append((chunk, pool.submit(_work, cols, todo)))
                while len(pending) > 2 * workers:
                    done, future = pending.popleft()
                    finish(done, *future.result())
            while pending:
                done, future = pending.popleft()
                finish(done, *future.result())
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    return BatchSummary(format=fmt_name, rows=rows, documents=documents,
                        entities=dict(counts.most_common()),
                        columns=dict(plan))
