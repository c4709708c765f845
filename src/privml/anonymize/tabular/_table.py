"""The facade: a table in, a k-anonymous / l-diverse / t-close table and a report out.

The output has one row per input record, in input order, with every QI replaced by its
released label (numeric ranges ``[30-39]``, hierarchy labels, value sets ``{a,b}``) and
suppressed records ``*`` in every QI. The report's privacy figures are measured on the
released labels, never taken from what the algorithm meant to do: :func:`measure_release`
groups rows by equal released labels as :func:`measure` does, per class rather than per row
(the tests hold the two equal). A release falling short of the request would be a bug and
raises rather than being written.

Missing values (NaN) in a QI are refused with the row named: a range or a hierarchy has no
place for them, and silently treating them as a value would publish who lacks one.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd  # type: ignore[import-untyped,unused-ignore]

from privml._exceptions import ConfigError, DataError, PrivmlError

from ._fulldomain import Lattice, brute_force, flash
from ._hierarchy import Compiled, Hierarchy, auto_intervals, compile_column, load_hierarchies
from ._models import (
    Achieved,
    Generalised,
    LKind,
    PrivacyModel,
    Sensitive,
    encode_sensitive,
    measure_release,
)
from ._mondrian import encode_dims, mondrian
from ._utility import Utility, classification_utility, utility

__all__ = ["Progress", "Report", "anonymize_table", "anonymize_table_file"]

#: ``progress(stage, done, total)``; stages "read", "anonymize", "measure", "write";
#: ``total`` is 0 when unknown.
Progress = Callable[[str, int, int], None]
HierarchySource = str | Path | Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Report:
    """What was asked, what the released table achieves (measured), and what it cost."""

    algorithm: str
    rows: int
    qi: list[str]
    sensitive: str | None
    requested: dict[str, Any]
    achieved: Achieved
    utility: Utility
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=_json_default)


def _json_default(obj: object) -> object:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, tuple | set):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _validate(
    df: pd.DataFrame,
    qi: Sequence[str],
    sensitive: str | None,
    model: PrivacyModel,
    target: str | None,
) -> None:
    if isinstance(qi, str) or not qi:
        raise ConfigError("qi must be a non-empty list of column names")
    if len(set(qi)) != len(qi):
        raise ConfigError(f"qi names a column twice: {list(qi)}")
    for col, what in [
        *((c, "quasi-identifier") for c in qi),
        (sensitive, "sensitive"),
        (target, "target"),
    ]:
        if col is not None and col not in df.columns:
            raise ConfigError(
                f"unknown {what} column {col!r}; the table has {list(map(str, df.columns))}"
            )
    if sensitive is not None and sensitive in qi:
        raise ConfigError(f"column {sensitive!r} cannot be both a QI and the sensitive column")
    if not len(df):
        raise DataError("the table has no rows")
    if model.k > len(df):
        raise ConfigError(f"k = {model.k} is larger than the table ({len(df)} rows)")
    if model.needs_sensitive and sensitive is None:
        raise ConfigError("l-diversity and t-closeness need a sensitive column")
    for col in qi:
        na = df[col].isna().to_numpy()
        if na.any():
            raise DataError(
                f"quasi-identifier {col!r} has a missing value at row {df.index[na.argmax()]}; "
                "fill or drop such rows first"
            )
    if model.l is not None and sensitive is not None:
        distinct = int(df[sensitive].nunique(dropna=False))
        if model.l > distinct:
            raise ConfigError(
                f"l = {model.l:g} is larger than the number of distinct values of "
                f"{sensitive!r} ({distinct})"
            )


def _hierarchies(
    source: HierarchySource | Mapping[str, Hierarchy] | None, columns: set[str]
) -> dict[str, Hierarchy]:
    if source is None:
        return {}
    hs = load_hierarchies(source)
    extra = sorted(set(hs) - columns)
    if extra:
        raise ConfigError(f"hierarchy given for column {extra[0]!r}, not a QI or sensitive")
    return hs


def _compile_all(df: pd.DataFrame, qi: Sequence[str], hs: dict[str, Hierarchy]) -> list[Compiled]:
    comps = []
    for col in qi:
        s = df[col]
        h = hs.get(col)
        if h is None:
            if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
                h = auto_intervals(s)
            else:
                h = Hierarchy(levels=({str(v): "*" for v in s.unique()},))
        comps.append(compile_column(col, s, h))
    return comps


def _run(
    df: pd.DataFrame,
    qi: Sequence[str],
    sens: Sensitive | None,
    model: PrivacyModel,
    *,
    hs: dict[str, Hierarchy],
    algorithm: str,
    search: str,
    progress: Progress | None,
) -> Generalised:
    if algorithm == "mondrian":
        compiled = {c: compile_column(c, df[c], hs[c]) for c in qi if c in hs}
        return mondrian(encode_dims(df, qi, compiled), model, sens, len(df))
    comps = _compile_all(df, qi, hs)
    size = math.prod(c.height + 1 for c in comps)
    tick = None if progress is None else (lambda i: progress("anonymize", i, size))
    lattice = Lattice(comps, model, sens, len(df), tick)
    best = flash(lattice) if search == "flash" else brute_force(lattice)
    if best is None:
        top = lattice.evaluate(tuple(lattice.heights))
        raise ConfigError(
            f"the privacy model cannot be satisfied within the suppression limit "
            f"{model.suppression:g} ({lattice.limit} records): even full generalisation "
            f"would suppress {top.suppressed} of {len(df)} records"
        )
    info = {
        "search": search,
        "node": {c: lv for c, lv in zip(qi, best.node, strict=True)},
        "lattice_size": lattice.size,
        "nodes_checked": len(lattice.evaluated),
        "optimal_guaranteed": search == "brute" or model.suppression == 0,
    }
    return lattice.release(best.node, info)


def anonymize_table(
    df: pd.DataFrame,
    *,
    qi: Sequence[str],
    k: int,
    sensitive: str | None = None,
    l: float | None = None,  # noqa: E741
    l_kind: LKind = "distinct",
    t: float | None = None,
    algorithm: Literal["mondrian", "fulldomain"] = "mondrian",
    hierarchies: HierarchySource | Mapping[str, Hierarchy] | None = None,
    suppression: float = 0.0,
    search: Literal["flash", "brute"] = "flash",
    target: str | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> tuple[pd.DataFrame, Report]:
    """Make ``df`` k-anonymous (and l-diverse, t-close) over the quasi-identifiers ``qi``.

    ``algorithm="mondrian"`` partitions locally (numeric ranges; categories by hierarchy or
    as value sets); ``"fulldomain"`` picks one level per QI over ``hierarchies`` (automatic
    doubling intervals for numeric columns without one, ``*`` for other columns) by Flash
    (``search="brute"`` checks every node). ``suppression`` is the largest fraction of rows
    that may be suppressed. A ``hierarchies`` entry for the sensitive column switches
    t-closeness to hierarchical distance. ``target`` adds classification utility.
    """
    model = PrivacyModel(k=k, l=l, l_kind=l_kind, t=t, suppression=suppression)
    if algorithm not in ("mondrian", "fulldomain"):
        raise ConfigError(f"unknown algorithm {algorithm!r}; use 'mondrian' or 'fulldomain'")
    if search not in ("flash", "brute"):
        raise ConfigError(f"unknown search {search!r}; use 'flash' or 'brute'")
    _validate(df, qi, sensitive, model, target)
    hs = _hierarchies(hierarchies, {*qi, *([sensitive] if sensitive else [])})
    raw = df.reset_index(drop=True)
    sens_h = hs.get(sensitive) if sensitive is not None else None
    sens = encode_sensitive(raw, sensitive, sens_h) if sensitive is not None else None
    gen = _run(raw, qi, sens, model, hs=hs, algorithm=algorithm, search=search, progress=progress)
    # A shallow copy: assigning a whole column replaces it and never writes into ``df``.
    out = raw.copy(deep=False)
    for col in qi:
        out[col] = pd.Series(gen.labels(col), dtype=object)
    if progress is not None:
        progress("measure", 0, 1)
    # Measured on the released labels, grouped per class (measure_release); the sensitive
    # column is released unchanged, so its encoding is the input's. Rows generalised to the
    # root of every QI read '*' like suppressed ones; when the algorithm suppressed nothing
    # they are a genuine class and are judged as one.
    achieved = measure_release(gen, qi, sens, include_suppressed=not gen.suppressed.any())
    _check_achieved(achieved, model, int(gen.suppressed.sum()), len(raw))
    util = utility(raw, gen, qi, k)
    if target is not None:
        util = Utility(
            util.gcp,
            util.discernibility,
            util.c_avg,
            util.nonuniform_entropy,
            classification_utility(raw, out, qi, target, seed=seed),
        )
    out.index = df.index
    report = Report(
        algorithm, len(raw), list(qi), sensitive, asdict(model), achieved, util, gen.info
    )
    return out, report


def _check_achieved(a: Achieved, model: PrivacyModel, suppressed: int, n: int) -> None:
    """The release is judged by the checker; falling short is a bug, never written out."""
    short = []
    if a.classes and a.k < model.k:
        short.append(f"k = {a.k}")
    if model.l is not None and a.classes:
        got = a.l_distinct if model.l_kind == "distinct" else a.l_entropy
        if got is None or got < model.l - 1e-9:
            short.append(f"l = {got}")
    if model.t is not None and a.t is not None and a.t > model.t + 1e-9:
        short.append(f"t = {a.t}")
    if suppressed > model.suppression * n + 1e-9:
        short.append(f"{suppressed} suppressed")
    if short:
        raise PrivmlError(f"internal error: the release achieves only {', '.join(short)}")


def _read(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return pd.read_csv(path)
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
    except FileNotFoundError as exc:
        raise DataError(f"no such file: {path}") from exc
    except (ValueError, OSError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    raise ConfigError(f"unsupported table format {suffix!r} for {path}; use .csv or .parquet")


def _write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def anonymize_table_file(
    src: str | Path,
    dst: str | Path,
    *,
    report_path: str | Path | None = None,
    progress: Progress | None = None,
    **options: Any,
) -> Report:
    """Read a CSV/Parquet table, anonymize it (``options`` as :func:`anonymize_table`) and
    write it to ``dst`` (format by suffix) through a temporary file renamed into place, so
    an error leaves no partial output. ``report_path`` also writes the report as JSON."""
    src, dst = Path(src), Path(dst)
    out_suffix = dst.suffix.lower()
    if out_suffix not in (".csv", ".parquet", ".pq"):
        raise ConfigError(f"unsupported output format {out_suffix!r}; use .csv or .parquet")
    if not dst.parent.is_dir():
        raise ConfigError(f"output directory {dst.parent} does not exist")
    if progress is not None:
        progress("read", 0, 1)
    df = _read(src)
    if progress is not None:
        progress("read", 1, 1)
    out, report = anonymize_table(df, progress=progress, **options)
    if progress is not None:
        progress("write", 0, 1)

    def write(tmp: Path) -> None:
        if out_suffix == ".csv":
            out.to_csv(tmp, index=False)
        else:
            out.to_parquet(tmp, index=False)

    _write_atomic(dst, write)
    if report_path is not None:
        text = report.to_json()

        def write_report(tmp: Path) -> None:
            tmp.write_text(text, encoding="utf-8")

        _write_atomic(Path(report_path), write_report)
    if progress is not None:
        progress("write", 1, 1)
    return report
