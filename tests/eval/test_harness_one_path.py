"""The harness's LLM rows are the recommendation path's answers: for every evaluated user, the top 10 of the
`llmrec` row equals what `Pipeline.recommend` answers for the same history, on a pipeline built the same way
(`build_pipeline` on the training histories). The engine is scripted, so fusion visibly reorders the candidates."""

from __future__ import annotations

import json

import pytest

from llmrec.data.datasets import load_dataset
from llmrec.data.split import LeaveOneOutSplit
from llmrec.eval.harness import EvalConfig, run_eval
from llmrec.schemas import RecommendRequest
from llmrec.settings import Settings
from llmrec.testing import ScriptedEngine


def engine() -> ScriptedEngine:
    """Scores that depend on the prompt's text, so the fused order differs from the retriever's."""
    return ScriptedEngine(score=lambda prompt, n: [-((hash(prompt) >> i) % 7) * 0.5 for i in range(n)])


@pytest.mark.slow  # ranx compiles with numba on first use
def test_the_harness_llm_row_is_what_the_pipeline_recommends(tmp_path, eval_home):
    from llmrec.pipeline import build_pipeline

    folder = eval_home / "scenarios" / "fused"
    folder.mkdir(parents=True)
    (folder / "scenario.json").write_text(json.dumps({"name": "fused", "dataset": "ml-100k", "domain": "movie",
                                                      "fusion": {"weight": 0.5}}))
    settings = Settings(home=eval_home)
    out = tmp_path / "out"
    run_eval(settings, EvalConfig(scenario="fused", users=8, position_bias_users=0, explain_users=0, bootstrap=100,
                                  cold_start_items=0), out, engine=engine(), progress=False)
    rows = {r["user_id"]: r["ranked"] for r in map(json.loads, (out / "rankings-llmrec.jsonl").read_text().splitlines())}
    hybrid = {r["user_id"]: r["ranked"] for r in map(json.loads, (out / "rankings-hybrid.jsonl").read_text().splitlines())}
    split = LeaveOneOutSplit.from_dataset(load_dataset("ml-100k", eval_home))
    pipeline = build_pipeline(settings, "fused", train_histories=split.train_histories(), engine=engine(), progress=False)
    reordered = 0
    for user, ranked in rows.items():
        response = pipeline.recommend(RecommendRequest(history=split.test_history(user).item_ids, k=10))
        assert [r.item.item_id for r in response.recommendations] == ranked[:10], user
        assert response.ranking == "llm-fused"
        reordered += ranked[:10] != hybrid[user][:10]
    assert reordered > 0  # the scripted scores moved something, so the equality above is not the retriever's order twice
