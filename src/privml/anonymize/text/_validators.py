"""Checksums and range rules that turn a regex candidate into a finding.

Pure functions of a string: each answers whether a candidate is a plausible value of its
kind. They are deliberately strict — a recognizer reports what passes, so a false "yes" here
is a false positive downstream.
"""

from __future__ import annotations

import functools

import phonenumbers

__all__ = [
    "IBAN_LENGTHS",
    "card_brand",
    "date_ok",
    "iban_ok",
    "luhn_ok",
    "phone_ok",
    "phone_plausible",
    "ssn_ok",
]

# ---- payment cards ------------------------------------------------------------------------

# (brand, lowest prefix, highest prefix, allowed lengths). Prefixes of equal width are
# compared numerically; the first row that matches wins, so narrower ranges come first.
# Sources: the ISO/IEC 7812 IIN ranges as the card schemes publish them (Visa, Mastercard
# incl. the 2-series since 2017, Amex, Discover incl. its UnionPay co-branded 622126-622925,
# JCB, Maestro, UnionPay, Diners Club, Mir).
_IIN_TABLE: tuple[tuple[str, str, str, frozenset[int]], ...] = (
    ("discover", "622126", "622925", frozenset(range(16, 20))),
    ("maestro", "676770", "676774", frozenset(range(12, 20))),
    ("discover", "6011", "6011", frozenset(range(16, 20))),
    ("mastercard", "2221", "2720", frozenset({16})),
    ("mir", "2200", "2204", frozenset(range(16, 20))),
    ("jcb", "3528", "3589", frozenset(range(16, 20))),
    ("diners", "3095", "3095", frozenset(range(14, 20))),
    ("maestro", "5018", "5018", frozenset(range(12, 20))),
    ("maestro", "5020", "5020", frozenset(range(12, 20))),
    ("maestro", "5038", "5038", frozenset(range(12, 20))),
    ("maestro", "5893", "5893", frozenset(range(12, 20))),
    ("maestro", "6304", "6304", frozenset(range(12, 20))),
    ("maestro", "6759", "6759", frozenset(range(12, 20))),
    ("maestro", "6761", "6763", frozenset(range(12, 20))),
    ("diners", "300", "305", frozenset(range(14, 20))),
    ("discover", "644", "649", frozenset(range(16, 20))),
    ("amex", "34", "34", frozenset({15})),
    ("amex", "37", "37", frozenset({15})),
    ("diners", "36", "36", frozenset(range(14, 20))),
    ("diners", "38", "39", frozenset(range(14, 20))),
    ("mastercard", "51", "55", frozenset({16})),
    ("discover", "65", "65", frozenset(range(16, 20))),
    ("unionpay", "62", "62", frozenset(range(16, 20))),
    ("unionpay", "81", "81", frozenset(range(16, 20))),
    ("visa", "4", "4", frozenset({13, 16, 19})),
)


def luhn_ok(digits: str) -> bool:
    """The Luhn (mod 10) check over a string of ASCII digits."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i & 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def card_brand(digits: str) -> str | None:
    """The scheme whose IIN range and length fit ``digits``, or None."""
    n = len(digits)
    for brand, low, high, lengths in _IIN_TABLE:
        prefix = digits[: len(low)]
        if low <= prefix <= high and n in lengths:
            return brand
    return None


# ---- IBAN ---------------------------------------------------------------------------------

# Total IBAN length per country, from the SWIFT IBAN registry.
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
    "BH": 22, "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24,
    "DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27,
    "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27,
    "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27,
    "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28,
    "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31,
    "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}


def iban_ok(compact: str) -> bool:
    """``compact`` (upper case, no spaces) has its country's length and passes mod-97."""
    if IBAN_LENGTHS.get(compact[:2]) != len(compact) or not compact[2:4].isdigit():
        return False
    if not compact.isalnum() or not compact.isascii():
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(number) % 97 == 1


# ---- US SSN -------------------------------------------------------------------------------

# Numbers that were published (a wallet insert, an advertisement) and are void.
_VOID_SSNS = frozenset({"078051120", "219099999"})


def ssn_ok(area: str, group: str, serial: str) -> bool:
    """The SSA's rules: area not 000, 666 or 900-999; group not 00; serial not 0000."""
    if area in ("000", "666") or area[0] == "9":
        return False
    if group == "00" or serial == "0000":
        return False
    return area + group + serial not in _VOID_SSNS


# ---- dates --------------------------------------------------------------------------------

_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def date_ok(year: int, month: int, day: int) -> bool:
    """A real calendar day (leap years counted), years 1000-2999 (or two-digit years)."""
    if not 1 <= month <= 12 or day < 1:
        return False
    if year >= 100 and not 1000 <= year <= 2999:
        return False
    if month == 2 and day == 29:
        full = year if year >= 100 else 2000 + year
        return full % 4 == 0 and (full % 100 != 0 or full % 400 == 0)
    return day <= _DAYS_IN_MONTH[month - 1]


# ---- phone numbers ------------------------------------------------------------------------

_NANP_REGIONS = "US CA AG AI AS BB BM BS DM DO GD GU JM KN KY LC MP MS PR SX TC TT VC VG VI"
_NANP = frozenset(_NANP_REGIONS.split())


@functools.lru_cache(maxsize=64)
def _trunk_prefix(region: str) -> str:
    meta = phonenumbers.PhoneMetadata.metadata_for_region(region)
    return (meta.national_prefix or "") if meta is not None else ""


def phone_plausible(digits: str, region: str) -> bool:
    """A cheap shape check before libphonenumber's (slow) parse: a NANP number has ten
    digits (after an optional 1) with area code and exchange not starting with 0 or 1; a
    number of a region with a trunk prefix ("0") written nationally starts with it."""
    if region in _NANP:
        if len(digits) == 11 and digits[0] == "1":
            digits = digits[1:]
        return len(digits) == 10 and digits[0] > "1" and digits[3] > "1"
    prefix = _trunk_prefix(region)
    return not prefix or digits.startswith(prefix) or digits.startswith("00")


@functools.lru_cache(maxsize=4096)
def phone_ok(candidate: str, region: str | None) -> bool:
    """libphonenumber's verdict on ``candidate`` read in ``region`` (None: it has +CC)."""
    try:
        number = phonenumbers.parse(candidate, region)
    except phonenumbers.NumberParseException:
        return False
    return bool(phonenumbers.is_valid_number(number))
