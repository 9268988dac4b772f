"""Towers on another catalog: `retarget_adapter` and cross-catalog merges take the serving catalog's standardisation.

Two real catalogs (two groups of ML-100K users and the items they saw), real item vectors from SmolLM2, and real towers
trained for one epoch on each."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from llmrec.adapters.merge import MergeRequest, merge_adapters, merge_towers, parse_sources
from llmrec.adapters.retarget import catalog_standardisation, retarget_adapter
from llmrec.errors import AdapterMismatch, RunConflict
from llmrec.scenario import AdapterSpec, load_scenario

pytestmark = pytest.mark.slow
MAPS = ("user_weight", "user_bias", "item_weight", "item_bias")


def _catalog(root: Path, real: Path, name: str, users: range) -> str:
    """A dataset folder with the ML-100K interactions of `users` and the items they saw; a scenario of that name on it."""
    from llmrec.data.datasets import builtin_folder

    source = builtin_folder("ml-100k", real)
    header, *rows = (source / "ml-100k.inter").read_text().splitlines()
    kept = [r for r in rows if int(r.split("\t")[0]) in users]
    items = {r.split("\t")[1] for r in kept}
    data = root / name
    data.mkdir()
    (data / f"{name}.inter").write_text("\n".join([header, *kept]) + "\n")
    item_header, *item_rows = (source / "ml-100k.item").read_text().splitlines()
    (data / f"{name}.item").write_text("\n".join([item_header, *(r for r in item_rows if r.split("\t")[0] in items)]) + "\n")
    scenario = root / "scenarios" / name / "scenario.json"
    scenario.parent.mkdir(parents=True)
    scenario.write_text(json.dumps({"name": name, "dataset": str(data), "domain": "movie"}))
    return str(data)


def _train(home: Path, model_dir: str, name: str, seed: int) -> None:
    """One epoch of real towers on scenario `name`'s catalog, saved as its adapter (as `adapters train` saves one)."""
    from llmrec.adapters.embedding import EmbeddingTrainConfig, build_manifest, save_adapter, train_towers
    from llmrec.data.datasets import load_dataset
    from llmrec.data.split import LeaveOneOutSplit
    from llmrec.engines.encoder import ItemEncoderConfig, item_vectors
    from llmrec.engines.models import pick_dtype
    from llmrec.scenario import save_scenario

    scenario = load_scenario(name, home)
    dataset = load_dataset(scenario.dataset, home)
    split = LeaveOneOutSplit.from_dataset(dataset)
    config = EmbeddingTrainConfig(epochs=1, seeds=1, seed=seed, encoder=ItemEncoderConfig(dtype=pick_dtype()))
    vectors = item_vectors(model_dir, list(dataset.items.values()), home, config.encoder, progress=False)
    result = train_towers(vectors, split, config, progress=False)
    folder = save_adapter(home / "scenarios" / name / "adapter-embedding", result.tower,
                          build_manifest(model_dir, config, split, result, scenario=name, dataset=scenario.dataset))
    scenario.adapter = AdapterSpec(name=f"{name}-embedding", path=str(folder))
    save_scenario(scenario, home)


@pytest.fixture(scope="module")
def two(tmp_path_factory, home, model_dir, settings):
    """Settings on a home with scenarios `left` (ML-100K users 1-15) and `right` (users 300-315), each with towers."""
    root = tmp_path_factory.mktemp("retarget-home")
    (root / "models").symlink_to(home / "models")
    _catalog(root, home, "left", range(1, 16))
    _catalog(root, home, "right", range(300, 316))
    _train(root, model_dir, "left", 0)
    _train(root, model_dir, "right", 1)
    return settings.model_copy(update={"home": root, "model": model_dir})


def towers(scenario, model_dir):
    from llmrec.ranking.embedding import load_two_tower

    return load_two_tower(scenario.adapter, model_dir)


def standardisation_of(settings, scenario: str, model_dir: str):
    found = load_scenario(scenario, settings.home)
    manifest = json.loads((Path(found.adapter.path) / "manifest.json").read_text())
    return catalog_standardisation(model_dir, found.dataset, settings.home, manifest["config"]["encoder"], progress=False)


def test_the_two_catalogs_standardise_differently(two, model_dir):
    (lc, ls), (rc, rs) = standardisation_of(two, "left", model_dir), standardisation_of(two, "right", model_dir)
    assert np.array_equal(towers(load_scenario("left", two.home), model_dir)[0].tensors["center"], lc)  # trained with its own
    assert np.abs(lc - rc).max() > 1e-3 and np.abs(ls - rs).max() > 1e-3


def test_retarget_keeps_the_maps_and_takes_the_serving_catalogs_standardisation(two, model_dir):
    from llmrec.adapters.curve import restandardised
    from llmrec.data.datasets import load_dataset
    from llmrec.engines.encoder import ItemEncoderConfig, item_vectors
    from llmrec.pipeline import build_pipeline
    from llmrec.ranking.embedding import EmbeddingRanker
    from llmrec.schemas import Candidate
    from llmrec.testing import ScriptedEngine

    scenario, path = retarget_adapter(two, "left", "right", "left-on-right", progress=False)
    assert path.exists() and scenario.dataset == load_scenario("right", two.home).dataset and scenario.fusion.weight is None
    (moved, manifest), (source, _) = towers(scenario, model_dir), towers(load_scenario("left", two.home), model_dir)
    assert all(np.array_equal(moved.tensors[k], source.tensors[k]) for k in MAPS)
    center, scale = standardisation_of(two, "right", model_dir)
    assert np.array_equal(moved.tensors["center"], center) and np.array_equal(moved.tensors["scale"], scale)
    assert manifest["retargeted_from"]["scenario"] == "left" and manifest["dataset"] == scenario.dataset
    # served on the right catalog, it scores as the curve's zero-shot arm scores the same towers there
    dataset = load_dataset(scenario.dataset, two.home)
    vectors = item_vectors(model_dir, list(dataset.items.values()), two.home, ItemEncoderConfig.model_validate(manifest["config"]["encoder"]),
                           progress=False)
    history = list(dataset.items.values())[:5]
    candidates = [Candidate(item_id=i, retriever_rank=r, retriever_score=0.0) for r, i in enumerate(list(dataset.items)[5:25])]
    served = build_pipeline(two, "left-on-right", engine=ScriptedEngine(), progress=False).ranker.score_many([(history, candidates)])
    curve = EmbeddingRanker(restandardised(source, vectors), vectors).score_many([(history, candidates)])
    np.testing.assert_allclose(served[0].logprobs, curve[0].logprobs, rtol=1e-5, atol=1e-5)


def test_a_cross_catalog_merge_standardises_every_input_by_the_merged_catalog(two, model_dir):
    left, right = (load_scenario(n, two.home) for n in ("left", "right"))
    request = MergeRequest(into="both-right", inputs=parse_sources("left:0.5,right:0.5"), method="ties", density=0.5,
                           dataset=right.dataset)
    scenario, _ = merge_adapters(two, request)
    merged, manifest = towers(scenario, model_dir)
    center, scale = standardisation_of(two, "right", model_dir)
    np.testing.assert_allclose(merged.tensors["center"], center, rtol=1e-6)  # right's own, and left's retargeted
    np.testing.assert_allclose(merged.tensors["scale"], scale, rtol=1e-6)
    expected = merge_towers([towers(s, model_dir)[0].tensors for s in (left, right)], [0.5, 0.5], "ties", 0.5)
    for name in MAPS:
        np.testing.assert_allclose(merged.tensors[name], expected[name], rtol=1e-6)
    assert manifest["restandardised"] == [left.adapter.name]
    # the same inputs merged for the left catalog: the maps are the same, the standardisation left's
    other, _ = merge_adapters(two, request.model_copy(update={"into": "both-left", "dataset": left.dataset}))
    left_merged, _ = towers(other, model_dir)
    assert all(np.array_equal(left_merged.tensors[k], merged.tensors[k]) for k in MAPS)
    assert np.array_equal(left_merged.tensors["center"], towers(left, model_dir)[0].tensors["center"])


def test_retarget_refusals_leave_nothing_behind(two, model_dir, tmp_path):
    import shutil

    with pytest.raises(RunConflict, match="new name"):
        retarget_adapter(two, "left", "right", "right")
    retarget_adapter(two, "left", "right", "taken", progress=False)
    before = (two.home / "scenarios" / "taken" / "scenario.json").read_text()
    with pytest.raises(RunConflict, match="exists already"):
        retarget_adapter(two, "right", "left", "taken")
    assert (two.home / "scenarios" / "taken" / "scenario.json").read_text() == before
    lora = tmp_path / "lora"
    shutil.copytree(load_scenario("left", two.home).adapter.path, lora)
    manifest = json.loads((lora / "manifest.json").read_text())
    (lora / "manifest.json").write_text(json.dumps({**manifest, "objective": "listwise"}))
    folder = two.home / "scenarios" / "lora-left"
    folder.mkdir()
    (folder / "scenario.json").write_text(json.dumps({"name": "lora-left", "dataset": load_scenario("left", two.home).dataset,
                                                      "adapter": {"name": "l", "path": str(lora)}}))
    with pytest.raises(AdapterMismatch, match="not embedding") as caught:
        retarget_adapter(two, "lora-left", "right", "new")
    assert caught.value.exit_code == 6
    assert not (two.home / "scenarios" / "new").exists() and not any((two.home / ".partial").glob("new.*"))
