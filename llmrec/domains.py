"""Domains as data: the noun, wording and vocabulary of a catalog's domain, one lexicon per domain.

A domain is read from `llmrec/domains/<name>.json` (built in) or a file of one's own (`load_domain(path)`);
nothing in the chat rules, the claim checker or the prompts spells a domain's words. A new domain is a file,
not a code change. Every file is laid over `generic.json` (the decade and era words, the neutral wording), so
it states only what differs. A scenario names its domain by noun ("movie") or name ("movies"); a noun with no
file gets the generic lexicon under its own noun ("podcast", "podcasts").

The vocabulary, by what it may do:
- `synonyms`: names of a catalog genre ("sci-fi" for Sci-Fi). They ask for the genre in a message, and a
  generated explanation that uses them claims the genre (`explain.claims`);
- `moods`: words that ask for a genre in a message but claim nothing in an explanation ("funny", "scary");
- `combinations`: one phrase for several genres at once ("rom-com": Romance and Comedy);
- `comparatives`: a shift relative to what was shown ("funnier": Comedy; "darker": no Comedy, no Children's);
- `decades` and `eras`: "eighties" → 1980; "classic" → older, "recent" → newer;
- `item_words`: what an item is called in a message ("movie", "film"), never a title or a genre;
- `shots`: worked examples in the domain's words for the LLM that reads messages (a book domain gets book examples).
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from llmrec.text import normal


class Shift(BaseModel):
    """What a comparative asks for: genres to require, genres to leave out."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    genres: tuple[str, ...] = ()
    exclude_genres: tuple[str, ...] = ()


class Shot(BaseModel):
    """One worked example for the LLM's reading of a message: the message, and the extraction it should give
    (keys as in `agents.understand.Extraction`: genres, not_genres, decade, liked, disliked)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    message: str
    answer: dict[str, str | list[str]]


class Domain(BaseModel):
    """The words of one domain."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="The domain's id, e.g. 'movies', 'books'.")
    noun: str = Field(default="item", description="One item: 'movie', 'book'.")
    plural: str = Field(default="items", description="Several items: 'movies', 'books'.")
    consumed: str = Field(default="interacted with", description="What a user did with an item, past tense: 'watched', 'read'.")
    audience: str = Field(default="users", description="Who consumes items, plural: 'viewers', 'readers'.")
    synonyms: dict[str, tuple[str, ...]] = Field(default_factory=dict, description=(
        "Catalog genre/subject (as in the data) -> the words people use for it ('Sci-Fi': ['science fiction', 'sci fi'])."))
    consume: str = Field(default="try", description="What a user does with an item, present tense: 'watch', 'read'.")
    moods: dict[str, tuple[str, ...]] = Field(default_factory=dict, description=(
        "Catalog genre -> words that ask for it in a request but are opinions in an explanation ('Comedy': ['funny'])."))
    combinations: dict[str, tuple[str, ...]] = Field(default_factory=dict, description=(
        "A phrase -> the several catalog genres it names together ('rom-com': ['Romance', 'Comedy'])."))
    comparatives: dict[str, Shift] = Field(default_factory=dict, description=(
        "A comparative -> the genres it asks for or away from ('funnier': {'genres': ['Comedy']})."))
    decades: dict[str, int] = Field(default_factory=dict, description="A decade word -> its first year ('eighties': 1980).")
    eras: dict[str, Literal["older", "newer"]] = Field(default_factory=dict, description=(
        "A word or phrase for a relative era ('classic': 'older', 'more recent': 'newer')."))
    item_words: tuple[str, ...] = Field(default=(), description="What an item is called in a message: 'movie', 'film'.")
    shots: tuple[Shot, ...] = Field(default=(), description=(
        "Worked examples for the LLM that reads messages (`agents.understand`): a request in this domain's words and "
        "the JSON it should give."))

    def lexicon(self, vocabulary: list[str] | set[str] | tuple[str, ...]) -> dict[str, Shift]:
        """Lowercase phrase -> what it asks for, for a request: each catalog genre's own name, its synonyms and mood
        words, combinations and comparatives. Only the catalog's genres come out; a phrase left with none is dropped."""
        known = set(vocabulary) - {"unknown"}
        table = {g.lower(): Shift(genres=(g,)) for g in known}
        entries = [(p, Shift(genres=(g,))) for source in (self.synonyms, self.moods) for g, ps in source.items() for p in ps]
        entries += [(p, Shift(genres=tuple(gs))) for p, gs in self.combinations.items()]
        entries += list(self.comparatives.items())
        for phrase, shift in entries:
            kept = Shift(genres=tuple(g for g in shift.genres if g in known),
                         exclude_genres=tuple(g for g in shift.exclude_genres if g in known))
            if (kept.genres or kept.exclude_genres) and phrase.lower() not in table:
                table[phrase.lower()] = kept
        return table

    def names(self, vocabulary: list[str] | set[str] | tuple[str, ...]) -> dict[str, tuple[str, ...]]:
        """Normalised phrase (`llmrec.text.normal`) -> genres, for the phrases that *name* genres (a claim in an
        explanation): each catalog genre, its synonyms, combinations. An empty vocabulary keeps every phrase."""
        known = set(vocabulary) - {"unknown"}
        keep = (lambda g: g in known) if known else (lambda g: True)
        table = {normal(g): (g,) for g in known if normal(g)}
        entries = [(p, (g,)) for g, ps in self.synonyms.items() for p in ps] + list(self.combinations.items())
        for phrase, genres in entries:
            kept = tuple(g for g in genres if keep(g))
            if kept and normal(phrase) and normal(phrase) not in table:
                table[normal(phrase)] = kept
        return table


def _builtin(name: str) -> dict | None:
    path = resources.files("llmrec").joinpath("domains", f"{name}.json")
    return json.loads(path.read_text()) if path.is_file() else None


def builtin_domains() -> list[str]:
    folder = resources.files("llmrec").joinpath("domains")
    return sorted(p.name.removesuffix(".json") for p in folder.iterdir() if p.name.endswith(".json"))


@lru_cache(maxsize=32)
def _load(name: str) -> Domain:
    """`name`: a built-in file's name, a path ending in .json, or a noun with no file."""
    base = _builtin("generic") or {"name": "generic"}
    if name.endswith(".json"):
        return Domain.model_validate({**base, **json.loads(Path(name).read_text())})
    data = _builtin(name)
    if data is not None:
        return Domain.model_validate({**base, **data})
    return Domain.model_validate({**base, "name": name, "noun": name, "plural": f"{name}s"})


def _file_name(name: str) -> str:
    """The built-in file a name or noun stands for ('movie' → 'movies'; 'item' → 'generic'), else the name itself."""
    if name in ("item", "items") or name.endswith(".json"):
        return "generic" if not name.endswith(".json") else name
    for candidate in builtin_domains():
        data = _builtin(candidate) or {}
        if name in (candidate, data.get("noun"), data.get("plural")):
            return candidate
    return name


def load_domain(name: str | Path) -> Domain:
    """A built-in domain by name or noun ('movies' or 'movie'), or a domain file (a path ending in .json); each laid
    over `generic.json`. A noun with no file gets the generic lexicon under its own noun; 'item' and 'generic' get
    `GENERIC`. A malformed file raises pydantic's ValidationError (extra keys are refused). Loaded once per name."""
    return _load(_file_name(str(name)))


GENERIC = load_domain("generic")
"""Neutral wording for a catalog whose domain names no file."""


def default_domain() -> Domain:
    """The domain of the built-in default scenario (`movies`), for a caller that does not pass its scenario's domain yet.
    Callers should pass `load_domain(scenario.domain)`; this keeps the ones that do not working as before."""
    return load_domain("movies")
