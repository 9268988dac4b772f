"""Checks that an explanation says only what the catalog and the user's history support.

Rules, each a named problem when broken:
- `no-history-citation`: it must name at least one item from this user's history;
- `unwatched-title`: every catalog title it names must be in the history or be the recommended item;
- `wrong-genre`: every genre word it uses must belong to the recommended item or a cited history item;
- `wrong-year`: every year it states must be the recommended item's or a cited item's;
- a title that is only an article ("A", from Book-Crossing's "Gravity (A)") is no title, and a year in parentheses
  right after a title is that title's year (a label, "Lord Foul's Bane (1984)"), not the title "1984";
- an author (`Item.attributes`) of the recommended item or of a history item, named unquoted, is not read as a title
  ("by Clive Cussler" is not the book "Clive Cussler"); whether the author is the right one is `explain.claims`' check;
- `instruction`: it must not carry instructions (prompt injection smuggled through item text);
- `too-long` / `empty`.

How a title is recognised, in either article order ("Godfather, The" and "The Godfather", also
"Postino, Il", "Boot, Das"), under its alternative title in parentheses too, at word boundaries:
- in quotes, at any length: `"Heat"`, `"The Godfather"`, `"Toy Story (1995)"`;
- unquoted, a title of two or more words with at least 6 letters, in any case: `star wars`;
- unquoted, a short one ("Fargo", "Jaws", "The Net", "M"), only with its catalog capitalisation and,
  without an article before it, not as a sentence's first word: `fans of Fargo` counts, `feel the heat`
  and `Heat is...` do not. Short titles are often ordinary words; this keeps them from being misread.
Only the words of recognised titles are exempt from the genre and year checks: a quoted "1999 horror"
is a claim like any other.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from llmrec.prompts.builders import safe_attribute, safe_title
from llmrec.prompts.safety import looks_like_instruction, withheld
from llmrec.schemas import Item
from llmrec.text import ARTICLE_WORDS, WORD, fold, title_forms

MAX_CHARS = 320
PEOPLE_ATTRIBUTES = ("author",)
"""Item attributes that name a person, whom an explanation may name (`authors`)."""
_YEAR = re.compile(r"^(1[89]\d\d|20\d\d)$")
_QUOTED = re.compile(r"[\"“”]([^\"“”]*)[\"“”]")
_LABEL_GAP = re.compile(r"[\s\"'”’)]*\(")  # what stands between a title's last word and its label's "(year)"


def authors(items: Iterable[Item]) -> list[str]:
    """The people (`PEOPLE_ATTRIBUTES`) of `items`, as the catalog holds them and as prompts write them (`safe_attribute`)."""
    out: dict[str, None] = {}
    for item in items:
        for name, value in item.attributes:
            if name in PEOPLE_ATTRIBUTES:
                out.update(dict.fromkeys(v for v in (value, safe_attribute(value)) if v))
    return list(out)


@dataclass
class _Title:
    ids: set[str] = field(default_factory=set)
    cased: set[tuple[str, ...]] = field(default_factory=set)
    short: bool = True
    """Short titles count unquoted only with their catalog capitalisation (see the module's docstring)."""


@dataclass
class _Text:
    """An explanation as words (accents dropped), each with its character span, and its quoted spans."""

    text: str
    words: list[tuple[str, int, int]]
    quotes: list[tuple[int, int]]

    @classmethod
    def of(cls, text: str) -> _Text:
        text = fold(text)
        words = [(m.group(), m.start(), m.end()) for m in WORD.finditer(text)]
        return cls(text, words, [(m.start(1), m.end(1)) for m in _QUOTED.finditer(text)])

    def key(self, i: int, j: int) -> tuple[str, ...]:
        return tuple(w.lower() for w, _, _ in self.words[i:j])

    def starts_sentence(self, i: int) -> bool:
        before = self.text[: self.words[i][1]].rstrip(" \"'“”‘’([")
        return not before or before[-1] in ".!?"


class GroundingValidator:
    """Built once per catalog: it indexes titles (every form, see the module docstring) and the genre vocabulary."""

    def __init__(self, items: Iterable[Item]):
        self.titles: dict[tuple[str, ...], _Title] = {}
        genres: set[str] = set()
        for item in items:
            if "unknown-title" not in item.flags:
                shown = safe_title(item)  # what prompts and fallbacks write: a sanitised or withheld title
                for form in title_forms(item.title) | ({shown} if shown == withheld(item.item_id) else title_forms(shown)):
                    self._add(form, item.item_id)
            genres.update(item.genres)
        self.longest = max((len(key) for key in self.titles), default=0)
        self.genres = {tuple(w.lower() for w in WORD.findall(fold(g))) for g in genres} - {()}

    def _add(self, form: str, item_id: str) -> None:
        words = tuple(WORD.findall(fold(form)))
        if not words or all(w.lower() in ARTICLE_WORDS for w in words):
            return  # "A" of Book-Crossing's "Gravity (A)" is an inverted article, not a title: it would match every "a"
        entry = self.titles.setdefault(tuple(w.lower() for w in words), _Title())
        entry.ids.add(item_id)
        entry.cased.add(words)
        core = list(words)  # the title without its article, in either order
        if len(core) > 1 and core[0].lower() in ARTICLE_WORDS:
            core.pop(0)
        if len(core) > 1 and core[-1].lower() in ARTICLE_WORDS:
            core.pop()
        entry.short = entry.short and (len(core) < 2 or len("".join(core)) < 6)

    def _unquoted(self, text: _Text, i: int, j: int, entry: _Title) -> bool:
        if not entry.short:
            return True
        words = tuple(w for w, _, _ in text.words[i:j])
        same_case = any(all(a == b or a.lower() in ARTICLE_WORDS for a, b in zip(words, cased)) for cased in entry.cased)
        return same_case and (words[0].lower() in ARTICLE_WORDS or not text.starts_sentence(i))

    def mentions(self, text: str, people: Iterable[str] = ()) -> tuple[list[set[str]], list[str | None]]:
        """(item ids of each title mentioned, the words left over with title words blanked to None).

        `people`: names (authors) whose unquoted words are never read as a title; they stay in the words left over."""
        parsed = _Text.of(text)
        words = [w.lower() for w, _, _ in parsed.words]
        found: list[set[str]] = []
        left: list[str | None] = list(words)
        named = {key for name in people if (key := tuple(w.lower() for w in WORD.findall(fold(name))))}
        person = [False] * len(words)
        for key in named:
            for i in range(len(words) - len(key) + 1):
                if tuple(words[i:i + len(key)]) == key:
                    person[i:i + len(key)] = [True] * len(key)
        for start, end in parsed.quotes:  # a quoted span that is exactly a title, a year after it allowed
            inside = [n for n, (_, a, b) in enumerate(parsed.words) if a >= start and b <= end]
            if len(inside) > 1 and _YEAR.match(words[inside[-1]]) and parsed.key(inside[0], inside[-1]) in self.titles:
                inside = inside[:-1]
            if inside and parsed.key(inside[0], inside[-1] + 1) in self.titles:
                found.append(self.titles[parsed.key(inside[0], inside[-1] + 1)].ids)
                for n in inside:
                    left[n] = None
        i = 0
        while i < len(words):  # unquoted: the longest title starting at each word
            if i and left[i - 1] is None and self._labels_year(parsed, i):
                i += 1  # "Fargo (1996)": the label's year, which the year check reads
                continue
            match = next((j for j in range(min(len(words), i + self.longest), i, -1)
                          if None not in left[i:j] and not any(person[i:j]) and parsed.key(i, j) in self.titles
                          and self._unquoted(parsed, i, j, self.titles[parsed.key(i, j)])), None)
            if match is None:
                i += 1
                continue
            found.append(self.titles[parsed.key(i, match)].ids)
            left[i:match] = [None] * (match - i)
            i = match
        return found, left

    @staticmethod
    def _labels_year(parsed: _Text, n: int) -> bool:
        """Whether word `n`, right after a title's words, is a year in parentheses: a label's year ("Fargo (1996)",
        `"Lord Foul's Bane (Book 1)" (1984)`), not the title "1984". It stays in the words left over for the year check."""
        _, start, end = parsed.words[n]
        return (bool(_YEAR.match(parsed.words[n][0])) and parsed.text[end:end + 1] == ")"
                and bool(_LABEL_GAP.fullmatch(parsed.text[parsed.words[n - 1][2]:start])))

    def check(self, text: str, history: Sequence[Item], target: Item) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(cited history item ids, problems); no problems means the explanation is grounded."""
        problems: list[str] = []
        if not text.strip():
            return (), ("empty",)
        if len(text) > MAX_CHARS:
            problems.append("too-long")
        if looks_like_instruction(text):
            problems.append("instruction")
        by_id = {item.item_id: item for item in history}
        cited: list[Item] = []
        found, left = self.mentions(text, authors([target, *history]))
        for ids in found:
            watched = [by_id[i] for i in sorted(ids) if i in by_id]
            cited.extend(watched)
            if not watched and target.item_id not in ids:
                problems.append("unwatched-title")
        if not cited:
            problems.append("no-history-citation")
        allowed = {tuple(w.lower() for w in WORD.findall(fold(g))) for item in [target, *cited] for g in item.genres}
        if any(self._has(left, genre) for genre in self.genres - allowed):
            problems.append("wrong-genre")
        years = {item.year for item in [target, *cited] if item.year}
        if any(w is not None and _YEAR.match(w) and int(w) not in years for w in left):
            problems.append("wrong-year")
        return tuple(dict.fromkeys(item.item_id for item in cited)), tuple(dict.fromkeys(problems))

    @staticmethod
    def _has(words: list[str | None], phrase: tuple[str, ...]) -> bool:
        n = len(phrase)
        return any(tuple(words[i : i + n]) == phrase for i in range(len(words) - n + 1))
