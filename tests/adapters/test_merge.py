"""`llmrec adapters merge`: the arithmetic by hand, real PEFT merges of real adapters, the engine on the result, and
every refusal (nothing half-written left behind)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from llmrec.adapters.merge import MergeInput, MergeRequest, combine, merge_adapters, merge_towers, parse_sources, peft_combination
from llmrec.errors import AdapterMismatch, DatasetError, RunConflict, UnknownScenario
from llmrec.scenario import AdapterSpec, load_scenario


def make_home(tmp_path: Path, real: Path, scenarios: dict[str, AdapterSpec | None], dataset: str = "ml-100k") -> Path:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    for name in ("datasets", "models", "wheels"):
        if not (home / name).exists():
            (home / name).symlink_to(real / name)
    for name, adapter in scenarios.items():
        path = home / "scenarios" / name / "scenario.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"name": name, "dataset": dataset, "domain": "movie", "adapter": adapter and adapter.model_dump()}))
    return home


def request(into: str = "both", sources: str = "a:0.7,b:0.3", **kw) -> MergeRequest:
    return MergeRequest(into=into, inputs=parse_sources(sources), **kw)


def left_behind(home: Path, name: str = "both") -> list[Path]:
    return [p for p in [home / "scenarios" / name, *(home / ".partial").glob("*")] if p.exists()]


def copy_adapter(spec: AdapterSpec, dest: Path, name: str, config=None, manifest=None) -> AdapterSpec:
    shutil.copytree(spec.path, dest)
    for file, change in (("adapter_config.json", config), ("manifest.json", manifest)):
        if change:
            data = json.loads((dest / file).read_text())
            change(data)
            (dest / file).write_text(json.dumps(data))
    return AdapterSpec(name=name, path=str(dest))


def lora_deltas(model_dir: str, folders: dict[str, str]) -> dict[str, dict[str, torch.Tensor]]:
    """{module: {adapter: delta}} as PEFT computes them (`get_delta_weight`: B @ A * scaling)."""
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer
    from transformers import AutoModelForCausalLM

    names = list(folders)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), folders[names[0]],
                                      adapter_name=names[0])
    for name in names[1:]:
        model.load_adapter(folders[name], adapter_name=name)
    return {key: {n: module.get_delta_weight(n).detach() for n in names if n in module.lora_A}
            for key, module in model.named_modules() if isinstance(module, LoraLayer)}


# --- the arithmetic ------------------------------------------------------------------------------------------------


def test_parse_sources_reads_weights_and_refuses_bad_lists():
    assert parse_sources("movies:0.5, books:1.5") == (MergeInput(scenario="movies", weight=0.5), MergeInput(scenario="books", weight=1.5))
    for bad in ("movies:0.5", "movies:x,books:1", "movies:0.5,movies:0.5", "movies:-1,books:1", ""):
        with pytest.raises(ValueError):
            parse_sources(bad)


def test_linear_and_ties_by_hand():
    a, b = torch.tensor([1.0, -2.0, 0.1, 4.0]), torch.tensor([3.0, 1.0, -0.2, -1.0])
    assert torch.allclose(combine([a, b], [0.5, 0.5], "linear"), 0.5 * a + 0.5 * b)
    # density .5 keeps each one's two largest: a -> [0, -2, 0, 4], b -> [3, 1, 0, 0]; signs by total: [+, -, +, +];
    # disjoint mean of the weighted entries that agree: [.5*3/1, .5*-2/1, 0, .5*4/1]
    assert torch.allclose(combine([a, b], [0.5, 0.5], "ties", density=0.5), torch.tensor([1.5, -1.0, 0.0, 2.0]))


def test_peft_combination_works_on_the_deltas_within_the_engines_rank():
    assert peft_combination("linear", [8, 8]) == ("cat", 16)
    assert peft_combination("linear", [8, 4]) == ("cat", 12)
    assert peft_combination("linear", [16, 8]) == ("svd", 16)
    assert peft_combination("ties", [8, 8]) == ("ties_svd", 16)
    assert peft_combination("dare_ties", [4, 4]) == ("dare_ties_svd", 8)


def tower(seed: int, hidden: int = 576, dim: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"center": rng.normal(size=hidden).astype(np.float32), "scale": rng.uniform(0.5, 2, size=hidden).astype(np.float32),
            "user_weight": rng.normal(size=(hidden, dim)).astype(np.float32), "user_bias": rng.normal(size=dim).astype(np.float32),
            "item_weight": rng.normal(size=(hidden, dim)).astype(np.float32), "item_bias": rng.normal(size=dim).astype(np.float32)}


def test_merge_towers_linear_is_the_weighted_sum_and_standardisation_the_normalised_mean():
    a, b = tower(0), tower(1)
    merged = merge_towers([a, b], [1.0, 3.0], "linear")
    np.testing.assert_allclose(merged["user_weight"], a["user_weight"] + 3 * b["user_weight"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(merged["center"], 0.25 * a["center"] + 0.75 * b["center"], rtol=1e-5, atol=1e-6)
    ties = merge_towers([a, b], [0.5, 0.5], "ties", density=0.3)
    assert ties["item_weight"].shape == a["item_weight"].shape
    assert (ties["item_weight"] == 0).mean() > 0.3  # trimmed: entries neither input kept are zero


# --- real LoRA adapters ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lora_home(tmp_path_factory, home, tiny_adapter, second_adapter):
    return make_home(tmp_path_factory.mktemp("merge"), home, {"a": tiny_adapter[0], "b": second_adapter[0]})


@pytest.fixture(scope="module")
def merged_linear(lora_home, settings):
    return merge_adapters(settings.model_copy(update={"home": lora_home}), request("both", "a:0.7,b:0.3", method="linear"))


@pytest.mark.slow
def test_linear_merge_is_the_weighted_sum_of_the_inputs_deltas(merged_linear, tiny_adapter, second_adapter, model_dir):
    scenario, path = merged_linear
    assert path.exists() and scenario.adapter is not None and scenario.dataset == "ml-100k"
    manifest = json.loads((Path(scenario.adapter.path) / "manifest.json").read_text())
    assert manifest["objective"] == "listwise" and manifest["combination_type"] == "cat" and manifest["rank"] == 16
    assert manifest["base_model"] == tiny_adapter[1]["base_model"]
    assert [(m["scenario"], m["weight"]) for m in manifest["merged_from"]] == [("a", 0.7), ("b", 0.3)]
    import hashlib

    assert manifest["merged_from"][0]["manifest_sha256"] == hashlib.sha256((Path(tiny_adapter[0].path) / "manifest.json").read_bytes()).hexdigest()
    config = json.loads((Path(scenario.adapter.path) / "adapter_config.json").read_text())
    assert config["r"] == 16 and Path(config["base_model_name_or_path"]).resolve() == Path(model_dir).resolve()
    deltas = lora_deltas(model_dir, {"a": tiny_adapter[0].path, "b": second_adapter[0].path, "m": scenario.adapter.path})
    assert len(deltas) == 30 * 4
    worst = 0.0
    for parts in deltas.values():
        expected = 0.7 * parts["a"] + 0.3 * parts["b"]
        assert expected.abs().max() > 0
        worst = max(worst, float((parts["m"] - expected).abs().max() / expected.abs().max()))
    assert worst < 1e-5


@pytest.mark.slow
def test_peft_factorwise_linear_is_not_the_weighted_sum(tiny_adapter, second_adapter, model_dir):
    """Why llmrec asks PEFT for `cat`: its `linear` mixes A and B separately, which adds cross terms for these adapters."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), tiny_adapter[0].path,
                                      adapter_name="a")
    model.load_adapter(second_adapter[0].path, adapter_name="b")
    model.add_weighted_adapter(["a", "b"], [0.5, 0.5], "lin", combination_type="linear")
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    expected = 0.5 * layer.get_delta_weight("a") + 0.5 * layer.get_delta_weight("b")
    assert float((layer.get_delta_weight("lin") - expected).abs().max()) > 0.05 * float(expected.abs().max())


@pytest.mark.slow
def test_ties_merge_is_the_rank_limited_ties_of_the_deltas(lora_home, settings, tiny_adapter, second_adapter, model_dir):
    scenario, _ = merge_adapters(settings.model_copy(update={"home": lora_home}), request("both-ties", "a:0.5,b:0.5", method="ties",
                                                                                       density=0.3))
    manifest = json.loads((Path(scenario.adapter.path) / "manifest.json").read_text())
    assert manifest["combination_type"] == "ties_svd" and manifest["rank"] == 16 and manifest["density"] == 0.3
    deltas = lora_deltas(model_dir, {"a": tiny_adapter[0].path, "b": second_adapter[0].path, "m": scenario.adapter.path})
    for key in list(deltas)[:4]:
        parts = deltas[key]
        full = combine([parts["a"], parts["b"]], [0.5, 0.5], "ties", density=0.3)
        tail = torch.linalg.svdvals(full)[16:]
        # the merged delta is the best rank-16 approximation of TIES over the full deltas (Eckart–Young)
        assert float(torch.linalg.norm(parts["m"] - full)) == pytest.approx(float(torch.linalg.norm(tail)), rel=1e-3, abs=1e-6)
        assert float(torch.linalg.norm(parts["m"] - 0.5 * parts["a"] - 0.5 * parts["b"])) > 1e-4  # not the linear one


@pytest.mark.llm
def test_the_engine_scores_with_the_merged_adapter(engine, merged_linear):

    scenario, _ = merged_linear
    engine.release_adapters()
    try:
        prompt = engine.chat_prompt("Answer with one letter.", "Which is a fruit? A. car B. apple C. chair")
        ids = engine.label_token_ids(["A", "B", "C"])
        [base] = engine.score_next_token([prompt], ids)
        [merged] = engine.score_next_token([prompt], ids, scenario.adapter)
        assert max(abs(a - b) for a, b in zip(base, merged)) > 1e-3
    finally:
        engine.release_adapters()


# --- refusals -------------------------------------------------------------------------------------------------------


def refused(settings, home: Path, req: MergeRequest, error, match: str) -> None:
    with pytest.raises(error, match=match) as caught:
        merge_adapters(settings.model_copy(update={"home": home}), req)
    assert left_behind(home, req.into) == [], "a refused merge left files behind"
    assert caught.value.exit_code == error.exit_code


def test_refuses_adapters_of_different_base_models(tmp_path, settings, home, tiny_adapter):
    def other(config):
        config["base_model_name_or_path"] = "Qwen/Qwen2.5-0.5B-Instruct"

    b = copy_adapter(tiny_adapter[0], tmp_path / "b", "b", config=other, manifest=lambda m: m.pop("base_model_sha256", None))
    refused(settings, make_home(tmp_path, home, {"a": tiny_adapter[0], "b": b}), request(), AdapterMismatch, "different base models")


def test_refuses_adapters_of_different_objectives(tmp_path, settings, home, tiny_adapter):
    b = copy_adapter(tiny_adapter[0], tmp_path / "b", "b", manifest=lambda m: m.update(objective="pointwise"))
    refused(settings, make_home(tmp_path, home, {"a": tiny_adapter[0], "b": b}), request(), AdapterMismatch, "different objectives")


def test_refuses_a_rank_above_the_engines(tmp_path, settings, home, tiny_adapter):
    b = copy_adapter(tiny_adapter[0], tmp_path / "b", "b", config=lambda c: c.update(r=32))
    refused(settings, make_home(tmp_path, home, {"a": tiny_adapter[0], "b": b}), request(), AdapterMismatch, "rank 32")


def test_refuses_adapters_on_different_layers(tmp_path, settings, home, tiny_adapter):
    b = copy_adapter(tiny_adapter[0], tmp_path / "b", "b", config=lambda c: c.update(layers_to_transform=[28, 29]))
    refused(settings, make_home(tmp_path, home, {"a": tiny_adapter[0], "b": b}), request(), AdapterMismatch, "different layers")


@pytest.mark.parametrize("case", ["no adapter", "folder gone", "not peft"])
def test_refuses_a_missing_adapter(tmp_path, settings, home, tiny_adapter, case):
    b = {"no adapter": None, "folder gone": AdapterSpec(name="b", path=str(tmp_path / "gone")),
         "not peft": AdapterSpec(name="b", path=str(tmp_path))}[case]
    refused(settings, make_home(tmp_path, home, {"a": tiny_adapter[0], "b": b}), request(), AdapterMismatch,
            {"no adapter": "no adapter", "folder gone": "missing", "not peft": "adapter_config.json"}[case])


def test_refuses_an_unknown_input_a_taken_name_a_bad_name_and_an_unknown_dataset(tmp_path, settings, home, tiny_adapter):
    h = make_home(tmp_path, home, {"a": tiny_adapter[0], "b": tiny_adapter[0], "both": None})
    refused(settings, h, request("new", "a:1,zzz:1"), UnknownScenario, "unknown scenario 'zzz'")
    refused(settings, h, request("new", dataset="no-such-data"), DatasetError, "unknown dataset")
    before = (h / "scenarios" / "a" / "scenario.json").read_text()
    with pytest.raises(RunConflict, match="is one of the inputs"):
        merge_adapters(settings.model_copy(update={"home": h}), request("a", force=True))
    assert (h / "scenarios" / "a" / "scenario.json").read_text() == before
    with pytest.raises(RunConflict, match="exists already"):
        merge_adapters(settings.model_copy(update={"home": h}), request("both"))
    assert load_scenario("both", h).adapter is None  # untouched
    with pytest.raises(UnknownScenario, match="bad scenario name"):
        merge_adapters(settings.model_copy(update={"home": h}), request("movies+books"))


def test_a_failure_mid_merge_leaves_nothing(tmp_path, settings, home, tiny_adapter, second_adapter, monkeypatch):
    from llmrec.adapters import merge

    def broken(base, adapters, weights, method, out, density, seed):
        out.mkdir()
        (out / "adapter_model.safetensors").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(merge, "merge_lora", broken)
    h = make_home(tmp_path, home, {"a": tiny_adapter[0], "b": second_adapter[0]})
    with pytest.raises(OSError):
        merge_adapters(settings.model_copy(update={"home": h}), request())
    assert left_behind(h) == []


# --- embedding adapters ---------------------------------------------------------------------------------------------


def embedding_adapter(folder: Path, model_dir: str, seed: int, dim: int = 4, layer: int = -1) -> AdapterSpec:
    from safetensors.numpy import save_file

    from llmrec.manifest import model_identity

    folder.mkdir(parents=True)
    save_file(tower(seed, dim=dim), str(folder / "adapter.safetensors"))
    manifest = {"objective": "embedding", "base_model": model_identity(model_dir), "item_text": "v1",
                "config": {"tower": {"history_items": 10, "decay": 0.8, "dim": dim}, "encoder": {"layer": layer}}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return AdapterSpec(name=folder.name, path=str(folder))


def test_embedding_towers_merge_by_ties_and_load_as_an_adapter(tmp_path, settings, home, model_dir):
    from llmrec.ranking.embedding import load_two_tower

    a, b = embedding_adapter(tmp_path / "ea", model_dir, 0), embedding_adapter(tmp_path / "eb", model_dir, 1)
    h = make_home(tmp_path, home, {"a": a, "b": b})
    scenario, _ = merge_adapters(settings.model_copy(update={"home": h}), request(method="ties", density=0.4))
    merged, manifest = load_two_tower(scenario.adapter, model_dir)
    expected = merge_towers([load_two_tower(x, model_dir)[0].tensors for x in (a, b)], [0.7, 0.3], "ties", 0.4)
    for name, value in expected.items():
        np.testing.assert_allclose(merged.tensors[name], value, rtol=1e-6)
    assert manifest["method"] == "ties" and "from zero" in manifest["deltas"]


@pytest.mark.parametrize("case", ["dim", "encoder", "base", "encoder-lora"])
def test_embedding_refusals(tmp_path, settings, home, model_dir, case):
    a = embedding_adapter(tmp_path / "ea", model_dir, 0)
    b = embedding_adapter(tmp_path / "eb", model_dir, 1, dim=8 if case == "dim" else 4, layer=-2 if case == "encoder" else -1)
    manifest = json.loads((Path(b.path) / "manifest.json").read_text())
    if case == "base":
        manifest["base_model"] = {"path": "/elsewhere/Qwen2.5-0.5B-Instruct", "sha256": "0" * 64}
    if case == "encoder-lora":
        manifest["encoder_lora"] = {"kept": True}
    (Path(b.path) / "manifest.json").write_text(json.dumps(manifest))
    match = {"dim": "tower shapes", "encoder": "item encoders", "base": "different base models", "encoder-lora": "encoder LoRA"}[case]
    refused(settings, make_home(tmp_path, home, {"a": a, "b": b}), request(), AdapterMismatch, match)


def test_embedding_and_lora_do_not_merge(tmp_path, settings, home, model_dir, tiny_adapter):
    a = embedding_adapter(tmp_path / "ea", model_dir, 0)
    refused(settings, make_home(tmp_path, home, {"a": a, "b": tiny_adapter[0]}), request(), AdapterMismatch, "different objectives")
