"""The short-history fusion weight: which weight a ranking uses, in the ranker and in the harness alike (own logic)."""

from __future__ import annotations

import math

from llmrec.eval.methods import rerank_head
from llmrec.protocols import LLMScores
from llmrec.ranking.fusion import FusedRanking, ShortHistoryWeight, weight_for
from llmrec.schemas import Candidate

CANDS = [Candidate(item_id=str(i), retriever_rank=i, retriever_score=0.0) for i in range(5)]
LIKES_LAST = [-9.0, -9.0, -9.0, -9.0, 0.0]  # the LLM wants the retriever's last candidate first


def scores(history_items: int) -> LLMScores:
    return LLMScores(LIKES_LAST, min(history_items, 2), max(history_items - 2, 0), 0)  # used + dropped = the history's length


class Ranker(FusedRanking):
    class config:  # noqa: N801 - stands in for a ranker config
        fusion_weight = 0.0


def test_a_short_history_gets_the_short_weight_and_a_long_one_the_main_weight():
    short = ShortHistoryWeight(max_items=3, weight=math.inf)
    assert weight_for(scores(3), 0.5, short) == math.inf
    assert weight_for(scores(4), 0.5, short) == 0.5
    assert weight_for(scores(1), 0.5, None) == 0.5


def test_the_ranker_keeps_the_retrievers_order_for_short_histories_only():
    ranker = Ranker()
    ranker.short_history = ShortHistoryWeight(max_items=3, weight=math.inf)
    assert [r.item_id for r in ranker.rank_scored(CANDS, scores(2))] == ["0", "1", "2", "3", "4"]
    assert [r.item_id for r in ranker.rank_scored(CANDS, scores(10))][0] == "4"  # w = 0: the LLM alone
    ranker.short_history = None
    assert [r.item_id for r in ranker.rank_scored(CANDS, scores(2))][0] == "4"


def test_the_harness_reranks_as_the_ranker_does():
    head = {"short": CANDS, "long": CANDS}
    tails = {u: [c.item_id for c in CANDS] for u in head}
    got = rerank_head(head, tails, {"short": scores(3), "long": scores(30)}, 0.0, ShortHistoryWeight(3, math.inf))
    assert got["short"] == ["0", "1", "2", "3", "4"] and got["long"][0] == "4"
