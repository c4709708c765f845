"""PERSON and LOCATION from capitalisation, context and the gazetteer, in one token scan.

Theory of operation. One regex pass collects the capitalised words; neighbours joined by a
single space (or ". " after an initial or a title, or a particle such as "van") form a
*run*. A run is cut into *segments* at titles, at words that are never names (months,
pronouns, "The"), and around places of several words ("New York"). Each segment is then
judged by rules, strongest first:

1. a title before it ("Dr", "Mrs", "Chancellor") or a naming phrase ("my name is", "Dear",
   "Ship to:", a signature line after "Regards,") makes it a PERSON; a weaker phrase
   ("with", "our CEO,", "patient") does when the words look like a name;
2. a known given name followed by any capitalised word is a full name, even when the
   surname is unknown ("Jennifer Zwartkruis"); two capitalised words of which one is a
   known surname are a name too;
3. a place word is a LOCATION; a place phrase before an unknown capitalised word
   ("in", "near", "moved to", "flying from", "place of birth:", a postcode), ", <state or
   country>" after it, or a place-shaped head or tail ("Lake", "Port", "City", "Tower",
   "-ville") make one; the words (the context) before a segment are read by
   :func:`~privml.anonymize.text._context.context_before`;
4. a capitalised word before "said/told/wrote..." is a PERSON, and so is one joined by
   "and" to a person just found;
5. words that are also everyday English ("May", "Will", "Reading", "Nice") count only with
   one of the contexts above or next to another name word; a capital at the start of a
   sentence is never evidence by itself. Words followed by a house number are a street
   ("Akátova 798"), not a person or a town.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from privml.anonymize.text._context import MOTION, NAME, WEAK, Context, context_before
from privml.anonymize.text._context import PLACE as PLACE_CTX
from privml.anonymize.text._gazetteer import (
    BIG_CITY,
    COMMON_WORD,
    COUNTRY,
    FIRST,
    LAST,
    NOT_NAME,
    PLACE,
    POPULAR,
    STATE,
    TITLE,
    Gazetteer,
)
from privml.anonymize.text._words import (
    GEO_HEADS,
    GEO_TAILS,
    ORG_TAILS,
    PLACE_SUFFIXES,
    STREET_HEADS,
    STREET_SUFFIXES,
    SURNAME_ENDINGS,
)

__all__ = ["scan_names"]

Hit = tuple[int, int, str, float]

_UP = "A-ZÀ-ÖØ-ÞĀ-Ž"
_LETTER = r"(?:[^\W\d_]|['\u2019])"
# a capitalised word: letters (and apostrophes, inner hyphens), never glued to a digit
_WORD = re.compile(
    rf"[{_UP}](?<![\w'\u2019-][{_UP}]){_LETTER}*(?:-[{_UP}]?{_LETTER}+)*(?![\w-])"
)
_POSSESSIVE = ("'s", "\u2019s")
_NEXT_WORD = re.compile(r" (\S+?)[,.;:!?)]*(?:\s|$)")
_PARTICLES = frozenset({
    "de", "van", "von", "da", "di", "del", "der", "den", "la", "le", "du", "dos", "das", "bin",
    "ibn", "al", "ter", "ten", "st",
})
_PERSON_AFTER = re.compile(
    r"(?:'s?\b)?\s*(?:,\s*(?:who|whose|aged?|\d{1,3}\b)|\s(?:said|says|told|asked|wrote|"
    r"writes|replied|explained|added|noted|thinks|thought|believes|works|worked|lives|"
    r"lived|was born|moved|went|came|joined|studied|graduated|married|smiled|laughed|"
    r"emailed|texted|phoned|called me|visited|thanked|signed|teaches|taught|wants|wanted|"
    r"needs|needed|agreed|confirmed|booked|paid|ordered|died|retired|is a|was a|who|from|"
    r"and (?:his|her) ))",
)
# more verbs a person does: evidence for two or three name-like words, not for one word
# ("Board approved", "Officer resigned")
_PERSON_AFTER_MORE = re.compile(
    r"(?:'s?\b)?\s*(?:\s(?:called|approved|reviewed|submitted|reported|requested|mentioned|"
    r"suggested|promised|resigned|complained|apologi[sz]ed|attended|answered|responded|"
    r"forwarded|is on leave|is out|is away|is off|will join|has joined)\b"
    r"|\s\([A-Z][A-Za-z&]{1,5}\))"
)
# words before (or opening) a street or town name whose words would look like a person's:
# "rue Gilles Berger", "Drumul Stan Diaconescu", "thành phố Hà Nội", "TP. Đà Nẵng"
_NOT_PERSON_HEADS = frozenset(
    {h.lower().rstrip(".") for h in STREET_HEADS}
    | {"intrarea", "drumul", "contrada", "đường", "phố", "tp", "tỉnh", "quận", "huyện", "khu"}
)
_WORD_BEFORE = re.compile(r"([^\W\d_]+)\.?\s+$")
# a small town's name doubles as a surname ("Ülküdeş Çorlu"); these never do
_NOT_PLAIN = COMMON_WORD | NOT_NAME | COUNTRY | STATE | BIG_CITY
_AND_AFTER = re.compile(r"\s*(?:and|&)\s*$")
_PLACE_AFTER = re.compile(r",\s+(?P<name>[A-Z][A-Za-z]+(?: [A-Z][a-z]+)?)\b")
_AND_BEFORE = re.compile(r"(?:\band|\bor|&)\s*$")
_STRONG_SUFFIXES = PLACE_SUFFIXES
_STREET_WORDS = frozenset(w.lower() for w in STREET_SUFFIXES)
_UNIT_WORDS = (
    r"(?:Apt|Apartment|Appartamento|Piano|Puerta|Piso|Ap|Bl|Sc|Suite|Unit|Flat|Floor|Fl|"
    r"Stock|Etage|App|Whg)"
)
# a house number right after the words, not the first number of the next address
_HOUSE_NUMBER_AFTER = re.compile(
    rf",?\s\d{{1,5}}[a-zA-Z]?(?:[-/]\d{{1,5}})?\b(?![.:,]?\d)"
    rf"(?!\s*(?!{_UNIT_WORDS}\b)[A-Za-z{_UP[:3]}])"
)
_WEAK_PLACE_WORDS = frozenset({"to", "at", "of"})
_STRONG_PLACE_WORDS = frozenset({"in", "near", "into", "postcode", "visited", "visiting"})


def _name_shaped(word: str) -> bool:
    """A word spelt like a (European) name: a letter outside ASCII ("Çorlu", "Strnadová") or
    a typical surname ending ("Kowalski", "Mazilescu", "Karjalainen")."""
    return not word.isascii() or word.endswith(SURNAME_ENDINGS)


def _sentence_start(text: str, s: int) -> bool:
    i = s - 1
    while i >= 0 and text[i] in " \t\"'“\u2018(":
        i -= 1
    return i < 0 or text[i] in ".!?\n"


class _Scan:
    def __init__(self, text: str, gz: Gazetteer, blocked: Sequence[tuple[int, int]]) -> None:
        self.text = text
        self.lower = text.lower()
        self.gz = gz
        self.blocked = blocked
        self.hits: list[Hit] = []
        self.last_entity = ""
        self.last_end = -10
        self.multi_end = 0
        self.skip_to = 0
        self.pending = (-10, -10)  # a name-like segment left undecided: "X" in "X and Y said"

    # ---- tokens and runs ------------------------------------------------------------------

    def tokens(self) -> list[tuple[int, int, int]]:
        """(start, end, flags) of each capitalised word outside the pattern hits."""
        out: list[tuple[int, int, int]] = []
        text, lower, get, blocked = self.text, self.lower, self.gz.flags.get, self.blocked
        b, nb = 0, len(blocked)
        for m in _WORD.finditer(text):
            s, e = m.span()
            if nb:
                while b < nb and blocked[b][1] <= s:
                    b += 1
                if b < nb and blocked[b][0] < e:
                    continue
            if lower.endswith(_POSSESSIVE, s, e):
                e -= 2
            key = lower[s:e]
            if e - s > 1 and text[s + 1].isupper() and text[s:e].isupper():
                f = get(key, 0) & (COUNTRY | STATE)
                f = f or NOT_NAME  # an acronym: not a name, and it breaks a run
            else:
                f = get(key, 0)
                if not f and "-" in key:
                    f = get(key.split("-", 1)[0], 0) & (FIRST | LAST)
            out.append((s, e, f))
        return out

    def joined(self, prev: tuple[int, int, int], nxt: tuple[int, int, int]) -> bool:
        gap = self.text[prev[1] : nxt[0]]
        if gap == " ":
            return True
        if gap[:1] == "." and (prev[1] - prev[0] == 1 or prev[2] & TITLE):
            if gap == ". ":
                return True
            gap = gap[1:]
        words = gap.lower().split()
        return (gap[:1] == " " and gap[-1:] == " " and 0 < len(words) <= 2
                and all(w in _PARTICLES for w in words) and gap.count(" ") == len(words) + 1)

    def run(self) -> list[Hit]:
        toks = self.tokens()
        i, n = 0, len(toks)
        while i < n:
            if toks[i][0] < self.skip_to:  # inside a place of several words already found
                i += 1
                continue
            j = i + 1
            while j < n and j - i < 6 and self.joined(toks[j - 1], toks[j]):
                j += 1
            self.segments(toks[i:j])
            i = j
        return self.hits

    def segments(self, run: list[tuple[int, int, int]]) -> None:
        text = self.text
        title = False
        seg: list[tuple[int, int, int]] = []
        k = 0
        while k < len(run):
            s, e, f = run[k]
            multi = 0 if seg or title else self.multi_place(run, k)
            if multi:
                self.flush(seg, title)
                seg, title = [], False
                self.emit(s, self.multi_end, "LOCATION", 0.85)
                self.skip_to = self.multi_end
                k += multi
                continue
            if f & TITLE and k + 1 < len(run):
                self.flush(seg, title)
                seg, title = [], True
            elif (f & NOT_NAME and not (f & (FIRST | PLACE) and seg) and not (
                f & FIRST and k + 1 < len(run) and run[k + 1][2] & (FIRST | LAST)
                and not run[k + 1][2] & NOT_NAME
            )) or (
                not seg and k + 1 < len(run) and f & COMMON_WORD
                and not f & (FIRST | COUNTRY | STATE | BIG_CITY)
                and text[s:e].lower() not in GEO_HEADS
            ):
                self.flush(seg, title)
                seg, title = [], False  # a context word: "In Paris", "Dear Ann"
            else:
                seg.append((s, e, f))
            k += 1
        self.flush(seg, title)

    def multi_place(self, run: list[tuple[int, int, int]], k: int) -> int:
        """How many tokens of ``run`` from ``k`` a place of several words covers (it may
        run on past the run: "Trinidad and Tobago"), as the count of run tokens; the place's
        end is left in ``self.multi_end``."""
        s, e, _ = run[k]
        lower = self.lower
        first = lower[s:e]
        if first not in self.gz.multi_first:
            return 0
        nxt = _NEXT_WORD.match(lower, e)
        if nxt is None:
            return 0
        options = self.gz.multi.get(f"{first} {nxt[1]}")
        if not options:
            return 0
        for phrase in options:
            end = s + len(phrase)
            if lower.startswith(phrase, s) and (end == len(lower) or not lower[end].isalnum()):
                self.multi_end = end
                count = 1
                while k + count < len(run) and run[k + count][0] < end:
                    count += 1
                return count
        return 0

    # ---- judging a segment ----------------------------------------------------------------

    def emit(self, s: int, e: int, entity: str, score: float) -> None:
        ps, pe = self.pending
        if entity == "PERSON" and 0 < s - pe <= 6 and _AND_AFTER.match(self.text, pe, s):
            self.hits.append((ps, pe, "PERSON", 0.55))  # "X and Y signed": X is one too
        self.pending = (-10, -10)
        self.hits.append((s, e, entity, score))
        self.last_entity, self.last_end = entity, e

    def flush(self, seg: list[tuple[int, int, int]], title: bool) -> None:
        if not seg:
            return
        if len(seg) == 1 and not title and seg[0][2] and not seg[0][2] & (FIRST | LAST | PLACE):
            return  # one everyday word ("The", "Please"): nothing to judge
        text = self.lower
        s, e = seg[0][0], seg[-1][1]
        last_word = text[seg[-1][0] : e]
        if last_word in ORG_TAILS or last_word.rstrip(".") in ORG_TAILS:
            return
        if title:
            self.emit(s, e, "PERSON", 0.85)
            return
        if last_word in _STREET_WORDS:
            return
        ctx = context_before(self.text, s)
        number = _HOUSE_NUMBER_AFTER.match(self.text, e)
        if number is not None:  # "Akátova 798": a street name, not a person or a town
            if ctx.address or ctx.kind == MOTION:
                self.emit(s, number.end(), "STREET_ADDRESS", 0.5)
            return
        verdict = self.judge(seg, s, e, ctx)
        if verdict is not None:
            self.emit(s, e, verdict[0], verdict[1])
        elif len(seg) > 1 and self.plain(seg):
            self.pending = (s, e)

    def judge(
        self, seg: list[tuple[int, int, int]], s: int, e: int, ctx: Context
    ) -> tuple[str, float] | None:
        flags = [f for _, _, f in seg]
        f0 = flags[0]
        first_word = self.text[seg[0][0] : seg[0][1]].lower()
        namelike = not all(f & (COMMON_WORD | NOT_NAME) and not f & (FIRST | LAST)
                           for f in flags)
        if ctx.kind == NAME and namelike:
            return "PERSON", 0.85
        if (ctx.kind == WEAK and namelike
                and not any(f & PLACE and not f & FIRST for f in flags)
                and (len(seg) > 1 or f0 & (FIRST | LAST) or self.and_person(s))):
            return "PERSON", 0.6
        # "into" stands for every phrase that introduces a place ("moved to", "flying from")
        place_word = "into" if ctx.kind == MOTION else ctx.word if ctx.kind == PLACE_CTX else ""
        if len(seg) >= 2:
            return self.judge_many(seg, flags, place_word, first_word)
        return self.judge_one(s, e, f0, place_word, first_word)

    def judge_many(
        self, seg: list[tuple[int, int, int]], flags: list[int], place_word: str,
        first_word: str,
    ) -> tuple[str, float] | None:
        text = self.text
        f0, f1 = flags[0], flags[1]
        last_word = text[seg[-1][0] : seg[-1][1]].lower()
        if (first_word in GEO_HEADS and not f1 & COMMON_WORD) or last_word in GEO_TAILS:
            return "LOCATION", 0.75
        names = [bool(f & (FIRST | LAST)) for f in flags]
        strong_place = place_word in _STRONG_PLACE_WORDS
        if strong_place and not f0 & FIRST and not any(f & COMMON_WORD for f in flags):
            return "LOCATION", 0.6
        first_name = f0 & FIRST and not (f0 & COMMON_WORD and not f1 & (FIRST | LAST))
        two_places = f0 & PLACE and f1 & PLACE and not f1 & (FIRST | LAST)
        if first_name and not two_places:
            return "PERSON", 0.85 if names[1] else 0.75
        if any(f & LAST and not f & COMMON_WORD for f in flags) and all(
            not f & (COMMON_WORD | NOT_NAME) or f & (FIRST | LAST) for f in flags
        ) and not (place_word and all(f & PLACE for f in flags)):
            return "PERSON", 0.6
        if not (place_word and place_word not in _WEAK_PLACE_WORDS) and len(seg) <= 3 and (
            all(f & (FIRST | LAST) or not f & _NOT_PLAIN for f in flags)
            and any(_name_shaped(text[a:b]) and not f & PLACE for a, b, f in seg)
            and not self.street_head(seg)
        ):
            return "PERSON", 0.55  # "Seçgül Yorulmaz", "Olgierd Kowalski": name-shaped words
        if place_word and place_word not in _WEAK_PLACE_WORDS and not any(
            f & COMMON_WORD for f in flags
        ):
            return "LOCATION", 0.55
        e = seg[-1][1]
        if (self.person_after(e) or self.and_person(seg[0][0])
                or (self.plain(seg) and _PERSON_AFTER_MORE.match(text, e, e + 40))):
            return "PERSON", 0.6
        return None

    def judge_one(
        self, s: int, e: int, f: int, place_word: str, word: str
    ) -> tuple[str, float] | None:
        common = bool(f & COMMON_WORD)
        if f & NOT_NAME or (len(word) == 1):
            return None
        place = bool(f & PLACE)
        big = bool(f & (COUNTRY | STATE | BIG_CITY))
        after_place = self.place_after(e)
        if place and (place_word or after_place):
            return "LOCATION", 0.85
        sentence_start = _sentence_start(self.text, s)
        if place and not common and not f & FIRST and (big or not sentence_start):
            return "LOCATION", 0.7 if big else 0.65
        person_after = self.person_after(e)
        if f & (FIRST | LAST) and (person_after or self.and_person(s)):
            return "PERSON", 0.6
        if f & FIRST and not common and (f & POPULAR or not sentence_start):
            if place and big:
                return "LOCATION", 0.6
            return "PERSON", 0.6 if not place else 0.5
        if f & (FIRST | LAST | PLACE) and place_word == "to":
            return None
        if not f or f == LAST:  # an unknown capitalised word (or a bare surname)
            if after_place:
                return "LOCATION", 0.7
            if place_word and place_word not in _WEAK_PLACE_WORDS and not f:
                return "LOCATION", 0.55
            if place_word in _STRONG_PLACE_WORDS:
                return "LOCATION", 0.5
            if place_word == "to" and not f and not sentence_start:
                return "LOCATION", 0.45
            if not sentence_start and not f and word.endswith(_STRONG_SUFFIXES):
                return "LOCATION", 0.45
            if person_after or self.and_person(s):
                return "PERSON", 0.55
        return None

    # ---- context helpers ------------------------------------------------------------------

    def street_head(self, seg: list[tuple[int, int, int]]) -> bool:
        s = seg[0][0]
        before = _WORD_BEFORE.search(self.text, max(0, s - 16), s)
        first = self.lower[s : seg[0][1]]
        return first in _NOT_PERSON_HEADS or (
            before is not None and before[1].lower() in _NOT_PERSON_HEADS
        )

    def plain(self, seg: list[tuple[int, int, int]]) -> bool:
        """Every word is unknown or a known name: no everyday word, no known place."""
        return all(
            f & (FIRST | LAST) or not f & (COMMON_WORD | NOT_NAME | PLACE) for _, _, f in seg
        )

    def person_after(self, e: int) -> bool:
        return _PERSON_AFTER.match(self.text, e, e + 40) is not None

    def place_after(self, e: int) -> bool:
        m = _PLACE_AFTER.match(self.text, e, e + 40)
        if m is None:
            return False
        name = m["name"]
        if len(name) == 2 and name in self.gz.state_codes:
            self.hits.append((m.start("name"), m.end("name"), "LOCATION", 0.7))
            return True
        return bool(self.gz.flags.get(name.lower(), 0) & (STATE | COUNTRY))

    def and_person(self, s: int) -> bool:
        if self.last_entity != "PERSON" or s - self.last_end > 6:
            return False
        return _AND_BEFORE.search(self.text, self.last_end, s) is not None


def scan_names(text: str, gz: Gazetteer, blocked: Sequence[tuple[int, int]]) -> list[Hit]:
    """PERSON and LOCATION hits in ``text``, ignoring words inside ``blocked`` spans (the
    pattern hits, sorted by start)."""
    return _Scan(text, gz, blocked).run()
