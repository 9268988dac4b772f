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

from pydantic import BaseModel, Field

from llmrec.objectives import RankerInputs
from llmrec.prompts import RankPrompt, RankPromptBuilder, RankPromptConfig
from llmrec.prompts.builders import LABELS
from llmrec.protocols import AdapterRef, LLMEngine, LLMScores
from llmrec.ranking.fusion import FusedRanking
from llmrec.schemas import Candidate, Item


class LLMRankerConfig(BaseModel):
    fusion_weight: float = Field(default=math.inf, ge=0, description="w in logprob - w*log(1+retriever_rank); inf = retriever order.")
    permutations: int = Field(default=1, ge=1, le=8, description="Candidate orders averaged: the retriever's, then seeded shuffles.")
    seed: int = 0


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


def build(inputs: RankerInputs) -> LLMRanker:
    """The registry's builder: lettered candidates in one prompt, label log-probabilities (the base model's verbalizer
    when the scenario has no adapter)."""
    settings = inputs.settings
    prompts = RankPromptBuilder(RankPromptConfig(domain=inputs.scenario.domain, max_history_items=settings.max_history_items,
                                                 token_budget=inputs.token_budget))
    return LLMRanker(inputs.engine, inputs.catalog, prompts,
                     LLMRankerConfig(fusion_weight=inputs.weight, permutations=settings.permutations, seed=settings.seed),
                     adapter=inputs.adapter)
