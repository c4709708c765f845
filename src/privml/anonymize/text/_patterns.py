"""The pattern entities, found in one regex pass per document.

Theory of operation. Every pattern entity (EMAIL, URL, IBAN, CREDIT_CARD, US_SSN, IP, MAC,
DATE, PHONE, STREET_ADDRESS) is one or more *alternatives*: a regex fragment, a cheap
pre-condition on the whole text (enough digits, an ``@``, a ``://``...) and a validator
(Luhn, mod-97, ``ipaddress``, calendar, ``phonenumbers``...). For a document, the
alternatives whose pre-conditions hold are joined into one alternation (compiled once per
combination and cached), and the text is scanned once with ``search`` from left to right.

Two details keep the scan fast and exact:

* Each alternative is written as the character class of its first character plus the rest
  (its "not inside a longer token" look-behind comes after that character). The combined
  pattern is ``[union of first classes](?:(?<=[class])(?:rest(?P<key>)|...)|...)``: it
  begins with one character class, so ``re`` skips every position where nothing can start
  (in prose: all but the digits and capitals), and the empty named group at the end of each
  alternative says which one matched (``m.lastgroup``).
* ``re`` takes the first alternative that matches at the leftmost position. When that
  candidate fails its validator (a card number failing Luhn), the alternatives after it are
  tried at the same position, and only then does the scan move on by one character.

Texts without digits, ``@`` or a URL marker skip the regex pass altogether.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from privml.anonymize.text import _checks as checks
from privml.anonymize.text._checks import Hit, Scanner
from privml.anonymize.text._validators import phone_ok, phone_plausible
from privml.anonymize.text._words import MONTHS, STREET_ENDINGS, STREET_HEADS, STREET_SUFFIXES

__all__ = ["Features", "Hit", "PatternScanner"]

_Validator = Callable[[str, re.Match[str], Scanner], Hit | None]


@dataclass(frozen=True, slots=True)
class Features:
    """What the pre-conditions look at, computed once per text: the number of digits in
    tiers (0; 1-3; 4-6; 7 or more: few tiers, few distinct combined patterns), whether
    there is an ``@``, a URL marker, two colons (IPv6), the separators of a MAC address, a
    lower-case street word ("ul.", "plac")."""

    digits: int
    at: bool
    url: bool
    colons: bool
    mac: bool
    lc_head: bool

    @staticmethod
    def signature(text: str) -> tuple[int, bool, bool, bool, bool, bool]:
        digits = 0
        if _ANY_DIGIT.search(text) is not None:
            for d in "0123456789":
                digits += text.count(d)
        tier = 0 if digits == 0 else 1 if digits < 4 else 4 if digits < 7 else 7
        colons = text.count(":")
        return (
            tier,
            "@" in text,
            "://" in text or "www." in text or "WWW." in text,
            colons >= 2,
            colons >= 5 or text.count("-") >= 5 or (
                tier >= 4 and text.count(".") >= 2 and _CISCO_MAC.search(text) is not None
            ),
            tier > 0 and any(h in text for h in _LC_HEAD_HINTS),
        )

    @classmethod
    def of(cls, text: str) -> Features:
        return cls(*cls.signature(text))


@dataclass(frozen=True, slots=True)
class _Alt:
    key: str
    entity: str
    first: str  # the body of a character class: what the match's first character may be
    tail: str  # the rest, written after that character is consumed
    need: Callable[[Features], bool]
    validate: _Validator


# ---- regex fragments ----------------------------------------------------------------------

_MONTH_RE = "(?i:" + "|".join(sorted(MONTHS, key=len, reverse=True)) + ")"
_ORD = r"(?:st|nd|rd|th)?"


def _month_tails() -> str:
    # After the month's first letter (already consumed, so the branch starts with a
    # character class): "(?<=[Jj])(?i:anuary|an|une|...)|(?<=[Ff])(?i:ebruary|eb)|..."
    by_letter: dict[str, list[str]] = {}
    for name in sorted(MONTHS, key=len, reverse=True):
        by_letter.setdefault(name[0], []).append(name[1:])
    parts = [f"(?<=[{c.upper()}{c}])(?i:{'|'.join(t)})" for c, t in by_letter.items()]
    return "(?:" + "|".join(parts) + ")"


_MONTH_TAIL_RE = _month_tails()
# a month name as written in a date without a day or a year: capitalised ("may" is a verb)
_MONTH_CAP_RE = "(?:" + "|".join(m.title() for m in sorted(MONTHS, key=len, reverse=True)) + ")"
_MONTH_CAP_TAIL = "(?:" + "|".join(
    f"(?<={m[0].upper()}){m[1:]}" for m in sorted(MONTHS, key=len, reverse=True)
) + ")"
_SUFFIX_RE = "|".join(sorted(STREET_SUFFIXES, key=len, reverse=True))
_ENDING_RE = "|".join(re.escape(w) for w in sorted(STREET_ENDINGS, key=len, reverse=True))
_HEAD_RE = "|".join(re.escape(w) for w in sorted(STREET_HEADS, key=len, reverse=True))
_UP = "A-ZÀ-ÖØ-ÞĀ-Ž"
_HOUSE = r"\d{1,5}[a-zA-Z]?(?:[-/]\d{1,5}[a-zA-Z]?)?"
_FR_ARTICLE = r"(?:(?:de|du|des|la|le|l'|l\u2019|d'|d\u2019)\s*)*"

def _at_least(n: int) -> Callable[[Features], bool]:
    # Few distinct thresholds (1, 4, 7) keep the number of combined patterns small.
    return lambda f: f.digits >= n


def _initials(words: Iterable[str], before: str) -> tuple[str, str]:
    """(first-character class body, tail) matching any of ``words`` once their first
    character is consumed, not preceded by a character of class ``before``."""
    by_first: dict[str, list[str]] = {}
    for w in sorted(words, key=len, reverse=True):
        by_first.setdefault(w[0], []).append(re.escape(w[1:]))
    firsts = "".join(sorted(by_first))
    tails = "|".join(f"(?<={re.escape(c)})(?:{'|'.join(t)})" for c, t in by_first.items())
    return firsts, f"(?<![{before}][{firsts}])(?:{tails})"


_HEX = "[0-9A-Fa-f]"
_EXT = r"(?:\s*(?i:x|ext\.?|extension)\s*\d{1,6})?"
# After a consumed first digit: it starts a token and does not continue a spaced digit
# group ("0044 0532").
_DIG = r"(?<![\w+.,/:-]\d)(?<!\d[ .-]\d)"
_STATE_ZIP = (
    r"(?:,\s*[A-Z][a-z]+(?:\s[A-Z][a-z]+){0,2})?"
    r"(?:,\s*[A-Z]{2}(?:\s+\d{5}(?:-\d{4})?)?|,?\s+\d{5}(?:-\d{4})?)(?!\w)"
)
_UC_HEADS, _UC_HEAD_TAIL = _initials([h for h in STREET_HEADS if h[0].isupper()], r"\w.")
_LC_HEADS, _LC_HEAD_TAIL = _initials([h for h in STREET_HEADS if h[0].islower()], r"\w.")
_LC_HEAD_HINTS = tuple(f"{h} " for h in STREET_HEADS if h[0].islower())
_UNIT_FIRSTS, _UNIT_TAIL = _initials(
    ["Flat", "Apartment", "Apt.", "Apt", "Unit", "Studio", "Suite"], r"\w."
)
# a phone number ends here: no word, digit or hex group of a MAC follows
_PHONE_END = r"(?!\w|[-.]?\d|[-:][0-9A-Fa-f])"
_ANY_DIGIT = re.compile("[0-9]")
_CISCO_MAC = re.compile(r"[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}")
_D = r"\d"

# (key, entity, first-character class body, the rest, pre-condition, validator). The
# order is the priority among alternatives that match at the same position.
_ALTS: tuple[_Alt, ...] = (
    _Alt("email", "EMAIL", "A-Za-z0-9",
         r"(?<![\w.%+-][A-Za-z0-9])[A-Za-z0-9._%+-]{0,63}@"
         r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])",
         lambda f: f.at, checks.email),
    _Alt("url_scheme", "URL", "hHfFsSwW",
         r"(?<![\w.@][hHfFsSwW])"
         r"(?:(?<=[hH])(?i:ttps?)|(?<=[fF])(?i:tps?)|(?<=[sS])(?i:ftp)|(?<=[wW])(?i:ss?))://"
         r"[^\s<>\"'`{}|\\^\[\]]+",
         lambda f: f.url, checks.url),
    _Alt("url_www", "URL", "wW",
         r"(?<![\w.@/][wW])(?i:ww\.)[A-Za-z0-9-]+\.[^\s<>\"'`{}|\\^\[\]]+",
         lambda f: f.url, checks.url),
    _Alt("iban", "IBAN", "A-Z",
         r"(?<![\w][A-Z])[A-Z]\d\d(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?(?![A-Za-z0-9])",
         _at_least(4), checks.iban),
    # before the digit alternatives: a 6-group MAC wins over a phone number inside it
    _Alt("mac", "MAC", "0-9A-Fa-f",
         rf"(?<![\w:.-]{_HEX}){_HEX}(?:(?P<mac_sep>[:-]){_HEX}{{2}}"
         rf"(?:(?P=mac_sep){_HEX}{{2}}){{4}}|{_HEX}{{2}}\.{_HEX}{{4}}\.{_HEX}{{4}})"
         rf"(?![\w:-]|\.\w)",
         lambda f: f.mac, checks.mac),
    _Alt("card", "CREDIT_CARD", _D,
         rf"{_DIG}(?:[ -]?\d){{11,18}}(?!\w|[ -]?\d|[.,/]\d)",
         _at_least(7), checks.card),
    _Alt("ssn", "US_SSN", _D,
         rf"{_DIG}\d\d(?P<ssn_sep>[- ]?)\d\d(?P=ssn_sep)\d{{4}}(?!\w|[-.,/ ]\d)",
         _at_least(7), checks.ssn),
    _Alt("ipv4", "IP", _D,
         r"(?<![\w.:-]\d)\d{0,2}(?:\.\d{1,3}){3}(?![\w.:-]\w|\w)",
         _at_least(4), checks.ipv4),
    _Alt("date_iso", "DATE", _D,
         r"(?<![\w+.,/:-]\d)\d{3}(?P<iso_sep>[-/.])\d\d?(?P=iso_sep)\d\d?"
         r"(?:T\d\d:\d\d(?::\d\d(?:\.\d+)?)?(?:Z|[+-]\d\d:?\d\d)?)?(?![\w]|[-/.:]\d)",
         _at_least(4), checks.date_iso),
    _Alt("date_num", "DATE", _D,
         r"(?<![\w+.,/:-]\d)\d?(?P<dmy_sep>[-/.])\d\d?(?P=dmy_sep)(?:\d{4}|\d\d)"
         r"(?![\w]|[-/.:]\d)",
         _at_least(4), checks.date_num),
    _Alt("date_dmy_words", "DATE", _D,
         rf"(?<![\w+.,/:-]\d)\d?{_ORD}(?:\s+of)?\s+{_MONTH_RE}\.?,?\s+\d{{4}}(?!\w)",
         _at_least(4), checks.date_words),
    _Alt("date_mdy_words", "DATE", "JFMASOND",
         rf"(?<![\w][JFMASOND]){_MONTH_TAIL_RE}\.?,?\s+\d\d?{_ORD},?\s+\d{{4}}(?!\w)",
         _at_least(4), checks.date_words),
    _Alt("ipv6", "IP", "0-9A-Fa-f:",
         r"(?<![\w:.][0-9A-Fa-f:])[0-9A-Fa-f:.]{1,44}(?<=[0-9A-Fa-f:])(?![\w:])",
         lambda f: f.colons, checks.ipv6),
    _Alt("date_dm_words", "DATE", _D,
         rf"(?<![\w+.,/:-]\d)\d?{_ORD}(?:\s+of)?\s+{_MONTH_CAP_RE}(?![\w]|\.?,?\s+\d)",
         _at_least(1), checks.date_day_month),
    _Alt("date_my_words", "DATE", "JFMASOND",
         rf"(?<![\w][JFMASOND]){_MONTH_CAP_TAIL}\.?,?\s+(?:of\s+)?\d{{4}}(?!\w|[-/.:]\d)",
         _at_least(4), checks.date_month_year),
    _Alt("date_md_words", "DATE", "JFMASOND",
         rf"(?<![\w][JFMASOND]){_MONTH_CAP_TAIL}\.?\s+\d\d?{_ORD}(?!\w|[,.:/-]?\s*\d)",
         _at_least(1), checks.date_month_day),
    _Alt("street", "STREET_ADDRESS", _D,
         rf"{_DIG}\d{{0,5}}[A-Za-z]?(?:-\d+)?\s+"
         r"(?:(?:N|S|E|W|NE|NW|SE|SW|North|South|East|West)\.?\s+)?"
         rf"(?:(?:[{_UP}][\w'\u2019.-]*|\d{{1,3}}(?:st|nd|rd|th))\s+){{1,4}}?"
         rf"(?:{_SUFFIX_RE})\b\.?"
         r"(?:\s+(?:N|S|E|W|NE|NW|SE|SW)\b\.?)?"
         r"(?:,?\s+(?:Apt|Apartment|Suite|Ste|Unit|Fl|Floor|Room|Rm|#)\.?\s*#?\s*[\w-]+)?"
         rf"(?:{_STATE_ZIP})?",
         _at_least(1), checks.street),
    _Alt("street_fr", "STREET_ADDRESS", _D,
         rf"{_DIG}\d{{0,3}}(?:\s*(?:bis|ter))?,?\s+"
         r"(?i:rue|avenue|av\.|boulevard|bd|chemin|place|allée|impasse|quai|route|cours)\s+"
         rf"{_FR_ARTICLE}[{_UP}][\w'\u2019-]*(?:\s+{_FR_ARTICLE}[{_UP}][\w'\u2019-]*){{0,3}}",
         _at_least(1), checks.street),
    _Alt("street_ending", "STREET_ADDRESS", _UP,
         rf"(?<![\w][{_UP}])[\w'\u2019-]*?(?:{_ENDING_RE})\s+{_HOUSE}(?![\w/-])",
         _at_least(1), checks.street),
    _Alt("street_head", "STREET_ADDRESS", _UC_HEADS,
         rf"{_UC_HEAD_TAIL}\s+(?:[\w.'\u2019-]+,?\s+){{0,4}}?(?:No\.?\s*)?{_HOUSE}(?![\w/-])",
         _at_least(1), checks.street),
    _Alt("street_head_lc", "STREET_ADDRESS", _LC_HEADS,
         rf"{_LC_HEAD_TAIL}\s+(?:[\w.'\u2019-]+,?\s+){{0,4}}?(?:No\.?\s*)?{_HOUSE}(?![\w/-])",
         lambda f: f.lc_head, checks.street),
    _Alt("street_unit", "STREET_ADDRESS", _UNIT_FIRSTS,
         rf"{_UNIT_TAIL}\s+\w{{1,5}},\s+"
         rf"[{_UP}][\w'\u2019-]*(?:\s+[{_UP}][\w'\u2019-]*){{0,3}}?\s+(?:{_SUFFIX_RE})\b",
         _at_least(1), checks.street),
    _Alt("street_tail", "STREET_ADDRESS", _UP,
         rf"(?<![\w][{_UP}])[\w'\u2019-]*(?:\s+[\w'\u2019-]+){{0,2}}?\s+"
         rf"(?:út|utca|tér|körút|u\.)\s+{_HOUSE}\.?(?![\w/-])",
         _at_least(1), checks.street),
    _Alt("phone_intl", "PHONE", "+",
         rf"(?<![\w+]\+)\d{{1,3}}(?:[ .-]?\(?\d{{1,5}}\)?){{1,6}}{_EXT}{_PHONE_END}",
         _at_least(7), checks.phone),
    _Alt("phone_paren", "PHONE", "(",
         rf"(?<![\w(]\()\d{{2,5}}\)[ .-]?\d{{2,5}}(?:[ .-]?\d{{2,5}}){{0,4}}{_EXT}{_PHONE_END}",
         _at_least(7), checks.phone),
    _Alt("phone_nat", "PHONE", _D,
         rf"{_DIG}\d{{1,4}}(?:[ .-]?\d{{2,5}}){{1,5}}{_EXT}{_PHONE_END}",
         _at_least(7), checks.phone),
)

_BY_KEY = {a.key: a for a in _ALTS}


class PatternScanner:
    """Finds the pattern entities of ``entities`` in one pass; ``regions`` are the phone
    regions tried, in order, for numbers written without a country code."""

    def __init__(self, entities: frozenset[str], regions: tuple[str, ...]) -> None:
        self.dob = "DATE_OF_BIRTH" in entities
        self.date = "DATE" in entities
        wanted = set(entities)
        if self.dob:
            wanted.add("DATE")
        # keys, not the alternatives themselves: an analyzer must pickle (worker processes)
        self._keys = tuple(a.key for a in _ALTS if a.entity in wanted)
        self._regions = regions
        self.entities = entities
        self._patterns: dict[
            tuple[int, bool, bool, bool, bool, bool],
            tuple[re.Pattern[str], tuple[str, ...]] | None,
        ] = {}

    def phone_valid(self, candidate: str) -> bool:
        if candidate[0] == "+":
            return phone_ok(candidate, None)
        digits = "".join(ch for ch in candidate if ch.isdigit())
        for region in self._regions:
            if phone_plausible(digits, region) and phone_ok(candidate, region):
                return True
        return False

    def _pattern(
        self, sig: tuple[int, bool, bool, bool, bool, bool]
    ) -> tuple[re.Pattern[str], tuple[str, ...]] | None:
        f = Features(*sig)
        keys = tuple(k for k in self._keys if _BY_KEY[k].need(f))
        found = _combined(keys) if keys else None
        self._patterns[sig] = found
        return found

    def scan(self, text: str) -> list[Hit]:
        sig = Features.signature(text)
        try:
            found = self._patterns[sig]
        except KeyError:
            found = self._pattern(sig)
        if found is None:
            return []
        pattern, order = found
        hits: list[Hit] = []
        pos, n = 0, len(text)
        while pos < n:
            m = pattern.search(text, pos)
            if m is None:
                break
            key = m.lastgroup
            assert key is not None  # nosec B101  # narrowing: every alternative is a named group
            hit = _BY_KEY[key].validate(text, m, self)
            if hit is None:  # fall through to the later alternatives at the same place
                for other in order[order.index(key) + 1 :]:
                    m2 = _single(other).match(text, m.start())
                    if m2 is not None:
                        hit = _BY_KEY[other].validate(text, m2, self)
                        if hit is not None:
                            break
            if hit is None:
                pos = m.start() + 1
                continue
            if hit[2] == "DATE" and not self.date:
                pos = hit[1]
                continue
            if hit[2] in self.entities:
                hits.append(hit)
            pos = max(hit[1], m.start() + 1)
        return hits


@functools.cache
def _single(key: str) -> re.Pattern[str]:
    alt = next(a for a in _ALTS if a.key == key)
    return re.compile(f"[{alt.first}]{alt.tail}(?P<{alt.key}>)")


@functools.cache
def _combined(keys: tuple[str, ...]) -> tuple[re.Pattern[str], tuple[str, ...]]:
    """One pattern for the alternatives ``keys``: a single character class (so that ``re``
    skips the positions where nothing can start), then the alternatives grouped by their
    first-character class, and the order in which they are tried at one position."""
    groups: dict[str, list[_Alt]] = {}
    for alt in _ALTS:
        if alt.key in keys:
            groups.setdefault(alt.first, []).append(alt)
    union = "".join(groups)
    branches = "|".join(
        f"(?<=[{first}])(?:{'|'.join(f'{a.tail}(?P<{a.key}>)' for a in alts)})"
        for first, alts in groups.items()
    )
    order = tuple(a.key for alts in groups.values() for a in alts)
    return re.compile(f"[{union}](?:{branches})"), order
