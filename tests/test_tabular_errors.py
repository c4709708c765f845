"""Bad input gets a clear error naming the row or value; files are written whole or not at
all."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from privml._exceptions import ConfigError, DataError
from privml.anonymize.tabular import anonymize_table, anonymize_table_file, measure


def table(n: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "age": rng.integers(20, 70, n),
            "zip": rng.choice(["13053", "13068", "14850"], n),
            "sex": rng.choice(["M", "F"], n),
            "diagnosis": rng.choice(["flu", "cold", "hiv"], n),
        }
    )


QI = ["age", "zip", "sex"]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"qi": ["age", "postcode"], "k": 2}, ConfigError, "quasi-identifier column 'postcode'"),
        ({"qi": QI, "k": 2, "sensitive": "disease"}, ConfigError, "sensitive column 'disease'"),
        ({"qi": QI, "k": 61}, ConfigError, r"k = 61 is larger than the table \(60 rows\)"),
        ({"qi": QI, "k": 0}, ConfigError, "k must be an integer >= 1"),
        (
            {"qi": QI, "k": 2, "sensitive": "diagnosis", "l": 4},
            ConfigError,
            r"l = 4 is larger than the number of distinct values of 'diagnosis' \(3\)",
        ),
        ({"qi": QI, "k": 2, "l": 2}, ConfigError, "need a sensitive column"),
        ({"qi": QI, "k": 2, "sensitive": "diagnosis", "t": 1.5}, ConfigError, r"t must lie"),
        ({"qi": QI, "k": 2, "suppression": 1.0}, ConfigError, "suppression must lie"),
        ({"qi": QI, "k": 2, "algorithm": "datafly"}, ConfigError, "unknown algorithm"),
        ({"qi": ["age", "age"], "k": 2}, ConfigError, "twice"),
        (
            {"qi": ["age", "diagnosis"], "k": 2, "sensitive": "diagnosis"},
            ConfigError,
            "both a QI and the sensitive",
        ),
        (
            {
                "qi": QI,
                "k": 2,
                "hierarchies": {"zip": {"levels": [{"13053": "130**"}]}},
                "algorithm": "fulldomain",
            },
            ConfigError,
            "column 'zip' does not cover value '13068'",
        ),
        (
            {"qi": QI, "k": 2, "hierarchies": {"zip": {"levels": [{"13053": "130**"}]}}},
            ConfigError,
            "column 'zip' does not cover value '13068'",
        ),
        (
            {"qi": QI, "k": 2, "hierarchies": {"height": {"widths": [5]}}},
            ConfigError,
            "column 'height', not a QI",
        ),
    ],
)
def test_bad_input(kwargs: dict[str, object], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        anonymize_table(table(), **kwargs)  # type: ignore[arg-type]


def test_nan_in_qi_is_refused_with_the_row() -> None:
    df = table()
    df.loc[17, "age"] = np.nan
    with pytest.raises(DataError, match="'age' has a missing value at row 17"):
        anonymize_table(df, qi=QI, k=2)


@pytest.mark.parametrize("algorithm", ["mondrian", "fulldomain"])
def test_unsatisfiable_model(algorithm: str) -> None:
    df = table(100)
    df["diagnosis"] = ["flu"] * 96 + ["cold"] * 2 + ["hiv"] * 2  # exp(H) of the table ~ 1.2
    with pytest.raises(ConfigError, match="cannot be satisfied"):
        anonymize_table(
            df,
            qi=QI,
            k=2,
            sensitive="diagnosis",
            l=2,
            l_kind="entropy",
            algorithm=algorithm,
            suppression=0.05,  # type: ignore[arg-type]
        )


def test_unsatisfiable_names_the_suppression_limit() -> None:
    df = table(100)
    df["diagnosis"] = ["flu"] * 96 + ["cold"] * 2 + ["hiv"] * 2
    with pytest.raises(ConfigError, match=r"suppression limit 0.05 \(5 records\)"):
        anonymize_table(
            df,
            qi=QI,
            k=2,
            sensitive="diagnosis",
            l=2,
            l_kind="entropy",
            algorithm="fulldomain",
            suppression=0.05,
        )


def test_measure_unknown_column() -> None:
    with pytest.raises(ConfigError, match="unknown column 'nope'"):
        measure(table(), ["age", "nope"])


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_file_round_trip(tmp_path: Path, suffix: str) -> None:
    src = tmp_path / f"in{suffix}"
    df = table(200)
    df.to_csv(src, index=False) if suffix == ".csv" else df.to_parquet(src, index=False)
    dst, rep_path = tmp_path / f"out{suffix}", tmp_path / "report.json"
    seen: list[str] = []
    rep = anonymize_table_file(
        src,
        dst,
        report_path=rep_path,
        qi=QI,
        k=5,
        sensitive="diagnosis",
        l=2,
        progress=lambda stage, done, total: seen.append(stage),
    )
    out = pd.read_csv(dst) if suffix == ".csv" else pd.read_parquet(dst)
    assert len(out) == 200
    assert measure(out.astype({c: str for c in QI}), QI, "diagnosis").k >= 5
    assert rep.achieved.k >= 5 and rep_path.read_text().startswith("{")
    assert {"read", "write"} <= set(seen)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([src.name, dst.name, "report.json"])


def test_file_error_leaves_no_output(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    table(50).to_csv(src, index=False)
    dst = tmp_path / "out.csv"
    with pytest.raises(ConfigError, match="k = 51"):
        anonymize_table_file(src, dst, qi=QI, k=51)
    assert not dst.exists()
    with pytest.raises(DataError, match="no such file"):
        anonymize_table_file(tmp_path / "missing.csv", dst, qi=QI, k=2)
    with pytest.raises(ConfigError, match="unsupported output format"):
        anonymize_table_file(src, tmp_path / "out.xlsx", qi=QI, k=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


def test_file_write_failure_removes_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "in.csv"
    table(50).to_csv(src, index=False)

    def boom(self: pd.DataFrame, *a: object, **kw: object) -> None:
        Path(str(a[0])).write_text("partial")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", boom)
    with pytest.raises(OSError, match="disk full"):
        anonymize_table_file(src, tmp_path / "out.csv", qi=QI, k=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]
