"""The ranker of the `pointwise` objective (TALLRec-style): "will the user enjoy this one? Yes/No", per candidate.

Each candidate gets its own prompt (`prompts.builders.PointwisePromptBuilder`: the history first, the
candidate last, so one user's prompts share their prefix in vLLM's cache), and its score is

    log P(Yes), renormalised over {Yes, No}

read at the answer position in one forward pass (`engine.score_next_token`). Like every LLM score it
never decides alone: `agents.ranker.fuse` adds `- w * log(1 + retriever_rank)` with the scenario's fitted `w`.
A candidate's score does not depend on the others, so there is no position bias to average away.

Precision matters more here than for the verbalizer: SmolLM2's logits at the answer are about 8-16, where
bf16 steps by 1/16, so in a bf16 engine the Yes/No log-odds come in steps of 0.0625, about as wide as a
short-trained adapter's whole spread between one user's candidates (measured: log P(Yes) within a user
spanning 0.13 nats; the bf16 LoRA engine off by up to 0.21 nats from PEFT in fp32; an fp32 engine, LoRA or
merged weights, matching it to 1e-4).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from pydantic import BaseModel, Field

from llmrec.objectives import RankerInputs
from llmrec.prompts.builders import ANSWERS, PointwisePromptBuilder, PointwisePromptConfig
from llmrec.protocols import AdapterRef, LLMEngine, LLMScores
from llmrec.ranking.fusion import FusedRanking
from llmrec.schemas import Candidate, Item


class PointwiseRankerConfig(BaseModel):
    fusion_weight: float = Field(default=math.inf, ge=0, description="w in log P(Yes) - w*log(1+retriever_rank); inf = retriever order.")


class PointwiseRanker(FusedRanking):
    """Scores each candidate with its own Yes/No prompt, then orders them by the fused score."""

    def __init__(self, engine: LLMEngine, catalog: Mapping[str, Item], prompts: PointwisePromptBuilder | None = None,
                 config: PointwiseRankerConfig | None = None, adapter: AdapterRef | None = None):
        self.engine = engine
        self.catalog = catalog
        self.prompts = prompts or PointwisePromptBuilder()
        self.config = config or PointwiseRankerConfig()
        self.adapter = adapter

    def score_many(self, requests: Sequence[tuple[Sequence[Item], Sequence[Candidate]]]) -> list[LLMScores]:
        """Every candidate of every request in one engine call; `prompt_tokens` is the sum over a request's prompts."""
        built = [self.prompts.build_many(self.engine, history, [self.catalog[c.item_id] for c in candidates])
                 for history, candidates in requests]
        texts = [p.text for prompts in built for p in prompts]
        rows = self.engine.score_next_token(texts, self.engine.label_token_ids(ANSWERS), self.adapter) if texts else []
        results, at = [], 0
        for prompts in built:
            if not prompts:
                results.append(LLMScores([], 0, 0, 0))
                continue
            yes = [row[0] for row in rows[at : at + len(prompts)]]
            at += len(prompts)
            results.append(LLMScores(yes, prompts[0].history_used, prompts[0].history_dropped,
                                     sum(self.engine.count_tokens(p.text) for p in prompts)))
        return results


def build(inputs: RankerInputs) -> PointwiseRanker:
    """The registry's builder: one Yes/No prompt per candidate."""
    prompts = PointwisePromptBuilder(PointwisePromptConfig(domain=inputs.scenario.domain, max_history_items=inputs.settings.max_history_items,
                                                           token_budget=inputs.token_budget))
    return PointwiseRanker(inputs.engine, inputs.catalog, prompts, PointwiseRankerConfig(fusion_weight=inputs.weight), adapter=inputs.adapter)
