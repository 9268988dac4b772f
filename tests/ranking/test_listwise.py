"""Ranker logic with a scripted engine: fusion, permutation averaging, order of results."""

import math

import pytest

from llmrec.prompts import RankPromptBuilder
from llmrec.ranking.fusion import fuse, retriever_order
from llmrec.ranking.listwise import LLMRanker, LLMRankerConfig
from llmrec.schemas import Candidate, Item
from llmrec.testing import ScriptedEngine

CATALOG = {str(i): Item(item_id=str(i), title=f"Movie {i}", year=1990) for i in range(30)}
CANDS = [Candidate(item_id=str(i), retriever_rank=r, retriever_score=1.0 / (r + 1)) for r, i in enumerate([5, 7, 9, 11])]


def prefers(item_id):
    """Scores the label of `item_id` high wherever it is listed: a content-driven ranker."""
    def score(prompt, n):
        lines = [line for line in prompt.splitlines() if len(line) > 2 and line[1] == "."]
        return [0.0 if line.split(". ", 1)[1].startswith(f"Movie {item_id} ") else -5.0 for line in lines][:n]
    return score


def ranker(engine, weight, permutations=1):
    return LLMRanker(engine, CATALOG, RankPromptBuilder(), LLMRankerConfig(fusion_weight=weight, permutations=permutations))


def test_result_is_a_permutation_of_candidates():
    ranked = ranker(ScriptedEngine(prefers("9")), 0.0).rank([CATALOG["1"]], CANDS)
    assert sorted(r.item_id for r in ranked) == sorted(c.item_id for c in CANDS)
    assert [r.rank for r in ranked] == [0, 1, 2, 3]


def test_weight_zero_follows_the_llm_and_infinite_weight_the_retriever():
    engine = ScriptedEngine(prefers("11"))
    assert ranker(engine, 0.0).rank([CATALOG["1"]], CANDS)[0].item_id == "11"
    assert [r.item_id for r in ranker(engine, math.inf).rank([CATALOG["1"]], CANDS)] == ["5", "7", "9", "11"]


def test_fusion_formula():
    assert fuse([-1.0, -0.5], [0, 3], 2.0) == pytest.approx([-1.0, -0.5 - 2.0 * math.log(4)])


def test_permutations_average_scores_over_orders():
    engine = ScriptedEngine(prefers("9"))
    ranked = ranker(engine, 0.0, permutations=3).rank([CATALOG["1"]], CANDS)
    assert ranked[0].item_id == "9" and ranked[0].llm_logprob == pytest.approx(0.0)
    assert engine.calls == [("score", 3)]


def test_a_position_copying_llm_gains_nothing_from_permutations():
    # Always prefers label A: with one order it copies the retriever; averaged over orders the bias flattens.
    engine = ScriptedEngine(lambda p, n: [0.0] + [-5.0] * (n - 1))
    one = ranker(engine, 0.0).rank([CATALOG["1"]], CANDS)
    many = ranker(engine, 0.0, permutations=8).rank([CATALOG["1"]], CANDS)
    assert one[0].llm_logprob == 0.0
    assert max(r.llm_logprob for r in many) < 0.0


def test_retriever_order_fallback():
    shuffled = [CANDS[2], CANDS[0], CANDS[3], CANDS[1]]
    assert [r.item_id for r in retriever_order(shuffled)] == ["5", "7", "9", "11"]


def test_a_request_without_candidates_costs_no_llm_call():
    engine = ScriptedEngine(prefers("9"))
    empty, full = ranker(engine, 0.0).score_many([([CATALOG["1"]], []), ([CATALOG["1"]], CANDS)])
    assert empty.logprobs == [] and len(full.logprobs) == 4
    assert engine.calls == [("score", 1)]


def test_infinite_weight_keeps_the_retriever_order_even_for_minus_infinite_logprobs():
    """A label the model never gives (logprob -inf) must not drop its item under w = inf."""
    fused = fuse([-1.0, -math.inf, -3.0, -math.inf], [0, 1, 2, 3], math.inf)
    assert all(math.isfinite(f) for f in fused)
    assert sorted(range(4), key=lambda i: -fused[i]) == [0, 1, 2, 3]


def test_retriever_order_can_continue_after_a_reranked_head():
    tail = [Candidate(item_id="x", retriever_rank=21, retriever_score=0.1), Candidate(item_id="y", retriever_rank=20, retriever_score=0.2)]
    ranked = retriever_order(tail, start=20)
    assert [(r.item_id, r.rank) for r in ranked] == [("y", 20), ("x", 21)]
