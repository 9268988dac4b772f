"""A stored fusion weight reaches a ranking only for the model, adapter and permutations it was fitted for.

The matching itself is tested in test_scenario.py; these tests show that the pipeline and the eval
harness use it. The LLM here is a scripted fake: this is the wiring, not evidence about ranking.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from llmrec.assets import folder_hash
from llmrec.prompts import RankPromptBuilder
from llmrec.ranking.listwise import LLMRanker, LLMRankerConfig
from llmrec.scenario import AdapterSpec, FusionFit, FusionSpec, Scenario
from llmrec.schemas import RecommendRequest
from llmrec.testing import ScriptedEngine


def last_label_engine(name: str) -> ScriptedEngine:
    """Prefers the last label by far, so any finite fusion weight reverses the retriever's order."""
    engine = ScriptedEngine(score=lambda prompt, n: [-10.0 * (n - i) for i in range(n)])
    engine.model_name = name
    return engine


@pytest.fixture(scope="module")
def build(settings):
    from llmrec.pipeline import build_pipeline

    return lambda engine, **changes: build_pipeline(settings.model_copy(update=changes), "movies", engine=engine, progress=False)


def test_a_weight_fitted_for_another_model_keeps_the_retriever_order_and_says_so(build):
    """movies ships w = .25 fitted for SmolLM2-135M-Instruct; a run of the model 'scripted' must not use it."""
    response = build(last_label_engine("scripted")).recommend(RecommendRequest(user_id="196", k=10))
    assert [r.retriever_rank for r in response.recommendations] == list(range(10))
    [note] = [n for n in response.notes if "fusion weight" in n]
    assert "fitted for model SmolLM2-135M-Instruct, adapter none, permutations 1; this run uses model scripted" in note
    assert "llmrec fit-fusion --scenario movies" in note


def test_the_builtin_movies_scenario_ships_the_retrievers_order(build):
    """Its .25 was never gated (a within-noise gain on the users it was chosen on): the retriever's order ships, even
    for the model it was fitted for, and the ranker says so (`keeps_retriever_order`, for `ranking: retriever`)."""
    engine = last_label_engine("SmolLM2-135M-Instruct")
    pipeline = build(engine)
    response = pipeline.recommend(RecommendRequest(user_id="196", k=10))
    assert math.isinf(pipeline.ranker.config.fusion_weight) and not any("fitted for model" in n for n in response.notes)
    assert [r.retriever_rank for r in response.recommendations] == list(range(10))
    # w = inf for every history: the LLM is not asked to score what it could not move, and the response says whose order it is
    assert response.ranking == "retriever" and not response.degraded and not [c for c in engine.calls if c[0] == "score"]
    assert any("the LLM did not rank this list" in n for n in response.notes)
    assert pipeline.ranker.keeps_retriever_order() and pipeline.scenario.fusion.fitted_on.best_weight == 0.25


def test_keeps_retriever_order_follows_the_weight_that_applies():
    from llmrec.protocols import LLMScores
    from llmrec.ranking.fusion import ShortHistoryWeight

    ranker = LLMRanker(last_label_engine("m"), {}, RankPromptBuilder(), LLMRankerConfig(fusion_weight=math.inf))
    short, long = LLMScores([0.0], 2, 0, 1), LLMScores([0.0], 9, 0, 1)
    assert ranker.keeps_retriever_order() and ranker.keeps_retriever_order(long)
    ranker.short_history = ShortHistoryWeight(3, 0.5)  # a finite weight for short histories: not every order is the retriever's
    assert not ranker.keeps_retriever_order() and not ranker.keeps_retriever_order(short) and ranker.keeps_retriever_order(long)
    finite = LLMRanker(last_label_engine("m"), {}, RankPromptBuilder(), LLMRankerConfig(fusion_weight=0.25))
    assert not finite.keeps_retriever_order() and not finite.keeps_retriever_order(long)


def test_other_permutations_are_another_fit(build):
    pipeline = build(last_label_engine("SmolLM2-135M-Instruct"), permutations=2)
    assert math.isinf(pipeline.ranker.config.fusion_weight) and "this run uses permutations 2" in pipeline.fusion_note


def test_eval_variants_use_only_the_weight_fitted_for_them(tmp_path):
    """An eval of a scenario with an adapter: the fit was for the adapter, so the base rows keep the retriever order."""
    from llmrec.eval.harness import _describe, _variants

    adapter_dir = tmp_path / "adapter"
    adapter_dir.mkdir()
    (adapter_dir / "adapter_model.safetensors").write_bytes(b"weights")
    fit = FusionFit(split="s", users=10, grid={}, model="SmolLM2-135M-Instruct", adapter="movies",
                    adapter_sha256=folder_hash(adapter_dir))
    scenario = Scenario(name="movies", dataset="ml-100k", adapter=AdapterSpec(name="movies", path=str(adapter_dir)),
                        fusion=FusionSpec(weight=0.5, fitted_on=fit))
    engine = last_label_engine("SmolLM2-135M-Instruct")
    ranker = LLMRanker(engine, {}, RankPromptBuilder(), LLMRankerConfig(fusion_weight=0.5), adapter=scenario.adapter)
    pipeline = SimpleNamespace(scenario=scenario, engine=engine, ranker=ranker, dataset=SimpleNamespace(items={}))
    base, lora = _variants(pipeline)
    assert math.isinf(base.weights["llmrec"]) and lora.weights["llmrec-lora"] == 0.5
    assert "fitted for model SmolLM2-135M-Instruct, adapter movies" in _describe("llmrec", base.weights["llmrec"], base, 20)
    assert "fitted for" not in _describe("llmrec-lora", 0.5, lora, 20)
    scenario.fusion = FusionSpec(weight=0.5, fitted_on=fit.model_copy(update={"adapter": None, "adapter_sha256": None}))
    base, lora = _variants(pipeline)  # and a fit without the adapter is not the adapter's
    assert base.weights["llmrec"] == 0.5 and math.isinf(lora.weights["llmrec-lora"])
