"""The pipeline's stages as tools: methods of `Stages`, and the same as LangChain tools with pydantic schemas.

The conversation graph (`agents.conversation`) calls `Stages` directly, in a fixed order; a model with
native tool calling gets `langchain_tools(stages)` over the very same methods:
- `search_catalog(query, genres?, years?)`: Chroma, with the genre and year filters as `where` clauses;
- `get_profile(user)`: top genres, recent items, dislikes, from the dataset and the feedback store;
- `recommend(user | history, constraints, k)`: filtered retrieval → LLM ranking → explanations;
- `explain(user, item)`: the checkable evidence for one item;
- `record_feedback(user, item, event)`: one durable event, acknowledged after commit.
Every item any of them returns is a catalog item; a dislike is never returned again.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from llmrec.agents.constraints import Constraints
from llmrec.agents.feedback import FeedbackEvent, FeedbackStore, Profile
from llmrec.agents.titles import TitleResolver
from llmrec.errors import ChromaUnavailable, LLMUnavailable, UnknownItem, UnknownUser
from llmrec.explain.evidence import CoWatch, evidence
from llmrec.ranking.fusion import retriever_order
from llmrec.retrieval.index import CatalogIndex
from llmrec.schemas import Candidate, Item, UserHistory


class StagesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    depth: int = Field(default=300, ge=20, description="Candidates asked from each source before filtering.")
    weights: dict[str, float] = Field(default_factory=lambda: {"history": 1.0, "catalog": 0.5, "popular": 0.05},
                                      description="RRF weight per source; with no history, the catalog search leads.")
    dislike_similarity: float = Field(default=0.6, ge=0, le=1,
                                      description="Cosine similarity to a disliked item above which a candidate is demoted "
                                                  "(linearly, to nothing at similarity 1).")


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


class Stages:
    """The pipeline's stages, with filters, feedback and evidence; built once by `agents.conversation.build_agent`."""

    def __init__(self, pipeline: Any, store: FeedbackStore, resolver: TitleResolver, index: CatalogIndex | None = None,
                 config: StagesConfig | None = None, histories: Mapping[str, Sequence[str]] | None = None):
        self.pipeline = pipeline
        self.dataset = pipeline.dataset
        self.catalog: dict[str, Item] = dict(pipeline.dataset.items)
        self.store = store
        self.resolver = resolver
        self.config = config or StagesConfig()
        self.cowatch = CoWatch(histories if histories is not None else self.dataset.histories())
        """Co-watch figures and popularity; the eval passes the training histories, so no test item leaks in."""
        self.popular = sorted(self.cowatch.viewers, key=lambda i: (-self.cowatch.count(i), i))
        self.index = index
        """The catalog's Chroma collection; None leaves the catalog search out (Chroma unavailable)."""

    # --- users -------------------------------------------------------------------------------------

    def base_history(self, user_id: str | None, history: Sequence[str] | None = None) -> tuple[str, ...]:
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
        return self.store.profile(user, base or self.base_history(user))

    def record_feedback(self, user: str, item: str, event: Literal["like", "watch", "dislike"]) -> FeedbackEvent:
        return self.store.record(user, item, event)

    # --- retrieval ---------------------------------------------------------------------------------

    def search_catalog(self, query: str | np.ndarray, filters: Constraints = Constraints(), n: int = 20,
                       exclude: Iterable[str] = ()) -> list[str]:
        """Chroma nearest items to a text or vector, under the filters (genres through the document text, years through
        metadata); every hit is checked again against the catalog item, so only matching catalog items come back."""
        if self.index is None:
            return []
        excluded = set(exclude)
        where, where_document = _chroma_filters(filters)
        vector = self.index.embedder.encode([query])[0] if isinstance(query, str) else np.asarray(query, dtype=np.float32)
        fetch = min(self.index.count(), n + len(excluded))
        try:
            got = self.index.collection.query(query_embeddings=[vector], n_results=max(fetch, 1), where=where,
                                              where_document=where_document, include=[])
        except Exception as exc:  # chromadb raises many types (httpx, ValueError on an empty filter result)
            raise ChromaUnavailable(f"Chroma search failed: {exc}") from None
        ids = [i for i in got["ids"][0] if i in self.catalog and i not in excluded and filters.matches(self.catalog[i])]
        return ids[:n]

    def candidates(self, history: Sequence[str], filters: Constraints, seeds: Sequence[str] = (), exclude: Iterable[str] = (),
                   disliked: Sequence[str] = (), k: int = 20, notes: list[str] | None = None) -> tuple[list[Candidate], int]:
        """Up to `k` candidates that pass the filters, from three sources fused by weighted RRF: the hybrid retriever over
        the history with the seeds as its most recent items, the Chroma search near the seeds (or the history, or the
        request's words), and popularity. Disliked, seen and excluded items never pass; items like a disliked one are
        demoted. Returns the candidates and how many passed the filters in all."""
        notes = notes if notes is not None else []
        banned = set(history) | set(exclude) | set(disliked)
        ok = lambda i: i not in banned and i in self.catalog and filters.matches(self.catalog[i])  # noqa: E731
        lists: dict[str, list[str]] = {}
        seeded = (*history, *[s for s in seeds if s not in history])
        if seeded:
            retrieved = self.pipeline.retrieve(UserHistory(user_id=None, item_ids=seeded), notes, self.config.depth)
            lists["history"] = [c.item_id for c in retrieved if ok(c.item_id)]
        try:
            lists["catalog"] = self.search_catalog(self._query(seeds, history, filters), filters, self.config.depth // 3, banned)
        except ChromaUnavailable as exc:
            notes.append(f"the catalog search was unavailable ({exc}); candidates come from the history and popularity")
        lists["popular"] = [i for i in self.popular if ok(i)][: self.config.depth]
        weights = dict(self.config.weights)
        if not history and not seeds:  # a cold start: popularity within the filters leads, genre-diverse when nothing filters
            from llmrec.pipeline import popular_diverse

            weights["popular"] = weights.get("history", 1.0)
            if filters.is_empty():
                lists = {"popular": popular_diverse(self.dataset, {i: self.cowatch.count(i) for i in lists["popular"]}, k)}
        scores = _rrf(lists, weights)
        scores = self.steer_away(scores, disliked)
        order = sorted(scores, key=lambda i: (-scores[i], i))
        return [Candidate(item_id=i, retriever_rank=r, retriever_score=scores[i], sources=tuple(s for s in lists if i in lists[s]))
                for r, i in enumerate(order[:k])], len(order)

    def _query(self, seeds: Sequence[str], history: Sequence[str], filters: Constraints) -> str | np.ndarray:
        recent = list(reversed(seeds)) or list(dict.fromkeys(reversed(history)))[:10]  # the newest first, weighted most
        vectors = self.index.embeddings_for(recent) if self.index is not None and recent else {}
        known = [i for i in recent if i in vectors]
        if known:
            weights = 0.5 ** np.arange(len(known))
            return (weights[:, None] * np.stack([vectors[i] for i in known])).sum(0)
        return f"{' '.join(filters.genres) or 'popular'} movies" + (f" from {filters.describe()}" if filters.year_from else "")

    def steer_away(self, scores: dict[str, float], disliked: Sequence[str]) -> dict[str, float]:
        """Scale down each candidate by its cosine similarity to the closest disliked item, past `dislike_similarity`."""
        if not disliked or self.index is None or not scores:
            return scores
        try:
            vectors = self.index.embeddings_for([*disliked, *scores])
        except ChromaUnavailable:
            return scores
        bad = [vectors[i] / max(float(np.linalg.norm(vectors[i])), 1e-12) for i in disliked if i in vectors]
        if not bad:
            return scores
        floor = self.config.dislike_similarity
        out = {}
        for i, score in scores.items():
            v = vectors.get(i)
            sim = max(float(v @ b) / max(float(np.linalg.norm(v)), 1e-12) for b in bad) if v is not None else 0.0
            out[i] = score * (1.0 - min(1.0, max(0.0, (sim - floor) / (1.0 - floor)))) if floor < 1 else score
        return out

    # --- ranking and explaining --------------------------------------------------------------------

    def rank(self, history: Sequence[str], candidates: list[Candidate], notes: list[str]) -> tuple[list[tuple[str, float, float | None]], str]:
        """(item, score, LLM logprob) best first, and how: the LLM fused with the retriever, or the retriever alone."""
        if not history or len(candidates) < 2:
            return [(c.item_id, -float(c.retriever_rank), None) for c in candidates], "cold-start" if not history else "retriever"
        ranker = self.pipeline.ranker
        try:
            scores = ranker.score_many([(self.pipeline.items(history), candidates)])[0]
            ranked = ranker.rank_scored(candidates, scores)
            how = "llm-fused"
        except LLMUnavailable as exc:
            notes.append(f"the LLM was unavailable ({exc}), so this is the retriever's order")
            ranked, how = retriever_order(candidates), "retriever"
        return [(r.item_id, r.score, r.llm_logprob) for r in ranked], how

    def explain(self, user: str, item: str, base: Sequence[str] = (), filters: Constraints = Constraints(),
                anchor: str | None = None) -> str:
        if item not in self.catalog:
            raise UnknownItem(f"unknown item id {item!r}")
        history = [self.catalog[i] for i in self.history(user, base)]
        return evidence(self.catalog[item], history, self.cowatch, filters.describe(),
                        self.catalog.get(anchor) if anchor else None)

    def recommend(self, user: str, base: Sequence[str], filters: Constraints = Constraints(), k: int = 5,
                  seeds: Sequence[str] = (), exclude: Iterable[str] = ()) -> Recommendations:
        """Filtered retrieval → ranking → evidence, for one user key and its base history."""
        notes: list[str] = []
        history = self.history(user, base)
        disliked = self.store.disliked(user)
        found, matched = self.candidates(history, filters, seeds, exclude, disliked, self.pipeline.settings.candidates, notes)
        ranked, how = self.rank(history, found, notes)
        anchor = seeds[-1] if seeds else None
        items = tuple(Recommended(rank=n + 1, item=self.catalog[i], score=round(score, 4), llm_logprob=lp,
                                  why=self.explain(user, i, base, filters, anchor)) for n, (i, score, lp) in enumerate(ranked[:k]))
        if matched < k:
            notes.append(f"only {matched} catalog items pass these filters" if matched else "no catalog item passes these filters")
        return Recommendations(items=items, ranking=how, matched=matched, notes=tuple(notes))


def _chroma_filters(filters: Constraints) -> tuple[dict | None, dict | None]:
    """Chroma `where` (years, metadata) and `where_document` (genres: the indexed text ends 'Genres: a, b.')."""
    years = [{"year": {"$gte": filters.year_from}}] if filters.year_from is not None else []
    years += [{"year": {"$lte": filters.year_to}}] if filters.year_to is not None else []
    docs = [{"$contains": g} for g in filters.genres] + [{"$not_contains": g} for g in filters.exclude_genres]
    pick = lambda parts, key: None if not parts else parts[0] if len(parts) == 1 else {key: parts}  # noqa: E731
    return pick(years, "$and"), pick(docs, "$and")


def _rrf(lists: dict[str, list[str]], weights: dict[str, float], k: float = 1.0) -> dict[str, float]:
    scores: dict[str, float] = {}
    for name, ids in lists.items():
        for rank, item_id in enumerate(ids):
            scores[item_id] = scores.get(item_id, 0.0) + weights.get(name, 0.0) / (k + rank + 1)
    return {i: s for i, s in scores.items() if s > 0 and math.isfinite(s)}


# --- the LangChain tools ---------------------------------------------------------------------------


class SearchArgs(BaseModel):
    query: str = Field(max_length=200, description="What to look for, in words.")
    genres: list[str] | None = Field(default=None, max_length=5, description="Catalog genres every result must have.")
    years: tuple[int, int] | None = Field(default=None, description="Inclusive release-year range.")


class UserArgs(BaseModel):
    user: str = Field(max_length=64, description="A user id of the dataset, or a session key.")


class RecommendArgs(BaseModel):
    user: str | None = Field(default=None, max_length=64)
    history: list[str] | None = Field(default=None, max_length=500, description="Item ids, oldest first, instead of a user.")
    constraints: Constraints = Field(default_factory=Constraints)
    k: int = Field(default=5, ge=1, le=20)


class ExplainArgs(BaseModel):
    user: str = Field(max_length=64)
    item: str = Field(max_length=32, description="A catalog item id.")


class FeedbackArgs(BaseModel):
    user: str = Field(max_length=64)
    item: str = Field(max_length=32)
    event: Literal["like", "watch", "dislike"]


def _card(item: Item) -> dict:
    return {"item_id": item.item_id, "title": item.title, "year": item.year, "genres": list(item.genres)}


def langchain_tools(stages: Stages) -> list[Any]:
    """The five tools, each a thin wrapper over a `Stages` method, returning JSON-ready values."""
    from langchain_core.tools import StructuredTool

    def search_catalog(query: str, genres: list[str] | None = None, years: tuple[int, int] | None = None) -> list[dict]:
        filters = Constraints(genres=tuple(genres or ()), year_from=years[0] if years else None, year_to=years[1] if years else None)
        filters = filters.validated({g for i in stages.catalog.values() for g in i.genres})
        return [_card(stages.catalog[i]) for i in stages.search_catalog(query, filters, 10)]

    def get_profile(user: str) -> dict:
        return stages.get_profile(user).model_dump()

    def recommend(user: str | None = None, history: list[str] | None = None, constraints: Constraints | None = None,
                  k: int = 5) -> dict:
        base = stages.base_history(user, history)
        key = user or "session:tools"
        vocabulary = {g for i in stages.catalog.values() for g in i.genres}
        filters = (constraints or Constraints()).validated(vocabulary).filters()
        out = stages.recommend(key, base, filters, k)
        return {"ranking": out.ranking, "notes": list(out.notes),
                "items": [{**_card(r.item), "rank": r.rank, "why": r.why} for r in out.items]}

    def explain(user: str, item: str) -> str:
        return stages.explain(user, item, stages.base_history(user) if not user.startswith("session:") else ())

    def record_feedback(user: str, item: str, event: Literal["like", "watch", "dislike"]) -> dict:
        return stages.record_feedback(user, item, event).model_dump()

    specs = [
        (search_catalog, SearchArgs, "Search the catalog by meaning, optionally only items with all given genres and years in a range."),
        (get_profile, UserArgs, "A user's profile: top genres, recent items and dislikes."),
        (recommend, RecommendArgs, "Recommend k catalog items for a user (or an ad-hoc history) under genre/year constraints."),
        (explain, ExplainArgs, "Checkable reasons (shared genres, co-watch figures) why an item suits a user."),
        (record_feedback, FeedbackArgs, "Record that a user liked, watched or disliked a catalog item."),
    ]
    return [StructuredTool.from_function(fn, name=fn.__name__, description=text, args_schema=schema) for fn, schema, text in specs]
