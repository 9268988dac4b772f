"""Every object that crosses a stage boundary, the CLI or JSON output: one pydantic model each."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Item(_Wire):
    """One catalog item, with text already cleaned of control characters (item text is untrusted)."""

    item_id: str
    title: str
    year: int | None = None
    genres: tuple[str, ...] = ()
    flags: tuple[str, ...] = Field(default=(), description="Data quirks found while loading, e.g. 'unknown-title'.")

    def label(self) -> str:
        """Title with year, as shown to people and to the model."""
        return f"{self.title} ({self.year})" if self.year else self.title


class Interaction(_Wire):
    user_id: str
    item_id: str
    timestamp: float
    rating: float | None = None


class UserHistory(_Wire):
    """A user's items, oldest first. `user_id` is None for an ad-hoc history."""

    user_id: str | None
    item_ids: tuple[str, ...]


class Candidate(_Wire):
    """An unseen item proposed by a retriever, with its 0-based position in the retriever's list."""

    item_id: str
    retriever_rank: int
    retriever_score: float
    sources: tuple[str, ...] = ()


class RankedItem(_Wire):
    item_id: str
    rank: int
    score: float = Field(description="Fused score: LLM label log-probability minus w*log(1+retriever_rank).")
    llm_logprob: float | None = Field(default=None, description="Log-probability of the item's label, renormalised over the labels.")
    retriever_rank: int


class Explanation(_Wire):
    item_id: str
    text: str
    source: Literal["llm", "llm-retry", "template"]
    cited_item_ids: tuple[str, ...] = ()
    problems: tuple[str, ...] = Field(default=(), description="Why earlier LLM attempts were rejected by the grounding validator.")


class Recommendation(_Wire):
    rank: int
    item: Item
    score: float
    llm_logprob: float | None = None
    retriever_rank: int
    explanation: Explanation | None = None


class RecommendRequest(_Wire):
    user_id: str | None = None
    history: tuple[str, ...] | None = Field(default=None, description="Ad-hoc history (item ids, oldest first) instead of a user id.")
    k: int = Field(default=10, ge=1, le=100)
    scenario: str = "movies"
    explain: bool = False


class ExplanationStats(_Wire):
    llm: int = 0
    fallback: int = 0


class RecommendResponse(_Wire):
    user_id: str | None
    scenario: str
    model: str
    adapter: str | None
    recommendations: tuple[Recommendation, ...]
    ranking: Literal["llm-fused", "retriever", "cold-start"]
    degraded: bool = False
    degraded_reason: str | None = None
    cold_start: bool = False
    history_used: int
    history_dropped: int = 0
    explanations: ExplanationStats | None = None
    notes: tuple[str, ...] = ()
    timings_ms: dict[str, float] = Field(default_factory=dict)
