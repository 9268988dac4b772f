"""The ranker of the `sequence` objective: each candidate's log-likelihood as the next line of the history.

The prompt is the user's history written as item lines, "Title (Year)" one per line, oldest first, after a
fixed chat header (`prompts.builders.SequencePromptBuilder`, template `sequence_v1`), exactly as the
`sequence` adapter was trained (`adapters/sequence.py`). Each candidate is one request, history + its
line, and its score reads the prompt logprobs of its line's tokens, newline included. The requests
of one user share the history, so vLLM's prefix cache computes it once (`InProcessVLLM.prompt_logprobs`);
`LikelihoodRanker.stats` counts how many prompt tokens the cache served.

How the summed log-likelihood is normalised (`LikelihoodRankerConfig.normalization`):
- `sum`: log p(line | history), which favours short titles;
- `mean` (the default, the best of the three measured zero-shot): that sum over the line's token count;
- `pmi`: log p(line | history) - log p(line | no history), the title's own prior taken out, so a
  popular, easy-to-guess title gains only as much as this user's history adds. The prior is one more
  request per item, with the header alone, made once per item and kept by the ranker.

The score then fuses with the retriever's rank like every LLM score: score - w * log(1 + retriever_rank).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, Field

from llmrec.errors import LLMUnavailable
from llmrec.manifest import read_manifest
from llmrec.objectives import RankerInputs
from llmrec.prompts.builders import SequencePromptBuilder, SequencePromptConfig
from llmrec.protocols import AdapterRef, LLMEngine, LLMScores
from llmrec.ranking.fusion import FusedRanking
from llmrec.schemas import Candidate, Item

Normalization = Literal["sum", "mean", "pmi"]


class LikelihoodRankerConfig(BaseModel):
    fusion_weight: float = Field(default=math.inf, ge=0, description="w in score - w*log(1+retriever_rank); inf = retriever order.")
    normalization: Normalization = Field(default="mean", description=(
        "sum: log p(line | history); mean: per token; pmi: minus log p(line | no history). Zero-shot on 300 seeded "
        "ML-100K validation users (SmolLM2, bf16), NDCG@10 on the 20 candidates alone: mean .097, sum .094, pmi .085 "
        "(random order .083, the retriever's .128); fused with the retriever's rank, mean was also the best (.132 at w=4)."))
    prior_batch: int = Field(default=64, ge=1, description="Prior requests per engine call (only the call's length).")


@dataclass(frozen=True)
class LineLikelihood:
    """One candidate's line under the model: summed log-probability with and without the history."""

    conditional: float
    prior: float | None
    tokens: int

    def score(self, normalization: Normalization) -> float:
        if normalization == "sum":
            return self.conditional
        if normalization == "mean":
            return self.conditional / self.tokens
        if self.prior is None:
            raise ValueError("PMI needs the line's prior")
        return self.conditional - self.prior


@dataclass
class CacheStats:
    """Prompt tokens sent and the part vLLM's prefix cache served, over every request so far."""

    requests: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0

    @property
    def hit_rate(self) -> float:
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0


@dataclass
class _Tokens:
    """Token ids per text, so one title is tokenized once whatever the number of users."""

    engine: LLMEngine
    cache: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def __call__(self, text: str) -> tuple[int, ...]:
        if text not in self.cache:
            self.cache[text] = tuple(self.engine.tokenizer(text, add_special_tokens=False)["input_ids"])
        return self.cache[text]


class LikelihoodRanker(FusedRanking):
    """Scores each candidate by its line's log-likelihood after the history; the `ScoringRanker` interface."""

    def __init__(self, engine: LLMEngine, catalog: Mapping[str, Item], prompts: SequencePromptBuilder,
                 config: LikelihoodRankerConfig | None = None, adapter: AdapterRef | None = None):
        if not callable(getattr(engine, "prompt_logprobs", None)):
            raise LLMUnavailable(f"the `sequence` objective scores prompt likelihoods, which the {type(engine).__name__} engine "
                                 "cannot: vLLM 0.32's prompt logprobs kill a LoRA-enabled server when requests share a batch. "
                                 "Unset LLMREC_LLM_URL to rank in process")
        self.engine = engine
        self.catalog = catalog
        self.prompts = prompts
        self.config = config or LikelihoodRankerConfig()
        self.adapter = adapter
        self.stats = {"conditional": CacheStats(), "prior": CacheStats()}
        self._priors: dict[str, float] = {}
        self._tokens = _Tokens(engine)

    def _score(self, prompts: list[tuple[int, ...]], starts: list[int], kind: str) -> list[float]:
        """Summed logprob of each prompt's tokens from its start, through the engine, counting cache hits."""
        results = self.engine.prompt_logprobs(prompts, starts, self.adapter)
        stats = self.stats[kind]
        stats.requests += len(prompts)
        stats.prompt_tokens += sum(map(len, prompts))
        stats.cached_tokens += sum(r.cached_tokens for r in results)
        return [math.fsum(r.logprobs) for r in results]

    def priors(self, items: Sequence[Item]) -> dict[str, float]:
        """log p(line | header alone) per item id, computed once per item and kept."""
        header = self._tokens(self.prompts.header(self.engine))
        missing = list(dict.fromkeys(i.item_id for i in items if i.item_id not in self._priors))
        for start in range(0, len(missing), self.config.prior_batch):
            chunk = missing[start : start + self.config.prior_batch]
            prompts = [header + self._tokens(self.prompts.line(self.catalog[i])) for i in chunk]
            self._priors.update(zip(chunk, self._score(prompts, [len(header)] * len(prompts), "prior")))
        return {i.item_id: self._priors[i.item_id] for i in items}

    def likelihoods(self, history: Sequence[Item], candidates: Sequence[Candidate],
                    with_prior: bool | None = None) -> tuple[list[LineLikelihood], int, int, int]:
        """Each candidate's line likelihood (prior included when PMI needs it, or when asked), and the
        prompt's history used, history dropped and prefix tokens."""
        items = [self.catalog[c.item_id] for c in candidates]
        lines = [self._tokens(self.prompts.line(item)) for item in items]
        prompt = self.prompts.build(self.engine, history, max(map(len, lines), default=0))
        prefix = self._tokens(prompt.header) + sum((self._tokens(line) for line in prompt.lines), ())
        conditional = self._score([prefix + line for line in lines], [len(prefix)] * len(lines), "conditional") if lines else []
        if with_prior is None:
            with_prior = self.config.normalization == "pmi"
        priors = self.priors(items) if with_prior else {}
        found = [LineLikelihood(c, priors.get(item.item_id), len(line)) for c, item, line in zip(conditional, items, lines)]
        return found, prompt.history_used, prompt.history_dropped, len(prefix)

    def score_many(self, requests: Sequence[tuple[Sequence[Item], Sequence[Candidate]]]) -> list[LLMScores]:
        """One engine call per request (its candidates share the history prefix); priors once per item."""
        out = []
        for history, candidates in requests:
            found, used, dropped, tokens = self.likelihoods(history, candidates)
            out.append(LLMScores([f.score(self.config.normalization) for f in found], used, dropped, tokens))
        return out



def sequence_prompts(manifest: Mapping, domain: str, token_budget: int) -> SequencePromptBuilder:
    """The prompt builder a `sequence` adapter was trained with (its manifest's `prompt`), for ranking."""
    recorded = dict(manifest.get("prompt") or {})
    recorded.update(domain=domain, token_budget=token_budget)
    return SequencePromptBuilder(SequencePromptConfig.model_validate(recorded))


def build(inputs: RankerInputs) -> LikelihoodRanker:
    """The registry's builder: each candidate's line likelihood after the history, with the adapter's prompt format."""
    prompts = sequence_prompts(read_manifest(inputs.adapter.path), inputs.scenario.domain, inputs.token_budget)
    return LikelihoodRanker(inputs.engine, inputs.catalog, prompts, LikelihoodRankerConfig(fusion_weight=inputs.weight),
                            adapter=inputs.adapter)
