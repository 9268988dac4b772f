"""Ranking metrics against hand-computed values (one relevant item per user)."""

from __future__ import annotations

import math

import pytest

from llmrec.eval.metrics import evaluate_ranking, hit_at, mean, mean_rows, mrr, ndcg_at, recall_at

RANKED = ["a", "b", "c", "d", "e"]


@pytest.mark.parametrize(
    ("target", "k", "hit", "ndcg"),
    [
        ("a", 1, 1.0, 1.0),                 # rank 0: 1/log2(2) = 1
        ("b", 1, 0.0, 0.0),
        ("b", 2, 1.0, 0.6309297535714575),  # rank 1: 1/log2(3)
        ("c", 5, 1.0, 0.5),                 # rank 2: 1/log2(4)
        ("e", 5, 1.0, 0.38685280723454163),  # rank 4: 1/log2(6)
        ("e", 4, 0.0, 0.0),
        ("z", 5, 0.0, 0.0),
        ("a", 100, 1.0, 1.0),               # k beyond the list
    ],
)
def test_hit_recall_ndcg_golden(target: str, k: int, hit: float, ndcg: float) -> None:
    assert hit_at(RANKED, target, k) == hit
    assert recall_at(RANKED, target, k) == hit
    assert ndcg_at(RANKED, target, k) == pytest.approx(ndcg, abs=1e-12)


@pytest.mark.parametrize(("target", "value"), [("a", 1.0), ("b", 0.5), ("d", 0.25), ("e", 0.2), ("z", 0.0)])
def test_mrr_uses_the_whole_list(target: str, value: float) -> None:
    assert mrr(RANKED, target) == value


def test_bad_k_and_empty_lists() -> None:
    with pytest.raises(ValueError):
        hit_at(RANKED, "a", 0)
    assert hit_at([], "a", 10) == 0.0
    assert mrr([], "a") == 0.0


def test_mean_helpers() -> None:
    assert mean([1.0, 0.0, 0.5, 0.5]) == 0.5
    with pytest.raises(ValueError):
        mean([])
    rows = [evaluate_ranking(RANKED, "b", (1, 5)), evaluate_ranking(RANKED, "z", (1, 5))]
    assert rows[0] == {"HR@1": 0.0, "HR@5": 1.0, "NDCG@10": 1 / math.log2(3), "MRR": 0.5}
    assert mean_rows(rows) == pytest.approx({"HR@1": 0.0, "HR@5": 0.5, "NDCG@10": 0.5 / math.log2(3), "MRR": 0.25})
