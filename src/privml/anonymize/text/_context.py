"""What the few words before a capitalised word say about it: a person, a place, neither.

The last words before a candidate (lower case, with ``:`` and line breaks kept as tokens)
are looked up as phrases, longest first, in one table, instead of running a large
end-anchored regex over the text before every candidate.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Context", "context_before"]

_TOKEN = re.compile(r"[^\W\d_]+(?:['\u2019][^\W\d_]+)?|--|[:\n]|\d+")
_WINDOW = 40
_POSTCODE = re.compile(r",\s*(?:[A-Z]{1,2}-)?(?:\d{4,5}|\d{3} \d\d|\d{5}-\d{3})\s$")

NAME, WEAK, THING, PLACE, MOTION = "name", "weak", "thing", "place", "motion"


def _phrases() -> dict[tuple[str, ...], str]:
    table: dict[tuple[str, ...], str] = {}

    def add(kind: str, phrases: str) -> None:
        for phrase in phrases.split(","):
            table[tuple(phrase.split())] = kind

    add(NAME, "my name is,name is,named,called,i am,i'm,this is,dear,hi,hello,hey,signed,"
              "ask,ask for,birthday,congratulations,congrats,welcome,thanks,thank you,name of,"
              "goodbye,bye,cc,bcc,attn,ping,congratulations to,congrats to,assigned to,"
              "shout out to,invite,invited,notify")
    verbs_to = ("talk talked speak spoke said say says wrote write writes sent send gave give "
                "married replied reply belongs introduced listen listened mail email "
                "e-mail emailed text texted call called told asked thanks thank happened")
    add(NAME, ",".join(f"{v} to" for v in verbs_to.split()))
    things_from = ("letter message email e-mail call note notes gift text reply news word visit "
                   "card update request invitation invite feedback comments response approval "
                   "voicemail")
    add(NAME, ",".join(f"{t} from" for t in things_from.split()))
    weak = ("with by contact patient client wife husband son daughter friend boss colleague "
            "manager mother father brother sister mom dad cousin partner neighbour neighbor "
            "met meet meeting employee customer user applicant tenant student candidate "
            "author owner holder member guest driver passenger tell remind attention for "
            "ceo cto cfo coo founder cofounder co-founder director chairman chairwoman chair "
            "spokesperson spokesman spokeswoman lawyer attorney doctor teacher assistant "
            "coworker co-worker roommate landlord landlady fiancé fiancée fiance fiancee "
            "girlfriend boyfriend grandmother grandfather grandma grandpa aunt uncle niece "
            "nephew intern trainee volunteer supervisor recruiter engineer developer analyst "
            "consultant contractor clerk technician caller sender recipient buyer seller")
    add(WEAK, ",".join([*weak.split(), "according to"]))
    nouns = ("town city village place country state county island street road river lake "
             "company firm band ship dog cat horse book movie film song app product "
             "restaurant hotel bar shop store school game show project team brand tool "
             "program album")
    add(THING, ",".join(f"{n} {v}" for n in nouns.split() for v in ("called", "named")))
    add(PLACE, "in,at,from,near,to,via,visit,visited,visiting,across,toward,towards,outside,"
               "inside,around,through,into,of")
    add(MOTION, "place of birth,birthplace,hometown,born in,based in,located in,resides in,"
                "lives in,live in,living in,moved to,move to,moving to,relocated to")
    motion_to = ("fly flying flew flight go going went travel travelled traveled travelling "
                 "traveling drive drove driving trip ship shipped relocate relocating "
                 "returned return returning back way road train bus route transfer "
                 "transferred emigrated headed heading")
    add(MOTION, ",".join(f"{v} to" for v in motion_to.split()))
    motion_from = ("fly flying flew flight move moved moving travel travelled traveled drove "
                   "driving came coming arrived arriving departed departing returned "
                   "relocated emigrated originally born hail hails hailing is am are was "
                   "were i'm he's she's comes come miles km kilometres kilometers")
    add(MOTION, ",".join(f"{v} from" for v in motion_from.split()))
    return table


_PHRASES = _phrases()
_COLON_NAME = frozenset({
    "to", "from", "cc", "attn", "name", "patient", "client", "employee", "contact",
    "customer", "applicant", "tenant", "author", "recipient", "sender",
})
_CLOSINGS = frozenset({
    "regards", "sincerely", "cheers", "thanks", "best", "yours", "love", "warmly",
    "cordially", "--",
})
_ADDRESS = frozenset({"address", "at", "to"})


@dataclass(frozen=True, slots=True)
class Context:
    """``kind``: NAME (a naming phrase), WEAK (a phrase that often precedes a person),
    THING ("a town called"), PLACE (a preposition), MOTION (a phrase that precedes a place:
    "moved to", "flying from", "place of birth:"), or ""; ``word`` is the preposition;
    ``postcode``: a postcode comes right before; ``address``: "address"/"at"/"to" before."""

    kind: str
    word: str
    postcode: bool
    address: bool


_NONE = Context("", "", False, False)


def context_before(text: str, s: int) -> Context:
    window = text[max(0, s - _WINDOW) : s]
    words = _TOKEN.findall(window.lower())
    if not words:
        return _NONE
    last = words[-1]
    if last.isdigit() and _POSTCODE.search(window, max(0, len(window) - 16)):
        return Context(PLACE, "postcode", True, False)
    if last == "\n":
        if len(words) > 1 and words[-2] in _CLOSINGS:
            return Context(NAME, "", False, False)
        return _NONE
    if last == ":":
        words = words[:-1]
        if words and words[-1] in _COLON_NAME:
            return Context(NAME, "", False, words[-1] == "to")
    if not words:
        return _NONE
    address = words[-1] in _ADDRESS
    for k in (4, 3, 2, 1):
        if len(words) >= k:
            kind = _PHRASES.get(tuple(words[-k:]))
            if kind is not None:
                word = words[-1]
                if kind == PLACE and word == "to" and "from" in words[-4:-1]:
                    kind = MOTION  # "from X to Y"
                return Context(kind, word, False, address)
    return Context("", "", False, address)
