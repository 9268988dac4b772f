"""Checkable claims in the generated part of an explanation, each checked against the catalog and the user's history.

What counts as a claim, and when it is *outside* (states something the catalog and the history do not hold):
- `title`: a catalog title (any form the grounding validator knows, or a near spelling, matched with rapidfuzz)
  is outside unless it is the recommended item or in the user's history; a quoted or Title-Cased phrase of two or
  more capitalised words that matches no catalog title ("Star Trek Voyager") is outside: not in the catalog.
- `genre`: a genre word or one of the domain's names for it (`Domain.names`: for movies "animated"/"cartoon" →
  Animation, "sci-fi" → Sci-Fi, "rom-com" → Romance and Comedy, ...) is outside unless the recommended item, or a history item the text names or the
  evidence cites, has that genre.
- `year`: a year ("1977") or decade ("1990s", "the 80s", "eighties") is outside unless such an item dates from it.
- `plot` and `people`: the catalog holds no plot, cast, crew, studio or awards, so every such claim is outside
  ("about a young boy who is a hero", "a book about justice", "starring X", "directed by", "a classic Disney movie",
  "widely acclaimed"). A claim runs from
  its cue to the end of its clause; cues are listed below, and words inside it are not checked again. A cue that
  is one of the domain's words for an item ("novel", "book" for books) is not a plot claim.
- `people`, an author: the catalog holds each book's author (`Item.attributes`). A catalog author named in the text
  ("by Amy Tan", "written by Amy Tan") is inside when it is the author of the recommended item or of a history item
  the text names or the evidence cites, and outside otherwise (another book's author).
- `figure`: a count or share ("of the 34 people who read it", "90% of viewers"): llmrec fills in every figure
  from the interactions, so one the model writes is outside (it is checked by nothing).

Opinions and tone ("great", "dark", "classic", "funny twist") are not claims here: nothing could confirm or refute them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict

from llmrec.domains import Domain, default_domain
from llmrec.explain.grounding import GroundingValidator, authors
from llmrec.schemas import Item
from llmrec.text import WORD as _WORD
from llmrec.text import fold, normal, title_forms

Kind = Literal["title", "genre", "year", "plot", "people", "figure"]
KINDS: tuple[Kind, ...] = ("title", "genre", "year", "plot", "people", "figure")

_PEOPLE = (r"starr(?:ing|ed)|stars\s+(?!are\b)\w+|co-?stars?|directed|director|directors|written\s+by|produced\s+by|"
           r"screenplay|screenwriter|actor|actors|actress|actresses|cast|performances?|played\s+by|acting|"
           r"disney|pixar|studio|oscars?|academy\s+awards?|awards?|award-winning|box[\s-]office|best-selling|"
           r"bestselling|soundtrack|composer|filmmaker|auteur|(?:critically\s+|widely\s+)?acclaimed|acclaim|praised")
_PLOT = (r"about\s+(?!it\b|as\b)\w+|follows|tells\s+the\s+story|"
         r"story\s+of|tale\s+of|journey|hero|heroes|heroine|villain|protagonist|characters?|"
         r"(?:young|little|old)\s+(?:boy|girl|man|woman|men|women)|(?:boy|girl|man|woman)\s+who|set\s+in|"
         r"takes\s+place|based\s+on|true\s+story|themes?\s+of|redemption|book|novel|aired|sequel|remake")
_FIGURE = (r"\d[\d,.]*\s*(?:%|percent|per\s+cent|people|persons|viewers|users|fans|votes|ratings|stars|times|members|"
           r"of\s+(?:the\s+)?(?:people|viewers|users|fans))")
_CUES = re.compile(rf"\b(?:(?P<people>{_PEOPLE})|(?P<plot>{_PLOT})|(?P<figure>{_FIGURE}))(?![\w])", re.IGNORECASE)
_CLAUSE_END = re.compile(r"[,;:.!?()]|\s(?:and|but|or|while|whereas)\s")
_QUOTED = re.compile(r"[\"“”]([^\"“”]*)[\"“”]")
_YEAR = re.compile(r"^(18[89]\d|19\d\d|20[0-2]\d)$")
_DECADE = re.compile(r"^(?:(1[89]\d|20[0-2])0|(\d)0)s$")
_GENERIC = {"genre", "genres", "classic", "classics"}  # with the domain's `item_words` ("movies", "books")
_CONNECTORS = {"of", "the", "and", "a", "an", "in", "on", "to", "from", "for", "with", "at", "s", "de", "la", "le", "vs"}
_JOINERS = re.compile(r"^[\s'’\-:&]*$")  # what may stand between two words of one Title-Cased phrase
FUZZY_CUTOFF = 88


class Claim(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: Kind
    text: str
    outside: bool
    why: str = ""


class ClaimCheck(BaseModel):
    """The claims found in one generated text, in order of appearance within each kind."""

    model_config = ConfigDict(frozen=True)

    claims: tuple[Claim, ...] = ()

    @property
    def outside(self) -> tuple[Claim, ...]:
        return tuple(c for c in self.claims if c.outside)


class ClaimChecker:
    """Built once per catalog (titles for exact and fuzzy matching, the genre vocabulary) and its `domain`, whose
    genre names (`Domain.names`: genres, synonyms, combinations) and decade words are the claims it reads."""

    def __init__(self, items: Iterable[Item], validator: GroundingValidator | None = None, domain: Domain | None = None):
        from rapidfuzz import process  # noqa: F401  (fail early, at build time, if it is missing)

        items = list(items)
        self.items = {item.item_id: item for item in items}
        self.validator = validator or GroundingValidator(items)
        self.forms: dict[str, set[str]] = {}  # normalised title form → item ids, for fuzzy matching
        for item in items:
            if "unknown-title" not in item.flags:
                forms = title_forms(item.title)
                forms |= {f.split(":")[0] for f in forms if ":" in f}  # "Ace Ventura" of "Ace Ventura: Pet Detective"
                for form in forms:
                    if len(normal(form)) >= 4:
                        self.forms.setdefault(normal(form), set()).add(item.item_id)
        self.choices = list(self.forms)
        self.authors: dict[tuple[str, ...], set[str]] = {}  # an author's lowercase words → their item ids
        for item in items:
            for name in authors([item]):
                if len(key := tuple(w.lower() for w in _WORD.findall(fold(name)))) >= 2:  # one word: too often a common one
                    self.authors.setdefault(key, set()).add(item.item_id)
        names = {g for item in items for g in item.genres}
        self.domain = domain or default_domain()
        self.genres = self.domain.names(names)  # normalised phrase -> the genres it names
        self.longest_genre = max((len(k.split()) for k in self.genres), default=1)
        self.item_words = {normal(w) for w in (self.domain.noun, self.domain.plural, *self.domain.item_words)}

    def check(self, generated: str, target: Item, history: Sequence[Item], cited: Sequence[Item] = ()) -> ClaimCheck:
        """Claims in `generated` (the model's words only), about `target`, for a user whose history is `history`.

        `cited`: history items the filled-in evidence names, whose genres and years the text may repeat.
        """
        text = fold(generated)
        words = [(m.group(), m.start(), m.end()) for m in _WORD.finditer(text)]
        found, left = self.validator.mentions(generated, authors([target, *history]))
        if len(left) != len(words):
            raise AssertionError("claims and grounding tokenise differently")
        watched = {item.item_id: item for item in history}
        named: dict[str, Item] = {target.item_id: target, **{i.item_id: i for i in cited}}
        claims: list[Claim] = []
        for ids in found:
            claims.append(self._title(ids, target, watched, named, self._label(ids)))
        used = [w is None for w in left]
        claims += self._authors(words, used, named)
        claims += self._unsupported(text, words, used)
        claims += self._phrases(text, words, used, target, watched, named)
        claims += self._genres(text, words, used, named)
        claims += self._years(words, used, named)
        return ClaimCheck(claims=tuple(claims))

    def _label(self, ids: set[str]) -> str:
        return self.items[sorted(ids)[0]].title if ids else ""

    def _title(self, ids: set[str], target: Item, watched: dict[str, Item], named: dict[str, Item], text: str) -> Claim:
        if target.item_id in ids:
            return Claim(kind="title", text=text, outside=False, why="the recommended item")
        seen = [watched[i] for i in sorted(ids) if i in watched]
        if seen:
            named.update({i.item_id: i for i in seen})
            return Claim(kind="title", text=text, outside=False, why="in the user's history")
        return Claim(kind="title", text=text, outside=True, why="a catalog title not in the user's history")

    def _authors(self, words: list[tuple[str, int, int]], used: list[bool], named: dict[str, Item]) -> list[Claim]:
        """Catalog authors named in the text (capitalised): inside when one of the named items (the recommended item
        first) is theirs."""
        keys = dict(self.authors)
        for item in named.values():  # the named items' own authors, one-word names too
            for name in authors([item]):
                if key := tuple(w.lower() for w in _WORD.findall(fold(name))):
                    keys.setdefault(key, set()).add(item.item_id)
        longest = max((len(k) for k in keys), default=0)
        claims, n = [], 0
        while n < len(words):
            size = next((s for s in range(min(longest, len(words) - n), 0, -1) if not any(used[n:n + s])
                         and tuple(w.lower() for w, _, _ in words[n:n + s]) in keys), 0) if words[n][0][0].isupper() else 0
            if not size:
                n += 1
                continue
            ids = keys[tuple(w.lower() for w, _, _ in words[n:n + size])]
            phrase = " ".join(w for w, _, _ in words[n:n + size])
            outside = not ids & set(named)
            claims.append(Claim(kind="people", text=phrase, outside=outside, why=(
                "an author of other catalog items, not of the recommended item or a named history item" if outside
                else "the author of the recommended item" if next(iter(named)) in ids else "the author of a named history item")))
            used[n:n + size] = [True] * size
            n += size
        return claims

    def _unsupported(self, text: str, words: list[tuple[str, int, int]], used: list[bool]) -> list[Claim]:
        claims, end = [], -1
        for cue in _CUES.finditer(text):
            if cue.start() < end:
                continue  # inside the previous claim's clause
            if cue.group("plot") and normal(cue.group()) in self.domain.item_words:
                continue  # "a novel by ...": the domain's word for an item, not a plot
            stop = _CLAUSE_END.search(text, cue.end())
            end = stop.start() if stop else len(text)
            after = [n for n, (_, a, b) in enumerate(words) if a >= cue.end() and b <= end]
            if re.fullmatch(r"written\s+by", cue.group(), re.IGNORECASE) and after and all(used[n] for n in after):
                continue  # "written by <a catalog author>": the author's claim above says whether it holds
            kind: Kind = "people" if cue.group("people") else "figure" if cue.group("figure") else "plot"
            why = {"people": "the catalog holds no cast, crew, studio or awards", "plot": "the catalog holds no plots",
                   "figure": "llmrec fills in every figure; one the model writes is checked by nothing"}[kind]
            claims.append(Claim(kind=kind, text=text[cue.start():end].strip(), outside=True, why=why))
            for n, (_, a, b) in enumerate(words):
                if a >= cue.start() and b <= end:
                    used[n] = True
        return claims

    def _phrases(self, text: str, words: list[tuple[str, int, int]], used: list[bool], target: Item,
                 watched: dict[str, Item], named: dict[str, Item]) -> list[Claim]:
        """Quoted phrases starting with a capital, and Title-Cased runs of 2+ capitalised words, that looked like titles."""
        spans: list[tuple[int, int]] = []
        for m in _QUOTED.finditer(text):
            inside = [n for n, (_, a, b) in enumerate(words) if a >= m.start(1) and b <= m.end(1)]
            if inside and not any(used[n] for n in inside) and words[inside[0]][0][0].isupper():
                spans.append((inside[0], inside[-1] + 1))
        n = 0
        while n < len(words):
            if used[n] or not words[n][0][0].isupper() or any(a <= n < b for a, b in spans):
                n += 1
                continue
            end = n + 1
            while (end < len(words) and not used[end] and _JOINERS.match(text[words[end - 1][2]:words[end][1]])
                   and (words[end][0][0].isupper() or words[end][0][0].isdigit() or words[end][0].lower() in _CONNECTORS)):
                end += 1
            while end > n + 1 and not words[end - 1][0][0].isupper():
                end -= 1  # a phrase ends on a capitalised word
            if sum(w[0].isupper() for w, _, _ in words[n:end]) >= 2:
                spans.append((n, end))
            n = end
        claims = []
        for a, b in sorted(spans):
            phrase = text[words[a][1]:words[b - 1][2]]
            if self._only_genre_words([w.lower() for w, _, _ in words[a:b]]):
                continue  # "Crime Thriller", "Sci-Fi", "Action Movies": genre words, checked as genres
            for k in range(a, b):
                used[k] = True
            match = self._fuzzy(phrase)
            if match:
                claims.append(self._title(match, target, watched, named, phrase))
            else:
                claims.append(Claim(kind="title", text=phrase, outside=True, why="looks like a title; not in the catalog"))
        return claims

    def _only_genre_words(self, run: list[str]) -> bool:
        """Whether genre phrases, connectors and words like "movies" cover the whole run."""
        n = 0
        while n < len(run):
            size = next((s for s in range(min(self.longest_genre, len(run) - n), 0, -1) if " ".join(run[n:n + s]) in self.genres), 0)
            if not size and run[n] not in _CONNECTORS | _GENERIC | self.item_words:
                return False
            n += size or 1
        return True

    def _fuzzy(self, phrase: str) -> set[str] | None:
        from rapidfuzz import fuzz, process

        key = normal(phrase)
        if key in self.forms:
            return self.forms[key]
        best = process.extractOne(key, self.choices, scorer=fuzz.ratio, score_cutoff=FUZZY_CUTOFF)
        return self.forms[best[0]] if best else None

    def _genres(self, text: str, words: list[tuple[str, int, int]], used: list[bool], named: dict[str, Item]) -> list[Claim]:
        allowed = {g for item in named.values() for g in item.genres}
        claims, n = [], 0
        while n < len(words):
            size = next((s for s in range(min(self.longest_genre, len(words) - n), 0, -1)
                         if not any(used[n:n + s]) and normal(" ".join(w for w, _, _ in words[n:n + s])) in self.genres), 0)
            if not size:
                n += 1
                continue
            genres = self.genres[normal(" ".join(w for w, _, _ in words[n:n + size]))]
            genre = "+".join(genres)
            phrase = text[words[n][1]:words[n + size - 1][2]]
            outside = not set(genres) <= allowed
            claims.append(Claim(kind="genre", text=phrase, outside=outside,
                                why=f"{genre}: " + ("not a genre of the item or a named history item" if outside else "in the catalog")))
            n += size
        return claims

    def _years(self, words: list[tuple[str, int, int]], used: list[bool], named: dict[str, Item]) -> list[Claim]:
        years = {item.year for item in named.values() if item.year}
        claims = []
        for n, (word, _, _) in enumerate(words):
            if used[n]:
                continue
            lower = word.lower()
            if _YEAR.match(lower):
                outside = int(lower) not in years
                claims.append(Claim(kind="year", text=word, outside=outside, why="" if not outside else f"the items date from {sorted(years)}"))
                continue
            decade = _DECADE.match(lower)
            start = self.domain.decades.get(lower)
            if decade:
                two = int(decade.group(2) or 0) * 10  # "80s" → 1980s, "00s" and "10s" → 2000s and 2010s
                start = int(decade.group(1)) * 10 if decade.group(1) else (1900 if two >= 20 else 2000) + two
            if start is not None:
                outside = not any(start <= y < start + 10 for y in years)
                claims.append(Claim(kind="year", text=word, outside=outside, why="" if not outside else f"the items date from {sorted(years)}"))
        return claims
