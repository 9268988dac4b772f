"""Explanations a user can check: every fact in them is filled in by llmrec from the catalog and the interactions.

For a recommended item and a user's history:
- the request it matches ("matches: Comedy, 1990–1999"), from the session's filters;
- the genres it shares with a history item, and that item's title, from the catalog;
- co-occurrence figures from the interaction log, in the domain's words (`Domain.consumed`): "of the 508 people who
  watched Fargo (1996), 97 also watched it", "of the 12 people who read Dune (1965), 4 also read it", for the
  history item (among the most recent `recent`) whose share has the highest Wilson lower bound, so that 97 of 508
  beats 1 of 2;
- "Like X" (X: the item a chat turn is anchored on, or the history item sharing the most genres) only when the
  item really is close to X (`CoWatch.close`, or the caller's `near`); otherwise only the genres they share;
- for a cold start, how many people it has here.
One support threshold, `MIN_VIEWERS`, holds on every path (the pipeline's explainer and the chat): a history item
is cited, in co-occurrence figures or as "like X", only if at least that many people have it.
Nothing here is generated, so nothing here can be invented.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence

from llmrec.domains import Domain, default_domain
from llmrec.schemas import Item
from llmrec.text import title_forms

MIN_VIEWERS = 5
"""A history item is cited (co-watch figures, "like X") only if at least this many people watched it; every path uses it."""
MIN_LIFT = 1.4
""""Like X" needs the Wilson lower bound of the share of X's viewers who also watched the item to be at least this many
times the item's share among all users. On ML-100K unrelated pairs sit near 1.25 (heavy users watch everything popular:
Fargo → Toy Story 1.25, Fargo → Lion King 1.13) and related ones above 1.4 (Star Wars → Return of the Jedi 1.47,
Toy Story → Aladdin 1.55, Aladdin → Beauty and the Beast 2.99)."""
Z = 1.96


def wilson_lower(successes: int, trials: int, z: float = Z) -> float:
    """The lower bound of the Wilson score interval of the share successes / trials (0 for no trials)."""
    if trials <= 0:
        return 0.0
    p = successes / trials
    spread = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    return max(0.0, (p + z * z / (2 * trials) - spread) / (1 + z * z / trials))


class CoWatch:
    """Which users watched each item, from the training histories (user → item ids)."""

    def __init__(self, histories: Mapping[str, Sequence[str]]):
        self.viewers: dict[str, set[int]] = {}
        self.users = len(histories)
        for n, items in enumerate(histories.values()):
            for item_id in items:
                self.viewers.setdefault(item_id, set()).add(n)

    def count(self, item_id: str) -> int:
        return len(self.viewers.get(item_id, ()))

    def both(self, a: str, b: str) -> int:
        return len(self.viewers.get(a, set()) & self.viewers.get(b, set()))

    def support(self, source: str, item_id: str) -> float:
        """The Wilson lower bound of the share of `source`'s viewers who also watched `item_id`; 0 below `MIN_VIEWERS`."""
        viewers = self.count(source)
        return wilson_lower(self.both(source, item_id), viewers) if viewers >= MIN_VIEWERS else 0.0

    def close(self, item_id: str, anchor_id: str) -> bool:
        """Whether `item_id` is co-watched with `anchor_id` well above its base rate (see `MIN_LIFT`): the test for "like X"."""
        base = self.count(item_id) / self.users if self.users else 0.0
        return item_id != anchor_id and base > 0 and self.support(anchor_id, item_id) >= MIN_LIFT * base

    def best_anchor(self, item_id: str, history: Sequence[str], recent: int = 20) -> tuple[str, int, int] | None:
        """(history item, its viewers, viewers of both) among the most recent `recent` watched by at least `MIN_VIEWERS`,
        with the highest Wilson lower bound of the share (1 of 2 is no evidence; 97 of 508 is)."""
        scored = [(h, self.count(h), self.both(h, item_id)) for h in dict.fromkeys(reversed(history[-recent:]))]
        scored = [s for s in scored if s[1] >= MIN_VIEWERS and s[2]]
        return max(scored, key=lambda s: (wilson_lower(s[2], s[1]), s[2])) if scored else None


_FIGURES = re.compile(r"(?<=\bOf the )\d+(?= (?:people|person) who )|(?<=, )\d+(?= also [\w ]+ it\b)"
                      r"|(?<= by )\d+(?= (?:people|person) here\.)")


def mask_figures(text: str) -> str:
    """`text` (evidence written by `evidence`, in any domain's words) with its counts shown as '#', so that no count
    reads as a numeric title ("187")."""
    return _FIGURES.sub("#", text)


def evidence(item: Item, history: Sequence[Item], cowatch: CoWatch, matches: str = "", anchor: Item | None = None,
             label: Callable[[Item], str] = Item.label, near: Callable[[Item, Item], bool] | None = None,
             domain: Domain | None = None) -> str:
    """One or two sentences of checkable facts about why `item` is on the list; `label` names a title (with its year),
    `domain` gives the verb ("watched", "read"; default: movies').

    "Like <anchor>" is written only when the item is close to the anchor (`CoWatch.close`, or `near`, e.g. the
    encoder's similarity); otherwise the anchor is named only for the genres the two share, if any.
    """
    did = (domain or default_domain()).consumed
    parts: list[str] = []
    if matches:
        parts.append(f"Matches your request: {matches}.")
    if anchor is not None and anchor.item_id != item.item_id:
        shared = sorted(set(item.genres) & set(anchor.genres))
        if cowatch.close(item.item_id, anchor.item_id) or (near is not None and near(item, anchor)):
            parts.append(f"Like {label(anchor)}" + (f", it is {', '.join(shared)}." if shared else "."))
        elif shared:
            parts.append(f"It shares {', '.join(shared)} with {label(anchor)}.")
    best = cowatch.best_anchor(item.item_id, [h.item_id for h in history])
    by_id = {h.item_id: h for h in history}
    if best is not None:
        source, viewers, together = best
        shared = sorted(set(item.genres) & set(by_id[source].genres))
        parts.append(f"Of the {viewers} people who {did} {label(by_id[source])}, {together} also {did} it"
                     + (f"; both are {', '.join(shared)}." if shared else "."))
    elif not history:
        viewers = cowatch.count(item.item_id)
        parts.append(f"{did[:1].upper()}{did[1:]} by {viewers} {'person' if viewers == 1 else 'people'} here.")
    return " ".join(parts) or f"{', '.join(item.genres) or 'No genre listed'}, {item.year or 'year unknown'}."


def like_claims(text: str, history: Sequence[Item], label: Callable[[Item], str] = Item.label) -> list[Item]:
    """The history items `text` says the item is like ("Like Fargo (1996)", "like Fargo"), in history order."""
    found = []
    for h in dict((h.item_id, h) for h in history).values():
        forms = sorted(title_forms(h.title) | title_forms(label(h)), key=len, reverse=True)
        if any(re.search(rf"\blike\s+[\"“]?{re.escape(form)}(?![\w])", text, re.IGNORECASE) for form in forms if form.strip()):
            found.append(h)
    return found
