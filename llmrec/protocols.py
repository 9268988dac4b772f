"""One small Protocol per swappable stage. `llmrec.pipeline.build_pipeline` is the only place that wires them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from llmrec.schemas import Candidate, Explanation, Item, RankedItem, UserHistory


@dataclass(frozen=True)
class LLMScores:
    """Mean label log-probability per candidate (in the retriever's order) and prompt bookkeeping."""

    logprobs: list[float]
    history_used: int
    history_dropped: int
    prompt_tokens: int


class AdapterRef(Protocol):
    """A LoRA adapter as the engines need it: a served name and a PEFT folder."""

    name: str
    path: str


@runtime_checkable
class HistoryLookup(Protocol):
    def __call__(self, user_id: str) -> UserHistory: ...


@runtime_checkable
class Retriever(Protocol):
    """Turns a history into up to `k` unseen candidates, best first."""

    name: str

    def retrieve(self, history: UserHistory, k: int) -> list[Candidate]: ...


@runtime_checkable
class LLMEngine(Protocol):
    """What the ranker and explainer need from an LLM, whether in-process vLLM or a vLLM server."""

    model_name: str

    def count_tokens(self, text: str) -> int: ...

    def chat_prompt(self, system: str, user: str, assistant_prefix: str = "") -> str:
        """Render a chat turn with the model's template, ready for raw completion."""
        ...

    def label_token_ids(self, labels: Sequence[str]) -> list[int]:
        """The single token each label is written as right after the assistant prefix."""
        ...

    def score_next_token(
        self, prompts: Sequence[str], token_ids: Sequence[int], adapter: AdapterRef | None = None
    ) -> list[list[float]]:
        """Log-probability of each of `token_ids` at the next position, one forward pass per prompt."""
        ...

    def generate(
        self,
        prompts: Sequence[str],
        max_tokens: int,
        adapter: AdapterRef | None = None,
        temperature: float = 0.0,
        stop: Sequence[str] = (),
    ) -> list[str]: ...


@runtime_checkable
class Ranker(Protocol):
    def rank(self, history: Sequence[Item], candidates: Sequence[Candidate]) -> list[RankedItem]: ...


@runtime_checkable
class ScoringRanker(Ranker, Protocol):
    """A ranker whose per-candidate scores fuse with the retriever rank (`llmrec.ranking.fusion.fuse`): the LLM's
    label logprobs (`LLMRanker`) or the embedding two-tower's log-softmax (`EmbeddingRanker`).
    The pipeline and the eval harness score once, then order by any fusion weight."""

    def score_many(self, requests: Sequence[tuple[Sequence[Item], Sequence[Candidate]]]) -> list[LLMScores]: ...

    def rank_scored(self, candidates: Sequence[Candidate], scores: LLMScores) -> list[RankedItem]: ...

    def keeps_retriever_order(self, scores: LLMScores | None = None) -> bool:
        """Whether the fused order is the retriever's own (w = inf), for these scores' request or, without scores, for every one."""
        ...


@runtime_checkable
class Explainer(Protocol):
    def explain(self, history: Sequence[Item], items: Sequence[Item]) -> list[Explanation]: ...
