"""LLM reranking, LlamaRec-style: one forward pass per candidate order, scores from label logprobs.

The LLM's score never decides alone. Each candidate's final score is

    llm_logprob - w * log(1 + retriever_rank)

with `w` fitted on validation data and stored with the scenario (`w = inf` keeps the retriever's
order). Measured on ML-100K, SmolLM2 zero-shot ranks at or below random and copies list order,
so fusion is what keeps the LLM from making a list worse than its retriever.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from llmrec.prompts import RankPrompt, RankPromptBuilder
from llmrec.prompts.builders import LABELS
from llmrec.protocols import AdapterRef, LLMEngine
from llmrec.schemas import Candidate, Item, RankedItem


class LLMRankerConfig(BaseModel):
    fusion_weight: float = Field(default=math.inf, ge=0, description="w in logprob - w*log(1+retriever_rank); inf = retriever order.")
    permutations: int = Field(default=1, ge=1, le=8, description="Candidate orders averaged: the retriever's, then seeded shuffles.")
    seed: int = 0


@dataclass(frozen=True)
class LLMScores:
    """Mean label log-probability per candidate (in the retriever's order) and prompt bookkeeping."""

    logprobs: list[float]
    history_used: int
    history_dropped: int
    prompt_tokens: int


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

    def rank_scored(self, candidates: Sequence[Candidate], scores: LLMScores) -> list[RankedItem]:
        fused = fuse(scores.logprobs, [c.retriever_rank for c in candidates], weight_for(scores, self.config.fusion_weight, self.short_history))
        order = sorted(range(len(candidates)), key=lambda i: (-fused[i], candidates[i].retriever_rank))
        return [RankedItem(item_id=candidates[i].item_id, rank=r, score=fused[i], llm_logprob=scores.logprobs[i],
                           retriever_rank=candidates[i].retriever_rank) for r, i in enumerate(order)]

    def rank(self, history: Sequence[Item], candidates: Sequence[Candidate]) -> list[RankedItem]:
        if not candidates:
            return []
        return self.rank_scored(candidates, self.score_many([(history, candidates)])[0])


class LLMRanker(FusedRanking):
    """Scores candidates with the LLM, then orders them by the fused score."""

    def __init__(self, engine: LLMEngine, catalog: Mapping[str, Item], prompts: RankPromptBuilder,
                 config: LLMRankerConfig | None = None, adapter: AdapterRef | None = None):
        self.engine = engine
        self.catalog = catalog
        self.prompts = prompts
        self.config = config or LLMRankerConfig()
        self.adapter = adapter

    def _orders(self, n: int, key: str) -> list[list[int]]:
        rng = random.Random(f"{self.config.seed}:{key}")
        orders = [list(range(n))]
        for _ in range(self.config.permutations - 1):
            order = list(range(n))
            rng.shuffle(order)
            orders.append(order)
        return orders

    def score_many(self, requests: Sequence[tuple[Sequence[Item], Sequence[Candidate]]]) -> list[LLMScores]:
        """Every prompt of every request goes to the engine in one batch per candidate count."""
        built: list[list[tuple[list[int], RankPrompt]]] = []
        for history, candidates in requests:
            items = [self.catalog[c.item_id] for c in candidates]
            orders = self._orders(len(items), ",".join(c.item_id for c in candidates))
            built.append([(order, self.prompts.build(self.engine, history, [items[i] for i in order])) for order in orders])
        rows: dict[tuple[int, int], list[float]] = {}
        by_size: dict[int, list[tuple[int, int]]] = {}
        for r, prompts in enumerate(built):
            for p, (order, _) in enumerate(prompts):
                if order:  # a request without candidates needs no LLM call
                    by_size.setdefault(len(order), []).append((r, p))
        for size, keys in by_size.items():
            label_ids = self.engine.label_token_ids(LABELS[:size])
            scored = self.engine.score_next_token([built[r][p][1].text for r, p in keys], label_ids, self.adapter)
            rows.update(zip(keys, scored))
        results = []
        for r, prompts in enumerate(built):
            if not requests[r][1]:
                results.append(LLMScores([], 0, 0, 0))
                continue
            sums = [0.0] * len(requests[r][1])
            for p, (order, _) in enumerate(prompts):
                for position, candidate_index in enumerate(order):
                    sums[candidate_index] += rows[(r, p)][position]
            first = prompts[0][1]
            results.append(LLMScores([s / len(prompts) for s in sums], first.history_used, first.history_dropped,
                                     self.engine.count_tokens(first.text)))
        return results



def retriever_order(candidates: Sequence[Candidate], start: int = 0) -> list[RankedItem]:
    """The fallback ranking (and the tail past the LLM's candidates): the retriever's own order, no LLM score."""
    ordered = sorted(candidates, key=lambda c: c.retriever_rank)
    return [RankedItem(item_id=c.item_id, rank=start + r, score=-float(c.retriever_rank), retriever_rank=c.retriever_rank)
            for r, c in enumerate(ordered)]
