"""`llmrec adapters curve`: every arm at every shot count (the meta-learned start included), with the controls, the
paired tests and the item cold-start slice, on a tiny real scenario (the first 40 ML-100K users) with real SmolLM2
item vectors, real MiniLM vectors and real Chroma."""

from __future__ import annotations

import json

import numpy as np
import pytest

from llmrec.adapters.curve import CurveConfig, restandardised, run_curve
from llmrec.adapters.embedding import TrainableTowers
from llmrec.engines.encoder import ItemVectors
from llmrec.errors import AdapterMismatch, LLMRecError, RunConflict
from llmrec.ranking.embedding import TwoTower, TwoTowerConfig
from llmrec.settings import Settings

pytestmark = pytest.mark.slow
USERS = 40


@pytest.fixture(scope="module")
def source(tmp_path_factory, home, model_dir):
    """A tiny home whose `tiny` scenario has a trained embedding adapter (one seed, one epoch): the transfer source;
    and `tiny-meta`, a Reptile start meta-trained over tiny's users (a few tasks): the meta arm's."""
    from llmrec.entrypoints.cli import main
    from llmrec.testing import tiny_home

    root = tiny_home(tmp_path_factory.mktemp("curve-home"), home, USERS)
    assert main(["adapters", "train", "--objective", "embedding", "--epochs", "1", "--seeds", "1", "--home", str(root),
                 "--model", model_dir, "--scenario", "tiny"]) == 0
    assert main(["adapters", "meta", "--from", "tiny", "--into", "tiny-meta", "--meta-iterations", "4", "--task-users", "8",
                 "--inner-steps", "2", "--home", str(root), "--model", model_dir]) == 0
    return Settings(home=root, model=model_dir)


@pytest.fixture(scope="module")
def curve(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("curve")
    config = CurveConfig(scenario="tiny", init_from="tiny", meta_from="tiny-meta", shots=(0, 8, None), seeds=2, seeds_all=1, epochs=1,
                         resamples=200,
                         arms=("scratch", "transfer", "meta", "random", "minilm"), cold_items_max=2)
    return out, config, run_curve(source, config, out, progress=False)


def test_every_arm_has_its_points_and_zero_shots_is_transfer_alone(curve):
    _, _, report = curve
    points = {(p["arm"], p["shots_label"]) for p in report["points"]}
    assert points == {("transfer", "0"), ("meta", "0"), *((arm, s) for arm in ("scratch", "transfer", "meta", "random", "minilm")
                                                         for s in ("8", "all"))}
    assert report["test_users"] >= 30 and 0 <= report["hybrid"]["mean"] <= 1
    for point in report["points"]:
        assert point["alone"]["ci95"][0] <= point["alone"]["mean"] <= point["alone"]["ci95"][1]
        assert len(point["runs"]) == (2 if point["shots_label"] == "8" else 1)  # one seed at 0 shots, and at all (seeds_all)
        # every point that learned (the `all` one too) fitted and gated its fusion weight; zero shots keep the retriever's order
        assert all((run["gate"] is None) == (point["shots_label"] == "0") for run in point["runs"])


def test_each_arm_is_paired_against_scratch_and_both_controls_on_the_same_users(curve):
    _, _, report = curve
    scratch = next(p for p in report["points"] if p["arm"] == "scratch" and p["shots_label"] == "8")
    assert set(scratch) >= {"vs_random", "vs_minilm", "vs_hybrid_fused"} and "vs_scratch" not in scratch
    transfer = next(p for p in report["points"] if p["arm"] == "transfer" and p["shots_label"] == "8")
    assert {"vs_scratch", "vs_random", "vs_minilm"} <= set(transfer)
    assert transfer["vs_scratch"]["alone"]["wins"] + transfer["vs_scratch"]["alone"]["losses"] <= report["test_users"]
    meta = next(p for p in report["points"] if p["arm"] == "meta" and p["shots_label"] == "8")
    assert {"vs_scratch", "vs_transfer", "vs_random", "vs_minilm"} <= set(meta)
    zero = next(p for p in report["points"] if p["arm"] == "meta" and p["shots_label"] == "0")
    assert set(zero) >= {"vs_transfer"} and "vs_scratch" not in zero  # at 0 shots only the two starts ran


def test_the_item_cold_start_slice_is_every_point_on_the_test_users_whose_target_is_a_rare_item(curve, source):
    from llmrec.data.datasets import load_dataset
    from llmrec.data.split import LeaveOneOutSplit
    from llmrec.scenario import load_scenario

    _, config, report = curve
    home = source.resolved_home()
    split = LeaveOneOutSplit.from_dataset(load_dataset(load_scenario("tiny", home).dataset, home))
    counts = {}
    for items in split.train.values():
        for item in items:
            counts[item] = counts.get(item, 0) + 1
    cold = [u for u in split.test_users() if counts.get(split.test[u], 0) <= config.cold_items_max]
    assert 0 < len(cold) < report["test_users"] and report["cold_slice"]["test_users"] == len(cold)
    for point in report["points"]:
        part = point["cold"]
        assert part["alone"]["ci95"][0] <= part["alone"]["mean"] <= part["alone"]["ci95"][1]
        assert part["vs_hybrid_fused"]["wins"] + part["vs_hybrid_fused"]["losses"] <= len(cold)
        if point["arm"] != "scratch" and point["shots_label"] != "0":
            assert part["vs_scratch"]["alone"]["wins"] + part["vs_scratch"]["alone"]["losses"] <= len(cold)


def test_the_run_writes_a_table_a_plot_and_refuses_another_runs_folder(curve, source):
    out, config, report = curve
    assert json.loads((out / "curve.json").read_text())["config"] == config.model_dump(mode="json")
    table = (out / "curve.md").read_text()
    assert "| transfer | 0 |" in table and "| minilm | all |" in table and "| meta | 8 |" in table
    assert table.count("| meta | all |") == 2 and "## Item cold-start slice" in table  # the slice's table too
    assert (out / "curve.png").stat().st_size > 1000
    with pytest.raises(RunConflict, match="another run's curve"):
        run_curve(source, config.model_copy(update={"seeds": 1}), out, progress=False)


def test_bad_requests_are_one_line_errors(source, tmp_path):
    with pytest.raises(LLMRecError, match="more than the .* training users"):
        run_curve(source, CurveConfig(scenario="tiny", shots=(10_000,), arms=("scratch",)), tmp_path / "a", progress=False)
    with pytest.raises(LLMRecError, match="needs --init-from"):
        run_curve(source, CurveConfig(scenario="tiny", shots=(8,), arms=("transfer",)), tmp_path / "b", progress=False)
    from llmrec.scenario import load_scenario, save_scenario

    bare = load_scenario("tiny", source.resolved_home()).model_copy(update={"name": "bare", "adapter": None})
    save_scenario(bare, source.resolved_home())
    with pytest.raises(AdapterMismatch, match="no `embedding` adapter"):
        run_curve(source, CurveConfig(scenario="tiny", init_from="bare", shots=(8,)), tmp_path / "c", progress=False)
    with pytest.raises(LLMRecError, match="the meta arm needs --meta-from"):
        run_curve(source, CurveConfig(scenario="tiny", shots=(8,), arms=("meta",)), tmp_path / "d", progress=False)
    assert not any((tmp_path / name).exists() for name in "abcd")


@pytest.mark.parametrize(("meta_from", "code", "says"), [
    ("no-such", 3, "unknown scenario 'no-such'"),
    ("bare-meta", 6, "--meta-from bare-meta: the scenario has no `embedding` adapter"),
])
def test_a_meta_start_that_is_missing_is_one_line_and_an_exit_code(source, tmp_path, capsys, meta_from, code, says):
    from llmrec.entrypoints.cli import main
    from llmrec.scenario import load_scenario, save_scenario

    home = source.resolved_home()
    save_scenario(load_scenario("tiny", home).model_copy(update={"name": "bare-meta", "adapter": None}), home)
    out = tmp_path / "out"
    assert main(["adapters", "curve", "--scenario", "tiny", "--arms", "scratch,meta", "--meta-from", meta_from, "--shots", "8",
                 "--out", str(out), "--home", str(home), "--model", source.model]) == code
    err = capsys.readouterr().err.strip()
    assert err.startswith("llmrec: error:") and says in err and "\n" not in err
    assert not out.exists()


def test_a_transferred_start_is_the_source_maps_over_this_catalogs_standardisation():
    rng = np.random.default_rng(0)
    tensors = {"center": np.zeros(6, np.float32), "scale": np.ones(6, np.float32),
               "user_weight": rng.standard_normal((6, 4)).astype(np.float32), "user_bias": np.zeros(4, np.float32),
               "item_weight": rng.standard_normal((6, 4)).astype(np.float32), "item_bias": np.ones(4, np.float32)}
    source = TwoTower(tensors, TwoTowerConfig(dim=4))
    vectors = ItemVectors(("a", "b", "c"), (rng.standard_normal((3, 6)) * 5 + 3).astype(np.float32))
    moved = restandardised(source, vectors)
    assert np.allclose(moved.tensors["center"], vectors.matrix.mean(0), atol=1e-5)
    assert np.array_equal(moved.tensors["user_weight"], tensors["user_weight"])
    start = TrainableTowers(vectors.matrix, TwoTowerConfig(dim=64), seed=1, init=source).export()
    assert np.allclose(start.tensors["user_weight"], tensors["user_weight"]) and np.allclose(start.tensors["item_bias"], 1.0)
    assert start.config.dim == 4


def test_the_minilm_control_read_from_chroma_is_the_one_encoded_from_each_items_document(source):
    from llmrec.adapters.curve import minilm_vectors
    from llmrec.data.datasets import load_dataset
    from llmrec.pipeline import build_index
    from llmrec.scenario import load_scenario

    home = source.resolved_home()
    dataset = load_dataset(load_scenario("tiny", home).dataset, home)
    ids = sorted(dataset.items)[:24]
    stored = minilm_vectors(source, dataset.items, ids, build_index(source, dataset, progress=False))
    encoded = minilm_vectors(source, dataset.items, ids)
    assert stored.ids == encoded.ids == tuple(ids)
    assert np.allclose(stored.matrix, encoded.matrix, atol=1e-5)
