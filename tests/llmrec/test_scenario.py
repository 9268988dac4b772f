"""Scenario files, their names, the fusion-weight choice and when a stored weight applies."""

import json
import math
from importlib import resources

import pytest
from pydantic import ValidationError

from llmrec.adapters.fit import best_weight, choose_weight
from llmrec.errors import UnknownScenario
from llmrec.protocols import LLMScores
from llmrec.scenario import AdapterSpec, FusionFit, FusionSpec, Scenario, load_scenario, save_scenario


def test_builtin_movies_scenario_loads(tmp_path):
    scenario = load_scenario("movies", tmp_path)
    assert scenario.dataset == "ml-100k" and scenario.domain == "movie"


def test_builtin_books_scenario_loads_with_the_books_domain(tmp_path):
    from llmrec.domains import load_domain
    from llmrec.scenario import builtin_names

    assert builtin_names() == ["books", "movies", "movies-1m"]
    scenario = load_scenario("books", tmp_path)
    assert (scenario.dataset, scenario.domain, scenario.adapter, scenario.fusion.weight) == ("book-crossing", "book", None, None)
    assert "Book-Crossing" in scenario.description and "not temporal" in scenario.description
    domain = load_domain(scenario.domain)  # what the chat agent and the claim checker load for it
    assert domain is load_domain("books") and (domain.noun, domain.consumed) == ("book", "read")


def test_builtin_movies_1m_scenario_loads_on_ml_1m_with_no_fitted_weight(tmp_path):
    """`llmrec eval --dataset ml-1m --scenario movies-1m` on a fresh clone: the scenario ships with the package."""
    from llmrec.domains import load_domain

    scenario = load_scenario("movies-1m", tmp_path)
    assert (scenario.dataset, scenario.domain, scenario.adapter) == ("ml-1m", "movie", None)
    fit = scenario.fusion.fitted_on  # a fit the gate refused: its record ships, its weight does not
    assert scenario.fusion.weight is None and fit.p_value > fit.alpha and fit.best_weight is not None
    assert fit.selection_users + fit.gate_users == fit.users and set(fit.gate_grid) == {"inf", str(fit.best_weight)}
    weight, note = scenario.fusion.weight_for("SmolLM2-135M-Instruct", None, 1, "movies-1m")
    assert math.isinf(weight) and note is None  # the fit's own model: the retriever's order, with nothing to refit
    assert "MovieLens-1M" in scenario.description and "temporal" in scenario.description
    assert load_domain(scenario.domain).noun == "movie"


def test_user_scenario_overrides_builtin_and_roundtrips(tmp_path):
    scenario = load_scenario("movies", tmp_path)
    scenario.fusion = FusionSpec(weight=0.5)
    save_scenario(scenario, tmp_path)
    assert load_scenario("movies", tmp_path).fusion.weight == 0.5


def test_unknown_and_malformed_scenarios_are_clear_errors(tmp_path):
    with pytest.raises(UnknownScenario, match="unknown scenario 'nope'; known: books, movies, movies-1m$"):
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


# --- names: a scenario's name is a folder name under <home>/scenarios ------------------------------------

def test_names_that_leave_the_cache_are_refused(tmp_path):
    home = tmp_path / "a" / "home"
    evil = tmp_path / "a" / "evil" / "scenario.json"  # where home/scenarios/../../evil/scenario.json points
    evil.parent.mkdir(parents=True)
    evil.write_text(json.dumps({"name": "evil", "dataset": "ml-100k"}))
    for name in ("../../evil", "../evil", "/etc", "Movies", "-x", "a" * 65, ""):
        with pytest.raises(UnknownScenario, match="bad scenario name") as caught:
            load_scenario(name, home)
        assert caught.value.exit_code == 3
    with pytest.raises(UnknownScenario, match="bad scenario name"):
        save_scenario(Scenario.model_construct(name="../../evil2", dataset="ml-100k", fusion=FusionSpec()), home)
    assert not (tmp_path / "a" / "evil2").exists() and not list(tmp_path.rglob("evil2"))


def test_the_model_refuses_unsafe_names_at_creation_and_assignment():
    with pytest.raises(ValidationError):
        Scenario(name="../x", dataset="d")
    scenario = Scenario(name="ok_name-2", dataset="d")
    with pytest.raises(ValidationError):
        scenario.name = "../../x"


def copy_builtin(home, folder, **changes):
    text = resources.files("llmrec").joinpath("scenarios", "movies.json").read_text()
    path = home / "scenarios" / folder / "scenario.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({**json.loads(text), **changes}))
    return path


def test_a_file_whose_name_is_not_its_folder_is_refused(tmp_path):
    copy_builtin(tmp_path, "movies2")  # a plain copy still says "name": "movies"
    with pytest.raises(UnknownScenario, match="names scenario 'movies', but it is scenario 'movies2'") as caught:
        load_scenario("movies2", tmp_path)
    assert caught.value.exit_code == 3


def test_a_copied_scenario_is_saved_to_its_own_folder(tmp_path):
    """`fit-fusion --scenario movies2` loads movies2, refits and saves: movies must stay as it was."""
    original = copy_builtin(tmp_path, "movies")
    before = original.read_bytes()
    copy_builtin(tmp_path, "movies2", name="movies2")
    scenario = load_scenario("movies2", tmp_path)
    scenario.fusion = FusionSpec(weight=8.0)
    path = save_scenario(scenario, tmp_path)
    assert path == tmp_path / "scenarios" / "movies2" / "scenario.json"
    assert original.read_bytes() == before and load_scenario("movies2", tmp_path).fusion.weight == 8.0


# --- when a stored fusion weight applies ------------------------------------------------------------------

def fitted(weight=0.25, model="SmolLM2-135M-Instruct", adapter=None, adapter_sha256=None, permutations=1):
    fit = FusionFit(split="s", users=300, grid={}, model=model, adapter=adapter, adapter_sha256=adapter_sha256,
                    permutations=permutations)
    return FusionSpec(weight=weight, fitted_on=fit)


def adapter_folder(path, content=b"weights"):
    path.mkdir(parents=True, exist_ok=True)
    (path / "adapter_model.safetensors").write_bytes(content)
    return AdapterSpec(name="movies", path=str(path))


def test_the_weight_applies_only_to_the_model_adapter_and_permutations_it_was_fitted_for():
    fusion = fitted()
    assert fusion.weight_for("SmolLM2-135M-Instruct", None, 1, "movies") == (0.25, None)
    weight, note = fusion.weight_for("scripted", None, 1, "movies")
    assert math.isinf(weight)
    assert "fitted for model SmolLM2-135M-Instruct, adapter none, permutations 1; this run uses model scripted," in note
    assert "llmrec fit-fusion --scenario movies" in note
    weight, note = fusion.weight_for("someone-else/SmolLM2-135M-Instruct", None, 1, "movies")
    assert math.isinf(weight) and "uses model someone-else/SmolLM2-135M-Instruct" in note
    weight, note = fusion.weight_for("SmolLM2-135M-Instruct", None, 3, "movies")
    assert math.isinf(weight) and "this run uses permutations 3" in note


def test_base_rows_never_get_the_adapters_weight_nor_the_adapter_the_bases(tmp_path):
    from llmrec.assets import folder_hash

    adapter = adapter_folder(tmp_path / "a")
    with_adapter = fitted(0.5, adapter="movies", adapter_sha256=folder_hash(tmp_path / "a"))
    assert with_adapter.weight_for("SmolLM2-135M-Instruct", adapter, 1, "m") == (0.5, None)
    weight, note = with_adapter.weight_for("SmolLM2-135M-Instruct", None, 1, "m")
    assert math.isinf(weight) and "adapter movies" in note and "this run uses adapter none" in note
    weight, note = fitted(0.25).weight_for("SmolLM2-135M-Instruct", adapter, 1, "m")
    assert math.isinf(weight) and "this run uses adapter movies" in note
    retrained = adapter_folder(tmp_path / "b", b"other weights")  # same name, other bytes
    weight, note = with_adapter.weight_for("SmolLM2-135M-Instruct", retrained, 1, "m")
    assert math.isinf(weight) and "adapter movies (other files)" in note


def test_an_unfitted_weight_keeps_the_retriever_order_and_a_hand_set_one_applies():
    weight, note = FusionSpec().weight_for("any", None, 1, "movies")
    assert math.isinf(weight) and "not fitted" in note
    assert FusionSpec(weight=0.5).weight_for("any", None, 2, "movies") == (0.5, None)
    assert FusionSpec(weight=None, fitted_on=fitted().fitted_on).weight_for("SmolLM2-135M-Instruct", None, 1, "m") == (math.inf, None)


def test_the_shipped_movies_scenario_keeps_the_retrievers_order_for_the_default_model(tmp_path, model_dir):
    """Its old weight (.25) was never gated and its validation gain was noise: it ships the retriever's order, with no
    note (the weight was fitted for this model), and the old grid stays on record."""
    from llmrec.manifest import display_name

    fusion = load_scenario("movies", tmp_path).fusion
    assert fusion.weight_for(display_name(model_dir), None, 1, "movies") == (math.inf, None)
    assert fusion.fitted_on is not None and fusion.fitted_on.best_weight == 0.25
