"""Titles a user writes, resolved against the catalog: rapidfuzz over every title form, Chroma as a second opinion.

Every catalog title is matched in both article orders and under its alternative title
("Godfather, The" ⇔ "The Godfather", "Postino, Il" ⇔ "Il Postino"), the forms `llmrec.text.title_forms`
builds. A title that scores >= `accept` is resolved. One that scores between `confirm` and
`accept` is resolved only when the Chroma index, queried with the same text, also ranks that item
among its nearest `neighbours`. Anything else is unresolved and becomes a question to the user
(with the closest title as a suggestion when there is one): a title is never guessed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from llmrec.errors import ChromaUnavailable
from llmrec.retrieval.index import CatalogIndex
from llmrec.schemas import Item
from llmrec.text import ARTICLE_WORDS, normal, title_forms

_YEAR_SUFFIX = re.compile(r"\s*\((1[89]\d\d|20\d\d)\)\s*$")


class TitleConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    accept: float = Field(default=90.0, description="rapidfuzz ratio at or above which a title is resolved.")
    confirm: float = Field(default=75.0, description="From here to `accept`, resolved only when Chroma agrees.")
    suggest: float = Field(default=60.0, description="From here, the closest title is offered in the question.")
    neighbours: int = Field(default=5, ge=1, description="Chroma's nearest items that count as agreeing.")


class TitleMatch(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    query: str
    item_id: str | None = None
    score: float = 0.0
    how: Literal["fuzzy", "fuzzy+chroma", "unresolved"] = "unresolved"
    suggestion: str | None = Field(default=None, description="The closest catalog item when unresolved.")


def _numbers(text: str) -> set[str]:
    return set(re.findall(r"\d+", text))


def _keys(form: str) -> set[str]:
    """A title form's keys: itself, without a leading article ('Empire Strikes Back'), and before a colon ('Terminator 2')."""
    keys = {normal(form)}
    main = form.split(":")[0]
    if main != form and len(normal(main)) >= 4:
        keys.add(normal(main))
    for key in list(keys):
        head, _, rest = key.partition(" ")
        if rest and head in ARTICLE_WORDS:
            keys.add(rest)
    return keys - {""}


class TitleResolver:
    """Built once per catalog; `popularity` breaks ties between items that share a title (remakes, duplicates)."""

    def __init__(self, items: Iterable[Item], popularity: Mapping[str, int], index: CatalogIndex | None = None,
                 config: TitleConfig | None = None):
        self.config = config or TitleConfig()
        self.index = index
        self.items = {item.item_id: item for item in items}
        forms: dict[str, list[str]] = {}
        for item in self.items.values():
            if "unknown-title" in item.flags:
                continue
            for form in title_forms(item.title):
                for key in _keys(form):
                    forms.setdefault(key, []).append(item.item_id)
        self.forms = {k: sorted(set(v), key=lambda i: (-popularity.get(i, 0), i)) for k, v in forms.items()}
        self._keys = list(self.forms)

    def is_title(self, text: str) -> bool:
        """Whether `text` is exactly one of the catalog's title forms (any article order, case and punctuation)."""
        return normal(_YEAR_SUFFIX.sub("", text)) in self.forms

    def resolve(self, query: str) -> TitleMatch:
        """One title as written, optionally with '(year)'."""
        from rapidfuzz import fuzz, process

        year_match = _YEAR_SUFFIX.search(query)
        year = int(year_match.group(1)) if year_match else None
        key = normal(_YEAR_SUFFIX.sub("", query))
        if not key:
            return TitleMatch(query=query)
        numbers = _numbers(key)  # "Die Hard 3" is not "Die Hard 2": sequel numbers must agree
        best = [b for b in process.extract(key, self._keys, scorer=fuzz.ratio, limit=20) if _numbers(b[0]) == numbers]
        if best:
            form, score, _ = best[0]
            item_id = self._pick(self.forms[form], year)
            if score >= self.config.accept:
                return TitleMatch(query=query, item_id=item_id, score=score, how="fuzzy")
            if score >= self.config.confirm and item_id in self._neighbours(query):
                return TitleMatch(query=query, item_id=item_id, score=score, how="fuzzy+chroma")
        return TitleMatch(query=query, score=best[0][1] if best else 0.0, suggestion=self._suggest(key))

    def _suggest(self, key: str) -> str | None:
        """The closest title for the question back: one that contains the words ('Shawshank'), or a near spelling."""
        from rapidfuzz import fuzz, process

        for scorer in (fuzz.partial_token_ratio, fuzz.ratio) if len(key) >= 4 else (fuzz.ratio,):
            found = process.extractOne(key, self._keys, scorer=scorer)
            if found and found[1] >= (95 if scorer is fuzz.partial_token_ratio else self.config.suggest):
                return self._pick(self.forms[found[0]], None)
        return None

    def resolve_all(self, queries: Iterable[str]) -> list[TitleMatch]:
        """Each query; one that does not resolve as a whole is tried as a list ('Heat and Fargo')."""
        out: list[TitleMatch] = []
        for query in queries:
            match = self.resolve(query)
            parts = [p for p in re.split(r"\s+(?:and|&)\s+|\s*,\s*", query) if p.strip()]
            if match.item_id is None and len(parts) > 1:
                split = [self.resolve(p) for p in parts]
                if all(m.item_id for m in split):
                    out.extend(split)
                    continue
            out.append(match)
        return out

    def _pick(self, ids: list[str], year: int | None) -> str:
        dated = [i for i in ids if year is not None and self.items[i].year == year]
        return (dated or ids)[0]

    def _neighbours(self, query: str) -> set[str]:
        if self.index is None:
            return set()
        try:
            return {i for i, _ in self.index.similar(query, self.config.neighbours)}
        except ChromaUnavailable:
            return set()
