"""`llmrec adapters meta`: Reptile over user groups of the real ML-100K training users, with the real SmolLM2 item
vectors, written as a real `embedding` adapter that `load_two_tower` reads; its task sampling and its refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from llmrec.adapters.embedding import TrainableTowers
from llmrec.adapters.meta import MetaConfig, Source, epsilon_at, reptile
from llmrec.data.split import LeaveOneOutSplit
from llmrec.engines.encoder import ItemVectors
from llmrec.ranking.embedding import TwoTowerConfig

pytestmark = pytest.mark.slow
FEW = ["--meta-iterations", "6", "--meta-batch", "2", "--task-users", "8", "--inner-steps", "3"]


@pytest.fixture(scope="module")
def meta_home(tmp_path_factory, home):
    """A home of its own for the scenarios it writes, sharing the real cache's data, models and item vectors."""
    root = tmp_path_factory.mktemp("meta-home")
    (home / "item-vectors").mkdir(exist_ok=True)
    for name in ("datasets", "models", "wheels", "chroma", "item-vectors"):
        (root / name).symlink_to(home / name)
    return root


@pytest.fixture(scope="module")
def movies(meta_home, model_dir):
    """The movies scenario's training data as the meta-learner reads it (real ML-100K, real item vectors)."""
    from llmrec.data.datasets import load_dataset
    from llmrec.engines.encoder import ItemEncoderConfig, item_vectors
    from llmrec.engines.models import pick_dtype, resolve_model
    from llmrec.settings import Settings

    settings = Settings(home=meta_home, model=model_dir)
    dataset = load_dataset("ml-100k", meta_home)
    encoder = ItemEncoderConfig(dtype=pick_dtype(settings.dtype))
    vectors = item_vectors(resolve_model(model_dir, meta_home), list(dataset.items.values()), meta_home, encoder, progress=False)
    return Source.build("movies", "ml-100k", vectors, LeaveOneOutSplit.from_dataset(dataset), TwoTowerConfig()), encoder


def _cli(meta_home, model_dir, *args: str) -> int:
    from llmrec.entrypoints.cli import main

    return main(["adapters", "meta", *args, "--home", str(meta_home), "--model", model_dir])


def test_reptile_moves_the_weights_and_writes_a_loadable_embedding_adapter(meta_home, model_dir, movies, capsys):
    from llmrec.engines.models import resolve_model
    from llmrec.ranking.embedding import load_two_tower
    from llmrec.scenario import load_scenario

    assert _cli(meta_home, model_dir, "--from", "movies", "--into", "movies-meta", *FEW) == 0
    assert "meta-learned start saved in scenario movies-meta" in capsys.readouterr().out
    scenario = load_scenario("movies-meta", meta_home)
    assert scenario.dataset == "ml-100k" and scenario.fusion.weight is None
    tower, manifest = load_two_tower(scenario.adapter, resolve_model(model_dir, meta_home))  # the same check serving runs
    assert manifest["objective"] == "embedding" and manifest["meta"]["algorithm"] == "reptile"
    assert manifest["meta"]["tasks"] == 12 and manifest["steps"] == 36
    assert [c["meta_iteration"] for c in manifest["meta"]["curve"]] == [0, 6]
    assert manifest["config"]["encoder"] == movies[1].model_dump(mode="json") and manifest["config"]["meta"]["sources"] == ["movies"]
    start = TrainableTowers(movies[0].vectors.matrix, TwoTowerConfig(), seed=0).export()  # θ before the first update
    for name in ("user_weight", "item_weight", "item_bias"):
        assert tower.tensors[name].shape == start.tensors[name].shape
        assert np.abs(tower.tensors[name] - start.tensors[name]).max() > 1e-4, f"{name} did not move"
    assert np.allclose(tower.tensors["center"], movies[0].vectors.matrix.mean(0), atol=1e-4)  # the first source's own


def test_reptile_is_seeded_and_each_outer_step_moves_toward_the_adapted_weights(movies):
    source, encoder = movies
    config = MetaConfig(sources=("movies",), encoder=encoder, meta_iterations=2, meta_batch=1, task_users=4, inner_steps=2)
    a, b = reptile([source], config, progress=False), reptile([source], config, progress=False)
    assert all(np.array_equal(a.tower.tensors[k], b.tower.tensors[k]) for k in a.tower.tensors)
    other = reptile([source], config.model_copy(update={"seed": 1}), progress=False)
    assert not np.allclose(a.tower.tensors["user_weight"], other.tower.tensors["user_weight"])
    # ε = 1 then 0: θ after the run is θ′ of the first task (the second update is annealed away)
    one = reptile([source], config.model_copy(update={"meta_iterations": 1}), progress=False)
    assert np.allclose(a.tower.tensors["user_weight"], one.tower.tensors["user_weight"], atol=1e-6)


def test_epsilon_is_annealed_linearly_to_its_end():
    config = MetaConfig(sources=("x",), meta_iterations=5, epsilon=1.0, epsilon_end=0.2)
    assert [round(epsilon_at(config, i), 6) for i in range(5)] == [1.0, 0.8, 0.6, 0.4, 0.2]
    with pytest.raises(ValueError, match="annealed down"):
        MetaConfig(sources=("x",), epsilon=0.1, epsilon_end=0.5)


def test_a_task_is_the_next_item_examples_of_its_users_alone():
    histories = {"a": ["1", "2", "3", "4", "5"], "b": ["6", "7", "8", "9", "1", "2"], "c": ["3", "4"], "d": ["5", "9", "8", "7"]}
    split = LeaveOneOutSplit(histories)  # train prefixes: a 1 2 3; b 6 7 8 9; c 3 4 (no targets); d 5 9
    vectors = ItemVectors(tuple(str(i) for i in range(1, 10)), np.eye(9, dtype=np.float32))
    source = Source.build("toy", "toy", vectors, split, TwoTowerConfig(history_items=2))
    assert source.users == ["a", "b", "c", "d"] and list(source.offsets) == [0, 2, 5, 6, 7]
    row = vectors.index()
    for n, user in enumerate(source.users):
        rows = np.arange(source.offsets[n], source.offsets[n + 1])
        assert [vectors.ids[t] for t in source.examples.target[rows]] == list(split.train[user][1:])
        assert all(h in (-1, *(row[i] for i in split.train[user])) for h in source.examples.history[rows].ravel())
    rng = np.random.default_rng(0)
    assert len(source.task_rows(rng, 10)) == 7  # a task of more users than there are: all of them, once each


def test_bad_requests_are_one_line_and_leave_nothing_behind(meta_home, model_dir, capsys):
    assert _cli(meta_home, model_dir, "--from", "no-such", "--into", "nothing", *FEW) == 3
    err = capsys.readouterr().err.strip()
    assert err.startswith("llmrec: error: unknown scenario 'no-such'") and "\n" not in err
    assert not (meta_home / "scenarios" / "nothing").exists() and not list((meta_home / ".partial").glob("nothing*"))
    assert _cli(meta_home, model_dir, "--from", "movies", "--into", "movies", *FEW) == 9
    assert "is one of the sources" in capsys.readouterr().err
    assert _cli(meta_home, model_dir, "--from", "movies", "--into", "books", *FEW) == 9  # a built-in's name
    assert _cli(meta_home, model_dir, "--from", "movies", "--into", "Bad Name", *FEW) == 3
    assert _cli(meta_home, model_dir, "--from", "movies", "--into", "x", "--epsilon", "0.1", "--epsilon-end", "0.5") == 2
    assert "annealed down" in capsys.readouterr().err


def test_an_existing_scenario_is_replaced_only_with_force(meta_home, model_dir, capsys):
    assert _cli(meta_home, model_dir, "--from", "movies", "--into", "again", *FEW) == 0
    manifest = meta_home / "scenarios" / "again" / "adapter-embedding" / "manifest.json"
    first = json.loads(manifest.read_text())["wall_time_s"]
    assert _cli(meta_home, model_dir, "--from", "movies", "--into", "again", *FEW) == 9
    assert "exists already" in capsys.readouterr().err and json.loads(manifest.read_text())["wall_time_s"] == first
    assert _cli(meta_home, model_dir, "--from", "movies", "--into", "again", *FEW, "--meta-iterations", "3", "--force") == 0
    assert json.loads(manifest.read_text())["meta"]["tasks"] == 6
