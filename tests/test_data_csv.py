"""CSV datasets: a good file in several dialects, and every malformed file the loader refuses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from privml import ConfigError, DataError
from privml.data import load_csv, load_dataset, read_feature_csv


def csv_file(tmp_path: Path, text: str, name: str = "d.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def good_text(n: int = 20) -> str:
    rows = ["x1,label,x2"]
    rows += [f"{i * 0.5},{'cat' if i % 2 else 'dog'},{-i}" for i in range(n)]
    return "\n".join(rows) + "\n"


def test_good_file(tmp_path: Path) -> None:
    path = csv_file(tmp_path, good_text())
    ds = load_csv(path, seed=1)
    assert ds.name == f"csv:{path}"
    assert ds.classes == ("cat", "dog") and ds.num_classes == 2 and ds.input_shape == (2,)
    assert ds.x_train.shape == (16, 2) and ds.x_test.shape == (4, 2)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    x = np.concatenate([ds.x_train, ds.x_test])
    y = np.concatenate([ds.y_train, ds.y_test])
    order = np.argsort(-x[:, 1])  # column x2 is -row, so this restores file order
    np.testing.assert_array_equal(x[order, 0], np.arange(20) * 0.5)
    np.testing.assert_array_equal(y[order], np.where(np.arange(20) % 2, 0, 1))
    # stratified: both classes on both sides, in proportion
    np.testing.assert_array_equal(np.bincount(ds.y_test), [2, 2])


def test_same_seed_same_split_and_load_dataset_forms(tmp_path: Path) -> None:
    path = csv_file(tmp_path, good_text())
    a = load_csv(path, seed=5)
    b = load_dataset("csv", path=path, seed=5)
    c = load_dataset(f"csv:{path}", seed=5)
    d = load_dataset(a.name, seed=5)
    for other in (b, c, d):
        np.testing.assert_array_equal(a.x_train, other.x_train)
        np.testing.assert_array_equal(a.y_test, other.y_test)


def test_dialect_details(tmp_path: Path) -> None:
    text = '\ufeff"f one", y ,"f two"\r\n"1.5",b,2e3\r\n-3,a,  4 \r\n\r\n7,b,8\r\n\r\n'
    ds = load_csv(csv_file(tmp_path, text), label="y", test_fraction=0.34)
    assert ds.classes == ("a", "b") and ds.input_shape == (2,)
    assert len(ds.x_train) + len(ds.x_test) == 3
    values = np.sort(np.concatenate([ds.x_train, ds.x_test])[:, 1])
    np.testing.assert_array_equal(values, [4, 8, 2000])


def test_integer_labels_sort_as_numbers(tmp_path: Path) -> None:
    rows = ["v,label"] + [f"{i},{lab}" for i, lab in enumerate([10, 2, 0, 2, 10, 0])]
    ds = load_csv(csv_file(tmp_path, "\n".join(rows)))
    assert ds.classes == ("0", "2", "10")
    x = np.concatenate([ds.x_train, ds.x_test])[:, 0]
    y = np.concatenate([ds.y_train, ds.y_test])
    np.testing.assert_array_equal(y[np.argsort(x)], [2, 1, 0, 1, 2, 0])


def test_one_class_of_one_row_falls_back_to_a_plain_split(tmp_path: Path) -> None:
    rows = ["v,label"] + [f"{i},a" for i in range(9)] + ["9,rare"]
    ds = load_csv(csv_file(tmp_path, "\n".join(rows)))
    assert len(ds.y_train) == 8 and len(ds.y_test) == 2 and ds.num_classes == 2


def test_two_rows_is_enough(tmp_path: Path) -> None:
    ds = load_csv(csv_file(tmp_path, "a,label\n1,x\n2,y\n"))
    assert len(ds.y_train) == 1 and len(ds.y_test) == 1


BAD = {
    "empty file": ("", "empty file"),
    "blank header": ("\n\n", "empty file"),
    "header only": ("a,label\n", "0 data rows, need at least 2"),
    "one row": ("a,label\n1,x\n", "1 data rows, need at least 2"),
    "no label column": ("a,b\n1,2\n3,4\n", "no label column 'label'"),
    "no features": ("label\nx\ny\n", "no feature columns"),
    "duplicate column": ("a,a,label\n1,2,x\n3,4,y\n", "duplicate column 'a'"),
    "non-numeric": ("a,b,label\n1,2,x\n3,oops,y\n", "line 3, column 'b': 'oops' is not a number"),
    "empty feature": ("a,b,label\n1,,x\n3,4,y\n", "line 2, column 'b': '' is not a number"),
    "nan": ("a,b,label\n1,2,x\nnan,4,y\n", "line 3, column 'a': 'nan' is not finite"),
    "inf": ("a,b,label\n1,-inf,x\n3,4,y\n", "line 2, column 'b': '-inf' is not finite"),
    "float32 overflow": ("a,label\n1e39,x\n3,y\n", "line 2, column 'a': '1e39' overflows"),
    "ragged short": ("a,b,label\n1,2,x\n3,y\n", "line 3 has 2 fields, the header has 3"),
    "ragged long": ("a,b,label\n1,2,x,9\n3,4,y\n", "line 2 has 4 fields, the header has 3"),
    "empty label": ("a,label\n1,x\n2, \n", "line 3, column 'label': empty label"),
    "unterminated quote": ('a,label\n1,x\n"2,y\n', None),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_files(tmp_path: Path, case: str) -> None:
    text, message = BAD[case]
    path = csv_file(tmp_path, text)
    with pytest.raises(DataError) as info:
        load_csv(path)
    text_of = str(info.value)
    assert text_of.startswith(f"CSV file {path}: ") and "\n" not in text_of
    if message is not None:
        assert message in text_of


def test_missing_unreadable_and_binary_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_csv(tmp_path / "absent.csv")
    with pytest.raises(DataError, match="cannot read"):
        load_csv(tmp_path)
    binary = tmp_path / "b.csv"
    binary.write_bytes(b"a,label\n\xff\xfe,x\n")
    with pytest.raises(DataError, match="not UTF-8"):
        load_csv(binary)


def test_bad_arguments(tmp_path: Path) -> None:
    path = csv_file(tmp_path, good_text())
    with pytest.raises(ConfigError, match="label must be"):
        load_csv(path, label=" ")
    with pytest.raises(ConfigError, match="test_fraction"):
        load_csv(path, test_fraction=1.0)


# -------------------------------------------------------------------------- read_feature_csv

def test_read_feature_csv_with_and_without_labels(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "a,label,b\n1,2,3\n4,0,6\n")
    names, x, y = read_feature_csv(path, label="label")
    assert names == ["a", "b"] and x.dtype == np.float32
    np.testing.assert_array_equal(x, [[1, 3], [4, 6]])
    assert y is not None and y.dtype == np.int64
    np.testing.assert_array_equal(y, [2, 0])
    names, x, y = read_feature_csv(path)
    assert names == ["a", "label", "b"] and x.shape == (2, 3) and y is None
    names, x, y = read_feature_csv(path, label="absent")
    assert x.shape == (2, 3) and y is None
    _, x, _ = read_feature_csv(csv_file(tmp_path, "a\n5\n", "one.csv"))
    np.testing.assert_array_equal(x, [[5]])


@pytest.mark.parametrize(("text", "message"), [
    ("a,label\n", "no data rows"),
    ("", "empty file"),
    ("a,label\n1,cat\n", "line 2, column 'label': 'cat' is not an integer class index"),
    ("a,label\n1,-1\n", "class index -1 is negative"),
    ("a,label\nx,1\n", "line 2, column 'a': 'x' is not a number"),
    ("label\n1\n", "no feature columns"),
    ("a,,label\n1,2,3\n", "header column 2 has no name"),
])
def test_read_feature_csv_rejects(tmp_path: Path, text: str, message: str) -> None:
    path = csv_file(tmp_path, text)
    with pytest.raises(DataError) as info:
        read_feature_csv(path, label="label")
    assert str(info.value).startswith(f"CSV file {path}: ") and message in str(info.value)
