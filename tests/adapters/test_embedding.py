"""The `embedding` objective end to end: real ML-100K rows, real SmolLM2 item vectors, real Chroma, real training.

A small scenario (the first 40 users of ML-100K and the few hundred items they saw) lives in a
temporary home whose `models` folder links to the bootstrapped cache, so nothing is downloaded.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from llmrec.adapters.embedding import EmbeddingTrainConfig, join, save_adapter, train_towers
from llmrec.adapters.towers_data import next_item_examples
from llmrec.errors import AdapterMismatch
from llmrec.manifest import read_manifest
from llmrec.ranking.embedding import TwoTowerConfig, load_two_tower
from llmrec.scenario import AdapterSpec, load_scenario

pytestmark = pytest.mark.slow
USERS = 40


@pytest.fixture(scope="module")
def tiny_home(tmp_path_factory, home, model_dir):
    """A home with scenario `tiny`: the first USERS users' ML-100K interactions and the items they saw."""
    from llmrec.testing import tiny_home as build

    return build(tmp_path_factory.mktemp("embedding-home"), home, USERS)


def cli(*args: str) -> int:
    from llmrec.entrypoints.cli import main

    return main(list(args))


@pytest.fixture(scope="module")
def trained(tiny_home, model_dir):
    """`llmrec adapters train --objective embedding --epochs 1` on the tiny scenario."""
    assert cli("adapters", "train", "--objective", "embedding", "--epochs", "1", "--home", str(tiny_home),
               "--model", model_dir, "--scenario", "tiny") == 0
    return load_scenario("tiny", tiny_home)


def test_training_writes_the_adapter_folder_and_the_scenario(trained, model_dir):
    folder = Path(trained.adapter.path)
    assert sorted(p.name for p in folder.iterdir()) == ["adapter.safetensors", "manifest.json"]
    manifest = read_manifest(folder)
    assert manifest["objective"] == "embedding"
    assert manifest["base_model"]["path"] == str(Path(model_dir).resolve()) and len(manifest["base_model"]["sha256"]) == 64
    assert len(manifest["data_fingerprint"]) == 64 and [s["seed"] for s in manifest["seeds"]] == [0, 1, 2, 3, 4]
    curve = manifest["seeds"][0]["curve"]
    assert len(curve) == 1 and curve[0]["train_loss"] > 0 and 0 <= manifest["valid_ndcg10_alone_full_ranking"] <= 1
    grid = manifest["fusion"]["grid"]
    assert set(grid) == {"inf" if math.isinf(w) else str(w) for w in EmbeddingTrainConfig().fusion_grid}
    assert trained.fusion.fitted_on.adapter == trained.adapter.name and trained.fusion.fitted_on.grid == grid
    fit = trained.fusion.fitted_on
    assert (fit.best_weight is None) == (max(grid, key=lambda w: (grid[w], math.inf if w == "inf" else float(w))) == "inf")
    # the best weight ships only with a significant validation gain over the retriever's order
    assert (trained.fusion.weight is None) == (fit.best_weight is None or fit.p_value >= fit.alpha)
    # histories of at most 3 items get a weight of their own, fitted the same way on 3-item validation histories
    short = trained.fusion.short_history
    assert short.max_items == 3 and "first 3 training items" in short.fitted_on.split and short.fitted_on.users == fit.users
    assert (short.weight is None) == (short.fitted_on.best_weight is None or short.fitted_on.p_value >= short.fitted_on.alpha)
    assert manifest["fusion"]["short_history"]["grid"] == short.fitted_on.grid


def test_reloaded_adapter_gives_identical_scores(tiny_home, model_dir, tmp_path):
    from llmrec.data.datasets import load_dataset
    from llmrec.data.split import LeaveOneOutSplit
    from llmrec.engines.encoder import ItemEncoderConfig, item_vectors
    from llmrec.engines.models import pick_dtype
    from llmrec.ranking.embedding import EmbeddingRanker
    from llmrec.schemas import Candidate

    dataset = load_dataset(str(tiny_home / "tiny"), tiny_home)
    split = LeaveOneOutSplit.from_dataset(dataset)
    vectors = item_vectors(model_dir, list(dataset.items.values()), tiny_home, ItemEncoderConfig(dtype=pick_dtype()))  # the CLI's: cached
    result = train_towers(vectors, split, EmbeddingTrainConfig(epochs=1, seeds=1), progress=False)
    folder = save_adapter(tmp_path / "adapter", result.tower, {"objective": "embedding", "base_model": {"path": str(Path(model_dir).resolve())},
                                                               "config": {"tower": result.tower.config.model_dump()}})
    reloaded, _ = load_two_tower(AdapterSpec(name="x", path=str(folder)), model_dir)
    assert all(np.array_equal(reloaded.tensors[k], result.tower.tensors[k]) for k in result.tower.tensors)
    user = split.valid_users()[0]
    history = [dataset.items[i] for i in split.train[user]]
    candidates = [Candidate(item_id=i, retriever_rank=r, retriever_score=0.0) for r, i in enumerate(list(dataset.items)[:20])]
    before = EmbeddingRanker(result.tower, vectors).score_many([(history, candidates)])
    after = EmbeddingRanker(reloaded, vectors).score_many([(history, candidates)])
    assert before == after and not np.allclose(before[0].logprobs, before[0].logprobs[0])


def test_pipeline_ranks_with_the_adapter_and_never_hands_it_to_the_llm(trained, tiny_home, model_dir):
    from llmrec.pipeline import build_pipeline
    from llmrec.ranking.embedding import EmbeddingRanker
    from llmrec.schemas import RecommendRequest
    from llmrec.settings import Settings
    from llmrec.testing import ScriptedEngine

    engine = ScriptedEngine()
    engine.model_name = trained.fusion.fitted_on.model  # the weights were fitted for this model's name
    pipeline = build_pipeline(Settings(home=tiny_home, model=model_dir), "tiny", engine=engine, progress=False)
    assert isinstance(pipeline.ranker, EmbeddingRanker) and pipeline.explainer.adapter is None
    short = trained.fusion.short_history
    assert pipeline.fusion_note is None and pipeline.ranker.short_history.max_items == 3
    assert pipeline.ranker.short_history.weight == (math.inf if short.weight is None else short.weight)
    engine.model_name = "another-model"  # a fit for another model applies to neither weight
    assert build_pipeline(Settings(home=tiny_home, model=model_dir), "tiny", engine=engine, progress=False).ranker.short_history is None
    user = pipeline.dataset.users()[0]
    pipeline.ranker.config = pipeline.ranker.config.model_copy(update={"fusion_weight": 0.0})  # the towers alone
    ranked = pipeline.recommend(RecommendRequest(user_id=user, k=20)).recommendations
    assert len(ranked) == 20 and [r.llm_logprob for r in ranked] == sorted((r.llm_logprob for r in ranked), reverse=True)
    assert math.isclose(sum(math.exp(r.llm_logprob) for r in ranked), 1.0, rel_tol=1e-5)  # a log-softmax over the candidates
    assert engine.calls == []  # ranking costs no LLM call
    # w = inf (unfitted) keeps exactly the retriever's order
    pipeline.ranker.config = pipeline.ranker.config.model_copy(update={"fusion_weight": math.inf})
    ranked = pipeline.recommend(RecommendRequest(user_id=user, k=10)).recommendations
    assert [r.retriever_rank for r in ranked] == list(range(10))


def test_an_adapter_for_another_base_model_is_refused_with_exit_6(trained, tiny_home, model_dir, capsys):
    folder = Path(trained.adapter.path)
    manifest_path = folder / "manifest.json"
    original = manifest_path.read_text()
    manifest = json.loads(original)
    try:
        manifest["base_model"].update(path="/elsewhere/SmolLM2-135M-Instruct", sha256="0" * 64)
        manifest_path.write_text(json.dumps(manifest))
        with pytest.raises(AdapterMismatch, match="built for base model '/elsewhere"):
            load_two_tower(trained.adapter, model_dir)
        assert cli("recommend", "--home", str(tiny_home), "--model", model_dir, "--scenario", "tiny", "--user", "1") == 6
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "built for base model" in err[0]
        # the same weights in a moved folder are the same base model
        manifest["base_model"].update(path="/moved/SmolLM2-135M-Instruct", sha256=json.loads(original)["base_model"]["sha256"])
        manifest_path.write_text(json.dumps(manifest))
        load_two_tower(trained.adapter, model_dir)
    finally:
        manifest_path.write_text(original)


def test_adapters_list_shows_the_objective_and_validation_scores(trained, tiny_home, model_dir, capsys):
    assert cli("adapters", "list", "--home", str(tiny_home), "--model", model_dir) == 0
    line = [row for row in capsys.readouterr().out.splitlines() if row.startswith("tiny\t")][0].split("\t")
    assert line[2] == "embedding" and line[3] == "SmolLM2-135M-Instruct"


def test_examples_are_every_next_item_position_with_recency_weights():
    data = next_item_examples({"u": ["a", "b", "c"], "v": ["c"]}, {"a": 0, "b": 1, "c": 2}, TwoTowerConfig(history_items=2, decay=0.5))
    assert data.history.tolist() == [[-1, 0], [0, 1]] and data.target.tolist() == [1, 2]
    assert data.weights[0].tolist() == [0.0, 1.0] and np.allclose(data.weights[1], [1 / 3, 2 / 3])


def test_joined_towers_score_the_mean_of_their_scores():
    from llmrec.ranking.embedding import TwoTower

    rng = np.random.default_rng(0)
    config = TwoTowerConfig(history_items=3, dim=4)
    towers = [TwoTower({"center": np.zeros(6, np.float32), "scale": np.ones(6, np.float32),
                        **{n: rng.normal(size=(6, 4) if n.endswith("weight") else 4).astype(np.float32)
                           for n in ("user_weight", "user_bias", "item_weight", "item_bias")}}, config) for _ in range(3)]
    history, items = rng.normal(size=(3, 6)).astype(np.float32), rng.normal(size=(5, 6)).astype(np.float32)
    joined = join(towers)
    assert joined.config.dim == 12
    mean = np.mean([t.items(items) @ t.user(history) for t in towers], axis=0)
    assert np.allclose(joined.items(items) @ joined.user(history), mean, atol=1e-5)


def test_eval_reports_the_adapter_fused_and_alone_with_paired_tests(trained, tiny_home, model_dir, tmp_path):
    from llmrec.eval.harness import EvalConfig, run_eval
    from llmrec.settings import Settings
    from llmrec.testing import ScriptedEngine

    engine = ScriptedEngine()
    outcome = run_eval(Settings(home=tiny_home, model=model_dir), EvalConfig(scenario="tiny", explain_users=0, bootstrap=100),
                       tmp_path / "report", engine=engine, progress=False)
    report = outcome.report
    assert {"hybrid", "llmrec-embedding"} <= set(report["methods"]) and "llmrec" not in report["methods"]
    assert report["identity"]["prompts"]["rank"] is None and report["position_bias"] is None
    tested = {(t["a"], t["b"], t["group"]) for t in report["paired_tests"]}
    assert ("llmrec-embedding", "hybrid", "all users") in tested
    assert engine.calls == []  # no LLM call: neither a warm-up nor a ranking prompt


def test_training_data_without_a_next_item_is_a_dataset_error():
    from llmrec.data.split import LeaveOneOutSplit
    from llmrec.engines.encoder import ItemVectors
    from llmrec.errors import DatasetError

    vectors = ItemVectors(("a", "b"), np.eye(2, dtype=np.float32))
    with pytest.raises(DatasetError, match="no next-item training examples") as err:
        train_towers(vectors, LeaveOneOutSplit({"u": ["a"], "v": ["b"]}), EmbeddingTrainConfig(), progress=False)
    assert err.value.exit_code == 4
