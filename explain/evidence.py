"""Explanations a user can check: every fact in them is filled in by llmrec from the catalog and the interactions.

For a recommended item and a user's history:
- the request it matches ("matches: Comedy, 1990–1999"), from the session's filters;
- the genres it shares with a history item, and that item's title, from the catalog;
- co-watch figures from the interaction log: "of the 508 people who watched Fargo (1996), 97 also watched it",
  for the history item (among the most recent `recent`) with the highest share;
- for a cold start, how many people watched it.
Nothing here is generated, so nothing here can be invented.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

from llmrec.schemas import Item


class CoWatch:
    """Which users watched each item, from the training histories (user → item ids)."""

    def __init__(self, histories: Mapping[str, Sequence[str]]):
        self.viewers: dict[str, set[int]] = {}
        for n, items in enumerate(histories.values()):
            for item_id in items:
                self.viewers.setdefault(item_id, set()).add(n)

    def count(self, item_id: str) -> int:
        return len(self.viewers.get(item_id, ()))

    def both(self, a: str, b: str) -> int:
        return len(self.viewers.get(a, set()) & self.viewers.get(b, set()))

    def best_anchor(self, item_id: str, history: Sequence[str], recent: int = 20, min_viewers: int = 1) -> tuple[str, int, int] | None:
        """(history item, its viewers, viewers of both) with the highest share among the most recent `recent`
        watched by at least `min_viewers` (a share of 1 in 1 is no evidence)."""
        scored = [(h, self.count(h), self.both(h, item_id)) for h in dict.fromkeys(reversed(history[-recent:]))]
        scored = [s for s in scored if s[1] >= max(min_viewers, 1) and s[2]]
        return max(scored, key=lambda s: (s[2] / s[1], s[2])) if scored else None


_FIGURES = re.compile(r"(?<=\bOf the )\d+(?= (?:people|person) who watched )|(?<=, )\d+(?= also watched it)"
                      r"|(?<=\bWatched by )\d+(?= (?:people|person) here)")


def mask_figures(text: str) -> str:
    """`text` with the counts `evidence` writes shown as '#', so that no count reads as a numeric title ("187")."""
    return _FIGURES.sub("#", text)


def evidence(item: Item, history: Sequence[Item], cowatch: CoWatch, matches: str = "", anchor: Item | None = None,
             label: Callable[[Item], str] = Item.label, min_viewers: int = 1) -> str:
    """One or two sentences of checkable facts about why `item` is on the list; `label` names a title (with its year)."""
    parts: list[str] = []
    if matches:
        parts.append(f"Matches your request: {matches}.")
    if anchor is not None:
        shared = sorted(set(item.genres) & set(anchor.genres))
        parts.append(f"Like {label(anchor)}" + (f", it is {', '.join(shared)}." if shared else "."))
    best = cowatch.best_anchor(item.item_id, [h.item_id for h in history], min_viewers=min_viewers)
    by_id = {h.item_id: h for h in history}
    if best is not None:
        source, viewers, together = best
        shared = sorted(set(item.genres) & set(by_id[source].genres))
        parts.append(f"Of the {viewers} {'person' if viewers == 1 else 'people'} who watched {label(by_id[source])}, {together} also watched it"
                     + (f"; both are {', '.join(shared)}." if shared else "."))
    elif not history:
        viewers = cowatch.count(item.item_id)
        parts.append(f"Watched by {viewers} {'person' if viewers == 1 else 'people'} here.")
    return " ".join(parts) or f"{', '.join(item.genres) or 'No genre listed'}, {item.year or 'year unknown'}."
