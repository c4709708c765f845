"""The validators of the pattern entities: each turns a regex match into a hit, or None.

A validator gets the text, the match and the scanner (for the phone regions and whether
DATE_OF_BIRTH is wanted) and applies the checksum, range or context rule of its entity; the
regex alternatives that feed them live in :mod:`privml.anonymize.text._patterns`.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Protocol

from privml.anonymize.text._validators import (
    IBAN_LENGTHS,
    card_brand,
    date_ok,
    iban_ok,
    luhn_ok,
    ssn_ok,
)
from privml.anonymize.text._words import MONTHS

__all__ = [
    "Hit",
    "Scanner",
    "card",
    "date_day_month",
    "date_iso",
    "date_month_day",
    "date_month_year",
    "date_num",
    "date_words",
    "email",
    "iban",
    "ipv4",
    "ipv6",
    "mac",
    "phone",
    "ssn",
    "street",
    "url",
]

# (start, end, entity, score)
Hit = tuple[int, int, str, float]


class Scanner(Protocol):
    """What a validator asks of the scanner that calls it."""

    dob: bool

    def phone_valid(self, candidate: str) -> bool: ...


_FILE_EXTENSIONS = (
    "png jpg jpeg gif svg webp bmp ico tif tiff pdf txt js css html htm json xml yaml yml "
    "gz tar exe dll py mp3 mp4 wav doc docx xls xlsx csv md log"
)
_FILE_TLDS = frozenset(_FILE_EXTENSIONS.split())
_VERSION_CTX = re.compile(
    r"(?:\bv|\bversion|\bver\.?|\brelease|\brel\.?|\bbuild|\brev\.?|\bupdate|\bpatch|"
    r"\bfirmware|\bfw|\bkernel|\bbios|\bdriver)\s*$",
    re.IGNORECASE,
)
_SSN_CTX = re.compile(r"\b(?:ssn|social security|social sec)", re.IGNORECASE)
_BIRTH_CTX = re.compile(
    r"\b(?:born|dob|d\.o\.b|date of birth|birth ?date|birthday|b\.)", re.IGNORECASE
)
_BIRTH_HINTS = ("birth", "born", "b.", "dob", "d.o.b")
_BIRTH_GAP_BREAK = re.compile(r"[\d.;()!?]|\band\b|\bbut\b")
_NUM_RE = re.compile(r"\d+")
_EXTENSION = re.compile(r"\s*(?:x|ext\.?|extension)\s*\d{1,6}$", re.IGNORECASE)
_SSN_SHAPE = re.compile(r"\d{3}[- ]\d\d[- ]\d{4}")
_WORD_RE = re.compile("[A-Za-z]+")
_DATE_CUE = re.compile(
    r"(?i:\b(?:on|by|until|till|since|before|after|from|to|through|due|between|and|dated?|"
    r"next|last|every|(?:mon|tues|wednes|thurs|fri|satur|sun)day),?)\s+$"
)
_DAY_BEFORE = re.compile(r"\d(?:st|nd|rd|th)?(?:\s+of)?,?\s+$")
_COUNTED = re.compile(
    r"(?i:\b(?:section|sec|page|pp?|chapter|ch|figure|fig|table|item|step|no|number|part|"
    r"vol|volume|issue|room|level|grade|class|top|rule|article|art|season|episode)\.?)\s+$"
)
_URL_TRAIL = ".,;:!?'\")]}>"


def _cut(text: str, m: re.Match[str]) -> tuple[int, int]:
    return m.start(), m.end()


# ---- validators ---------------------------------------------------------------------------


def email(text: str, m: re.Match[str], _: Scanner) -> Hit | None:
    s, e = _cut(text, m)
    value = text[s:e]
    local, _sep, domain = value.partition("@")
    if ".." in local or local.endswith(".") or domain.rsplit(".", 1)[-1].lower() in _FILE_TLDS:
        return None
    return s, e, "EMAIL", 0.95


def url(text: str, m: re.Match[str], _: Scanner) -> Hit | None:
    s, e = _cut(text, m)
    while e > s and text[e - 1] in _URL_TRAIL:
        if text[e - 1] == ")" and text.count("(", s, e) >= text.count(")", s, e):
            break
        e -= 1
    if e - s < 8 or "." not in text[s:e]:
        return None
    return s, e, "URL", 0.9


def iban(text: str, m: re.Match[str], _: Scanner) -> Hit | None:
    s, e = _cut(text, m)
    want = IBAN_LENGTHS.get(text[s : s + 2])
    if want is None:
        return None
    count = 0
    for i in range(s, e):  # cut the candidate after the country's number of characters
        if text[i] != " ":
            count += 1
            if count == want:
                e = i + 1
                break
    else:
        return None
    if e < len(text) and text[e].isalnum():
        return None
    return (s, e, "IBAN", 1.0) if iban_ok(text[s:e].replace(" ", "")) else None


def card(text: str, m: re.Match[str], _: Scanner) -> Hit | None:
    s, e = _cut(text, m)
    digits = text[s:e].replace(" ", "").replace("-", "")
    if card_brand(digits) is None or not luhn_ok(digits):
        return None
    return s, e, "CREDIT_CARD", 1.0


def ssn(text: str, m: re.Match[str], _: Scanner) -> Hit | None:
    s, e = _cut(text, m)
    digits = text[s:e].replace("-", "").replace(" ", "")
    if not ssn_ok(digits[:3], digits[3:5], digits[5:]):
        return None
    ctx = _SSN_CTX.search(text, max(0, s - 40), s) is not None
    if e - s == 9 and not ctx:  # nine bare digits are an SSN only when the text says so
        return None
    return s, e, "US_SSN", 0.95 if ctx else 0.85


def _versioned(text: str, s: int) -> bool:
    return _VERSION_CTX.search(text, max(0, s - 12), s) is not None


def ipv4(text: str, m: re.Match[str], _: Scanner) -> Hit | None:
    s, e = _cut(text, m)
    try:
        ipaddress.IPv4Address(text[s:e])
    except ValueError:
        return None
    return None if _versioned(text, s) else (s, e, "IP", 0.95)


def ipv6(text: str, m: re.Match[str], _: Scanner) -> Hit | None:
    s, e = _cut(text, m)
    value = text[s:e]
    if value.count(":") < 2:
        return None
    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        return None
    return s, e, "IP", 0.95


def mac(text: str, m: re.Match[str], _: Scanner) -> Hit | None:
    s, e = _cut(text, m)
    return s, e, "MAC", 0.9


def _dated(text: str, s: int, e: int, score: float, scanner: Scanner) -> Hit:
    window = text[max(0, s - 40) : s].lower()
    if scanner.dob and any(w in window for w in _BIRTH_HINTS):
        found = list(_BIRTH_CTX.finditer(text, max(0, s - 40), s))
        # the birth word must govern this date: no other number or clause between them
        if found and not _BIRTH_GAP_BREAK.search(text, found[-1].end(), s):
            return s, e, "DATE_OF_BIRTH", min(1.0, score + 0.1)
    return s, e, "DATE", score


def date_iso(text: str, m: re.Match[str], scanner: Scanner) -> Hit | None:
    s, e = _cut(text, m)
    y, mo, d = (int(x) for x in _NUM_RE.findall(text, s, e)[:3])
    return _dated(text, s, e, 0.85, scanner) if date_ok(y, mo, d) else None


def date_num(text: str, m: re.Match[str], scanner: Scanner) -> Hit | None:
    s, e = _cut(text, m)
    parts = _NUM_RE.findall(text, s, e)
    a, b, y = int(parts[0]), int(parts[1]), int(parts[2])
    if len(parts[2]) == 2 and (len(parts[0]) != 2 or len(parts[1]) != 2) and "/" not in m[0]:
        return None  # "1.2.34" reads as a version, not a date
    if not (date_ok(y, b, a) or date_ok(y, a, b)) or _versioned(text, s):
        return None
    return _dated(text, s, e, 0.75, scanner)


def date_words(text: str, m: re.Match[str], scanner: Scanner) -> Hit | None:
    s, e = _cut(text, m)
    nums = _NUM_RE.findall(text, s, e)
    month = next(w for w in re.findall(r"[A-Za-z]+", text[s:e]) if w.lower() in MONTHS)
    ok = date_ok(int(nums[-1]), MONTHS[month.lower()], int(nums[0]))
    return _dated(text, s, e, 0.85, scanner) if ok else None


def date_month_year(text: str, m: re.Match[str], scanner: Scanner) -> Hit | None:
    """"March 1985", "Sept. 2021": a capitalised month and a year of the last two
    centuries or the next one (a count or a model number is rarely in that range)."""
    s, e = _cut(text, m)
    if _DAY_BEFORE.search(text, max(0, s - 12), s):
        return None  # the rest of a day-month-year date that failed its calendar check
    year = int(_NUM_RE.findall(text, s, e)[-1])
    return _dated(text, s, e, 0.7, scanner) if 1900 <= year <= 2099 else None


def _day_month(text: str, m: re.Match[str], month_first: bool) -> tuple[int, int] | None:
    s, e = _cut(text, m)
    month = next(w for w in _WORD_RE.findall(text, s, e) if w.lower() in MONTHS)
    day = int(_NUM_RE.findall(text, s, e)[-1 if month_first else 0])
    return (s, e) if date_ok(2000, MONTHS[month.lower()], day) else None


def date_day_month(text: str, m: re.Match[str], scanner: Scanner) -> Hit | None:
    """"3 March", "21st of Dec": a day and a capitalised month, without a year."""
    found = _day_month(text, m, month_first=False)
    if found is not None and (
        _COUNTED.search(text, max(0, found[0] - 12), found[0])
        or (" of" in m[0] and m[0][0].isdigit() and m[0][m[0].index(" of") - 1].isdigit())
    ):
        return None  # "section 3 March", "2 of June": a count, not a day
    return None if found is None else _dated(text, *found, 0.65, scanner)


def date_month_day(text: str, m: re.Match[str], scanner: Scanner) -> Hit | None:
    """"March 3rd", "on May 5": a month and a day, without a year. Month names double as
    given names and verbs, so a bare number after one needs an ordinal suffix or a word
    that introduces a date before it ("on", "until", "Tuesday,")."""
    found = _day_month(text, m, month_first=True)
    if found is None:
        return None
    s, e = found
    if not text[e - 1].isalpha() and _DATE_CUE.search(text, max(0, s - 16), s) is None:
        return None
    return _dated(text, s, e, 0.65, scanner)


def phone(text: str, m: re.Match[str], scanner: Scanner) -> Hit | None:
    s, e = _cut(text, m)
    candidate = text[s:e]
    if _SSN_SHAPE.fullmatch(candidate):
        return None  # 3-2-4 digits is the shape of an SSN, never of a phone number
    number = _EXTENSION.sub("", candidate)
    n = sum(ch.isdigit() for ch in number)
    if not 7 <= n <= 15 or _versioned(text, s) or not scanner.phone_valid(number):
        return None
    return s, e, "PHONE", 0.85 if candidate[0] == "+" else 0.75


def street(text: str, m: re.Match[str], _: Scanner) -> Hit | None:
    s, e = _cut(text, m)
    while e > s and text[e - 1] in ", ":
        e -= 1
    return s, e, "STREET_ADDRESS", 0.8

