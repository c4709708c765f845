"""PII recognizers and the analyzer: every entity on positives and tricky negatives."""

from __future__ import annotations

import itertools
import random
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from privml._exceptions import ConfigError
from privml.anonymize.text import (
    ENTITIES,
    Analyzer,
    PatternRecognizer,
    Span,
    analyze,
)
from privml.anonymize.text._analyzer import resolve
from privml.anonymize.text._validators import card_brand, date_ok, iban_ok, luhn_ok, ssn_ok


@pytest.fixture(scope="module")
def an() -> Analyzer:
    return Analyzer()


def found(an: Analyzer, text: str, entity: str | None = None) -> list[tuple[str, str]]:
    """(entity, covered text) of every span, or the covered texts of one entity."""
    spans = an.analyze(text)
    return [(s.entity, text[s.start : s.end]) for s in spans
            if entity is None or s.entity == entity]


def texts(an: Analyzer, text: str, entity: str) -> list[str]:
    return [t for _, t in found(an, text, entity)]


def with_luhn(prefix: str, length: int) -> str:
    """``prefix`` padded with a fixed filler to ``length`` digits, last digit Luhn-correct."""
    body = (prefix + "7391820465" * 2)[: length - 1]
    for d in "0123456789":
        if luhn_ok(body + d):
            return body + d
    raise AssertionError


# ---- the contract ------------------------------------------------------------------------


def test_entity_names_are_the_contract() -> None:
    assert ENTITIES == ("EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "US_SSN", "IP", "MAC", "URL",
                        "DATE", "DATE_OF_BIRTH", "PERSON", "LOCATION", "STREET_ADDRESS")


# ---- EMAIL and URL ------------------------------------------------------------------------


def test_email(an: Analyzer) -> None:
    text = "Write to jane.doe+tag@mail.example.co.uk or J_Smith@example.org."
    assert texts(an, text, "EMAIL") == ["jane.doe+tag@mail.example.co.uk", "J_Smith@example.org"]


@pytest.mark.parametrize("text", [
    "the retina icon is icon@2x.png",
    "user@localhost has no domain",
    "a@b.c is too short a TLD",
    "two dots: john..doe@example.com",
])
def test_email_negatives(an: Analyzer, text: str) -> None:
    assert texts(an, text, "EMAIL") == []


def test_email_domain_is_not_a_url(an: Analyzer) -> None:
    text = "mail john@www.example.com today"
    assert found(an, text) == [("EMAIL", "john@www.example.com")]


def test_email_inside_a_url_query_is_part_of_the_url(an: Analyzer) -> None:
    text = "click https://example.com/unsub?u=jane@example.org&x=1 now"
    assert found(an, text) == [("URL", "https://example.com/unsub?u=jane@example.org&x=1")]


def test_url(an: Analyzer) -> None:
    text = ("See https://docs.example.com/a/b?q=1#top, www.example.org. and "
            "(https://en.wikipedia.org/wiki/Foo_(bar)).")
    assert texts(an, text, "URL") == ["https://docs.example.com/a/b?q=1#top",
                                      "www.example.org",
                                      "https://en.wikipedia.org/wiki/Foo_(bar)"]


def test_url_holds_its_ip(an: Analyzer) -> None:
    assert found(an, "get http://10.0.0.1:8080/x now") == [("URL", "http://10.0.0.1:8080/x")]


# ---- PHONE -------------------------------------------------------------------------------


@pytest.mark.parametrize("number", [
    "+1 212-555-0147", "(212) 555-0147", "212.555.0147", "+44 20 7946 0958",
    "020 7946 0958", "+49 30 901820", "030 901820", "+33 1 42 68 53 00", "01 42 68 53 00",
    "948.371.2873x3580",
])
def test_phone(an: Analyzer, number: str) -> None:
    assert texts(an, f"Call me at {number} tomorrow.", "PHONE") == [number]


@pytest.mark.parametrize("text", [
    "Release 2.1.9810.54 fixes it",
    "the 4.0.29914.1267 upgrade",
    "order 1234567 is late",
    "SSN-shaped 078-05-1120 is no phone",
])
def test_phone_negatives(an: Analyzer, text: str) -> None:
    assert texts(an, text, "PHONE") == []


def test_phone_regions_are_configurable() -> None:
    us_only = Analyzer(entities=["PHONE"], regions=("US",))
    assert texts(us_only, "Ring 030 901820 now", "PHONE") == []
    de = Analyzer(entities=["PHONE"], regions=("DE",))
    assert texts(de, "Ring 030 901820 now", "PHONE") == ["030 901820"]


# ---- CREDIT_CARD --------------------------------------------------------------------------


@pytest.mark.parametrize(("prefix", "length", "brand"), [
    ("4", 13, "visa"), ("4", 16, "visa"), ("4", 19, "visa"),
    ("51", 16, "mastercard"), ("55", 16, "mastercard"),
    ("2221", 16, "mastercard"), ("2500", 16, "mastercard"), ("2720", 16, "mastercard"),
    ("34", 15, "amex"), ("37", 15, "amex"),
    ("6011", 16, "discover"), ("644", 16, "discover"), ("649", 19, "discover"),
    ("65", 16, "discover"), ("622126", 16, "discover"), ("622925", 19, "discover"),
    ("3528", 16, "jcb"), ("3589", 19, "jcb"),
    ("5018", 12, "maestro"), ("6759", 15, "maestro"), ("6304", 19, "maestro"),
    ("62", 16, "unionpay"), ("62", 19, "unionpay"),
    ("36", 14, "diners"), ("300", 14, "diners"), ("305", 16, "diners"), ("38", 16, "diners"),
])
def test_card_families(an: Analyzer, prefix: str, length: int, brand: str) -> None:
    number = with_luhn(prefix, length)
    assert card_brand(number) == brand
    assert texts(an, f"card {number} ok", "CREDIT_CARD") == [number]
    grouped = " ".join(number[i : i + 4] for i in range(0, length, 4))
    assert texts(an, f"card {grouped} ok", "CREDIT_CARD") == [grouped]


@pytest.mark.parametrize(("prefix", "length"), [
    ("2220", 16), ("2721", 16),  # just outside Mastercard's 2-series
    ("34", 16), ("4", 15), ("51", 19), ("3527", 16), ("1", 16), ("9", 16),
])
def test_card_wrong_range_or_length(an: Analyzer, prefix: str, length: int) -> None:
    number = with_luhn(prefix, length)
    assert card_brand(number) is None
    assert texts(an, f"card {number} ok", "CREDIT_CARD") == []


def test_card_separators_and_luhn(an: Analyzer) -> None:
    assert texts(an, "pay 4111-1111-1111-1111 now", "CREDIT_CARD") == ["4111-1111-1111-1111"]
    assert texts(an, "amex 3782 822463 10005.", "CREDIT_CARD") == ["3782 822463 10005"]
    assert texts(an, "pay 4111 1111 1111 1112 now", "CREDIT_CARD") == []  # fails Luhn
    assert texts(an, "ref 41111111111111110 here", "CREDIT_CARD") == []  # 17 digits


# ---- IBAN ---------------------------------------------------------------------------------

VALID_IBANS = [
    "DE89 3704 0044 0532 0130 00", "GB82 WEST 1234 5698 7654 32", "GB82WEST12345698765432",
    "FR14 2004 1010 0505 0001 3M02 606", "NL91 ABNA 0417 1643 00", "BE68 5390 0754 7034",
    "CH93 0076 2011 6238 5295 7", "NO93 8601 1117 947", "ES91 2100 0418 4502 0005 1332",
]


@pytest.mark.parametrize("iban", VALID_IBANS)
def test_iban(an: Analyzer, iban: str) -> None:
    assert iban_ok(iban.replace(" ", ""))
    assert texts(an, f"Pay to {iban} please.", "IBAN") == [iban]


@pytest.mark.parametrize("iban", [
    "DE89 3704 0044 0532 0130 01",  # mod-97 fails
    "GB83 WEST 1234 5698 7654 32",  # mod-97 fails
    "DE89 3704 0044 0532 0130 0",  # one character short for DE
    "NO93 8601 1117 9471",  # one too many for NO
    "XX89 3704 0044 0532 0130 00",  # no such country
])
def test_iban_negatives(an: Analyzer, iban: str) -> None:
    assert not iban_ok(iban.replace(" ", ""))
    assert texts(an, f"Pay to {iban} please.", "IBAN") == []


def test_iban_followed_by_a_word_in_capitals(an: Analyzer) -> None:
    text = "IBAN DE89 3704 0044 0532 0130 00 BANK"
    assert texts(an, text, "IBAN") == ["DE89 3704 0044 0532 0130 00"]


# ---- US_SSN -------------------------------------------------------------------------------


def test_ssn(an: Analyzer) -> None:
    text = "SSN 536-22-1234, or 536 22 1234."
    assert texts(an, text, "US_SSN") == ["536-22-1234", "536 22 1234"]


@pytest.mark.parametrize("ssn", [
    "000-12-3456", "666-12-3456", "900-12-3456", "999-12-3456", "536-00-1234",
    "536-22-0000", "078-05-1120", "219-09-9999",
])
def test_ssn_invalid_ranges(an: Analyzer, ssn: str) -> None:
    assert not ssn_ok(ssn[:3], ssn[4:6], ssn[7:])
    assert found(an, f"number {ssn} here") == []


def test_bare_nine_digits_need_ssn_context(an: Analyzer) -> None:
    assert texts(an, "ticket 536221234 closed", "US_SSN") == []
    assert texts(an, "her SSN is 536221234", "US_SSN") == ["536221234"]


# ---- IP and MAC ---------------------------------------------------------------------------


def test_ip(an: Analyzer) -> None:
    text = "from 192.168.1.20 and 2001:db8::ff00:42:8329, also ::1 and fe80::1."
    assert texts(an, text, "IP") == ["192.168.1.20", "2001:db8::ff00:42:8329", "::1", "fe80::1"]


@pytest.mark.parametrize("text", [
    "upgrade to v1.2.3.4 today", "running version 10.0.0.1 now", "ver. 4.3.2.1",
    "build 1.2.3.4.5 failed", "bad 256.1.1.1 quad", "zero-padded 01.02.03.004",
    "not v6: fe80::1::2", "not v6: 2001:db8:::1", "a time 12:30:45", "std::vector<int>",
])
def test_ip_negatives(an: Analyzer, text: str) -> None:
    assert texts(an, text, "IP") == []


def test_mac(an: Analyzer) -> None:
    text = "nic 00:1A:2B:3C:4D:5E, 00-1a-2b-3c-4d-5e and 001a.2b3c.4d5e up"
    assert texts(an, text, "MAC") == ["00:1A:2B:3C:4D:5E", "00-1a-2b-3c-4d-5e",
                                      "001a.2b3c.4d5e"]
    assert texts(an, "five groups 00:1A:2B:3C:4D only", "MAC") == []
    assert texts(an, "mixed 00:1A-2B:3C:4D:5E sep", "MAC") == []


# ---- DATE and DATE_OF_BIRTH ---------------------------------------------------------------


@pytest.mark.parametrize("date", [
    "2020-01-05", "2020-02-29", "05/01/2020", "12/31/2020", "31.12.2020", "3 March 1985",
    "March 3rd, 1985", "Mar 3 1985", "3rd of March 1985", "December 18, 1965", "04 Apr 2023",
])
def test_date(an: Analyzer, date: str) -> None:
    assert found(an, f"It happened on {date} here.") == [("DATE", date)]


@pytest.mark.parametrize("date", [
    "31/02/2020", "2021-02-29", "13/13/2020", "2020-13-01", "31 February 2020", "0/1/2020",
])
def test_invalid_dates(an: Analyzer, date: str) -> None:
    assert texts(an, f"It happened on {date} here.", "DATE") == []


def test_date_ok_leap_years() -> None:
    assert date_ok(2000, 2, 29) and not date_ok(1900, 2, 29) and date_ok(2024, 2, 29)


@pytest.mark.parametrize("text", [
    "She was born on 3 March 1985.", "DOB: 04/05/1990", "Date of birth: 1961-07-22",
    "his birthday is March 3, 1985", "J. Doe (b. 12.03.1950) wrote",
])
def test_date_of_birth(an: Analyzer, text: str) -> None:
    assert [e for e, _ in found(an, text) if e.startswith("DATE")] == ["DATE_OF_BIRTH"]


def test_birth_context_governs_only_its_date(an: Analyzer) -> None:
    text = "Patient (DOB December 18, 1965) was admitted on 04.06.2027 with pain."
    assert found(an, text) == [("DATE_OF_BIRTH", "December 18, 1965"), ("DATE", "04.06.2027")]


def test_birth_dates_are_dates_when_dob_is_not_asked_for() -> None:
    dates = Analyzer(entities=["DATE"])
    assert found(dates, "born on 3 March 1985") == [("DATE", "3 March 1985")]
    dob = Analyzer(entities=["DATE_OF_BIRTH"])
    assert found(dob, "born on 3 March 1985, seen 4 May 2020") == [
        ("DATE_OF_BIRTH", "3 March 1985")]


# ---- STREET_ADDRESS ----------------------------------------------------------------------


@pytest.mark.parametrize("address", [
    "221B Baker Street", "1600 Pennsylvania Avenue NW, Washington, DC 20500", "12 Oak Dr",
    "350 Fifth Ave Suite 3300", "42 Elm Road, Springfield, IL 62704", "Hauptstraße 5",
    "Via Roma 12",
])
def test_street_address(an: Analyzer, address: str) -> None:
    assert texts(an, f"Send it to {address} please", "STREET_ADDRESS") == [address]


def test_street_address_negatives(an: Analyzer) -> None:
    assert texts(an, "During 2020 we sold 12 Apples", "STREET_ADDRESS") == []
    assert texts(an, "We walked down Baker Street.", "STREET_ADDRESS") == []


# ---- PERSON and LOCATION ------------------------------------------------------------------


def test_names_and_places_from_the_gazetteer(an: Analyzer) -> None:
    text = "John Smith flew to Paris and then Berlin with Mary."
    assert found(an, text) == [("PERSON", "John Smith"), ("LOCATION", "Paris"),
                               ("LOCATION", "Berlin"), ("PERSON", "Mary")]


def test_multiword_places(an: Analyzer) -> None:
    text = "From New York City to Trinidad and Tobago via San Francisco."
    assert texts(an, text, "LOCATION") == ["New York City", "Trinidad and Tobago",
                                           "San Francisco"]


@pytest.mark.parametrize(("text", "expected"), [
    ("My name is Priya Raman.", [("PERSON", "Priya Raman")]),
    ("Dr Kowalczyk said the scan was clear.", [("PERSON", "Kowalczyk")]),
    ("Mrs. Oyelaran will call.", [("PERSON", "Oyelaran")]),
    ("Dear Wojciech, thanks.", [("PERSON", "Wojciech")]),
    ("Best regards,\nTeodora Vasquesz", [("PERSON", "Teodora Vasquesz")]),
    ("We met Oluwaseun Adeyemi yesterday.", [("PERSON", "Oluwaseun Adeyemi")]),
    ("Nkechi Obi said the rent is due.", [("PERSON", "Nkechi Obi")]),
    ("She lives in Smallvillia now.", [("LOCATION", "Smallvillia")]),
    ("I'm flying from Kleveburg to Herzmark on Monday.",
     [("LOCATION", "Kleveburg"), ("LOCATION", "Herzmark")]),
    ("It ships from Springfield, IL today.", [("LOCATION", "Springfield"), ("LOCATION", "IL")]),
    ("Place of birth: Zlatograd.", [("LOCATION", "Zlatograd")]),
])
def test_names_and_places_outside_the_gazetteer(
    an: Analyzer, text: str, expected: list[tuple[str, str]]
) -> None:
    assert found(an, text) == expected


def test_given_name_then_unknown_word_is_a_full_name(an: Analyzer) -> None:
    assert found(an, "Yesterday Jennifer Zwartkruis phoned.") == [
        ("PERSON", "Jennifer Zwartkruis")]


@pytest.mark.parametrize("text", [
    "Will you mark the page?", "May I come in?", "Reading is fun.", "Nice to meet you.",
    "Bill me later.", "Mark the date.", "Young people like long walks.",
    "The Committee met on Tuesday.", "Please Call Back Soon.", "Happy New Year!",
])
def test_capitalised_common_words_are_not_names(an: Analyzer, text: str) -> None:
    assert [e for e, _ in found(an, text) if e in ("PERSON", "LOCATION")] == []


def test_common_words_with_support(an: Analyzer) -> None:
    assert found(an, "We moved to Reading last year.") == [("LOCATION", "Reading")]
    assert found(an, "A week in Nice was lovely.") == [("LOCATION", "Nice")]
    assert found(an, "Will Smith starred.") == [("PERSON", "Will Smith")]
    assert found(an, "Ask Bill Young.") == [("PERSON", "Bill Young")]


def test_organisations_are_not_people(an: Analyzer) -> None:
    assert texts(an, "She joined Morgan Stanley Bank last May.", "PERSON") == []
    assert found(an, "According to Reuters, Apple plans a campus.") == []


@pytest.mark.parametrize(("text", "expected"), [
    ("Last Tuesday, Chancellor Olaf Scholz spoke.", [("PERSON", "Olaf Scholz")]),
    ("Our CEO, Thandiwe Mokoena, announced it.", [("PERSON", "Thandiwe Mokoena")]),
    ("The Eiffel Tower is tall.", [("LOCATION", "Eiffel Tower")]),
    ("Dinner with Aunt Margarethe in Heidelberg.",
     [("PERSON", "Margarethe"), ("LOCATION", "Heidelberg")]),
])
def test_prose(an: Analyzer, text: str, expected: list[tuple[str, str]]) -> None:
    assert found(an, text) == expected


# ---- custom recognizers --------------------------------------------------------------------


def test_custom_regex_and_deny_list() -> None:
    emp = PatternRecognizer("EMPLOYEE_ID", regex=r"\bEMP-\d{5}\b", score=0.9)
    proj = PatternRecognizer("PROJECT", deny_list=["Blue Falcon", "Nimbus"],
                             flags=re.IGNORECASE)
    a = Analyzer(custom=[emp, proj])
    text = "EMP-12345 leads blue falcon and NIMBUS, not Nimbuses."
    assert found(a, text) == [("EMPLOYEE_ID", "EMP-12345"), ("PROJECT", "blue falcon"),
                              ("PROJECT", "NIMBUS")]
    strict = Analyzer(custom=[PatternRecognizer("PROJECT", deny_list=["Nimbus"])])
    assert found(strict, "nimbus or Nimbus") == [("PROJECT", "Nimbus")]


def test_custom_id_next_to_a_name() -> None:
    a = Analyzer(custom=[PatternRecognizer("STAFF_ID", regex=r"\bX\d+\b")])
    assert found(a, "John Smith X12 signed") == [("PERSON", "John Smith"), ("STAFF_ID", "X12")]


def test_analyzer_pickles() -> None:
    import pickle

    a = Analyzer(custom=[PatternRecognizer("STAFF_ID", regex=r"\bX\d+\b")])
    text = "John Smith X12, jo@example.com, 212-555-0147"
    assert pickle.loads(pickle.dumps(a)).analyze(text) == a.analyze(text)


def test_custom_context_raises_the_score() -> None:
    rec = PatternRecognizer("BADGE", regex=r"\b\d{4}\b", score=0.5, context=["badge"])
    a = Analyzer(entities=["BADGE"], custom=[rec])
    spans = a.analyze("badge 1234, and on another floor entirely, room 5678")
    assert [(s.entity, s.score) for s in spans] == [("BADGE", 0.6), ("BADGE", 0.5)]
    assert spans[0].recognizer == "badge_pattern"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"regex": "(unclosed"}, "invalid regex '(unclosed'"),
    ({"regex": "a*"}, "matches the empty string"),
    ({}, "needs a regex or a deny_list"),
    ({"deny_list": [""]}, "non-empty"),
    ({"regex": "x", "score": 1.5}, "score"),
])
def test_custom_recognizer_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        PatternRecognizer("THING", name="mine", **kwargs)  # type: ignore[arg-type]


def test_custom_entity_name_is_checked() -> None:
    with pytest.raises(ConfigError, match="upper case"):
        PatternRecognizer("thing", regex="x")


# ---- overlaps ------------------------------------------------------------------------------


def test_overlap_rule() -> None:
    # higher score wins, then the longer span, then the earlier start, then the entity name
    assert resolve([(0, 5, "B", 0.5, "r"), (2, 4, "A", 0.9, "r")]) == [Span(2, 4, "A", 0.9, "r")]
    assert resolve([(0, 3, "A", 0.5, "r"), (1, 6, "B", 0.5, "r")]) == [Span(1, 6, "B", 0.5, "r")]
    assert resolve([(0, 3, "B", 0.5, "r"), (2, 5, "A", 0.5, "r")]) == [Span(0, 3, "B", 0.5, "r")]
    assert resolve([(0, 3, "B", 0.5, "r"), (0, 3, "A", 0.5, "r")]) == [Span(0, 3, "A", 0.5, "r")]
    assert resolve([(0, 2, "A", 0.5, "r"), (2, 4, "A", 0.5, "r")]) == [
        Span(0, 2, "A", 0.5, "r"), Span(2, 4, "A", 0.5, "r")]


def test_overlap_resolution_ignores_input_order() -> None:
    rng = random.Random(7)
    cands = [(s, s + rng.randint(1, 9), rng.choice("ABC"), rng.choice((0.5, 0.7, 0.9)), "r")
             for s in (rng.randint(0, 40) for _ in range(30))]
    expected = resolve(cands)
    for _ in range(5):
        rng.shuffle(cands)
        assert resolve(cands) == expected


def test_custom_recognizer_overrides_builtin_by_score() -> None:
    emp = PatternRecognizer("STAFF_SSN", regex=r"\d{3}-\d{2}-\d{4}", score=1.0)
    a = Analyzer(custom=[emp])
    assert found(a, "id 536-22-1234 ok") == [("STAFF_SSN", "536-22-1234")]
    low = Analyzer(custom=[PatternRecognizer("STAFF", regex=r"\d{3}-\d{2}", score=0.1)])
    assert found(low, "id 536-22-1234 ok") == [("US_SSN", "536-22-1234")]


@given(st.text(alphabet="ab1 @.:-/JMP", max_size=60) | st.text(max_size=40))
def test_spans_sorted_and_disjoint(text: str) -> None:
    spans = analyze(text)
    for a, b in itertools.pairwise(spans):
        assert a.end <= b.start
    assert all(0 <= s.start < s.end <= len(text) for s in spans)


# ---- configuration and bad input ---------------------------------------------------------


def test_entities_filter_and_threshold() -> None:
    text = "Mail jo@example.com, call +44 20 7946 0958, from Paris."
    assert found(Analyzer(entities=["EMAIL"]), text) == [("EMAIL", "jo@example.com")]
    assert [e for e, _ in found(Analyzer(threshold=0.9), text)] == ["EMAIL"]


def test_module_analyze_uses_a_cached_analyzer() -> None:
    text = "Mail jo@example.com"
    assert analyze(text) == analyze(text) == Analyzer().analyze(text)
    assert analyze(text, entities=["PHONE"]) == []
    assert analyze(text, entities={"EMAIL"}) == [Span(5, 19, "EMAIL", 0.95, "email")]


@pytest.mark.parametrize("bad", [None, b"bytes", 42, ["a list"]])
def test_non_str_input(an: Analyzer, bad: object) -> None:
    with pytest.raises(ConfigError, match="takes a str"):
        an.analyze(bad)  # type: ignore[arg-type]


def test_unknown_entity_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown entity 'PASSPORT'.*known: EMAIL, PHONE"):
        Analyzer(entities=["EMAIL", "PASSPORT"])


@pytest.mark.parametrize("kwargs", [
    {"regions": ("ZZ",)}, {"threshold": 1.5}, {"threshold": -0.1},
    {"custom": ["not a recognizer"]},
])
def test_bad_configuration(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        Analyzer(**kwargs)  # type: ignore[arg-type]


def test_missing_spacy_pipeline_is_a_clear_error() -> None:
    """Whether or not spaCy is installed, a pipeline that is not is named, never fetched."""
    with pytest.raises(ConfigError, match=r"privml_no_such_pipeline.*(not installed|not avail)"):
        Analyzer(spacy_model="privml_no_such_pipeline")


# ---- MAC before PHONE, IP versions, dates without a day or a year --------------------------


def test_mac_wins_over_a_phone_inside_it(an: Analyzer) -> None:
    assert found(an, "Device 04-46-63-28-C1-E8 is up.") == [("MAC", "04-46-63-28-C1-E8")]
    assert found(an, "Call 212-555-0188 now.") == [("PHONE", "212-555-0188")]


@pytest.mark.parametrize("text", [
    "build 10.0.19045.2965 is out", "v2.4.1.7 released", "release 3.1.4.1 today",
    "firmware 1.2.3.4 is old",
])
def test_version_strings_are_not_ips(an: Analyzer, text: str) -> None:
    assert texts(an, text, "IP") == []


def test_ip_after_from(an: Analyzer) -> None:
    assert texts(an, "Login from 10.0.0.1 failed.", "IP") == ["10.0.0.1"]


@pytest.mark.parametrize(("text", "date"), [
    ("She started in March 1985.", "March 1985"), ("Due Mar 2021.", "Mar 2021"),
    ("See you on 3 March.", "3 March"), ("It ends March 3rd.", "March 3rd"),
    ("Booked for Tuesday, March 3 at noon.", "March 3"), ("Filed on 03/04/21.", "03/04/21"),
    ("the 2nd of June", "2nd of June"),
])
def test_dates_without_day_or_year(an: Analyzer, text: str, date: str) -> None:
    assert texts(an, text, "DATE") == [date]


@pytest.mark.parametrize("text", [
    "We scored 3/4 on it.", "These 3 may help.", "March 3 meeting notes", "Section 3 Mar",
    "page 2 of June", "April 12 people came", "June 45 units", "version 3.04.21",
    "31 February 2020", "May 12000 rows",
])
def test_date_negatives(an: Analyzer, text: str) -> None:
    assert texts(an, text, "DATE") == []


def test_month_year_of_birth(an: Analyzer) -> None:
    assert found(an, "He was born March 1985.") == [("DATE_OF_BIRTH", "March 1985")]


# ---- PERSON names outside the gazetteer ----------------------------------------------------


@pytest.mark.parametrize(("text", "name"), [
    ("Seçgül Yorulmaz called about the invoice.", "Seçgül Yorulmaz"),
    ("Please cc Heikki Voutilainen on the reply.", "Heikki Voutilainen"),
    ("The ticket was assigned to Slavěna Strnadová.", "Slavěna Strnadová"),
    ("Meeting notes from Anssi Karjalainen are attached.", "Anssi Karjalainen"),
    ("Witold Winnik (HR) approved it.", "Witold Winnik"),
    ("Congratulations to Ludmila Pokorná on the promotion!", "Ludmila Pokorná"),
    ("Our new intern, Liisa Kurki, starts Monday.", "Liisa Kurki"),
    ("Olgierd Kowalski is on leave.", "Olgierd Kowalski"),
])
def test_unknown_names_from_context_and_spelling(an: Analyzer, text: str, name: str) -> None:
    assert texts(an, text, "PERSON") == [name]


def test_unknown_name_joined_by_and_to_a_person_after_it(an: Analyzer) -> None:
    text = "Casian Eftimie and Tiberiu Mazilescu signed the lease."
    assert texts(an, text, "PERSON") == ["Casian Eftimie", "Tiberiu Mazilescu"]


@pytest.mark.parametrize("text", [
    "The Board approved the budget.", "Chief Technology Officer resigned.",
    "Approved by Compliance.",
    "I'm flying to Horní Slavkov.", "Your parcel left our thành phố Hồ Chí Minh depot.",
    "The Quarterly Report shows growth.", "Microsoft Teams crashed again.",
])
def test_name_rules_leave_things_and_places_alone(an: Analyzer, text: str) -> None:
    assert texts(an, text, "PERSON") == []
