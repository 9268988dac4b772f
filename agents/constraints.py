"""What a user asks for in a conversation, as a pydantic schema, and llmrec's own rules that read it.

`Constraints` is one turn's request or a session's accumulated filters:
- `genres` (every one required) and `exclude_genres`, from the catalog's genre vocabulary only;
- `year_from` / `year_to`, and a relative `era` ("older", "newer") resolved against what was shown;
- `liked_titles` / `excluded_titles`, as written (resolved against the catalog by `agents.titles`): only an
  explicit statement of the user's own ("I loved Fargo"; "I never liked Titanic") is feedback;
- `mentions`: titles named without a statement of the user's own liking ("something like Heat", `Is "Fargo" any
  good?`, "my kids loved Toy Story"): they anchor this turn and are never stored as feedback;
- `more_like`, a 1-based position in the list shown last ("more like the second one", "#2");
- `unread`: the parts of a message the rules could not read ("more violent", "nobody I know enjoyed Titanic"),
  for the reply to name.

`read_rules` is deterministic. Its words are the domain's (`llmrec.domains.Domain.lexicon`: genre names, synonyms,
mood words, comparatives such as "funnier", decade and era words, what an item is called), so a new domain is a
data file. Negation cues scope to the end of their clause ("not a romance", "never show me horror or Titanic",
"nothing newer than 1985"); a question (a clause ending in '?', a sentence opening with "is", "what about", ...)
states no opinion; a statement about someone else's taste is not the user's. Whatever it returns is checked
against the catalog (`Constraints.validated`); the LLM's extraction (`agents.understand`) only adds to it where
the message supports the addition.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from llmrec.domains import Domain, Shift, default_domain
from llmrec.schemas import Item, ItemFilter

MAX_TITLES = 5
MAX_TITLE_CHARS = 80
MAX_UNREAD = 5


class Constraints(BaseModel):
    """One turn's request, or a session's accumulated filters (then titles and references are resolved away)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    genres: tuple[str, ...] = Field(default=(), description="Catalog genres an item must all have.")
    exclude_genres: tuple[str, ...] = Field(default=(), description="Catalog genres an item must have none of.")
    year_from: int | None = Field(default=None, ge=1800, le=2100)
    year_to: int | None = Field(default=None, ge=1800, le=2100)
    era: Literal["older", "newer"] | None = Field(default=None, description="Relative to the current range or the list shown.")
    liked_titles: tuple[str, ...] = Field(default=(), max_length=MAX_TITLES)
    excluded_titles: tuple[str, ...] = Field(default=(), max_length=MAX_TITLES)
    mentions: tuple[str, ...] = Field(default=(), max_length=MAX_TITLES, description=(
        "Titles named without a statement of the user's own liking: anchors for this turn, never stored as feedback."))
    unread: tuple[str, ...] = Field(default=(), max_length=MAX_UNREAD, description=(
        "Parts of the message the rules could not read, as written, for the reply to name."))
    more_like: int | None = Field(default=None, ge=1, le=50, description="1-based position in the list shown last.")
    reset: bool = Field(default=False, description="'instead', 'start over': earlier genre and year filters are dropped.")

    def is_empty(self) -> bool:
        return self == Constraints()

    def filters(self) -> Constraints:
        """Only what filters items (genres and years): the part a session keeps between turns."""
        return Constraints(genres=self.genres, exclude_genres=self.exclude_genres, year_from=self.year_from, year_to=self.year_to)

    def matches(self, item: Item) -> bool:
        """Whether a catalog item passes the genre and year filters: the retrieval filter's own rule (`ItemFilter.matches`)."""
        return ItemFilter(genres=self.genres, exclude_genres=self.exclude_genres, year_from=self.year_from,
                          year_to=self.year_to).matches(item)

    def validated(self, vocabulary: Iterable[str]) -> Constraints:
        """Genres outside the catalog's vocabulary dropped, titles capped, a reversed year range put in order."""
        known = set(vocabulary)
        wanted = tuple(dict.fromkeys(g for g in self.genres if g in known))
        excluded = tuple(dict.fromkeys(g for g in self.exclude_genres if g in known and g not in wanted))
        low, high = self.year_from, self.year_to
        if low is not None and high is not None and low > high:
            low, high = high, low
        cap = lambda titles: tuple(dict.fromkeys(t.strip()[:MAX_TITLE_CHARS] for t in titles if t.strip()))[:MAX_TITLES]  # noqa: E731
        return self.model_copy(update=dict(genres=wanted, exclude_genres=excluded, year_from=low, year_to=high,
                                           liked_titles=cap(self.liked_titles), excluded_titles=cap(self.excluded_titles),
                                           mentions=cap(self.mentions)))

    def describe(self) -> str:
        """One line a user can check: 'Comedy · 1990–1999 · not Romance'; '' when nothing filters."""
        parts = [" + ".join(self.genres)] if self.genres else []
        if self.year_from is not None or self.year_to is not None:
            parts.append(f"{self.year_from or '…'}–{self.year_to or '…'}" if self.year_from != self.year_to else str(self.year_from))
        if self.exclude_genres:
            parts.append("not " + ", ".join(self.exclude_genres))
        return " · ".join(parts)


def accumulate(session: Constraints, turn: Constraints) -> Constraints:
    """A session's filters after one more turn: genres add up (narrowing), exclusions add up, a later
    wish wins over an earlier exclusion and the other way round, new years replace old ones; a reset
    ('instead', 'start over') starts from this turn's filters alone."""
    if turn.reset:
        return turn.filters()
    wanted = [g for g in session.genres if g not in turn.exclude_genres] + list(turn.genres)
    excluded = [g for g in session.exclude_genres if g not in turn.genres] + list(turn.exclude_genres)
    years_given = turn.year_from is not None or turn.year_to is not None
    return Constraints(genres=tuple(dict.fromkeys(wanted)), exclude_genres=tuple(dict.fromkeys(excluded)),
                       year_from=turn.year_from if years_given else session.year_from,
                       year_to=turn.year_to if years_given else session.year_to)


def apply_era(filters: Constraints, era: str | None, reference_year: int | None) -> Constraints:
    """'older': before the current range (or before `reference_year`, the year of what was shown); 'newer': after it."""
    if era == "older":
        edge = filters.year_from if filters.year_from is not None else reference_year
        return filters.model_copy(update=dict(year_from=None, year_to=edge - 1)) if edge else filters
    if era == "newer":
        edge = filters.year_to if filters.year_to is not None else reference_year
        return filters.model_copy(update=dict(year_from=edge + 1, year_to=None)) if edge else filters
    return filters


# --- the rules ------------------------------------------------------------------------------------

_ORDINALS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7, "eighth": 8,
             "ninth": 9, "tenth": 10, "1st": 1, "2nd": 2, "3rd": 3, "4th": 4, "5th": 5, "6th": 6, "7th": 7, "8th": 8,
             "9th": 9, "10th": 10, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5}
_CLAUSE_END = re.compile(r"[,;.!?]|\bbut\b|\bhowever\b|\bthough\b|\balthough\b|\bwhereas\b", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?;]")
_NEGATION = re.compile(r"\b(?:not|no|never(?:\s+show\s+me)?|without|nothing|except|nobody|no\s+one|none|neither|nor|less|"
                       r"(?:do|does|did|is|are|was|were|wo|would|could|should|ca)n'?t|cannot|no\s+more|hate[ds]?|"
                       r"dislike[ds]?|can'?t\s+stand|avoid)\b", re.IGNORECASE)
_THIRD_PARTY_NEGATION = re.compile(r"\b(?:nobody|no\s+one|none\s+of)\b", re.IGNORECASE)
_QUESTION_START = re.compile(r"\W*(?:is|are|was|were|do|does|did|have|has|had|would|could|should|can|will|what|how|which|"
                             r"who|where|why|any|isn'?t|aren'?t|wasn'?t|doesn'?t|didn'?t)\b", re.IGNORECASE)
_TITLE_DISLIKE = re.compile(r"\b(?:never\s+show\s+me|don'?t\s+show\s+me|do\s+not\s+show\s+me|no\s+more|hated?|hates|"
                            r"dislike[ds]?|(?:didn'?t|don'?t|do\s+not|did\s+not)\s+(?:like|enjoy|care\s+for|want)|can'?t\s+stand|couldn'?t\s+stand)\s+"
                            r"(?P<title>[^,;.!?]+)", re.IGNORECASE)
_TITLE_LIKE = re.compile(r"\b(?:(?:(?:i|we)\s+(?:really\s+|just\s+|also\s+)?)?(?:loved|liked|enjoyed|adored)|"
                         r"(?:i|we)\s+(?:really\s+|just\s+|also\s+)?(?:love|like|enjoy|adore)|"
                         r"(?:big\s+|huge\s+)?fans?\s+of)\s+(?P<title>[^,;.!?]+)", re.IGNORECASE)
"""Statement cues: the user's own opinion of a title, unless negated (a dislike), asked, or someone else's."""
_TITLE_REQUEST = re.compile(r"\b(?:more\s+like|nothing\s+like|something\s+like|anything\s+like|stuff\s+like|similar\s+to|"
                            r"in\s+the\s+vein\s+of|along\s+the\s+lines\s+of)\s+(?P<title>[^,;.!?]+)", re.IGNORECASE)
"""Request cues: a title to anchor on ('something like Heat'); no opinion stated, so a mention (or, negated, a dislike)."""
_QUOTED = re.compile(r"[\"“]([^\"“”]{1,80})[\"”]")
_RESET = re.compile(r"\b(?:instead|start\s+over|new\s+search|something\s+else\s+entirely)\b", re.IGNORECASE)
_YEAR = r"(1[89]\d\d|20\d\d)"
_FIRST_PERSON = {"i", "we", "i'm", "im", "i've", "ive", "we've", "we're", "i'd", "me", "us"}
_SUBJECT_FILLER = {"really", "just", "also", "always", "totally", "absolutely", "truly", "so", "never", "ever", "have", "had",
                   "did", "do", "both", "all", "kind", "sort", "of", "a", "an", "big", "huge", "great", "was", "were", "am",
                   "been", "honestly", "actually", "not", "quite", "pretty", "much", "particularly", "especially"}
_THIRD_PARTY = re.compile(r"\b(?:nobody|no\s+one|none|everyone|everybody|someone|somebody|people|he|she|they|my\s+\w+|"
                          r"his|her|their|friends?|wife|husband|partner|kids|son|daughter|mom|dad|mother|father|brother|"
                          r"sister|boyfriend|girlfriend|critics)\b", re.IGNORECASE)
_TRAILING = re.compile(r"(?:\s+(?:a\s+lot|so\s+much|very\s+much|too|as\s+well|again|a\s+bit))+$", re.IGNORECASE)
_TITLE_SPLIT = re.compile(r"\s*,\s*(?:or\s+|and\s+|nor\s+)?|\s+(?:or|and|nor)\s+", re.IGNORECASE)
_NOT_COMPARATIVE = {"older", "newer", "later", "earlier", "other", "rather", "never", "ever", "however", "whatever", "after",
                    "over", "under", "together", "either", "neither", "whether", "number", "remember", "answer", "consider",
                    "prefer", "order", "matter", "character", "summer", "winter", "super", "user", "cover", "offer",
                    "poster", "monster", "monsters", "thriller", "thrillers", "whoever", "wherever", "her", "per", "here",
                    "there", "where", "were", "computer", "quarter", "another", "sooner"}
_COMPARATIVE_CUE = (r"(?:but|and|bit|little|slightly|much|even|way|something|anything|somewhat|lot|far|one|ones|maybe|"
                    r"perhaps|just)")


def _phrase_pattern(phrase: str) -> str:
    """A lexicon phrase at word boundaries, a space or a hyphen between its words either way ('sci fi' = 'sci-fi')."""
    return r"(?<![\w-])" + r"[\s-]".join(re.escape(w) for w in re.split(r"[\s-]+", phrase)) + r"(?![\w-])"


@lru_cache(maxsize=64)
def _alternation(phrases: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{_phrase_pattern(p)})" for p in sorted(phrases, key=len, reverse=True)) or r"(?!x)x",
                      re.IGNORECASE)


class _Reader:
    """One domain's reading of messages against one catalog vocabulary: the lexicon and the item words compiled once."""

    def __init__(self, vocabulary: Iterable[str], domain: Domain):
        self.vocabulary = list(vocabulary)
        self.domain = domain
        self.lexicon = domain.lexicon(self.vocabulary)
        self.phrases = _alternation(tuple(self.lexicon))
        items = "|".join(re.escape(w) for w in sorted({*domain.item_words, "item", "items", "one", "ones"}, key=len, reverse=True))
        self.generic = re.compile(rf"^(?:something|anything|some|to|it|that|this|them|those|these|what|stuff|{items}|"
                                  rf"a\s+(?:{items}|lot)|more)(?=\s|$)", re.IGNORECASE)
        self.filler = re.compile(rf"^(?:the\s+(?:{items})\s+|an?\s+(?:{items})\s+called\s+|(?:{items})\s+like\s+)", re.IGNORECASE)
        self.item_words = re.compile(rf"\b(?:{items})\b", re.IGNORECASE)
        self.more_like = re.compile(r"(?:more\s+like|like|similar\s+to)\s+(?:the\s+)?(?:#\s*(?P<hash>\d{1,2})|number\s+(?P<num>\d{1,2})|"
                                    r"(?P<ord>" + "|".join(_ORDINALS) + rf")(?:\s+(?:{items}|pick))?)\b"
                                    r"|(?<![\w#])#\s*(?P<bare>\d{1,2})\b", re.IGNORECASE)
        self.decade_words = {k.lower(): v for k, v in domain.decades.items()}
        eras = sorted(domain.eras, key=len, reverse=True)
        self.era_words = re.compile(r"\b(" + "|".join(r"\s+".join(map(re.escape, e.split())) for e in eras) + r")\b",
                                    re.IGNORECASE) if eras else None

    # genres ---------------------------------------------------------------------------------------

    def genre_mentions(self, text: str) -> list[tuple[int, int, Shift]]:
        """(start, end, shift) of every lexicon phrase at word boundaries, leftmost-longest, not overlapping."""
        return [(m.start(), m.end(), self.lexicon[self._key(m.group())]) for m in self.phrases.finditer(text)]

    def _key(self, written: str) -> str:
        spaced = " ".join(re.split(r"[\s-]+", written.lower()))
        return next(p for p in self.lexicon if " ".join(re.split(r"[\s-]+", p)) == spaced)

    # titles ---------------------------------------------------------------------------------------

    def clean_title(self, raw: str, is_title: Callable[[str], bool]) -> str | None:
        """A title span from a cue, without trailing filler; None when it is a genre, an era or a reference instead.
        A span with a genre word in it is a title only when it is exactly a catalog title ('Last Action Hero')."""
        title = self.filler.sub("", raw.strip(" '\"“”")).strip(" '\"“”")
        title = _TRAILING.sub("", title).strip(" '\"“”") or title
        words = re.sub(r"\b(?:a|an|the|any|more|please|so\s+much|a\s+lot|very\s+much)\b", " ", title.lower())
        rest = " ".join(self.item_words.sub(" ", words).split())
        if is_title(title):
            return title[:MAX_TITLE_CHARS]
        if self.generic.match(title) or self.phrases.search(title):
            return None  # "something funny", "to watch a comedy": a wish, not a title
        if not rest or self.more_like.match("like " + title) or _years_in(title, self) or self.era(title):
            return None
        return title[:MAX_TITLE_CHARS] or None

    def title_parts(self, raw: str, start: int, is_title: Callable[[str], bool]) -> list[tuple[str, int, int]]:
        """(title, start, end) in the text for a cue's span: cut at the clause's end, then split where a list mixes
        titles and genres ('horror or Titanic'); a list of titles alone stays whole (the resolver splits it)."""
        cut = re.split(r"\s+(?:but|though|however|please|instead|and\s+(?:never|no|not|i|something|more))\b", raw, maxsplit=1,
                       flags=re.IGNORECASE)[0].rstrip()
        whole = self.clean_title(cut, is_title)
        if whole and is_title(whole):
            return [self._locate(whole, raw, start)]
        parts, last = [], 0
        for m in [*_TITLE_SPLIT.finditer(cut), None]:
            end = m.start() if m else len(cut)
            if cut[last:end].strip():
                parts.append((cut[last:end], start + last))
            last = m.end() if m else last
        if len(parts) > 1 and any(self.phrases.search(p) and not self.clean_title(p, is_title) for p, _ in parts):
            found = [(self.clean_title(p, is_title), a, p) for p, a in parts]
            return [self._locate(t, p, a) for t, a, p in found if t]
        return [self._locate(whole, raw, start)] if whole else []

    @staticmethod
    def _locate(title: str, raw: str, start: int) -> tuple[str, int, int]:
        at = raw.lower().find(title.lower())
        at = max(at, 0)
        return title, start + at, start + at + len(title)

    # years and eras -------------------------------------------------------------------------------

    def era(self, text: str) -> Literal["older", "newer"] | None:
        m = self.era_words.search(text) if self.era_words else None
        return self.domain.eras[" ".join(m.group(1).lower().split())] if m else None  # type: ignore[return-value]

    # comparatives and what is left unread --------------------------------------------------------

    def unread_comparatives(self, text: str) -> list[str]:
        """'more violent', 'a bit weirder': a comparative that no lexicon entry or era word reads."""
        out = []
        for m in re.finditer(r"(?<!\bno\s)\b(more|less)\s+([a-z][a-z'-]+)", text, re.IGNORECASE):
            word = m.group(2).lower()
            phrase = f"{m.group(1).lower()} {word}"
            if (phrase in self.lexicon or word in self.lexicon or self.phrases.match(text, m.start(2)) or
                    (self.era_words and self.era_words.fullmatch(phrase)) or self.item_words.fullmatch(word) or
                    word in {"like", "than", "of", "similar", "please", "stuff", "things", "options", "choices", "suggestions",
                             "recommendations", "results", "picks", "ideas", "titles", "the", "a", "an", "or", "and", "to"}):
                continue
            out.append(m.group(0))
        for m in re.finditer(rf"\b{_COMPARATIVE_CUE}\s+([a-z]{{3,}}(?:ier|er))\b", text, re.IGNORECASE):
            word = m.group(1).lower()
            if word in self.lexicon or word in _NOT_COMPARATIVE or word in self.domain.eras or word.endswith("eer"):
                continue
            out.append(m.group(1))
        return out


def _reader(vocabulary: Iterable[str], domain: Domain | None) -> _Reader:
    return _Reader(vocabulary, domain or default_domain())


def negated(text: str, position: int) -> bool:
    """Whether a negation cue stands before `position` in the same clause."""
    return _NEGATION.search(text, _clause_start(text, position), position) is not None


def _clause_start(text: str, position: int) -> int:
    return max((m.end() for m in _CLAUSE_END.finditer(text, 0, position)), default=0)


def _is_question(text: str, position: int) -> bool:
    """Whether `position` lies in a question: its clause ends with '?', or its sentence opens with 'is', 'have you', 'what about'..."""
    start = max((m.end() for m in _SENTENCE_END.finditer(text, 0, position)), default=0)
    end = re.compile(r"[,;.!?]").search(text, position)
    return (end is not None and end.group() == "?") or _QUESTION_START.match(text, start) is not None


def _whose(text: str, cue: int) -> Literal["user", "other"]:
    """Whose opinion a statement cue at `cue` states: the first word before it (past adverbs and auxiliaries) is 'I' or
    'we', or nothing names anyone else in the clause → the user's; 'nobody I know enjoyed', 'my wife loved' → other."""
    before = re.findall(r"[\w']+", text[_clause_start(text, cue):cue].lower())
    while before and before[-1] in _SUBJECT_FILLER:
        before.pop()
    if not before or before[-1] in _FIRST_PERSON and not _THIRD_PARTY_NEGATION.search(text, _clause_start(text, cue), cue):
        return "user"
    return "other" if _THIRD_PARTY.search(" ".join(before)) else "user"


def _years_in(text: str, reader: _Reader) -> tuple[int | None, int | None] | None:
    found = _years(text, reader)
    return found[:2] if found[:2] != (None, None) else None


_DECADE = r"(?:the\s+)?(?:(?P<{n}4>1[89]\d0|20[0-2]0)'?s|'?(?P<{n}2>[2-9]0)'?s|(?P<{n}w>{words}))"
_OLDER = r"(?:or|and)\s+(?:earlier|before|older|prior)"
_NEWER = r"(?:or|and)\s+(?:later|after|newer|since|up|onwards?|beyond)|onwards?|and\s+on"


def _decade_pattern(reader: _Reader, name: str) -> str:
    words = "|".join(map(re.escape, sorted(reader.decade_words, key=len, reverse=True))) or r"(?!x)x"
    return _DECADE.format(n=name, words=words)


def _decade_start(m: re.Match[str], name: str, reader: _Reader) -> int:
    if m.group(f"{name}4"):
        return int(m.group(f"{name}4"))
    if m.group(f"{name}2"):
        return 1900 + int(m.group(f"{name}2"))
    return reader.decade_words[m.group(f"{name}w").lower()]


def _years(text: str, reader: _Reader) -> tuple[int | None, int | None, str | None]:
    """A year range, and an unread phrase, from years and decades: 'between 1980 and 1990', 'before 1980', 'older than
    1990', 'nothing newer than 1985' (negated: the opposite side, the year itself included), '90s or earlier', 'the 80s
    or 90s' (the span of the list), 'nineties'. A negated decade ('not from the 80s') cannot be a range: unread."""
    one = _decade_pattern(reader, "a")
    two = _decade_pattern(reader, "b")
    if m := re.search(rf"\bbetween\s+{_YEAR}\s+and\s+{_YEAR}\b", text) or re.search(rf"\b{_YEAR}\s*(?:-|–|to)\s*{_YEAR}\b", text):
        return int(m.group(1)), int(m.group(2)), None
    before = r"before|until|up\s+to|prior\s+to|through|older\s+than|earlier\s+than|pre-?"
    after = r"after|later\s+than|newer\s+than|more\s+recent\s+than|younger\s+than|post-?"
    for cue, side in ((before, "before"), (after, "after")):
        if m := re.search(rf"\b(?:{cue})\s*(?:the\s+)?(?:{_YEAR}|(?P<dec>{one}))(?!\d)", text, re.IGNORECASE):
            inclusive = re.match(r"until|up\s+to|through", m.group(0), re.IGNORECASE) is not None
            if m.group("dec"):
                start = _decade_start(m, "a", reader)
                edge_low, edge_high = start, start + 9
            else:
                edge_low = edge_high = int(m.group(1))
            if negated(text, m.start()):  # "nothing newer than 1985": up to 1985; "not before 1980": from 1980
                return (edge_low, None, None) if side == "before" else (None, edge_high, None)
            if side == "before":
                return None, edge_high if inclusive else edge_low - 1, None
            return edge_high + 1, None, None
    if m := re.search(rf"\b(?:since|from\s+after)\s+{_YEAR}\b|\b{_YEAR}\s+(?:{_NEWER})\b", text, re.IGNORECASE):
        return int(m.group(1) or m.group(2)), None, None
    if m := re.search(rf"\b{_YEAR}\s+(?:{_OLDER})\b", text, re.IGNORECASE):
        return None, int(m.group(1)), None
    decades = [(d, _decade_start(d, "a", reader)) for d in re.finditer(rf"(?<![\w']){one}(?![\w])", text, re.IGNORECASE)]
    if decades:
        first, start = decades[0]
        rest = text[first.end():]
        if negated(text, first.start()):
            end = _CLAUSE_END.search(text, first.end())
            return None, None, text[_clause_start(text, first.start()):end.start() if end else len(text)].strip()
        if re.match(rf"\s*(?:{_OLDER})\b", rest, re.IGNORECASE):
            return None, start + 9, None
        if re.match(rf"\s*(?:{_NEWER})\b", rest, re.IGNORECASE):
            return start, None, None
        listed = [start]
        chained = re.match(rf"(?:(?:\s*,\s*|\s+)(?:or\s+|and\s+|to\s+|through\s+)?{two})+", rest, re.IGNORECASE)
        if chained:
            listed = [start, *(_decade_start(d, "b", reader) for d in re.finditer(two, chained.group(0), re.IGNORECASE))]
        return min(listed), max(listed) + 9, None
    if m := re.search(rf"\b(?:in|from)\s+{_YEAR}\b", text, re.IGNORECASE):
        return int(m.group(1)), int(m.group(1)), None
    return None, None, None


def _more_like(text: str, reader: _Reader) -> int | None:
    m = reader.more_like.search(text)
    if not m:
        return None
    value = m.group("hash") or m.group("num") or m.group("bare")
    return int(value) if value else _ORDINALS[m.group("ord").lower()]


class _Titles:
    def __init__(self) -> None:
        self.liked: list[str] = []
        self.excluded: list[str] = []
        self.mentions: list[str] = []
        self.unread: list[str] = []
        self.spans: list[tuple[int, int]] = []

    def taken(self, position: int) -> bool:
        return any(a <= position < b for a, b in self.spans)


def _titles(text: str, reader: _Reader, is_title: Callable[[str], bool]) -> _Titles:
    """Liked, excluded and mentioned titles, and their spans in `text`, from title cues and quotes."""
    out = _Titles()
    cues = [(m, "dislike") for m in _TITLE_DISLIKE.finditer(text)] + [(m, "like") for m in _TITLE_LIKE.finditer(text)]
    cues += [(m, "request") for m in _TITLE_REQUEST.finditer(text)]
    for m, kind in cues:
        if out.taken(m.start("title")):
            continue
        for title, a, b in reader.title_parts(m.group("title"), m.start("title"), is_title):
            out.spans.append((a, b))
            if kind == "dislike" and _whose(text, m.start()) == "user":
                out.excluded.append(title)
            elif kind == "dislike" or negated(text, m.start("title")):
                if _whose(text, m.start()) == "user" and not _is_question(text, m.start()):
                    out.excluded.append(title)  # "I never liked Fargo", "nothing like Titanic"
                else:
                    end = _CLAUSE_END.search(text, b)
                    out.unread.append(text[_clause_start(text, m.start()):end.start() if end else len(text)].strip())
            elif kind == "like" and not _is_question(text, m.start()) and _whose(text, m.start()) == "user":
                out.liked.append(title)
            else:
                out.mentions.append(title)  # a request, a question, someone else's taste: an anchor, not feedback
    for m in _QUOTED.finditer(text):
        if out.taken(m.start(1)):
            continue
        title = m.group(1).strip()
        out.spans.append((m.start(1), m.end(1)))
        if negated(text, m.start()) and not _is_question(text, m.start()):
            (out.excluded if not _THIRD_PARTY_NEGATION.search(text, _clause_start(text, m.start()), m.start())
             else out.unread).append(title)
        else:
            out.mentions.append(title)
    return out


def read_rules(message: str, vocabulary: Iterable[str], is_title: Callable[[str], bool] | None = None,
               domain: Domain | None = None) -> Constraints:
    """llmrec's deterministic reading of one message in `domain`'s words (its lexicon, decade and era words); only
    catalog genres come out of it. `is_title` says whether a span is exactly a catalog title (`TitleResolver.is_title`),
    so that 'never show me Last Action Hero' is a title. Without a domain, `llmrec.domains.default_domain()`."""
    reader = _reader(vocabulary, domain)
    text = " ".join(message.replace("’", "'").split())[:1000]
    titles = _titles(text, reader, is_title or (lambda span: False))
    blanked = "".join(" " if titles.taken(i) else c for i, c in enumerate(text))
    wanted: list[str] = []
    unwanted: list[str] = []
    for start, _, shift in reader.genre_mentions(blanked):
        if negated(blanked, start):
            unwanted.extend(shift.genres)
        else:
            wanted.extend(shift.genres)
            unwanted.extend(shift.exclude_genres)
    low, high, unread_years = _years(blanked, reader)
    unread = [*titles.unread, *([unread_years] if unread_years else []), *reader.unread_comparatives(blanked)]
    return Constraints(
        genres=tuple(dict.fromkeys(g for g in wanted if g not in unwanted)), exclude_genres=tuple(dict.fromkeys(unwanted)),
        year_from=low, year_to=high, era=reader.era(blanked) if low is None and high is None and not unread_years else None,
        liked_titles=tuple(titles.liked), excluded_titles=tuple(titles.excluded), mentions=tuple(titles.mentions),
        more_like=_more_like(blanked, reader), reset=_RESET.search(blanked) is not None,
        unread=tuple(dict.fromkeys(u[:MAX_TITLE_CHARS] for u in unread))[:MAX_UNREAD],
    ).validated(reader.vocabulary)


def supported_genre(genre: str, message: str, vocabulary: Iterable[str], domain: Domain | None = None) -> bool:
    """Whether the message says something that names `genre`: its name or a word of the domain's lexicon for it, or a
    near spelling of one (rapidfuzz ratio >= 85 on a word, so 'comdy' and 'thriler' count). Keeps or drops the LLM's genres."""
    from rapidfuzz import fuzz

    phrases = [p for p, shift in _reader(vocabulary, domain).lexicon.items() if genre in shift.genres]
    words = re.findall(r"[\w']+", message.lower())
    grams = words + [f"{a} {b}" for a, b in zip(words, words[1:])] + [f"{a}-{b}" for a, b in zip(words, words[1:])]
    return any(fuzz.ratio(g, p) >= 85 for g in grams for p in phrases if abs(len(g) - len(p)) <= 2)


def supported_years(low: int | None, high: int | None, message: str, domain: Domain | None = None) -> bool:
    """Whether the message holds a number that states this range: '1990', '90s', 'nineties'."""
    rules = _years(" ".join(message.split()), _reader((), domain))[:2]
    return rules != (None, None) and (low, high) == rules
