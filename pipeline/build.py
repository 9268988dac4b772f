"""The one place that wires the stages (`build_pipeline`): history lookup → retriever → ranker → explainer.

The ranker follows the scenario adapter's objective, looked up in `llmrec.objectives`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

from llmrec import objectives
from llmrec.data.catalog import Dataset
from llmrec.data.datasets import load_dataset
from llmrec.data.split import LeaveOneOutSplit
from llmrec.domains import load_domain
from llmrec.engines.batching import BatchConfig, BatchingEngine
from llmrec.engines.models import pick_dtype, resolve_model
from llmrec.engines.vllm import EngineConfig, InProcessVLLM, ServerVLLM, verify_adapter
from llmrec.errors import ChromaUnavailable, LLMUnavailable
from llmrec.explain.claims import ClaimChecker
from llmrec.explain.evidence import CoWatch
from llmrec.explain.explainer import LLMExplainer
from llmrec.explain.grounding import GroundingValidator
from llmrec.manifest import display_name, objective_of
from llmrec.objectives import RankerInputs
from llmrec.pipeline.recommend import Pipeline
from llmrec.prompts import ExplainPromptBuilder, ExplainPromptConfig
from llmrec.protocols import LLMEngine
from llmrec.ranking.fusion import ShortHistoryWeight
from llmrec.retrieval.embedder import SentenceEmbedder, ensure_minilm
from llmrec.retrieval.index import CatalogIndex, IndexConfig
from llmrec.retrieval.retrievers import HybridRetriever
from llmrec.scenario import load_scenario, stale_data_note
from llmrec.schemas import (
    UserHistory,
)
from llmrec.settings import Settings

log = logging.getLogger(__name__)


def make_engine(settings: Settings, adapters: int = 0, batching: BatchConfig | None = None) -> LLMEngine:
    """In-process vLLM by default; the OpenAI-compatible server when `llm_url` is set. With `batching`, behind a
    batching queue that merges concurrent calls (`llmrec.engines.batching`; the service's engine).

    A server that does not answer yet is not an error here: the engine takes the name `llmrec serve-llm` serves the
    model under, and each call fails (LLMUnavailable, so answers degrade to the retriever's order) until it answers."""
    home = settings.resolved_home()
    model = resolve_model(settings.model, home)
    engine: LLMEngine
    if settings.llm_url:
        try:
            engine = ServerVLLM(settings.llm_url, tokenizer_source=model, timeout_s=settings.llm_timeout_s)
        except LLMUnavailable as exc:
            log.warning("%s; answers keep the retriever's order until it answers", exc)
            engine = ServerVLLM(settings.llm_url, tokenizer_source=model, model_name=display_name(model), timeout_s=settings.llm_timeout_s)
    else:
        engine = InProcessVLLM(EngineConfig(
            model=model, dtype=pick_dtype(settings.dtype), max_model_len=settings.max_model_len,
            enforce_eager=settings.enforce_eager, kv_cache_gb=settings.kv_cache_gb, max_adapters=adapters,
            timeout_s=settings.llm_timeout_s, seed=settings.seed,
        ))
    if batching is not None:
        engine = BatchingEngine(engine, batching.model_copy(update={"max_concurrent": 1}) if not settings.llm_url else batching)
    return engine


def build_index(settings: Settings, dataset: Dataset, progress: bool = True) -> CatalogIndex:
    """Open (and, where items are missing or changed, fill) the dataset's Chroma collection."""
    home = settings.resolved_home()
    index = CatalogIndex(dataset.name, SentenceEmbedder(ensure_minilm(home)), home, IndexConfig(chroma_url=settings.chroma_url),
                         source=dataset.source)
    index.build(dataset.items.values(), progress=progress)  # idempotent: ~0.1 s when nothing changed
    return index


def build_pipeline(settings: Settings, scenario_name: str = "movies", *, train_histories: Mapping[str, Sequence[str]] | None = None,
                   engine: LLMEngine | None = None, progress: bool = True, batching: BatchConfig | None = None,
                   chroma_optional: bool = False) -> Pipeline:
    """Build every stage for a scenario. `train_histories` restricts fitting (eval); default: all data. `batching`: the
    engine it makes goes behind a batching queue. `chroma_optional` (the service): a Chroma server that does not answer
    is not an error; the index connects on first use, and until then answers come from co-occurrence and popularity."""
    home = settings.resolved_home()
    scenario = load_scenario(scenario_name, home)
    dataset = load_dataset(scenario.dataset, home)
    try:
        index = build_index(settings, dataset, progress=progress)
    except ChromaUnavailable as exc:
        if not chroma_optional:
            raise
        log.warning("%s; candidates come from co-occurrence and popularity until it answers", exc)
        index = CatalogIndex(dataset.name, SentenceEmbedder(ensure_minilm(home)), home, IndexConfig(chroma_url=settings.chroma_url),
                             source=dataset.source)
    histories = {u: list(v) for u, v in (train_histories or dataset.histories()).items()}
    retriever = HybridRetriever(index=index).fit(histories)
    adapter = scenario.adapter
    data_note = stale_data_note(scenario, LeaveOneOutSplit.from_dataset(dataset).fingerprint()) if adapter else None
    # The manifest names the adapter's objective, and the ranker follows it; an `embedding` adapter ranks by itself
    # and never reaches the engine.
    objective = objectives.get(objective_of(adapter) if adapter is not None else objectives.DEFAULT)
    lora = adapter if objective.vllm_lora else None
    if engine is None:
        engine = make_engine(settings, adapters=1 if lora else 0, batching=batching)
    if lora is not None:
        try:
            verify_adapter(engine, lora)  # in process and on a server alike (exit 6)
        except LLMUnavailable as exc:  # a server that does not answer yet: the adapter is checked on its first call
            log.warning("adapter %s not checked yet: %s", lora.name, exc)
    weight, fusion_note = scenario.fusion.weight_for(engine.model_name, adapter, settings.permutations, scenario.name)
    base = getattr(getattr(engine, "config", None), "model", None) or resolve_model(settings.model, home)
    ranker = objective.build_ranker()(RankerInputs(settings, scenario, dataset.items, engine, base, adapter, weight, home, progress))
    short = scenario.fusion.short_history
    if short is not None and fusion_note is None:  # fitted with the main weight, for this model and adapter
        ranker.short_history = ShortHistoryWeight(short.max_items, math.inf if short.weight is None else short.weight)
    validator = GroundingValidator(dataset.items.values())
    # Only a listwise adapter reaches the explainer: the others were trained to score, not to write.
    explainer = LLMExplainer(engine, ExplainPromptBuilder(ExplainPromptConfig(domain=scenario.domain)), validator,
                             adapter=lora if objective.explains else None, cowatch=CoWatch(histories),
                             claims=ClaimChecker(dataset.items.values(), validator, domain=load_domain(scenario.domain)))
    # The one popularity source: the hybrid's own fitted popularity member over every item, not a second count.
    pool = retriever.popularity.retrieve(UserHistory(user_id=None, item_ids=()), len(dataset.items))
    popularity = {c.item_id: int(c.retriever_score) for c in pool}
    fallback = HybridRetriever(retriever.config, index=None).fit(histories)
    return Pipeline(settings, scenario, dataset, retriever, engine, ranker, explainer, popularity, fallback, fusion_note=fusion_note,
                    data_note=data_note, index=index)
