"""Fusion with the retriever's rank, shared by every ranker: score - w * log(1 + retriever_rank).

`w` is fitted on validation users and gated (see `llmrec.adapters.fit`); `w = inf` keeps the retriever's order,
and a non-finite LLM score never breaks it. This is what keeps the LLM from making a list worse than its retriever.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from llmrec.protocols import LLMScores
from llmrec.schemas import Candidate, Item, RankedItem


def fuse(logprobs: Sequence[float], retriever_ranks: Sequence[int], weight: float) -> list[float]:
    """Fused scores; with an infinite weight the LLM only breaks exact retriever ties (there are none)."""
    if math.isinf(weight):  # a non-finite logprob (a label the model never gives) must not break the retriever's order
        return [-float(rank) + 1e-9 * max(lp, -1e6) for lp, rank in zip(logprobs, retriever_ranks)]
    return [lp - weight * math.log1p(rank) for lp, rank in zip(logprobs, retriever_ranks)]


@dataclass(frozen=True)
class ShortHistoryWeight:
    """The fusion weight for histories of at most `max_items` items, fitted apart from the main one."""

    max_items: int
    weight: float


def weight_for(scores: LLMScores, weight: float, short: ShortHistoryWeight | None) -> float:
    """`short.weight` for a history of at most `short.max_items` items (as the scores counted it), else `weight`."""
    if short is not None and scores.history_used + scores.history_dropped <= short.max_items:
        return short.weight
    return weight


class FusedRanking:
    """`rank_scored` and `rank` for every scoring ranker: its scores fused with the retriever rank by
    `config.fusion_weight` (or `short_history`'s weight for a short history), ties to the better retriever rank.
    Subclasses give `score_many` and `config`."""

    config: Any
    short_history: ShortHistoryWeight | None = None

    def score_many(self, requests: Sequence[tuple[Sequence[Item], Sequence[Candidate]]]) -> list[LLMScores]:
        raise NotImplementedError

    def keeps_retriever_order(self, scores: LLMScores | None = None) -> bool:
        """Whether the fused order is the retriever's own (w = inf): for the request `scores` were made for (the
        short-history weight applies by their history length), or, without scores, for every request. A response
        ranked so says `ranking: retriever`, not `llm-fused`: the LLM's scores moved nothing."""
        if scores is not None:
            return math.isinf(weight_for(scores, self.config.fusion_weight, self.short_history))
        return math.isinf(self.config.fusion_weight) and (self.short_history is None or math.isinf(self.short_history.weight))

    def rank_scored(self, candidates: Sequence[Candidate], scores: LLMScores) -> list[RankedItem]:
        fused = fuse(scores.logprobs, [c.retriever_rank for c in candidates], weight_for(scores, self.config.fusion_weight, self.short_history))
        order = sorted(range(len(candidates)), key=lambda i: (-fused[i], candidates[i].retriever_rank))
        return [RankedItem(item_id=candidates[i].item_id, rank=r, score=fused[i], llm_logprob=scores.logprobs[i],
                           retriever_rank=candidates[i].retriever_rank) for r, i in enumerate(order)]

    def rank(self, history: Sequence[Item], candidates: Sequence[Candidate]) -> list[RankedItem]:
        if not candidates:
            return []
        return self.rank_scored(candidates, self.score_many([(history, candidates)])[0])


def retriever_order(candidates: Sequence[Candidate], start: int = 0) -> list[RankedItem]:
    """The fallback ranking (and the tail past the LLM's candidates): the retriever's own order, no LLM score."""
    ordered = sorted(candidates, key=lambda c: c.retriever_rank)
    return [RankedItem(item_id=c.item_id, rank=start + r, score=-float(c.retriever_rank), retriever_rank=c.retriever_rank)
            for r, c in enumerate(ordered)]
