"""Scenario files and the fusion-weight choice."""

import math

import pytest

from llmrec.adapters.fit import best_weight, choose_weight
from llmrec.adapters.scenario import FusionSpec, Scenario, load_scenario, save_scenario
from llmrec.agents.ranker import LLMScores
from llmrec.errors import UnknownScenario


def test_builtin_movies_scenario_loads(tmp_path):
    scenario = load_scenario("movies", tmp_path)
    assert scenario.dataset == "ml-100k" and scenario.domain == "movie"


def test_user_scenario_overrides_builtin_and_roundtrips(tmp_path):
    scenario = load_scenario("movies", tmp_path)
    scenario.fusion = FusionSpec(weight=0.5)
    save_scenario(scenario, tmp_path)
    assert load_scenario("movies", tmp_path).fusion.weight == 0.5


def test_unknown_and_malformed_scenarios_are_clear_errors(tmp_path):
    with pytest.raises(UnknownScenario, match="unknown scenario 'nope'; known: movies"):
        load_scenario("nope", tmp_path)
    bad = tmp_path / "scenarios" / "bad" / "scenario.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("{not json")
    with pytest.raises(UnknownScenario, match="malformed"):
        load_scenario("bad", tmp_path)


def run(logprobs, target_index):
    ids = [f"i{n}" for n in range(len(logprobs))]
    return ids, LLMScores(list(logprobs), 1, 0, 10), list(range(len(ids))), ids[target_index]


def test_weight_is_finite_only_when_the_llm_helps_on_validation():
    helpful = [run([-5, -5, -5, 0], 3), run([-5, 0, -5, -5], 1)]  # the LLM points at the target
    assert not math.isinf(best_weight(choose_weight(helpful)))
    harmful = [run([-5, -5, -5, 0], 0), run([-5, -5, 0, -5], 1)]
    assert math.isinf(best_weight(choose_weight(harmful)))


def test_ties_prefer_the_retriever():
    assert best_weight({0.0: 0.3, 1.0: 0.3, math.inf: 0.3}) == math.inf


def test_fusion_spec_unfitted_means_retriever_order():
    assert math.isinf(Scenario(name="x", dataset="d").fusion.effective_weight())
