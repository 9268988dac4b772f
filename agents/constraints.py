"""What a user asks for in a conversation, as a pydantic schema, and llmrec's own rules that read it.

`Constraints` is one turn's request or a session's accumulated filters:
- `genres` (every one required) and `exclude_genres`, from the catalog's genre vocabulary only;
- `year_from` / `year_to`, and a relative `era` ("older", "newer") resolved against what was shown;
- `liked_titles` / `excluded_titles`, as written (resolved against the catalog by `agents.titles`);
- `more_like`, a 1-based position in the list shown last ("more like the second one", "#2").

`read_rules` is deterministic: a lexicon of genre names and synonyms (funny → Comedy, scary → Horror),
decades and year phrases, negation cues that scope to the end of their clause ("not a romance",
"never show me Titanic", "no horror"), title cues ("I loved Fargo") and ordinal references. Whatever it
returns is checked against the catalog (`Constraints.validated`); the LLM's extraction
(`agents.understand`) only adds to it where the message supports the addition.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from llmrec.schemas import Item

MAX_TITLES = 5
MAX_TITLE_CHARS = 80

SYNONYMS: dict[str, str] = {
    # word or phrase (lowercase) -> catalog genre; a genre missing from the catalog's vocabulary is dropped
    "action": "Action", "action-packed": "Action",
    "adventure": "Adventure", "adventures": "Adventure",
    "animation": "Animation", "animated": "Animation", "cartoon": "Animation", "cartoons": "Animation", "anime": "Animation",
    "children's": "Children's", "children": "Children's", "kids": "Children's", "kid": "Children's", "family": "Children's",
    "comedy": "Comedy", "comedies": "Comedy", "funny": "Comedy", "hilarious": "Comedy", "humor": "Comedy",
    "humour": "Comedy", "laugh": "Comedy", "laughs": "Comedy", "comic": "Comedy",
    "crime": "Crime", "gangster": "Crime", "gangsters": "Crime", "heist": "Crime", "mafia": "Crime", "mob": "Crime",
    "documentary": "Documentary", "documentaries": "Documentary",
    "drama": "Drama", "dramas": "Drama", "dramatic": "Drama",
    "fantasy": "Fantasy", "magic": "Fantasy", "magical": "Fantasy",
    "film-noir": "Film-Noir", "film noir": "Film-Noir", "noir": "Film-Noir",
    "horror": "Horror", "scary": "Horror", "spooky": "Horror", "creepy": "Horror", "frightening": "Horror", "terrifying": "Horror",
    "musical": "Musical", "musicals": "Musical",
    "mystery": "Mystery", "mysteries": "Mystery", "whodunit": "Mystery", "detective": "Mystery",
    "romance": "Romance", "romances": "Romance", "romantic": "Romance", "love story": "Romance", "love stories": "Romance",
    "sci-fi": "Sci-Fi", "scifi": "Sci-Fi", "science fiction": "Sci-Fi", "science-fiction": "Sci-Fi", "futuristic": "Sci-Fi",
    "thriller": "Thriller", "thrillers": "Thriller", "suspense": "Thriller", "suspenseful": "Thriller",
    "war": "War", "wartime": "War",
    "western": "Western", "westerns": "Western", "cowboy": "Western", "cowboys": "Western",
    "rom-com": "Romance+Comedy", "romcom": "Romance+Comedy", "romantic comedy": "Romance+Comedy",
}
_DECADE_WORDS = {"twenties": 1920, "thirties": 1930, "forties": 1940, "fifties": 1950, "sixties": 1960,
                 "seventies": 1970, "eighties": 1980, "nineties": 1990}
_ORDINALS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7, "eighth": 8,
             "ninth": 9, "tenth": 10, "1st": 1, "2nd": 2, "3rd": 3, "4th": 4, "5th": 5, "6th": 6, "7th": 7, "8th": 8,
             "9th": 9, "10th": 10, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5}
_ERA = {"older": "older", "earlier": "older", "old": "older", "classic": "older", "classics": "older",
        "newer": "newer", "recent": "newer", "later": "newer", "modern": "newer", "more recent": "newer"}

_CLAUSE_END = re.compile(r"[,;.!?]|\bbut\b|\bhowever\b|\bthough\b", re.IGNORECASE)
_NEGATION = re.compile(r"\b(?:not|no|never(?:\s+show\s+me)?|without|nothing|except|(?:do|does|did)n'?t|no\s+more|hate[ds]?|dislike[ds]?|didn'?t\s+(?:like|enjoy)|"
                       r"can'?t\s+stand|avoid)\b", re.IGNORECASE)
_TITLE_DISLIKE = re.compile(r"\b(?:never\s+show\s+me|don'?t\s+show\s+me|do\s+not\s+show\s+me|no\s+more|hated?|dislike[ds]?|"
                            r"didn'?t\s+(?:like|enjoy)|can'?t\s+stand)\s+(?P<title>[^,;.!?]+)", re.IGNORECASE)
_TITLE_LIKE = re.compile(r"\b(?:(?:(?:i|we)\s+(?:really\s+|just\s+|also\s+)?)?(?:loved|liked|enjoyed|adored)|"
                         r"(?:i|we)\s+(?:really\s+|just\s+|also\s+)?(?:love|like|enjoy|adore)|"
                         r"more\s+like|something\s+like|similar\s+to|fans?\s+of)\s+(?P<title>[^,;.!?]+)", re.IGNORECASE)
_QUOTED = re.compile(r"[\"“]([^\"“”]{1,80})[\"”]")
_MORE_LIKE = re.compile(r"(?:more\s+like|like|similar\s+to)\s+(?:the\s+)?(?:#\s*(?P<hash>\d{1,2})|number\s+(?P<num>\d{1,2})|"
                        r"(?P<ord>" + "|".join(_ORDINALS) + r")(?:\s+(?:one|movie|film|item|pick))?)\b"
                        r"|(?<![\w#])#\s*(?P<bare>\d{1,2})\b", re.IGNORECASE)
_RESET = re.compile(r"\b(?:instead|start\s+over|new\s+search|something\s+else\s+entirely)\b", re.IGNORECASE)
_YEAR = r"(1[89]\d\d|20\d\d)"
_GENERIC = re.compile(r"^(?:something|anything|some|to|it|that|this|them|those|these|what|ones?|movies?|films?|stuff|"
                      r"a\s+(?:movie|film|lot)|more)(?=\s|$)", re.IGNORECASE)
_FILLER = re.compile(r"^(?:the\s+(?:movie|film)\s+|a\s+(?:movie|film)\s+called\s+|movies?\s+like\s+)", re.IGNORECASE)


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
    more_like: int | None = Field(default=None, ge=1, le=50, description="1-based position in the list shown last.")
    reset: bool = Field(default=False, description="'instead', 'start over': earlier genre and year filters are dropped.")

    def is_empty(self) -> bool:
        return self == Constraints()

    def filters(self) -> Constraints:
        """Only what filters items (genres and years): the part a session keeps between turns."""
        return Constraints(genres=self.genres, exclude_genres=self.exclude_genres, year_from=self.year_from, year_to=self.year_to)

    def matches(self, item: Item) -> bool:
        """Whether a catalog item passes the genre and year filters (an item with no year fails a year filter)."""
        genres = set(item.genres)
        if not set(self.genres) <= genres or genres & set(self.exclude_genres):
            return False
        if self.year_from is None and self.year_to is None:
            return True
        if item.year is None:
            return False
        return (self.year_from is None or item.year >= self.year_from) and (self.year_to is None or item.year <= self.year_to)

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
                                           liked_titles=cap(self.liked_titles), excluded_titles=cap(self.excluded_titles)))

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


def _lexicon(vocabulary: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """Phrase -> genres, for the synonyms whose genres the catalog has, plus each catalog genre's own name."""
    known = set(vocabulary)
    table = {g.lower(): (g,) for g in known if g.lower() != "unknown"}
    for phrase, target in SYNONYMS.items():
        genres = tuple(g for g in target.split("+") if g in known)
        if genres and phrase not in table:
            table[phrase] = genres
    return table


def _genre_mentions(text: str, lexicon: dict[str, tuple[str, ...]]) -> list[tuple[int, int, tuple[str, ...]]]:
    """(start, end, genres) of every lexicon phrase at word boundaries, longest first, not overlapping."""
    found: list[tuple[int, int, tuple[str, ...]]] = []
    taken = [False] * len(text)
    for phrase in sorted(lexicon, key=len, reverse=True):
        for m in re.finditer(r"(?<![\w-])" + re.escape(phrase) + r"(?![\w-])", text, re.IGNORECASE):
            if not any(taken[m.start() : m.end()]):
                found.append((m.start(), m.end(), lexicon[phrase]))
                taken[m.start() : m.end()] = [True] * (m.end() - m.start())
    return sorted(found)


def _negated(text: str, position: int) -> bool:
    """Whether a negation cue stands before `position` in the same clause."""
    clause_start = max((m.end() for m in _CLAUSE_END.finditer(text, 0, position)), default=0)
    return _NEGATION.search(text, clause_start, position) is not None


def _years(text: str) -> tuple[int | None, int | None]:
    """A year range from decades ('90s', '1990s', 'nineties') and year phrases ('before 1980', 'between 1980 and 1990')."""
    low = r"(?<![\w'])"
    if m := re.search(rf"\bbetween\s+{_YEAR}\s+and\s+{_YEAR}\b", text) or re.search(rf"\b{_YEAR}\s*(?:-|–|to)\s*{_YEAR}\b", text):
        return int(m.group(1)), int(m.group(2))
    if m := re.search(rf"\b(?:before|until|up\s+to|prior\s+to)\s+(?:the\s+)?{_YEAR}s?\b", text, re.IGNORECASE):
        return None, int(m.group(1)) - 1
    if m := re.search(rf"\b(?:after)\s+(?:the\s+)?{_YEAR}\b", text, re.IGNORECASE):
        return int(m.group(1)) + 1, None
    if m := re.search(rf"\b(?:since|from\s+after)\s+{_YEAR}\b", text, re.IGNORECASE):
        return int(m.group(1)), None
    if m := re.search(rf"{low}(1[89]\d0|20\d0)'?s\b", text):
        start = int(m.group(1))
        return start, start + 9
    if m := re.search(r"(?<![\w'])'?([2-9]0)'?s\b", text):
        start = 1900 + int(m.group(1))
        return start, start + 9
    if m := re.search(r"\b(" + "|".join(_DECADE_WORDS) + r")\b", text, re.IGNORECASE):
        start = _DECADE_WORDS[m.group(1).lower()]
        return start, start + 9
    if m := re.search(rf"\b(?:in|from)\s+{_YEAR}\b", text, re.IGNORECASE):
        return int(m.group(1)), int(m.group(1))
    return None, None


def _era(text: str) -> Literal["older", "newer"] | None:
    m = re.search(r"\b(more\s+recent|older|earlier|newer|recent|later|modern|classics?)\b", text, re.IGNORECASE)
    return _ERA[" ".join(m.group(1).lower().split())] if m else None  # type: ignore[return-value]


def _more_like(text: str) -> int | None:
    m = _MORE_LIKE.search(text)
    if not m:
        return None
    value = m.group("hash") or m.group("num") or m.group("bare")
    return int(value) if value else _ORDINALS[m.group("ord").lower()]


def _clean_title(raw: str, lexicon: dict[str, tuple[str, ...]], is_title: Callable[[str], bool]) -> str | None:
    """A title span from a cue, without trailing filler; None when it is a genre, an era or a reference instead.
    A span with a genre word in it is a title only when it is exactly a catalog title ('Last Action Hero')."""
    title = re.split(r"\s+(?:but|though|however|please|and\s+(?:never|no|not|i|something|more))\b", raw.strip(), maxsplit=1,
                     flags=re.IGNORECASE)[0]
    title = _FILLER.sub("", title.strip(" '\"“”")).strip(" '\"“”")
    words = re.sub(r"\b(?:a|an|the|any|more|movies?|films?|ones?|stuff|things?|please|so\s+much|a\s+lot|very\s+much)\b", " ",
                   title.lower())
    rest = " ".join(words.split())
    if is_title(title):
        return title[:MAX_TITLE_CHARS]
    if _GENERIC.match(title) or any(re.search(r"(?<![\w-])" + re.escape(p) + r"(?![\w-])", title.lower()) for p in lexicon):
        return None  # "something funny", "to watch a comedy": a wish, not a title
    if not rest or rest in lexicon or _MORE_LIKE.match("like " + title) or _years(title) != (None, None) or _era(title):
        return None
    if all(p in lexicon for p in re.split(r"\s+(?:or|and)\s+|,\s*", rest)):
        return None  # "comedies or dramas"
    return title[:MAX_TITLE_CHARS] or None


def _titles(text: str, lexicon: dict[str, tuple[str, ...]],
            is_title: Callable[[str], bool]) -> tuple[list[str], list[str], list[tuple[int, int]]]:
    """(liked titles, excluded titles, their spans in `text`) from title cues and quotes."""
    liked: list[str] = []
    excluded: list[str] = []
    spans: list[tuple[int, int]] = []
    for pattern, bucket in ((_TITLE_DISLIKE, excluded), (_TITLE_LIKE, liked)):
        for m in pattern.finditer(text):
            if any(a <= m.start("title") < b for a, b in spans):
                continue
            title = _clean_title(m.group("title"), lexicon, is_title)
            if title:
                bucket.append(title)
                spans.append((m.start("title"), m.start("title") + len(m.group("title"))))
    for m in _QUOTED.finditer(text):
        if not any(a <= m.start(1) < b for a, b in spans):
            (excluded if _negated(text, m.start()) else liked).append(m.group(1).strip())
            spans.append((m.start(1), m.end(1)))
    return liked, excluded, spans


def read_rules(message: str, vocabulary: Iterable[str], is_title: Callable[[str], bool] | None = None) -> Constraints:
    """llmrec's deterministic reading of one message; only catalog genres come out of it. `is_title` says whether a
    span is exactly a catalog title (`TitleResolver.is_title`), so that 'never show me Last Action Hero' is a title."""
    vocabulary = list(vocabulary)
    lexicon = _lexicon(vocabulary)
    text = " ".join(message.split())[:1000]
    liked, excluded, spans = _titles(text, lexicon, is_title or (lambda span: False))
    blanked = "".join(" " if any(a <= i < b for a, b in spans) else c for i, c in enumerate(text))
    wanted: list[str] = []
    unwanted: list[str] = []
    for start, _, genres in _genre_mentions(blanked, lexicon):
        (unwanted if _negated(blanked, start) else wanted).extend(genres)
    low, high = _years(blanked)
    return Constraints(
        genres=tuple(dict.fromkeys(g for g in wanted if g not in unwanted)), exclude_genres=tuple(dict.fromkeys(unwanted)),
        year_from=low, year_to=high, era=_era(blanked) if low is None and high is None else None,
        liked_titles=tuple(liked), excluded_titles=tuple(excluded), more_like=_more_like(blanked),
        reset=_RESET.search(blanked) is not None,
    ).validated(vocabulary)


def supported_genre(genre: str, message: str, vocabulary: Iterable[str]) -> bool:
    """Whether the message says something that names `genre`: its name or a synonym, or a near spelling of one
    (rapidfuzz ratio >= 85 on a word, so 'comdy' and 'thriler' count). Used to keep or drop the LLM's genres."""
    from rapidfuzz import fuzz

    phrases = [p for p, genres in _lexicon(vocabulary).items() if genre in genres]
    words = re.findall(r"[\w']+", message.lower())
    grams = words + [f"{a} {b}" for a, b in zip(words, words[1:])] + [f"{a}-{b}" for a, b in zip(words, words[1:])]
    return any(fuzz.ratio(g, p) >= 85 for g in grams for p in phrases if abs(len(g) - len(p)) <= 2)


def supported_years(low: int | None, high: int | None, message: str) -> bool:
    """Whether the message holds a number that states this range: '1990', '90s', 'nineties'."""
    rules = _years(" ".join(message.split()))
    return rules != (None, None) and (low, high) == rules
