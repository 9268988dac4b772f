"""The one recommendation path: lookup → retrieve → rank (with its fallback) → explain.

Every entry point calls `Pipeline.recommend`: the CLI, the chat agent's tools, the eval harness's LLM rows (and
later the service). Fallbacks live here: an LLM failure or timeout keeps the retriever's order and says so;
Chroma failing mid-run falls back to co-occurrence and popularity; an empty history gets popular, genre-diverse
items; rejected explanations get grounded templates.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from llmrec.data.catalog import Dataset
from llmrec.errors import ChromaUnavailable, DatasetError, EmptyHistory, LLMRecError, LLMUnavailable, UnknownItem
from llmrec.explain.explainer import LLMExplainer
from llmrec.protocols import LLMEngine, Retriever, ScoringRanker
from llmrec.ranking.fusion import retriever_order
from llmrec.scenario import Scenario
from llmrec.schemas import (
    Candidate,
    Explanation,
    ExplanationStats,
    Item,
    RankedItem,
    Recommendation,
    RecommendRequest,
    RecommendResponse,
    UserHistory,
)
from llmrec.settings import Settings


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

    def retrieve(self, history: UserHistory, notes: list[str], k: int | None = None) -> list[Candidate]:
        """The retriever's top `k` (default: the LLM's candidate count); Chroma failing mid-run is a note, not an error."""
        k = k or self.settings.candidates
        try:
            return self.retriever.retrieve(history, k)
        except ChromaUnavailable as exc:
            if self.fallback_retriever is None:
                raise
            notes.append(f"Chroma was unavailable ({exc}); candidates come from co-occurrence and popularity only")
            return self.fallback_retriever.retrieve(history, k)

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
        notes: list[str] = list(self.dataset.report.notes)  # what loading dropped or assumed qualifies every answer
        if self.data_note:
            notes.append(self.data_note)
        if not history.item_ids:
            return self._cold_start(request, timings)
        retrieved = self.retrieve(history, notes, max(request.k, self.settings.candidates))
        candidates, tail = retrieved[: self.settings.candidates], retrieved[self.settings.candidates :]
        if request.k > len(candidates) and tail:
            notes.append(f"the LLM reranks the retriever's first {len(candidates)} candidates; "
                         f"positions {len(candidates) + 1}-{len(candidates) + min(len(tail), request.k - len(candidates))} "
                         "are in the retriever's order")
        if len(retrieved) < request.k:
            notes.append(f"asked for {request.k} items, but only {len(retrieved)} unseen items could be retrieved")
        timings["retrieve"] = _ms(clock)
        degraded_reason = None
        clock = time.perf_counter()
        try:
            scores = self.ranker.score_many([(history_items, candidates)])[0]
            ranked = self.ranker.rank_scored(candidates, scores)
            history_used, history_dropped = scores.history_used, scores.history_dropped
            if history_dropped:
                notes.append(f"the prompt holds the {history_used} most recent of {len(history_items)} history items; "
                             f"{history_dropped} older ones were left out of it (retrieval used all of them)")
            if self.fusion_note:
                notes.append(self.fusion_note)
        except LLMUnavailable as exc:
            ranked, degraded_reason = retriever_order(candidates), str(exc)
            history_used, history_dropped = len(history_items), 0
            notes.append("the LLM was unavailable, so this is the retriever's order")
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
            ranking="retriever" if degraded_reason and not any(r.llm_logprob is not None for r in top) else "llm-fused",
            degraded=degraded_reason is not None, degraded_reason=degraded_reason, history_used=history_used,
            history_dropped=history_dropped, explanations=stats, notes=tuple(notes), timings_ms=timings,
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


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 1)
