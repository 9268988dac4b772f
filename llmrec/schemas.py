"""Every object that crosses a stage boundary, the CLI or JSON output: one pydantic model each."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from llmrec.errors import InputTooLarge


class Limits(BaseModel):
    """Caps on every user-facing field, checked where a request enters (`RecommendRequest`, `ChatTurn`), so the CLI
    and any later service refuse the same input with the same one-line `InputTooLarge` (exit 2)."""

    model_config = ConfigDict(frozen=True)

    message_chars: int = Field(default=2000, description="One chat message.")
    history_items: int = Field(default=5000, description="An ad-hoc history (item ids); ML-1M's longest user has 2,314.")
    k: int = Field(default=100, description="Items asked for in one recommendation (a chat reply: `ChatConfig.k`, at most 20).")
    id_chars: int = Field(default=128, description="A user id, an item id or a session id.")


LIMITS = Limits()


def check_size(field: str, value: Any, limit: int, unit: str) -> None:
    """`InputTooLarge` when `value` (a str or a sequence) is longer than `limit`."""
    if value is not None and len(value) > limit:
        raise InputTooLarge(f"{field} is too long: {len(value)} {unit}, the limit is {limit}")


def _check_ids(field: str, ids: Any) -> None:
    if ids is None:
        return
    check_size(field, ids, LIMITS.history_items, "items")
    long = next((i for i in ids if isinstance(i, str) and len(i) > LIMITS.id_chars), None)
    if long is not None:
        raise InputTooLarge(f"an item id in {field} is too long: {len(long)} characters, the limit is {LIMITS.id_chars}")


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Item(_Wire):
    """One catalog item, with text already cleaned of control characters (item text is untrusted)."""

    item_id: str
    title: str
    year: int | None = None
    genres: tuple[str, ...] = ()
    flags: tuple[str, ...] = Field(default=(), description="Data quirks found while loading, e.g. 'unknown-title'.")
    attributes: tuple[tuple[str, str], ...] = Field(default=(), description=(
        "(name, value) pairs from the .item file's known extra columns (`data.catalog.ATTRIBUTE_COLUMNS`: author, "
        "publisher), in that order, cleaned like titles; empty values are left out."))

    def label(self) -> str:
        """Title with year, as shown to people and to the model."""
        return f"{self.title} ({self.year})" if self.year else self.title

    def attribute(self, name: str) -> str | None:
        """The value of attribute `name` ('author'), or None."""
        return next((value for key, value in self.attributes if key == name), None)


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


class ItemFilter(_Wire):
    """What retrieval may return, beyond "not seen": the chat's session filters, as a parameter of the one
    recommendation path (`Pipeline.recommend`). Genres and years filter; `exclude` and `disliked` items never
    come back, and items like a disliked one are demoted; `anchors` seed retrieval, the newest last."""

    genres: tuple[str, ...] = Field(default=(), description="Genres an item must all have.")
    exclude_genres: tuple[str, ...] = Field(default=(), description="Genres an item must have none of.")
    year_from: int | None = Field(default=None, ge=1800, le=2100)
    year_to: int | None = Field(default=None, ge=1800, le=2100)
    exclude: tuple[str, ...] = Field(default=(), description="Items never returned (e.g. already shown in the session).")
    disliked: tuple[str, ...] = Field(default=(), description="Items never returned; candidates like them are demoted.")
    anchors: tuple[str, ...] = Field(default=(), description="Items retrieval is anchored on, oldest first.")

    @model_validator(mode="before")
    @classmethod
    def _caps(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name in ("exclude", "disliked", "anchors"):
                _check_ids(f"the filter's {name}", data.get(name))
        return data

    def matches(self, item: Item) -> bool:
        """Whether an item passes the genre and year filters (an item with no year fails a year filter)."""
        genres = set(item.genres)
        if not set(self.genres) <= genres or genres & set(self.exclude_genres):
            return False
        if self.year_from is None and self.year_to is None:
            return True
        if item.year is None:
            return False
        return (self.year_from is None or item.year >= self.year_from) and (self.year_to is None or item.year <= self.year_to)

    def restricts(self) -> bool:
        """Whether genres or years narrow the catalog (exclusions and anchors do not)."""
        return bool(self.genres or self.exclude_genres or self.year_from is not None or self.year_to is not None)


class RecommendRequest(_Wire):
    user_id: str | None = None
    history: tuple[str, ...] | None = Field(default=None, description="Ad-hoc history (item ids, oldest first) instead of a user id.")
    k: int = Field(default=10, ge=1, le=LIMITS.k)
    scenario: str = "movies"
    explain: bool = False
    filter: ItemFilter | None = Field(default=None, description="Restricts retrieval (the chat's session filters); None: any unseen item.")

    @model_validator(mode="before")
    @classmethod
    def _caps(cls, data: Any) -> Any:
        if isinstance(data, dict):
            check_size("the user id", data.get("user_id"), LIMITS.id_chars, "characters")
            _check_ids("the history", data.get("history"))
            k = data.get("k")
            if isinstance(k, int) and k > LIMITS.k:
                raise InputTooLarge(f"k is too large: {k}, the limit is {LIMITS.k}")
        return data


class ChatTurn(_Wire):
    """One chat message as it enters (`Agent.say`, later a service): the caps are checked here."""

    session: str = Field(min_length=1, description="The conversation's id.")
    message: str
    user_id: str | None = None
    history: tuple[str, ...] | None = None

    @model_validator(mode="before")
    @classmethod
    def _caps(cls, data: Any) -> Any:
        if isinstance(data, dict):
            check_size("the message", data.get("message"), LIMITS.message_chars, "characters")
            check_size("the session id", data.get("session"), LIMITS.id_chars, "characters")
            check_size("the user id", data.get("user_id"), LIMITS.id_chars, "characters")
            _check_ids("the history", data.get("history"))
        return data


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
    matched: int | None = Field(default=None, description="With a filter: candidates that passed it (before the cut to k).")
    notes: tuple[str, ...] = ()
    routed: str | None = Field(default=None, description="With `--scenario auto`: which scenario the router chose, and why.")
    timings_ms: dict[str, float] = Field(default_factory=dict)
