"""The one recommendation path: lookup → retrieve → rank (with its fallback) → explain.

Every entry point calls `Pipeline.recommend`: the CLI, the chat agent (its graph and its tools), the eval
harness's LLM rows (and later the service). Fallbacks live here: an LLM failure or timeout keeps the retriever's
order and says so; Chroma failing mid-run falls back to co-occurrence and popularity; an empty history gets
popular, genre-diverse items; rejected explanations get grounded templates.

A request's `filter` (`ItemFilter`: genres, years, excluded, disliked and anchor items) is a parameter of the
retrieval step (`Pipeline.retrieve`), not a second pipeline: filtered retrieval fuses the retriever over the
history with the anchors as its newest items, the items co-watched with the anchors, a Chroma search near the
anchors (or the history, or the filter's words) and popularity, keeps only items that pass, and demotes items like
a disliked one. With anchors ("more like X"), only items close to X pass: sharing a genre with it, or co-watched
with it well above their base rate (`CoWatch.close`, the test behind "Like X" in the evidence), so a title that
merely shares a word with X's (the catalog documents are "Title (year). Genres: ...") never comes back on its own.

Concurrency: `Pipeline.recommend` is safe to call from several threads at once. After `build_pipeline` every
stage is read-only (fitted retrievers, the catalog, the Chroma collection, which is opened while building); the
in-process engine serialises its own calls, and a server engine takes concurrent requests. Threads calling at once
reach the engine one after another unless the engine is behind a batching queue (`build_pipeline(batching=...)`,
`llmrec.engines.batching`: the service's engine), which merges their calls into one engine call.

Degraded answers say so in their notes, each made from one of `DEGRADED_NOTES` (`degradation(notes)` reads them
back, e.g. for the service's metrics and the chat's `degraded` flag).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from llmrec.data.catalog import Dataset
from llmrec.errors import ChromaUnavailable, DatasetError, EmptyHistory, LLMRecError, LLMUnavailable, UnknownItem
from llmrec.explain.evidence import MIN_VIEWERS, CoWatch
from llmrec.explain.explainer import LLMExplainer
from llmrec.protocols import LLMEngine, Retriever, ScoringRanker
from llmrec.ranking.fusion import retriever_order
from llmrec.retrieval.index import CatalogIndex
from llmrec.scenario import Scenario
from llmrec.schemas import (
    Candidate,
    Explanation,
    ExplanationStats,
    Item,
    ItemFilter,
    RankedItem,
    Recommendation,
    RecommendRequest,
    RecommendResponse,
    UserHistory,
)
from llmrec.settings import Settings

LLM_DOWN = "the LLM was unavailable, so this is the retriever's order"
CHROMA_DOWN = "Chroma was unavailable"
SEARCH_DOWN = "the catalog search was unavailable"
DEGRADED_NOTES = {"llm": LLM_DOWN, "chroma": CHROMA_DOWN, "chroma-search": SEARCH_DOWN}
"""What each kind of degradation starts its note with."""


def degradation(notes: Iterable[str]) -> tuple[str, ...]:
    """The kinds of degradation (`DEGRADED_NOTES`' keys) that an answer's notes report, each once."""
    found = [kind for note in notes for kind, start in DEGRADED_NOTES.items() if note.startswith(start)]
    return tuple(dict.fromkeys(found))


def popular_diverse(dataset: Dataset, popularity: Mapping[str, int], k: int, pool: int = 100) -> list[str]:
    """Cold start: from the `pool` most popular items, greedily prefer ones adding unseen genres."""
    if not popularity:
        raise DatasetError(f"dataset {dataset.name}: no item has an interaction to rank by popularity, "
                           "so a cold start has nothing to recommend")
    ranked = sorted(popularity, key=lambda i: (-popularity[i], i))[:pool]
    chosen: list[str] = []
    covered: set[str] = set()
    while len(chosen) < min(k, len(ranked)):
        best = max((i for i in ranked if i not in chosen),
                   key=lambda i: (len(set(dataset.items[i].genres) - covered), popularity[i], -ranked.index(i)))
        chosen.append(best)
        covered |= set(dataset.items[best].genres)
    return chosen


class FilterConfig(BaseModel):
    """How filtered retrieval (a request with an `ItemFilter`) gathers and fuses its candidates."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    depth: int = Field(default=300, ge=20, description="Candidates asked from each source before filtering.")
    weights: dict[str, float] = Field(default_factory=lambda: {"history": 1.0, "anchor": 1.0, "catalog": 0.5, "popular": 0.05},
                                      description="RRF weight per source ('anchor': co-watched with the anchors); with no "
                                                  "history, the catalog search leads.")
    dislike_similarity: float = Field(default=0.6, ge=0, le=1,
                                      description="Cosine similarity to a disliked item above which a candidate is demoted "
                                                  "(linearly, to nothing at similarity 1).")


@dataclass
class Pipeline:
    settings: Settings
    scenario: Scenario
    dataset: Dataset
    retriever: Retriever
    engine: LLMEngine
    ranker: ScoringRanker
    explainer: LLMExplainer
    popularity: dict[str, int] = field(default_factory=dict)
    fallback_retriever: Retriever | None = None
    """Used when the main retriever's store (Chroma) fails mid-run: the same retriever without it."""
    fusion_note: str | None = None
    """Why the scenario's stored fusion weight is not applied (not fitted, or fitted for another model/adapter/permutations)."""
    data_note: str | None = None
    """The scenario's adapter was trained on other data than its dataset holds now (a warning on every answer)."""
    index: CatalogIndex | None = None
    """The catalog's Chroma collection, searched by filtered retrieval; None leaves that search out."""
    filtering: FilterConfig = field(default_factory=FilterConfig)

    def __post_init__(self) -> None:
        self.popular: tuple[str, ...] = tuple(sorted(self.popularity, key=lambda i: (-self.popularity[i], i)))
        """Every item with an interaction, the most popular first: the one popularity source."""

    def standing_notes(self) -> list[str]:
        """Notes that qualify every answer of this pipeline (what loading dropped, a stale adapter)."""
        return [*self.dataset.report.notes, *([self.data_note] if self.data_note else [])]

    def retrieve(self, history: UserHistory, notes: list[str], k: int | None = None, where: ItemFilter | None = None) -> list[Candidate]:
        """The retriever's top `k` (default: the LLM's candidate count); Chroma failing mid-run is a note, not an error.
        With `where`, the filtered retrieval (`retrieve_filtered`)."""
        if where is not None:
            return self.retrieve_filtered(history, where, notes, k)[0]
        k = k or self.settings.candidates
        try:
            return self.retriever.retrieve(history, k)
        except ChromaUnavailable as exc:
            if self.fallback_retriever is None:
                raise
            notes.append(f"{CHROMA_DOWN} ({exc}); candidates come from co-occurrence and popularity only")
            return self.fallback_retriever.retrieve(history, k)

    def retrieve_filtered(self, history: UserHistory, where: ItemFilter, notes: list[str],
                          k: int | None = None) -> tuple[list[Candidate], int]:
        """Up to `k` candidates that pass `where`, from four sources fused by weighted RRF: the retriever over the
        history with the anchors as its newest items, the items co-watched with the anchors (`cowatched`), the Chroma
        search near the anchors (among items sharing a genre with the newest) or near the history, or for the filter's
        words, and popularity. Seen, excluded, disliked and anchor items never pass; with anchors, neither does an item
        not close to one (`close_to`); items like a disliked one are demoted. With no history and no anchor, popularity
        within the filter leads (genre-diverse when nothing filters). Returns the candidates and how many passed."""
        k = k or self.settings.candidates
        config, catalog, seen = self.filtering, self.dataset.items, history.item_ids
        banned = {*seen, *where.exclude, *where.disliked, *where.anchors}
        close = self.close_to(where.anchors)
        ok = lambda i: i not in banned and i in catalog and where.matches(catalog[i]) and close(i)  # noqa: E731
        lists: dict[str, list[str]] = {}
        seeded = (*seen, *[a for a in where.anchors if a not in seen])
        if seeded:
            retrieved = self.retrieve(UserHistory(user_id=None, item_ids=seeded), notes, config.depth)
            lists["history"] = [c.item_id for c in retrieved if ok(c.item_id)]
        if where.anchors:
            lists["anchor"] = [i for i in self.cowatched(where.anchors, config.depth * 2) if ok(i)][: config.depth]
        try:
            found = self.search(self._query(where.anchors, seen, where), where, config.depth // 3, banned,
                                any_genres=self._anchor_genres(where.anchors))
            lists["catalog"] = [i for i in found if close(i)]
        except ChromaUnavailable as exc:
            notes.append(f"{SEARCH_DOWN} ({exc}); candidates come from the history and popularity")
        lists["popular"] = [i for i in self.popular if ok(i)][: config.depth]
        weights = dict(config.weights)
        if not seen and not where.anchors:  # a cold start
            weights["popular"] = weights.get("history", 1.0)
            if not where.restricts():
                lists = {"popular": popular_diverse(self.dataset, {i: self.popularity[i] for i in lists["popular"]}, k)}
        scores = self.steer_away(_rrf(lists, weights), where.disliked)
        order = sorted(scores, key=lambda i: (-scores[i], i))
        return [Candidate(item_id=i, retriever_rank=r, retriever_score=scores[i], sources=tuple(s for s in lists if i in lists[s]))
                for r, i in enumerate(order[:k])], len(order)

    def search(self, query: str | np.ndarray, where: ItemFilter = ItemFilter(), n: int = 20, exclude: Iterable[str] = (),
               any_genres: Sequence[str] = ()) -> list[str]:
        """Chroma's nearest items to a text or vector, under the filter (genres through the document text, years through
        metadata) and, with `any_genres`, among items with at least one of them; every hit is checked again against the
        catalog item, so only matching catalog items come back."""
        if self.index is None:
            return []
        excluded = set(exclude)
        chroma_where, where_document = _chroma_filters(where, any_genres)
        vector = self.index.embedder.encode([query])[0] if isinstance(query, str) else np.asarray(query, dtype=np.float32)
        fetch = min(self.index.count(), (n + len(excluded)) * (3 if where.exclude_genres else 1))  # exclusions are checked here
        try:
            got = self.index.collection.query(query_embeddings=[vector], n_results=max(fetch, 1), where=chroma_where,
                                              where_document=where_document, include=[])
        except Exception as exc:  # chromadb raises many types (httpx, ValueError on an empty filter result)
            raise ChromaUnavailable(f"Chroma search failed: {exc}") from None
        catalog, wanted = self.dataset.items, set(any_genres)
        return [i for i in got["ids"][0] if i in catalog and i not in excluded and where.matches(catalog[i])
                and (not wanted or wanted & set(catalog[i].genres))][:n]

    def close_to(self, anchors: Sequence[str]) -> Callable[[str], bool]:
        """Whether a catalog item may come back for "more like the anchors": it shares a genre with one, or is co-watched
        with one well above its base rate (`CoWatch.close`, on the co-watch figures the explanations cite, fitted on the
        same histories). A title that only shares a word with an anchor's passes neither. No anchor, or anchors with no
        genre and too few viewers to judge by: every item passes."""
        cowatch, catalog = self._cowatch(), self.dataset.items
        known = [a for a in anchors if a in catalog]
        genres = {g for a in known for g in catalog[a].genres} - {"unknown"}
        watched = [a for a in known if cowatch.count(a) >= MIN_VIEWERS]
        if not genres and not watched:
            return lambda item_id: True
        return lambda item_id: bool(genres & set(catalog[item_id].genres)) or any(cowatch.close(item_id, a) for a in watched)

    def cowatched(self, anchors: Sequence[str], n: int) -> list[str]:
        """The `n` items most co-watched with the anchors, by cosine (viewers of both / sqrt(product of viewers)) on the
        explanations' co-watch figures, the newest anchor weighted most (halving per step back)."""
        cowatch = self._cowatch()
        scores: dict[str, float] = {}
        for weight, anchor in zip(0.5 ** np.arange(len(anchors)), reversed(anchors)):
            viewers = cowatch.viewers.get(anchor)
            if not viewers:
                continue
            for item_id, others in cowatch.viewers.items():
                both = len(viewers & others)
                if both and item_id != anchor:
                    scores[item_id] = scores.get(item_id, 0.0) + float(weight) * both / math.sqrt(len(viewers) * len(others))
        return sorted(scores, key=lambda i: (-scores[i], i))[:n]

    def _cowatch(self) -> CoWatch:
        found = getattr(self.explainer, "cowatch", None)
        return found if isinstance(found, CoWatch) else CoWatch({})

    def _anchor_genres(self, anchors: Sequence[str]) -> tuple[str, ...]:
        """The newest anchor's genres (the catalog search near it keeps items with one of them); () when it has none."""
        for anchor in reversed(anchors):
            item = self.dataset.items.get(anchor)
            if item is not None:
                return tuple(g for g in item.genres if g != "unknown")
        return ()

    def _query(self, anchors: Sequence[str], history: Sequence[str], where: ItemFilter) -> str | np.ndarray:
        """The catalog search's query: the anchors' (or the recent history's) vectors, the newest weighted most; else words."""
        recent = list(reversed(anchors)) or list(dict.fromkeys(reversed(history)))[:10]
        vectors = self.index.embeddings_for(recent) if self.index is not None and recent else {}
        known = [i for i in recent if i in vectors]
        if known:
            weights = 0.5 ** np.arange(len(known))
            return (weights[:, None] * np.stack([vectors[i] for i in known])).sum(0)
        years = f" from {where.year_from or ''}-{where.year_to or ''}" if where.year_from or where.year_to else ""
        return f"{' '.join(where.genres) or 'popular'} {self.scenario.domain}{years}"

    def steer_away(self, scores: dict[str, float], disliked: Sequence[str]) -> dict[str, float]:
        """Scale down each candidate by its cosine similarity to the closest disliked item, past `dislike_similarity`."""
        if not disliked or self.index is None or not scores:
            return scores
        try:
            vectors = self.index.embeddings_for([*disliked, *scores])
        except ChromaUnavailable:
            return scores
        bad = [vectors[i] / max(float(np.linalg.norm(vectors[i])), 1e-12) for i in disliked if i in vectors]
        floor = self.filtering.dislike_similarity
        if not bad or floor >= 1:
            return scores
        out = {}
        for i, score in scores.items():
            v = vectors.get(i)
            sim = max(float(v @ b) / max(float(np.linalg.norm(v)), 1e-12) for b in bad) if v is not None else 0.0
            out[i] = score * (1.0 - min(1.0, max(0.0, (sim - floor) / (1.0 - floor))))
        return out

    def lookup(self, request: RecommendRequest) -> UserHistory:
        if request.user_id is not None and request.history is not None:
            raise LLMRecError("give a user id or a history, not both")
        if request.user_id is not None:
            return self.dataset.history(request.user_id)
        if request.history is None:
            raise EmptyHistory("give a user id or a history of item ids")
        unknown = [i for i in request.history if i not in self.dataset.items]
        if unknown:
            raise UnknownItem(f"unknown item id(s) in the history: {', '.join(unknown[:5])}" + (" …" if len(unknown) > 5 else ""))
        return UserHistory(user_id=None, item_ids=tuple(request.history))

    def items(self, ids: Sequence[str]) -> list[Item]:
        return [self.dataset.items[i] for i in ids]

    def recommend(self, request: RecommendRequest) -> RecommendResponse:
        timings: dict[str, float] = {}
        clock = time.perf_counter()
        history = self.lookup(request)
        history_items = self.items(history.item_ids)
        notes = self.standing_notes()  # what loading dropped or assumed qualifies every answer
        where, matched = request.filter, None
        if not history.item_ids and where is None:
            return self._cold_start(request, timings)
        if where is None:
            retrieved = self.retrieve(history, notes, max(request.k, self.settings.candidates))
        else:
            retrieved, matched = self.retrieve_filtered(history, where, notes, max(request.k, self.settings.candidates))
        candidates, tail = retrieved[: self.settings.candidates], retrieved[self.settings.candidates :]
        if request.k > len(candidates) and tail:
            notes.append(f"the LLM reranks the retriever's first {len(candidates)} candidates; "
                         f"positions {len(candidates) + 1}-{len(candidates) + min(len(tail), request.k - len(candidates))} "
                         "are in the retriever's order")
        if matched is not None and matched < request.k:
            notes.append(f"only {matched} catalog items pass these filters" if matched else
                         "no catalog item passes these filters; try fewer genres or a wider year range")
        elif len(retrieved) < request.k:
            notes.append(f"asked for {request.k} items, but only {len(retrieved)} unseen items could be retrieved")
        timings["retrieve"] = _ms(clock)
        if not history.item_ids or len(candidates) < 2:  # filtered, with no history (a cold start) or nothing to rerank
            return self._unranked(request, history, retrieved, matched, notes, timings)
        degraded_reason, llm_ranked = None, False
        clock = time.perf_counter()
        if self.ranker.keeps_retriever_order():  # w = inf for every history: scoring could move nothing, so it is skipped
            ranked, history_used, history_dropped = retriever_order(candidates), len(history_items), 0
            notes.append(self.fusion_note or "the scenario's fusion weight keeps the retriever's order (no LLM gain passed its "
                                             "significance gate on validation users), so the LLM did not rank this list")
        else:
            try:
                scores = self.ranker.score_many([(history_items, candidates)])[0]
                ranked = self.ranker.rank_scored(candidates, scores)
                llm_ranked = not self.ranker.keeps_retriever_order(scores)
                history_used, history_dropped = scores.history_used, scores.history_dropped
                if history_dropped:
                    notes.append(f"the prompt holds the {history_used} most recent of {len(history_items)} history items; "
                                 f"{history_dropped} older ones were left out of it (retrieval used all of them)")
                if self.fusion_note:
                    notes.append(self.fusion_note)
            except LLMUnavailable as exc:
                ranked, degraded_reason = retriever_order(candidates), str(exc)
                history_used, history_dropped = len(history_items), 0
                notes.append(LLM_DOWN)
        timings["rank"] = _ms(clock)
        top = (ranked + retriever_order(tail, start=len(ranked)))[: request.k]
        explanations, stats = None, None
        if request.explain:
            clock = time.perf_counter()
            explanations, stats, reason = self._explain(history_items, self.items([r.item_id for r in top]))
            degraded_reason = degraded_reason or reason
            timings["explain"] = _ms(clock)
        recs = self._recommendations(top, explanations)
        return RecommendResponse(
            user_id=history.user_id, scenario=self.scenario.name, model=self.engine.model_name,
            adapter=self.scenario.adapter.name if self.scenario.adapter else None, recommendations=recs,
            ranking="llm-fused" if llm_ranked else "retriever",
            degraded=degraded_reason is not None, degraded_reason=degraded_reason, history_used=history_used,
            history_dropped=history_dropped, explanations=stats, matched=matched, notes=tuple(notes), timings_ms=timings,
        )

    def _unranked(self, request: RecommendRequest, history: UserHistory, retrieved: list[Candidate], matched: int | None,
                  notes: list[str], timings: dict[str, float]) -> RecommendResponse:
        """A filtered answer in the retriever's order: a cold start (no history) or fewer than two candidates."""
        cold = not history.item_ids
        top = [RankedItem(item_id=c.item_id, rank=c.retriever_rank, score=-float(c.retriever_rank), retriever_rank=c.retriever_rank)
               for c in retrieved[: request.k]]
        explanations, stats = None, None
        if request.explain:
            explanations, stats, _ = self._explain(self.items(history.item_ids), self.items([r.item_id for r in top]))
        return RecommendResponse(
            user_id=history.user_id, scenario=self.scenario.name, model=self.engine.model_name, adapter=None,
            recommendations=self._recommendations(top, explanations), ranking="cold-start" if cold else "retriever",
            cold_start=cold, history_used=len(history.item_ids), explanations=stats, matched=matched, notes=tuple(notes),
            timings_ms=timings,
        )

    def _explain(self, history: list[Item], items: list[Item]) -> tuple[list[Explanation], ExplanationStats, str | None]:
        reason = None
        try:
            explanations = self.explainer.explain(history, items)
        except LLMUnavailable as exc:
            reason = str(exc)
            explanations = self.explainer.fallback(history, items, "llm-unavailable")
        llm = sum(e.source != "template" for e in explanations)
        return explanations, ExplanationStats(llm=llm, fallback=len(explanations) - llm), reason

    def _recommendations(self, ranked: Sequence[RankedItem], explanations: Sequence[Explanation] | None) -> tuple[Recommendation, ...]:
        return tuple(
            Recommendation(rank=r.rank + 1, item=self.dataset.items[r.item_id], score=r.score, llm_logprob=r.llm_logprob,
                           retriever_rank=r.retriever_rank, explanation=explanations[n] if explanations else None)
            for n, r in enumerate(ranked)
        )

    def _cold_start(self, request: RecommendRequest, timings: dict[str, float]) -> RecommendResponse:
        ids = popular_diverse(self.dataset, self.popularity, request.k)
        ranked = [RankedItem(item_id=i, rank=r, score=float(self.popularity[i]), retriever_rank=r) for r, i in enumerate(ids)]
        explanations = None
        if request.explain:
            explanations = [Explanation(item_id=i, source="template",
                                        text=f"Popular with {self.popularity[i]} viewers"
                                        + (f", and adds {', '.join(self.dataset.items[i].genres)} to the mix." if self.dataset.items[i].genres else "."))
                            for i in ids]
        return RecommendResponse(
            user_id=request.user_id, scenario=self.scenario.name, model=self.engine.model_name, adapter=None,
            recommendations=self._recommendations(ranked, explanations), ranking="cold-start", cold_start=True,
            history_used=0, explanations=ExplanationStats(llm=0, fallback=len(ids)) if explanations else None,
            notes=(*self.dataset.report.notes, "empty history: these are popular items chosen to cover many genres, not personalised"),
            timings_ms=timings,
        )


def _chroma_filters(where: ItemFilter, any_genres: Sequence[str] = ()) -> tuple[dict | None, dict | None]:
    """Chroma `where` (years, metadata) and `where_document` (genres: the indexed text holds 'Genres: a, b.'; a title
    may hold a genre's word too, so the caller checks every hit against its catalog item)."""
    years = [{"year": {"$gte": where.year_from}}] if where.year_from is not None else []
    years += [{"year": {"$lte": where.year_to}}] if where.year_to is not None else []
    # Only inclusions go to Chroma: an item with a genre always has it in its document, so `$contains` never drops one
    # that matches. An exclusion as `$not_contains` would also drop a title holding the genre's word ("no mystery" lost
    # Mystery Science Theater 3000, a comedy), so exclusions are checked on the catalog item alone (`ItemFilter.matches`).
    docs = [{"$contains": g} for g in where.genres]
    pick = lambda parts, key: None if not parts else parts[0] if len(parts) == 1 else {key: parts}  # noqa: E731
    if any_genres:
        docs.append(pick([{"$contains": g} for g in any_genres], "$or"))
    return pick(years, "$and"), pick(docs, "$and")


def _rrf(lists: dict[str, list[str]], weights: dict[str, float], k: float = 1.0) -> dict[str, float]:
    scores: dict[str, float] = {}
    for name, ids in lists.items():
        for rank, item_id in enumerate(ids):
            scores[item_id] = scores.get(item_id, 0.0) + weights.get(name, 0.0) / (k + rank + 1)
    return {i: s for i, s in scores.items() if s > 0 and math.isfinite(s)}


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 1)
