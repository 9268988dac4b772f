"""The item cold-start slice (targets that are rarely seen items), `--no-llm`, the kNN peer in a run, and the split's
wording: a harness run with a scripted engine (never evidence that the LLM ranks well)."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from llmrec.data.datasets import load_dataset
from llmrec.data.split import LeaveOneOutSplit
from llmrec.eval.harness import EvalConfig, history_order, item_cold_users, run_eval
from llmrec.eval.knn import KNNGrid
from llmrec.eval.markdown import render
from llmrec.settings import Settings
from llmrec.testing import ScriptedEngine


def test_slice_is_exactly_the_targets_with_few_training_interactions() -> None:
    # Training prefixes (all but the last two items): x x x y y z / x y / x a b / z q r. Counts: x 5 (twice in u1's
    # prefix: interactions, not users), y 3, z 2, a 1, b 1; the test targets: u1 w (0), u2 z (2), u3 y (3), u4 x (5).
    split = LeaveOneOutSplit({"u1": ["x", "x", "x", "y", "y", "z", "v", "w"], "u2": ["x", "y", "t", "z"],
                              "u3": ["x", "a", "b", "s", "y"], "u4": ["z", "q", "r", "x"]})
    assert split.test == {"u1": "w", "u2": "z", "u3": "y", "u4": "x"}
    users = ["u4", "u3", "u2", "u1"]
    assert item_cold_users(split, users, 0) == ["u1"]
    assert item_cold_users(split, users, 2) == ["u2", "u1"]  # in the given order; q and r are only in u4's prefix
    assert item_cold_users(split, users, 3) == ["u3", "u2", "u1"]
    assert item_cold_users(split, users, 4) == ["u3", "u2", "u1"]
    assert item_cold_users(split, users, 5) == users
    assert item_cold_users(split, ["u2"], 5) == ["u2"]


def test_history_order_says_when_the_split_is_not_temporal(home) -> None:
    assert history_order(load_dataset("ml-100k", home)) == "timestamp"
    if not (home / "datasets" / "book-crossing").is_dir():
        pytest.skip("book-crossing not imported into this cache")
    assert history_order(load_dataset("book-crossing", home)) == "seeded random"


def _report(order: str) -> dict:
    ident = {"eval": EvalConfig().model_dump(mode="json"), "split": {"version": "v", "fingerprint": "f" * 64}, "model": "m", "adapter": None}
    return {"identity": ident, "run_id": "r", "created": "now", "wall_seconds": 60.0, "fusion_weight": None, "users": 1,
            "test_users_total": 1, "candidates": 20, "users_target_in_candidates": 0, "dataset": {
                "name": "d", "interactions": 3, "users": 1, "items": 3, "history_order": order, "notes": []},
            "methods": {}, "paired_tests": [], "random_expectation": {}, "funnel": [], "cost": {}}


def test_report_calls_a_random_order_split_random() -> None:
    random_md, temporal_md = render(_report("seeded random")), render(_report("timestamp"))
    assert "seeded random order" in random_md and "not a temporal one" in random_md and "ordered by timestamp" not in random_md
    assert "ordered by timestamp" in temporal_md and "a temporal split" in temporal_md


SMALL = dict(users=40, position_bias_users=0, explain_users=0, bootstrap=100, cold_start_items=0, cold_items_max=30)


def _expected_slice(out, home, n: int) -> list[str]:
    split = LeaveOneOutSplit.from_dataset(load_dataset("ml-100k", home))
    counts = Counter(i for h in split.train.values() for i in h)
    rows = [json.loads(line) for line in (out / "rankings-hybrid.jsonl").read_text().splitlines()]
    return [r["user_id"] for r in rows if counts[r["target"]] <= n]


@pytest.mark.slow  # the paired tests use ranx (numba-compiled on first use)
def test_scripted_run_reports_the_item_cold_start_slice(tmp_path, eval_home) -> None:
    out = tmp_path / "out"
    engine = ScriptedEngine(score=lambda prompt, n: [-float(n - i) for i in range(n)])
    run_eval(Settings(home=eval_home), EvalConfig(**SMALL), out, engine=engine, progress=False)
    report = json.loads((out / "report.json").read_text())
    cold = report["item_cold_start"]
    expected = _expected_slice(out, eval_home, 30)
    assert cold["max_training_interactions"] == 30 and cold["users"] == len(expected) > 0 and cold["of_users"] == 40
    assert set(cold["methods"]) == set(report["methods"])
    assert all(m["full"]["NDCG@10"]["n"] == len(expected) for m in cold["methods"].values())
    assert {t["a"] for t in cold["paired_tests"]} == set(report["methods"]) - {"hybrid", "oracle"}
    assert all(t["b"] == "hybrid" and t["users"] == len(expected) for t in cold["paired_tests"])
    hybrid = {json.loads(x)["user_id"]: json.loads(x) for x in (out / "rankings-hybrid.jsonl").read_text().splitlines()}
    assert cold["users_target_in_candidates"] == sum(hybrid[u]["target"] in hybrid[u]["ranked"][:20] for u in expected)
    # The slice reuses the methods' rankings: its hybrid NDCG@10 is the mean over the same users' full-run rows.
    assert cold["paired_tests"][0]["mean_b"] == pytest.approx(cold["methods"]["hybrid"]["full"]["NDCG@10"]["mean"])
    markdown = (out / "report.md").read_text()
    assert "## Item cold-start slice: test targets with at most 30 training interactions" in markdown
    assert f"{len(expected)} of the 40 test targets" in markdown and "ordered by timestamp" in markdown


@pytest.mark.slow
def test_no_llm_run_with_the_knn_peer(tmp_path, eval_home) -> None:
    out = tmp_path / "out"
    engine = ScriptedEngine()
    config = EvalConfig(**SMALL, llm=False, baselines=("knn",), knn_grid=KNNGrid(neighbours=(10, 50), shrink=(0.0,)), sampled=True)
    run_eval(Settings(home=eval_home), config, out, engine=engine, progress=False)
    assert engine.calls == []
    report = json.loads((out / "report.json").read_text())
    assert set(report["methods"]) == {"popularity", "embedding", "cooccurrence", "hybrid", "knn", "oracle"}
    assert report["paired_tests"] == [] and report["position_bias"] is None and report["explanations"] is None
    knn = report["knn"]
    assert knn["status"] == "ok" and len(knn["scores"]) == 2
    assert knn["best"] == max(knn["scores"], key=lambda p: p["valid_ndcg10"])["params"]
    assert "sampled" in report["methods"]["knn"]
    assert {t["a"] for t in report["item_cold_start"]["paired_tests"]} == {"popularity", "embedding", "cooccurrence", "knn"}
    rows = [json.loads(line) for line in (out / "rankings-knn.jsonl").read_text().splitlines()]
    assert len(rows) == 40 and all(len(r["ranked"]) == 100 for r in rows)
    markdown = (out / "report.md").read_text()
    assert "## Item-kNN peer" in markdown and "Chosen: " in markdown and "No LLM rows" in markdown


def test_cli_options_reach_the_config(monkeypatch) -> None:
    from types import SimpleNamespace

    from llmrec.entrypoints import cli, commands
    from llmrec.eval import harness

    seen = {}

    def fake_run(settings, config, out, **kwargs):
        seen["config"] = config
        return SimpleNamespace(run_id="r", report={"users": 0, "methods": {}}, seconds=0.0, out=out)

    monkeypatch.setattr(harness, "run_eval", fake_run)
    args = cli.parser().parse_args(["eval", "--out", "x", "--no-llm", "--baselines", "als,knn", "--cold-items-max", "2"])
    assert commands.eval(Settings(), args) == 0
    config = seen["config"]
    assert config.llm is False and config.baselines == ("als", "knn") and config.cold_items_max == 2
    args = cli.parser().parse_args(["eval", "--out", "x"])
    commands.eval(Settings(), args)
    assert seen["config"].llm is True and seen["config"].cold_items_max == 5
