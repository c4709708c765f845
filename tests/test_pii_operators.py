"""PII operators, keys, surrogates, policies and the text engine (on hand-made spans)."""

from __future__ import annotations

import base64
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from privml._exceptions import ConfigError, IntegrityError
from privml.anonymize.text._engine import anonymize_text, deanonymize_text
from privml.anonymize.text._operators import (
    ENV_KEY,
    TOKEN_RE,
    AnonKey,
    Encrypt,
    Hash,
    Mask,
    Pseudonymize,
    Redact,
    Replace,
    operator_from_spec,
)
from privml.anonymize.text._policy import BUILTIN_ENTITIES, Policy
from privml.anonymize.text._span import Span
from privml.anonymize.text._surrogates import iban_check_digits, luhn_check_digit, surrogate

KEY = AnonKey(bytes(range(32)))
OTHER = AnonKey(bytes(range(1, 33)))

TEXT = ("Write to Jane Doe at jane.doe@corp.io or call (212) 555-7788; "
        "card 4111 1111 1111 1234, SSN 123-45-6789.")


def spans_of(text: str, **values: str) -> list[Span]:
    out = []
    for entity, value in values.items():
        start = text.index(value)
        out.append(Span(start, start + len(value), entity, 0.9))
    return out


SPANS = spans_of(TEXT, PERSON="Jane Doe", EMAIL="jane.doe@corp.io", PHONE="(212) 555-7788",
                 CREDIT_CARD="4111 1111 1111 1234", US_SSN="123-45-6789")
ORIGINALS = ["Jane Doe", "jane.doe@corp.io", "(212) 555-7788", "4111 1111 1111 1234",
             "123-45-6789"]


def policy(**ops: object) -> Policy:
    default = ops.pop("default", "replace")
    return Policy.from_dict({"operators": {"default": default, **ops}})


# ---- keys -----------------------------------------------------------------------------------

def test_key_sources_and_secrecy(tmp_path, monkeypatch):
    raw = bytes(range(32))
    b64 = base64.b64encode(raw).decode()
    (tmp_path / "raw.key").write_bytes(raw)
    (tmp_path / "b64.key").write_text(b64 + "\n")
    for key in (AnonKey.from_file(tmp_path / "raw.key"), AnonKey.from_file(tmp_path / "b64.key")):
        assert Hash().apply("x", "EMAIL", key) == Hash().apply("x", "EMAIL", KEY)
    monkeypatch.setenv(ENV_KEY, b64)
    assert AnonKey.from_env().to_base64() == b64
    monkeypatch.delenv(ENV_KEY)
    assert AnonKey.from_env() is None
    assert b64 not in repr(KEY) and raw.hex() not in repr(KEY)
    (tmp_path / "short.key").write_text("c2hvcnQ=")
    with pytest.raises(ConfigError, match="32 random bytes"):
        AnonKey.from_file(tmp_path / "short.key")
    with pytest.raises(ConfigError, match="cannot read"):
        AnonKey.from_file(tmp_path / "missing.key")


def test_subkeys_are_separate():
    # the hash of a value says nothing of its pseudonym or ciphertext: distinct HKDF subkeys
    assert len({KEY._hash, KEY._pseudo, KEY._enc[:32], KEY._enc[32:]}) == 4


# ---- operators ------------------------------------------------------------------------------

@pytest.mark.parametrize("op", [Hash(), Pseudonymize(), Encrypt()])
def test_keyed_operators_refuse_to_run_without_a_key(op):
    with pytest.raises(ConfigError, match="needs a key"):
        op.apply("jane@corp.io", "EMAIL", None)
    with pytest.raises(ConfigError, match="needs a key"):
        anonymize_text(TEXT, SPANS, policy(default={"type": op.name}))


def test_hash_is_keyed_hmac_and_truncates():
    full = Hash().apply("123-45-6789", "US_SSN", KEY)
    assert re.fullmatch(r"[0-9a-f]{64}", full)
    assert Hash(length=16).apply("123-45-6789", "US_SSN", KEY) == full[:16]
    assert Hash().apply("123-45-6789", "US_SSN", OTHER) != full
    import hashlib
    assert full != hashlib.sha256(b"123-45-6789").hexdigest()
    with pytest.raises(ConfigError, match="length"):
        Hash(length=4)


def test_mask_keeps_the_last_n():
    assert Mask(keep_last=4).apply("4111 1111 1111 1234", "CREDIT_CARD", None) \
        == "**** **** **** 1234"
    assert Mask(keep_last=2, char="#", keep_separators=False).apply("555-0123", "PHONE", None) \
        == "######23"
    assert Mask(keep_last=0).apply("abc", "X", None) == "***"
    # never more than half shown: a short value is never revealed whole
    assert Mask(keep_last=10).apply("1234", "X", None) == "**34"
    with pytest.raises(ConfigError, match="char"):
        Mask(char="**")


@given(st.text(min_size=1, max_size=40), st.integers(0, 8))
def test_mask_property(value, n):
    out = Mask(keep_last=n, keep_separators=False).apply(value, "X", None)
    assert len(out) == len(value)
    kept = min(n, (len(value) + 1) // 2)
    assert out[len(value) - kept:] == value[len(value) - kept:]
    assert set(out[: len(value) - kept]) <= {"*"}


def test_replace_and_redact():
    result = anonymize_text(TEXT, SPANS, policy(default="redact", EMAIL={"type": "replace"},
                                                PHONE={"type": "replace", "value": "[tel]"}))
    assert "<EMAIL>" in result.text and "[tel]" in result.text
    for original in ORIGINALS:
        assert original not in result.text


@given(st.lists(st.sampled_from(["Jane", "Doe", "555", "x"]), min_size=1, max_size=6))
def test_redaction_leaves_no_original_substring(words):
    text = " and ".join(words) + "."
    spans, pos = [], 0
    for w in words:
        start = text.index(w, pos)
        spans.append(Span(start, start + len(w), "PERSON", 0.9))
        pos = start + len(w)
    out = anonymize_text(text, spans, policy(default="redact")).text
    for w in words:
        assert w not in out


def test_offsets_of_items_are_right():
    result = anonymize_text(TEXT, SPANS, policy(default="pseudonymize", US_SSN="redact",
                                                CREDIT_CARD="mask"), KEY)
    assert [i.entity for i in result.items] == ["PERSON", "EMAIL", "PHONE", "CREDIT_CARD",
                                                "US_SSN"]
    p = policy(default="pseudonymize", US_SSN="redact", CREDIT_CARD="mask")
    prev_old = prev_new = 0
    for item, span in zip(result.items, SPANS, strict=True):
        assert (item.start, item.end) == (span.start, span.end)
        value = TEXT[span.start:span.end]
        assert result.text[item.new_start:item.new_end] \
            == p.operator_for(span.entity).apply(value, span.entity, KEY)
        # the text between two replacements is untouched
        assert result.text[prev_new:item.new_start] == TEXT[prev_old:item.start]
        prev_old, prev_new = item.end, item.new_end
    assert result.counts() == {e: 1 for e in ["PERSON", "EMAIL", "PHONE", "CREDIT_CARD",
                                              "US_SSN"]}
    assert result.text.endswith(", SSN .")


def test_overlapping_and_bad_spans():
    text = "call 555-0123 now"
    spans = [Span(5, 13, "PHONE", 0.9), Span(9, 13, "US_SSN", 0.5)]
    assert anonymize_text(text, spans, policy()).text == "call <PHONE> now"
    with pytest.raises(ConfigError, match="outside"):
        anonymize_text(text, [Span(5, 40, "PHONE", 0.9)], policy())


# ---- pseudonyms -----------------------------------------------------------------------------

def test_pseudonyms_consistent_and_keyed():
    p = policy(default="pseudonymize")
    a, b = anonymize_text(TEXT, SPANS, p, KEY), anonymize_text(TEXT, SPANS, p, KEY)
    assert a.text == b.text
    assert anonymize_text(TEXT, SPANS, p, OTHER).text != a.text
    for original in ORIGINALS:
        assert original not in a.text
    # spelling variants of one value share a surrogate
    assert surrogate("PHONE", "(212) 555-7788", KEY._pseudo) \
        == surrogate("PHONE", "(212)555-7788", KEY._pseudo)
    assert surrogate("EMAIL", "Jane.Doe@Corp.io", KEY._pseudo) \
        == surrogate("EMAIL", "jane.doe@corp.io", KEY._pseudo)


def _luhn_ok(number: str) -> bool:
    return luhn_check_digit(number[:-1]) == number[-1]


def test_surrogates_are_realistic_and_harmless():
    k = KEY._pseudo
    for i in range(30):
        email = surrogate("EMAIL", f"user{i}@corp.io", k)
        assert re.fullmatch(r"[a-z]+[._]?[a-z]+@example\.(com|org|net)", email)
        phone = surrogate("PHONE", f"(212) 555-77{i:02d}", k)
        assert re.fullmatch(r"\(\d{3}\) 555-01\d\d", phone)
        card = surrogate("CREDIT_CARD", f"4111 1111 1111 12{i:02d}", k)
        assert re.fullmatch(r"\d{4} \d{4} \d{4} \d{4}", card) and _luhn_ok(card.replace(" ", ""))
        iban = surrogate("IBAN", "DE89370400440532013000", k)
        assert iban[:2] == "DE" and len(iban) == 22
        assert iban_check_digits(iban[:2], iban[4:]) == iban[2:4]
        ssn = surrogate("US_SSN", f"123-45-67{i:02d}", k)
        assert re.fullmatch(r"9\d\d-(0[1-9]|[1-4]\d)-\d{4}", ssn)
        ip = surrogate("IP", f"10.0.0.{i}", k)
        assert ip.startswith(("192.0.2.", "198.51.100.", "203.0.113."))
        mac = surrogate("MAC", "00:1a:2b:3c:4d:5e", k)
        assert int(mac[:2], 16) & 0b11 == 0b10  # locally administered, unicast
    assert len(surrogate("PERSON", "Jane Doe", k).split()) == 2
    assert surrogate("LOCATION", "Paris", k).isascii()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d", surrogate("DATE", "2021-03-04", k))
    assert re.fullmatch(r"[A-Z][a-z]+ \d{1,2}, \d{4}",
                        surrogate("DATE_OF_BIRTH", "March 3, 1990", k))
    assert re.fullmatch(r"[A-Z]{3}-\d{6}", surrogate("EMPLOYEE_ID", "EMP-123456", k))
    assert iban_check_digits("GB", "WEST12345698765432") == "82"  # a published example IBAN


# ---- encryption -----------------------------------------------------------------------------

def test_encrypt_decrypt_round_trip():
    p = policy(default="encrypt")
    result = anonymize_text(TEXT, SPANS, p, KEY)
    assert len(TOKEN_RE.findall(result.text)) == 5
    for original in ORIGINALS:
        assert original not in result.text
    assert anonymize_text(TEXT, SPANS, p, KEY).text == result.text  # deterministic
    back = deanonymize_text(result.text, KEY)
    assert back.text == TEXT
    assert [(i.new_start, i.new_end) for i in back.items] == [(s.start, s.end) for s in SPANS]


def test_decrypt_refuses_wrong_key_and_edited_tokens():
    token = Encrypt().apply("jane@corp.io", "EMAIL", KEY)
    with pytest.raises(IntegrityError):
        deanonymize_text(f"x {token} y", OTHER)
    _, payload = TOKEN_RE.fullmatch(token).groups()
    with pytest.raises(IntegrityError):  # moved to another type: the type is authenticated
        deanonymize_text(f"⟦ENC:PERSON:{payload}⟧", KEY)
    edited = payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB")
    with pytest.raises(IntegrityError):
        deanonymize_text(f"⟦ENC:EMAIL:{edited}⟧", KEY)
    with pytest.raises(ConfigError, match="needs a key"):
        deanonymize_text(token, None)


# ---- policies -------------------------------------------------------------------------------

def test_builtin_policy_is_the_shipped_example():
    p = Policy.builtin()
    assert not p.needs_key
    assert p.entities is None and p.regions == ("US", "GB", "DE", "FR")
    assert isinstance(p.operator_for("CREDIT_CARD"), Mask)
    assert isinstance(p.operator_for("US_SSN"), Redact)
    assert isinstance(p.operator_for("EMAIL"), Replace)
    assert Policy.from_dict(p.to_dict()) == p


def test_policy_from_file_and_round_trip(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text("""
entities: [EMAIL, EMPLOYEE_ID]
regions: [US]
threshold: 0.4
recognizers:
  - entity: EMPLOYEE_ID
    regex: 'EMP-\\d{6}'
    context: [employee]
operators:
  default: {type: hash, length: 16}
  EMAIL: pseudonymize
  EMPLOYEE_ID: {type: mask, keep_last: 2, char: "#"}
columns:
  notes: text
  email: EMAIL
  id: keep
  ssn: drop
""")
    for p in (Policy.from_yaml(path), Policy.from_yaml(str(path))):
        assert p.entities == ("EMAIL", "EMPLOYEE_ID") and p.needs_key
        assert p.recognizers[0].regex == r"EMP-\d{6}"
        assert p.operator_for("PHONE") == Hash(length=16)
        assert p.operator_for("EMPLOYEE_ID") == Mask(keep_last=2, char="#")
        assert dict(p.columns) == {"notes": "text", "email": "EMAIL", "id": "keep",
                                   "ssn": "drop"}
        assert Policy.from_dict(p.to_dict()) == p
        p.check_columns(["notes", "email", "id", "ssn", "other"])
        with pytest.raises(ConfigError, match="'ssn'"):
            p.check_columns(["notes", "email", "id"])


@pytest.mark.parametrize(("text", "where"), [
    ("entities: [EMAIL]\ncolour: red\n", r"line 2: colour: unknown key 'colour'"),
    ("operators:\n  default: replace\n  EMAIL: shred\n", r"line 3: operators\.EMAIL"
                                                         r"\.type: unknown operator 'shred'"),
    ("operators:\n  PHONE: {type: mask, keep_lst: 2}\n",
     r"line 2: operators\.PHONE\.keep_lst: unknown key 'keep_lst'"),
    ("operators:\n  PHONE: {type: mask, keep_last: -1}\n", r"line 2: operators\.PHONE:.*"
                                                            r"keep_last"),
    ("entities:\n  - EMAIL\n  - PASSPORT\n", r"line 3: entities\.1: unknown entity 'PASSPORT'"),
    ("operators:\n  PASSPORT: redact\n", r"line 2: operators\.PASSPORT: unknown entity"),
    ("columns:\n  notes: text\n  ssn: shred\n", r"line 3: columns\.ssn: column 'ssn'"),
    ("regions: [US, XX]\n", r"regions\.1: unknown region 'XX'"),
    ("recognizers:\n  - entity: EMP\n    regex: '(EMP'\n", r"line 3: recognizers\.0\.regex"),
    ("recognizers:\n  - entity: EMP\n", r"line 2: recognizers\.0: .*regex or a deny_list"),
    ("recognizers:\n  - entity: emp\n    regex: x\n", r"recognizers\.0\.entity"),
    ("threshold: high\n", r"threshold: must be a number"),
    ("entities: [EMAIL\n", r"line \d+: not valid YAML"),
    ("- just\n- a list\n", r"must be a mapping"),
])
def test_policy_errors_name_the_key_and_line(text, where):
    with pytest.raises(ConfigError, match=where):
        Policy.from_yaml(text)


def test_policy_file_that_does_not_exist():
    with pytest.raises(ConfigError, match="no such policy file"):
        Policy.from_yaml("nowhere/policy.yaml")


def test_policy_yaml_is_safe_loaded():
    with pytest.raises(ConfigError, match="not valid YAML"):
        Policy.from_yaml("operators: !!python/object/apply:os.system ['true']\n")


def test_operator_specs():
    assert operator_from_spec("mask") == Mask()
    assert operator_from_spec({"type": "replace", "value": "X"}) == Replace("X")
    with pytest.raises(ConfigError, match="unknown operator"):
        operator_from_spec({"value": "X"})
    assert set(BUILTIN_ENTITIES) >= {"EMAIL", "PHONE", "PERSON", "STREET_ADDRESS"}
