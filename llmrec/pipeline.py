"""The one place that wires the stages: history lookup → retriever → LLM ranker → explainer.

Fallbacks are declared here: an LLM failure or timeout keeps the retriever's order and says so;
an empty history gets popular, genre-diverse items; rejected explanations get grounded templates.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from llmrec.adapters.scenario import Scenario, load_scenario, stale_data_note
from llmrec.agents.claims import ClaimChecker
from llmrec.agents.encoder import OBJECTIVE as EMBEDDING
from llmrec.agents.encoder import load_embedding_ranker, objective_of, read_manifest
from llmrec.agents.engines import EngineConfig, InProcessVLLM, ServerVLLM, verify_adapter
from llmrec.agents.evidence import CoWatch
from llmrec.agents.explainer import LLMExplainer
from llmrec.agents.grounding import GroundingValidator
from llmrec.agents.likelihood import OBJECTIVE as SEQUENCE
from llmrec.agents.likelihood import LikelihoodRanker, LikelihoodRankerConfig, sequence_prompts
from llmrec.agents.models import pick_dtype, resolve_model
from llmrec.agents.pointwise import OBJECTIVE as POINTWISE
from llmrec.agents.pointwise import PointwiseRanker, PointwiseRankerConfig
from llmrec.agents.ranker import LLMRanker, LLMRankerConfig, ShortHistoryWeight, retriever_order
from llmrec.errors import ChromaUnavailable, DatasetError, EmptyHistory, LLMRecError, LLMUnavailable, UnknownItem
from llmrec.eval.split import LeaveOneOutSplit
from llmrec.prompts import ExplainPromptBuilder, ExplainPromptConfig, RankPromptBuilder, RankPromptConfig
from llmrec.prompts.builders import PointwisePromptBuilder, PointwisePromptConfig
from llmrec.protocols import LLMEngine, Retriever, ScoringRanker
from llmrec.retrieval.catalog import Dataset
from llmrec.retrieval.datasets import load_dataset
from llmrec.retrieval.embedder import SentenceEmbedder, ensure_minilm
from llmrec.retrieval.index import CatalogIndex, IndexConfig
from llmrec.retrieval.retrievers import HybridRetriever
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


def make_engine(settings: Settings, adapters: int = 0) -> LLMEngine:
    """In-process vLLM by default; the OpenAI-compatible server when `llm_url` is set."""
    home = settings.resolved_home()
    model = resolve_model(settings.model, home)
    if settings.llm_url:
        return ServerVLLM(settings.llm_url, tokenizer_source=model, timeout_s=settings.llm_timeout_s)
    return InProcessVLLM(EngineConfig(
        model=model, dtype=pick_dtype(settings.dtype), max_model_len=settings.max_model_len,
        enforce_eager=settings.enforce_eager, kv_cache_gb=settings.kv_cache_gb, max_adapters=adapters,
        timeout_s=settings.llm_timeout_s, seed=settings.seed,
    ))


def build_index(settings: Settings, dataset: Dataset, progress: bool = True) -> CatalogIndex:
    """Open (and, where items are missing or changed, fill) the dataset's Chroma collection."""
    home = settings.resolved_home()
    index = CatalogIndex(dataset.name, SentenceEmbedder(ensure_minilm(home)), home, IndexConfig(chroma_url=settings.chroma_url),
                         source=dataset.source)
    index.build(dataset.items.values(), progress=progress)  # idempotent: ~0.1 s when nothing changed
    return index


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


def build_pipeline(settings: Settings, scenario_name: str = "movies", *, train_histories: Mapping[str, Sequence[str]] | None = None,
                   engine: LLMEngine | None = None, progress: bool = True) -> Pipeline:
    """Build every stage for a scenario. `train_histories` restricts fitting (eval); default: all data."""
    home = settings.resolved_home()
    scenario = load_scenario(scenario_name, home)
    dataset = load_dataset(scenario.dataset, home)
    index = build_index(settings, dataset, progress=progress)
    histories = {u: list(v) for u, v in (train_histories or dataset.histories()).items()}
    retriever = HybridRetriever(index=index).fit(histories)
    adapter = scenario.adapter
    data_note = stale_data_note(scenario, LeaveOneOutSplit.from_dataset(dataset).fingerprint()) if adapter else None
    # The manifest names the adapter's objective, and the ranker follows it; an `embedding` adapter ranks by itself
    # and never reaches the engine.
    objective = objective_of(adapter) if adapter is not None else None
    lora = None if objective == EMBEDDING else adapter
    if engine is None:
        engine = make_engine(settings, adapters=1 if lora else 0)
    if lora is not None:
        verify_adapter(engine, lora)  # in process and on a server alike (exit 6)
    weight, fusion_note = scenario.fusion.weight_for(engine.model_name, adapter, settings.permutations, scenario.name)
    ranker = _ranker(settings, scenario, dataset, engine, objective, weight, progress)
    short = scenario.fusion.short_history
    if short is not None and fusion_note is None:  # fitted with the main weight, for this model and adapter
        ranker.short_history = ShortHistoryWeight(short.max_items, math.inf if short.weight is None else short.weight)
    validator = GroundingValidator(dataset.items.values())
    # Only a listwise adapter reaches the explainer: the others were trained to score, not to write.
    explainer = LLMExplainer(engine, ExplainPromptBuilder(ExplainPromptConfig(domain=scenario.domain)), validator,
                             adapter=lora if objective == "listwise" else None, cowatch=CoWatch(histories),
                             claims=ClaimChecker(dataset.items.values(), validator))
    # The cold-start pool: the hybrid's own fitted popularity member, not a second count.
    pool = retriever.popularity.retrieve(UserHistory(user_id=None, item_ids=()), 100)
    popularity = {c.item_id: int(c.retriever_score) for c in pool}
    fallback = HybridRetriever(retriever.config, index=None).fit(histories)
    return Pipeline(settings, scenario, dataset, retriever, engine, ranker, explainer, popularity, fallback, fusion_note=fusion_note,
                    data_note=data_note)


def _ranker(settings: Settings, scenario: Scenario, dataset: Dataset, engine: LLMEngine, objective: str | None, weight: float,
            progress: bool) -> ScoringRanker:
    """The ranker the scenario's adapter was trained for (none: the listwise verbalizer of the base model)."""
    adapter, home = scenario.adapter, settings.resolved_home()
    budget = settings.max_model_len - 16
    if objective == EMBEDDING:  # exit 6 when it was built on another base model
        base = getattr(getattr(engine, "config", None), "model", None) or resolve_model(settings.model, home)
        return load_embedding_ranker(adapter, base, list(dataset.items.values()), home, weight, progress)
    if objective == SEQUENCE:  # each candidate's line likelihood after the history
        prompts = sequence_prompts(read_manifest(adapter.path), scenario.domain, budget)
        return LikelihoodRanker(engine, dataset.items, prompts, LikelihoodRankerConfig(fusion_weight=weight), adapter=adapter)
    if objective == POINTWISE:  # one Yes/No prompt per candidate
        prompts = PointwisePromptBuilder(PointwisePromptConfig(domain=scenario.domain, max_history_items=settings.max_history_items,
                                                               token_budget=budget))
        return PointwiseRanker(engine, dataset.items, prompts, PointwiseRankerConfig(fusion_weight=weight), adapter=adapter)
    rank_prompts = RankPromptBuilder(RankPromptConfig(domain=scenario.domain, max_history_items=settings.max_history_items,
                                                      token_budget=budget))
    return LLMRanker(engine, dataset.items, rank_prompts, LLMRankerConfig(fusion_weight=weight, permutations=settings.permutations,
                                                                          seed=settings.seed), adapter=adapter)
