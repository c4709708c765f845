"""Tabular datasets from a CSV file: numeric feature columns and one label column.

The first row is a header. Every other non-blank row must have one field per header column;
every feature must parse as a finite number that fits in float32. Labels are strings: the
sorted distinct labels become the class names, and a label's class index is its position in
that order (labels that all look like integers sort as numbers, so "2" comes before "10" and
integer labels 0..K-1 keep their values).

:func:`read_feature_csv` reads the same format for inference, where the label column is
optional and holds integer class indices.

Every problem raises :class:`~privml.DataError` with a one-line message naming the file and,
where there is one, the line and column; line numbers are those of the file, header = 1.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from privml._exceptions import ConfigError, DataError
from privml.data._dataset import Dataset, check_seed, check_test_fraction, split

__all__ = ["load_csv", "read_feature_csv"]

_F32_MAX = float(np.finfo(np.float32).max)
_MIN_ROWS = 2
_MAX_CLASS = 2**31 - 1


def _feature(text: str, where: str, line: int, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"CSV file {where}: line {line}, column {column!r}: "
                        f"{text.strip()[:40]!r} is not a number") from None
    if not math.isfinite(value):
        raise DataError(f"CSV file {where}: line {line}, column {column!r}: "
                        f"{text.strip()!r} is not finite")
    if abs(value) > _F32_MAX:
        raise DataError(f"CSV file {where}: line {line}, column {column!r}: "
                        f"{text.strip()!r} overflows float32")
    return value


@dataclass(slots=True)
class _Table:
    names: list[str]  # feature columns, in file order
    rows: list[list[float]] = field(default_factory=list)
    labels: list[str] | None = None
    lines: list[int] = field(default_factory=list)  # file line of each row, for messages


def _header(header: list[str] | None, where: str, label: str | None,
            required: bool) -> tuple[list[str], int | None]:
    """The stripped column names and the label's position (None: no label column)."""
    if header is None or not any(h.strip() for h in header):
        raise DataError(f"CSV file {where}: empty file (no header row)")
    names = [h.strip() for h in header]
    if "" in names:
        raise DataError(f"CSV file {where}: header column {names.index('') + 1} has no name")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DataError(f"CSV file {where}: duplicate column {dupes[0]!r} in the header")
    if label is None or (label not in names and not required):
        return names, None
    if label not in names:
        raise DataError(f"CSV file {where}: no label column {label!r} in the header "
                        f"(columns: {', '.join(names)[:200]})")
    if len(names) < 2:
        raise DataError(f"CSV file {where}: no feature columns besides {label!r}")
    return names, names.index(label)


def _read_table(path: Path, where: str, label: str | None, required: bool) -> _Table:
    with path.open("r", encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        names, label_at = _header(next(reader, None), where, label, required)
        table = _Table(names=[n for i, n in enumerate(names) if i != label_at],
                       labels=None if label_at is None else [])
        for row in reader:
            line = reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank lines, e.g. a trailing one, carry no example
            if len(row) != len(names):
                raise DataError(f"CSV file {where}: line {line} has {len(row)} fields, "
                                f"the header has {len(names)}")
            if table.labels is not None and label_at is not None:
                value = row[label_at].strip()
                if not value:
                    raise DataError(f"CSV file {where}: line {line}, column {label!r}: "
                                    "empty label")
                table.labels.append(value)
            table.rows.append([_feature(text, where, line, names[i])
                               for i, text in enumerate(row) if i != label_at])
            table.lines.append(line)
    return table


def _read(path: str | Path, label: str | None, *, required: bool) -> tuple[str, _Table]:
    """The file's display name and its table, every failure turned into a DataError."""
    if label is not None and (not isinstance(label, str) or not label.strip()):
        raise ConfigError(f"label must be a non-empty column name, got {label!r}")
    p = Path(path)
    where = str(p)
    try:
        return where, _read_table(p, where, None if label is None else label.strip(),
                                  required)
    except FileNotFoundError as exc:
        raise DataError(f"CSV file {where}: not found") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"CSV file {where}: not UTF-8 text (byte {exc.start})") from exc
    except csv.Error as exc:
        raise DataError(f"CSV file {where}: malformed CSV ({exc})") from exc
    except OSError as exc:
        raise DataError(f"CSV file {where}: cannot read ({exc.strerror or exc})") from exc


def _features(table: _Table) -> npt.NDArray[np.float32]:
    return np.asarray(table.rows, dtype=np.float32).reshape(len(table.rows), len(table.names))


def _class_order(labels: list[str]) -> list[str]:
    distinct = set(labels)
    try:
        # The string breaks ties ("1" vs "01") so the order never depends on set order.
        return sorted(distinct, key=lambda s: (int(s), s))
    except ValueError:
        return sorted(distinct)


def load_csv(path: str | Path, *, label: str = "label", test_fraction: float = 0.2,
             seed: int = 0) -> Dataset:
    """Load a CSV file of numeric features and a ``label`` column, split train/test.

    The split is seeded and stratified by label where every class has enough rows. Raises
    :class:`~privml.DataError` (naming file, line and column) for a missing or empty file,
    a missing label column, a non-numeric, NaN or infinite feature, a ragged row, or fewer
    than two data rows; :class:`~privml.ConfigError` for a bad ``test_fraction`` or seed.
    """
    fraction = check_test_fraction(test_fraction)
    seed = check_seed(seed)
    if not isinstance(label, str):
        raise ConfigError(f"label must be a non-empty column name, got {label!r}")
    where, table = _read(path, label, required=True)
    labels = table.labels or []
    if len(table.rows) < _MIN_ROWS:
        raise DataError(f"CSV file {where}: {len(table.rows)} data rows, "
                        f"need at least {_MIN_ROWS}")
    classes = _class_order(labels)
    index = {name: i for i, name in enumerate(classes)}
    x = _features(table)
    y = np.fromiter((index[v] for v in labels), dtype=np.int64, count=len(labels))
    x_train, y_train, x_test, y_test = split(x, y, test_fraction=fraction, seed=seed,
                                             stratify=True)
    return Dataset(name=f"csv:{where}", x_train=x_train, y_train=y_train, x_test=x_test,
                   y_test=y_test, num_classes=len(classes),
                   input_shape=(len(table.names),), classes=tuple(classes))


def read_feature_csv(path: str | Path, *, label: str | None = None,
                     ) -> tuple[list[str], npt.NDArray[np.float32], npt.NDArray[np.int64] | None]:
    """Rows of features to run a model on: ``(feature names, x of shape (n, F), y or None)``.

    Every column is a feature except ``label``, if given and present in the header; its
    values must then be integer class indices (they are scored against predictions, which
    are indices). At least one data row is needed. Raises :class:`~privml.DataError` like
    :func:`load_csv`.
    """
    where, table = _read(path, label, required=False)
    if not table.rows:
        raise DataError(f"CSV file {where}: no data rows")
    if not table.names:
        raise DataError(f"CSV file {where}: no feature columns")
    y: npt.NDArray[np.int64] | None = None
    if table.labels is not None:
        values: list[int] = []
        for text, line in zip(table.labels, table.lines, strict=True):
            try:
                values.append(int(text))
            except ValueError:
                raise DataError(f"CSV file {where}: line {line}, column {label!r}: "
                                f"{text[:40]!r} is not an integer class index") from None
            if values[-1] < 0:
                raise DataError(f"CSV file {where}: line {line}, column {label!r}: "
                                f"class index {values[-1]} is negative")
            if values[-1] > _MAX_CLASS:  # (would overflow the int64 array of labels)
                raise DataError(f"CSV file {where}: line {line}, column {label!r}: "
                                f"class index {text[:40]!r} is too large")
        y = np.array(values, dtype=np.int64)
    return table.names, _features(table), y
