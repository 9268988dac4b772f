"""The chat's stages over the one recommendation path (`Pipeline.recommend`), and the same as LangChain tools.

The conversation graph (`agents.conversation`) calls `Stages` directly, in a fixed order; a model with native tool
calling gets `langchain_tools(stages, session)` over the very same methods, every one bound on our side to the
session it runs in: the model never names a user, so no message can make it read or write another user's data.
- `search_catalog(query, genres?, years?)`: Chroma, under the session's filters and the given genres and years;
- `get_profile()`: the session user's top genres, recent items, dislikes, from the dataset and the feedback store;
- `recommend(constraints?, k?)`: `Pipeline.recommend` under the session's filters, anchors and shown items;
- `explain(item)`: the checkable evidence for one item, for the session's user;
- `record_feedback(item, event)`: one durable event for the session's user, acknowledged after commit.
Every item any of them returns is a catalog item; a dislike is never returned again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from llmrec.agents.constraints import Constraints
from llmrec.agents.feedback import FeedbackEvent, FeedbackStore, Profile
from llmrec.agents.titles import TitleResolver
from llmrec.domains import Domain, load_domain
from llmrec.errors import UnknownItem, UnknownUser
from llmrec.explain.evidence import CoWatch, evidence
from llmrec.schemas import LIMITS, Item, ItemFilter, RecommendRequest, check_size


class Recommended(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rank: int
    item: Item
    score: float
    llm_logprob: float | None = None
    why: str


class Recommendations(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    items: tuple[Recommended, ...]
    ranking: Literal["llm-fused", "retriever", "cold-start"]
    matched: int = Field(description="Candidates that passed every filter (before the cut to k).")
    notes: tuple[str, ...] = ()
    seconds: dict[str, float] = Field(default_factory=dict, description="The pipeline's seconds per stage.")


class Session(BaseModel):
    """What the tools are bound to: one chat session's user and state, fixed by us, never by the model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    user_key: str = Field(description="The feedback store's key: the dataset user, or 'session:<thread>' for an ad-hoc history.")
    base_history: tuple[str, ...] = ()
    filters: Constraints = Field(default_factory=Constraints)
    anchors: tuple[str, ...] = ()
    shown_before: tuple[str, ...] = ()


class Stages:
    """The chat's stages over one `Pipeline`, with the feedback store, the title resolver and the evidence; built once
    by `agents.conversation.build_agent`. Retrieval, ranking and their fallbacks are the pipeline's own."""

    def __init__(self, pipeline: Any, store: FeedbackStore, resolver: TitleResolver,
                 histories: Mapping[str, Sequence[str]] | None = None, domain: Domain | None = None):
        self.pipeline = pipeline
        self.dataset = pipeline.dataset
        self.catalog: dict[str, Item] = dict(pipeline.dataset.items)
        self.store = store
        self.resolver = resolver
        self.domain = domain or load_domain(pipeline.scenario.domain)
        self.cowatch = CoWatch(histories if histories is not None else self.dataset.histories())
        """Co-occurrence figures for the evidence; the eval passes the training histories, so no test item leaks in."""
        self.index = pipeline.index
        """The catalog's Chroma collection (the pipeline's); None leaves the catalog search out."""
        self.vocabulary = sorted({g for item in self.catalog.values() for g in item.genres})

    # --- users -------------------------------------------------------------------------------------

    def base_history(self, user_id: str | None, history: Sequence[str] | None = None) -> tuple[str, ...]:
        check_size("the user id", user_id, LIMITS.id_chars, "characters")
        check_size("the history", history, LIMITS.history_items, "items")
        if user_id is not None and user_id in self.dataset.user_ids:
            return self.dataset.history(user_id).item_ids
        if history is not None:
            unknown = [i for i in history if i not in self.catalog]
            if unknown:
                raise UnknownItem(f"unknown item id(s) in the history: {', '.join(unknown[:5])}")
            return tuple(history)
        if user_id is not None and not user_id.startswith("session:"):
            raise UnknownUser(f"unknown user {user_id!r} in dataset {self.dataset.name}")
        return ()

    def history(self, user: str, base: Sequence[str]) -> tuple[str, ...]:
        """The user's history as it is now: the dataset's, plus likes and watches, less dislikes."""
        return self.store.history(user, base)

    def get_profile(self, user: str, base: Sequence[str] = ()) -> Profile:
        return self.store.profile(user, base)

    def record_feedback(self, user: str, item: str, event: Literal["like", "watch", "dislike"]) -> FeedbackEvent:
        return self.store.record(user, item, event)

    # --- retrieval, ranking and explaining: the pipeline's -------------------------------------------

    def item_filter(self, user: str, filters: Constraints = Constraints(), anchors: Sequence[str] = (),
                    exclude: Iterable[str] = ()) -> ItemFilter:
        """The session's filters as the pipeline's typed retrieval filter, with the user's dislikes."""
        return ItemFilter(genres=filters.genres, exclude_genres=filters.exclude_genres, year_from=filters.year_from,
                          year_to=filters.year_to, exclude=tuple(dict.fromkeys(exclude)),
                          disliked=tuple(self.store.disliked(user)) if user else (),
                          anchors=tuple(a for a in anchors if a in self.catalog))

    def search_catalog(self, query: str, filters: Constraints = Constraints(), n: int = 20, exclude: Iterable[str] = ()) -> list[str]:
        """The pipeline's Chroma search under the filters (every hit checked against its catalog item)."""
        return self.pipeline.search(query, self.item_filter("", filters), n, exclude)

    def explain(self, user: str, item: str, base: Sequence[str] = (), filters: Constraints = Constraints(),
                anchor: str | None = None) -> str:
        if item not in self.catalog:
            raise UnknownItem(f"unknown item id {item!r}")
        history = [self.catalog[i] for i in self.history(user, base)]
        return evidence(self.catalog[item], history, self.cowatch, filters.describe(),
                        self.catalog.get(anchor) if anchor else None, domain=self.domain)

    def recommend(self, user: str, base: Sequence[str], filters: Constraints = Constraints(), k: int = 5,
                  anchors: Sequence[str] = (), exclude: Iterable[str] = (), explain: bool = True) -> Recommendations:
        """`Pipeline.recommend` on the user's current history under the session's filter, then (with `explain`) the
        evidence per item."""
        where = self.item_filter(user, filters, anchors, exclude)
        history = self.history(user, base)
        response = self.pipeline.recommend(RecommendRequest(history=history, k=k, filter=where, scenario=self.pipeline.scenario.name))
        standing = {*self.pipeline.standing_notes(), self.pipeline.fusion_note}  # the chat shows those once, when it starts
        anchor = where.anchors[-1] if where.anchors else None
        items = tuple(Recommended(rank=r.rank, item=r.item, score=round(r.score, 4), llm_logprob=r.llm_logprob,
                                  why=self.explain(user, r.item.item_id, base, filters, anchor) if explain else "")
                      for r in response.recommendations)
        return Recommendations(items=items, ranking=response.ranking, matched=response.matched or 0,
                               notes=tuple(n for n in response.notes if n not in standing),
                               seconds={s: round(ms / 1000, 3) for s, ms in response.timings_ms.items()})


# --- the LangChain tools, bound to one session -----------------------------------------------------


class SearchArgs(BaseModel):
    query: str = Field(max_length=200, description="What to look for, in words.")
    genres: list[str] | None = Field(default=None, max_length=5, description="Catalog genres every result must have.")
    years: tuple[int, int] | None = Field(default=None, description="Inclusive release-year range.")


class NoArgs(BaseModel):
    pass


class RecommendArgs(BaseModel):
    constraints: Constraints = Field(default_factory=Constraints, description="Genres and years to add to the session's filters.")
    k: int = Field(default=5, ge=1, le=20)


class ExplainArgs(BaseModel):
    item: str = Field(max_length=32, description="A catalog item id.")


class FeedbackArgs(BaseModel):
    item: str = Field(max_length=32, description="A catalog item id.")
    event: Literal["like", "watch", "dislike"]


def _card(item: Item) -> dict:
    return {"item_id": item.item_id, "title": item.title, "year": item.year, "genres": list(item.genres)}


def _narrow(session: Constraints, asked: Constraints) -> Constraints:
    """The session's filters narrowed by what a tool call asks for: genres add up, year ranges intersect."""
    low = max((y for y in (session.year_from, asked.year_from) if y is not None), default=None)
    high = min((y for y in (session.year_to, asked.year_to) if y is not None), default=None)
    return Constraints(genres=tuple(dict.fromkeys((*session.genres, *asked.genres))),
                       exclude_genres=tuple(dict.fromkeys((*session.exclude_genres, *asked.exclude_genres))),
                       year_from=low, year_to=high)


def langchain_tools(stages: Stages, session: Session) -> list[Any]:
    """The five tools, each a thin wrapper over a `Stages` method for `session`'s user, returning JSON-ready values.
    None takes a user: the user, the base history, the filters and the shown items are the session's."""
    from langchain_core.tools import StructuredTool

    user, base = session.user_key, session.base_history

    def search_catalog(query: str, genres: list[str] | None = None, years: tuple[int, int] | None = None) -> list[dict]:
        asked = Constraints(genres=tuple(genres or ()), year_from=years[0] if years else None, year_to=years[1] if years else None)
        filters = _narrow(session.filters, asked.validated(stages.vocabulary))
        return [_card(stages.catalog[i]) for i in stages.search_catalog(query, filters, 10, stages.store.disliked(user))]

    def get_profile() -> dict:
        return stages.get_profile(user, base).model_dump()

    def recommend(constraints: Constraints | None = None, k: int = 5) -> dict:
        filters = _narrow(session.filters, (constraints or Constraints()).validated(stages.vocabulary).filters())
        out = stages.recommend(user, base, filters, k, session.anchors, session.shown_before)
        return {"ranking": out.ranking, "notes": list(out.notes),
                "items": [{**_card(r.item), "rank": r.rank, "why": r.why} for r in out.items]}

    def explain(item: str) -> str:
        return stages.explain(user, item, base, session.filters, session.anchors[-1] if session.anchors else None)

    def record_feedback(item: str, event: Literal["like", "watch", "dislike"]) -> dict:
        return stages.record_feedback(user, item, event).model_dump()

    plural = stages.domain.plural
    specs = [
        (search_catalog, SearchArgs, f"Search the catalog of {plural} by meaning, optionally only items with all given genres "
                                     "and years in a range."),
        (get_profile, NoArgs, "The user's profile: top genres, recent items and dislikes."),
        (recommend, RecommendArgs, f"Recommend k {plural} for the user under genre/year constraints."),
        (explain, ExplainArgs, "Checkable reasons (shared genres, co-watch figures) why an item suits the user."),
        (record_feedback, FeedbackArgs, "Record that the user liked, watched or disliked a catalog item."),
    ]
    return [StructuredTool.from_function(fn, name=fn.__name__, description=text, args_schema=schema) for fn, schema, text in specs]
