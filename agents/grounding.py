"""Checks that an explanation says only what the catalog and the user's history support.

Rules, each a named problem when broken:
- `no-history-citation`: it must name at least one item from this user's history;
- `unwatched-title`: every catalog title it names must be in the history or be the recommended item;
- `wrong-genre`: every genre word it uses must belong to the recommended item or a cited history item;
- `wrong-year`: every year it states must be the recommended item's or a cited item's;
- `instruction`: it must not carry instructions (prompt injection smuggled through item text);
- `too-long` / `empty`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from llmrec.prompts.safety import looks_like_instruction
from llmrec.schemas import Item

_YEAR = re.compile(r"\b(1[89]\d\d|20\d\d)\b")
MAX_CHARS = 320


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^0-9a-z]+", " ", text.lower()).split())


class GroundingValidator:
    """Built once per catalog: it indexes titles and the genre vocabulary."""

    def __init__(self, items: Iterable[Item], min_title_chars: int = 6):
        self.titles: dict[str, set[str]] = {}
        genres: set[str] = set()
        for item in items:
            key = _norm(item.title)
            # Short titles ("Heat", "Big") are ordinary words; only longer ones count as citations.
            if len(key) >= min_title_chars and "unknown title" not in key:
                self.titles.setdefault(key, set()).add(item.item_id)
            genres.update(item.genres)
        self.genres = {_norm(g): g for g in genres if _norm(g)}

    def _mentioned_titles(self, text: str) -> set[str]:
        padded = f" {_norm(text)} "
        return {key for key in self.titles if f" {key} " in padded}

    def check(self, text: str, history: Sequence[Item], target: Item) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(cited history item ids, problems); no problems means the explanation is grounded."""
        problems: list[str] = []
        if not text.strip():
            return (), ("empty",)
        if len(text) > MAX_CHARS:
            problems.append("too-long")
        if looks_like_instruction(text):
            problems.append("instruction")
        history_keys = {}
        for item in history:
            history_keys.setdefault(_norm(item.title), []).append(item)
        target_key = _norm(target.title)
        mentioned = self._mentioned_titles(text)
        # A mentioned title that is a substring of a longer mentioned one is part of it, not a citation.
        mentioned = {m for m in mentioned if not any(m != o and f" {m} " in f" {o} " for o in mentioned)}
        cited: list[Item] = []
        for key in mentioned:
            if key in history_keys:
                cited.extend(history_keys[key])
            elif key != target_key:
                problems.append("unwatched-title")
        # Genres and years are checked outside quoted titles: "2001: A Space Odyssey" states no year.
        unquoted = re.sub(r'"[^"]*"', " ", text)
        padded = f" {_norm(text)} "
        for key, items in history_keys.items():  # short history titles count when quoted
            if len(key) < 6 and f'"{items[0].title.lower()}"' in text.lower():
                cited.extend(items)
        if not cited:
            problems.append("no-history-citation")
        allowed_genres = {_norm(g) for item in [target, *cited] for g in item.genres}
        residual = f" {_norm(unquoted)} "
        for key in self.genres:
            if f" {key} " in residual and key not in allowed_genres:
                problems.append("wrong-genre")
                break
        allowed_years = {item.year for item in [target, *cited] if item.year}
        if any(int(y) not in allowed_years for y in _YEAR.findall(unquoted)):
            problems.append("wrong-year")
        cited_ids = tuple(dict.fromkeys(item.item_id for item in cited))
        return cited_ids, tuple(dict.fromkeys(problems))
