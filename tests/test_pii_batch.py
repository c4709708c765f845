"""Anonymizing files end to end (real analyzer, real worker processes): CSV, Parquet, JSONL,
plain text; whole-column detection; bad input leaves no output behind."""

from __future__ import annotations

import csv
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from privml._exceptions import ConfigError, DataError
from privml.anonymize.text._batch import anonymize_file
from privml.anonymize.text._engine import Anonymizer
from privml.anonymize.text._operators import AnonKey
from privml.anonymize.text._policy import Policy

KEY = AnonKey(bytes(range(32)))
OTHER = AnonKey(bytes(range(1, 33)))
PSEUDO = Policy.from_dict({"operators": {"default": "pseudonymize"}})

HEADER = ["id", "email", "notes", "amount"]


def rows(n: int, start: int = 0) -> list[list[str]]:
    return [[str(i), f"user{i}@corp.io",
             f"Ticket {i}: customer wrote from user{i}@corp.io about the invoice",
             f"{i * 1.25:.2f}"] for i in range(start, start + n)]


def write_csv(path, data, header=HEADER):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(data)


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def leftovers(folder, *keep):
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


def test_csv_round_trip_and_whole_column_detection(tmp_path):
    src, dst = tmp_path / "in.csv", tmp_path / "out.csv"
    data = rows(40)
    write_csv(src, data)
    summary = anonymize_file(src, dst, PSEUDO, key=KEY, workers=1)
    out = read_csv(dst)
    assert out[0] == HEADER and len(out) == 41
    assert summary.rows == 40 and summary.format == "csv"
    assert summary.columns["email"] == "EMAIL" and summary.columns["notes"] == "text"
    assert summary.entities["EMAIL"] == 80
    for before, after in zip(data, out[1:], strict=True):
        assert after[0] == before[0] and after[3] == before[3]  # non-PII values unchanged
        assert after[1] != before[1] and after[1].rsplit("@")[1].startswith("example.")
        assert before[1] not in after[2]
        assert after[1] in after[2]  # one value, one pseudonym, in both columns
    assert leftovers(tmp_path, "in.csv", "out.csv") == []


def test_pseudonyms_consistent_across_files_and_runs(tmp_path):
    write_csv(tmp_path / "a.csv", rows(10))
    write_csv(tmp_path / "b.csv", rows(10, start=5))
    anonymize_file(tmp_path / "a.csv", tmp_path / "a1.csv", PSEUDO, key=KEY, workers=1)
    anonymize_file(tmp_path / "b.csv", tmp_path / "b1.csv", PSEUDO, key=KEY, workers=1)
    anonymize_file(tmp_path / "a.csv", tmp_path / "a2.csv", PSEUDO, key=KEY, workers=1)
    anonymize_file(tmp_path / "a.csv", tmp_path / "a3.csv", PSEUDO, key=OTHER, workers=1)
    a1, b1 = read_csv(tmp_path / "a1.csv"), read_csv(tmp_path / "b1.csv")
    assert a1 == read_csv(tmp_path / "a2.csv")
    assert a1[6:] == b1[1:6]  # users 5..9 are in both files: the same surrogates
    a3 = read_csv(tmp_path / "a3.csv")
    assert all(x[1] != y[1] for x, y in zip(a1[1:], a3[1:], strict=True))


def test_parquet_round_trip(tmp_path):
    src, dst = tmp_path / "in.parquet", tmp_path / "out.parquet"
    table = pa.table({
        "id": pa.array(range(30), pa.int64()),
        "email": [f"user{i}@corp.io" for i in range(30)],
        "notes": [None if i % 7 == 0 else f"reach me at user{i}@corp.io" for i in range(30)],
        "score": pa.array([i / 3 for i in range(30)], pa.float32()),
        "secret": [f"s{i}" for i in range(30)],
    })
    pq.write_table(table, src)
    policy = Policy.from_dict({"operators": {"default": "encrypt"},
                               "columns": {"secret": "drop"}})
    summary = anonymize_file(src, dst, policy, key=KEY, chunk_rows=8, workers=1)
    out = pq.read_table(dst)
    assert out.column_names == ["id", "email", "notes", "score"]
    assert out.schema.field("score").type == pa.float32()
    assert out.column("id").equals(table.column("id"))
    assert out.column("score").equals(table.column("score"))
    assert summary.columns == {"id": "keep", "email": "EMAIL", "notes": "text",
                               "score": "keep", "secret": "drop"}
    notes = out.column("notes").to_pylist()
    assert [n is None for n in notes] == [i % 7 == 0 for i in range(30)]
    emails = out.column("email").to_pylist()
    assert all(e.startswith("⟦ENC:EMAIL:") for e in emails)
    from privml.anonymize.text._engine import deanonymize_text
    assert [deanonymize_text(e, KEY).text for e in emails] == table.column("email").to_pylist()


def test_jsonl_round_trip(tmp_path):
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    objs = [{"id": i, "user": {"tier": "gold"}, "email": f"user{i}@corp.io",
             "body": f"Please write to user{i}@corp.io today", "ok": True} for i in range(12)]
    src.write_text("".join(json.dumps(o) + "\n" for o in objs), encoding="utf-8")
    summary = anonymize_file(src, dst, None, workers=1)  # the built-in policy needs no key
    out = [json.loads(line) for line in dst.read_text(encoding="utf-8").splitlines()]
    assert len(out) == 12 and summary.rows == 12
    for before, after in zip(objs, out, strict=True):
        assert {k: after[k] for k in ("id", "user", "ok")} \
            == {k: before[k] for k in ("id", "user", "ok")}
        assert after["email"] == "<EMAIL>"
        assert after["body"] == "Please write to <EMAIL> today"


def test_jsonl_keys_first_seen_in_a_later_chunk_are_free_text(tmp_path):
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    objs = [{"id": i} for i in range(4)] + [{"id": 4, "late": "ask ann9@corp.io"}]
    src.write_text("".join(json.dumps(o) + "\n" for o in objs), encoding="utf-8")
    summary = anonymize_file(src, dst, None, chunk_rows=2, workers=1)
    assert summary.columns == {"id": "keep", "late": "text"}
    assert json.loads(dst.read_text().splitlines()[-1]) == {"id": 4, "late": "ask <EMAIL>"}


def test_txt_one_document_per_line(tmp_path):
    src, dst = tmp_path / "in.txt", tmp_path / "out.txt"
    src.write_text("first line, nothing here\nmail bob7@corp.io now\n\nlast line\n")
    summary = anonymize_file(src, dst, None, workers=1)
    assert dst.read_text() == "first line, nothing here\nmail <EMAIL> now\n\nlast line\n"
    assert summary.rows == 4 and summary.documents == 3 and summary.entities == {"EMAIL": 1}


def test_policy_columns_override_detection(tmp_path):
    src, dst = tmp_path / "in.csv", tmp_path / "out.csv"
    data = rows(10)
    write_csv(src, data)
    policy = Policy.from_dict({"columns": {"email": "keep", "notes": "drop", "id": "EMAIL"}})
    summary = anonymize_file(src, dst, policy, workers=1)
    out = read_csv(dst)
    assert out[0] == ["id", "email", "amount"]
    assert [r[1] for r in out[1:]] == [r[1] for r in data]
    assert all(r[0] == "<EMAIL>" for r in out[1:])
    assert summary.columns["id"] == "EMAIL"


def test_text_columns_limit_free_text(tmp_path):
    src, dst = tmp_path / "in.csv", tmp_path / "out.csv"
    write_csv(src, rows(10))
    summary = anonymize_file(src, dst, None, text_columns=["notes"], workers=1)
    assert summary.columns == {"id": "keep", "email": "EMAIL", "notes": "text",
                               "amount": "keep"}
    assert summary.documents == 10


def test_malformed_csv_names_the_row_and_leaves_nothing(tmp_path):
    src, dst = tmp_path / "in.csv", tmp_path / "out.csv"
    write_csv(src, rows(5))
    with open(src, "a", encoding="utf-8") as f:
        f.write("5,user5@corp.io,an extra field,1.0,oops\n")
    for workers in (1, 2):
        with pytest.raises(DataError, match=r"row 6 \(line 7\) has 5 fields; the header has 4"):
            anonymize_file(src, dst, None, chunk_rows=2, workers=workers)
        assert leftovers(tmp_path, "in.csv") == []


@pytest.mark.parametrize(("name", "content", "error", "match"), [
    ("in.xlsx", "x", ConfigError, "unknown file type '.xlsx'"),
    ("in.jsonl", '{"a": "x"}\n{"a": \n', DataError, "line 2 is not valid JSON"),
    ("in.jsonl", '{"a": "x"}\n[1, 2]\n', DataError, "line 2 is not a JSON object"),
    ("in.csv", "", DataError, "empty"),
    ("in.csv", "a,a\n1,2\n", DataError, "repeats the column"),
    ("in.parquet", "not parquet", DataError, "not a readable Parquet file"),
    ("in.txt", b"\xff\xfe\xfa", DataError, "not UTF-8"),
])
def test_bad_input_is_refused_and_leaves_nothing(tmp_path, name, content, error, match):
    src = tmp_path / name
    if isinstance(content, bytes):
        src.write_bytes(content)
    else:
        src.write_text(content)
    with pytest.raises(error, match=match):
        anonymize_file(src, tmp_path / ("out" + src.suffix), None, workers=1)
    assert leftovers(tmp_path, name) == []


def test_usage_errors(tmp_path):
    src = tmp_path / "in.csv"
    write_csv(src, rows(3))
    with pytest.raises(DataError, match="no such file"):
        anonymize_file(tmp_path / "missing.csv", tmp_path / "out.csv")
    with pytest.raises(ConfigError, match="input's format"):
        anonymize_file(src, tmp_path / "out.parquet")
    with pytest.raises(ConfigError, match="overwrite the input"):
        anonymize_file(src, src)
    with pytest.raises(ConfigError, match=r"needs? a key"):
        anonymize_file(src, tmp_path / "out.csv", PSEUDO)
    with pytest.raises(ConfigError, match="'ssn'"):
        anonymize_file(src, tmp_path / "out.csv", Policy.from_dict({"columns": {"ssn": "drop"}}))
    with pytest.raises(ConfigError, match="text_columns"):
        anonymize_file(src, tmp_path / "out.csv", text_columns=["body"])
    assert leftovers(tmp_path, "in.csv") == []


def test_thousands_of_rows_on_two_workers(tmp_path):
    src = tmp_path / "big.csv"
    write_csv(src, rows(3000))
    seen: list[int] = []
    two = anonymize_file(src, tmp_path / "two.csv", PSEUDO, key=KEY, chunk_rows=250,
                         workers=2, progress=seen.append)
    assert seen == list(range(250, 3001, 250))
    assert two.rows == 3000 and two.entities["EMAIL"] == 6000
    # same output as in one process, in the same order
    one = anonymize_file(src, tmp_path / "one.csv", PSEUDO, key=KEY, chunk_rows=1000,
                         workers=1)
    assert one == two
    assert read_csv(tmp_path / "two.csv") == read_csv(tmp_path / "one.csv")


def test_anonymizer_end_to_end_with_custom_recognizers():
    from privml.anonymize.text._analyzer import ENTITIES
    from privml.anonymize.text._policy import BUILTIN_ENTITIES

    assert BUILTIN_ENTITIES == ENTITIES  # the policy checks names against the analyzer's list
    text = ("Write to Jane Doe at jane.doe@corp.io or call (212) 555-7788; card 4111 1111 "
            "1111 1111, SSN 123-45-6789, IBAN DE89 3704 0044 0532 0130 00, from 10.1.2.3, "
            "staff EMP-123456 on project Bluebird in Boston.")
    policy = Policy.from_yaml(r"""
recognizers:
  - entity: EMPLOYEE_ID
    regex: 'EMP-\d{6}'
  - entity: PROJECT
    deny_list: [bluebird]
    ignore_case: true
operators:
  default: pseudonymize
  PROJECT: redact
  US_SSN: {type: hash, length: 12}
""")
    anon = Anonymizer(policy, KEY)
    found = {text[s.start:s.end]: s.entity for s in anon.analyze(text)}
    assert found["EMP-123456"] == "EMPLOYEE_ID" and found["Bluebird"] == "PROJECT"
    result = anon.run(text)
    assert result.text == anon.run(text).text
    for value in found:
        assert value not in result.text
    assert set(result.counts()) == set(found.values())
    assert "project  in" in result.text  # redacted


def test_anonymizer_run():
    result = Anonymizer(PSEUDO, KEY).run("Contact: user1@corp.io.")
    assert "user1@corp.io" not in result.text and result.counts() == {"EMAIL": 1}
    with pytest.raises(ConfigError, match="need a key"):
        Anonymizer(PSEUDO, None)
