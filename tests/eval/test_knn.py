"""Item-kNN peer: similarities, neighbourhoods and rankings checked against a case computed by hand."""

from __future__ import annotations

import math
import random

import pytest

from llmrec.data.split import LeaveOneOutSplit
from llmrec.eval.knn import Cooccurrence, ItemKNN, KNNGrid, KNNParams, best_point, neighbourhoods, run_knn, tune

# c(a,b) = 2, c(a,c) = 1, c(b,c) = 2, c(c,d) = 1; n(a) = 2, n(b) = 3, n(c) = 3, n(d) = 1 (u1 holds b twice: one user).
TRAIN = {"u1": ["a", "b", "c", "b"], "u2": ["a", "b"], "u3": ["b", "c"], "u4": ["c", "d"]}
S = {("a", "b"): 2 / math.sqrt(6), ("a", "c"): 1 / math.sqrt(6), ("b", "c"): 2 / 3, ("c", "d"): 1 / math.sqrt(3)}


def sim(i: str, j: str, shrink: float = 0.0) -> float:
    """The hand-computed cosine, shrunk: c / (sqrt(n_i n_j) + shrink)."""
    pair = tuple(sorted((i, j)))
    if pair not in S:
        return 0.0
    cosine = S[pair]
    count = {("a", "b"): 2, ("a", "c"): 1, ("b", "c"): 2, ("c", "d"): 1}[pair]
    return count / (count / cosine + shrink)


def test_items_are_in_popularity_order_and_counts_are_per_user() -> None:
    counts = Cooccurrence(TRAIN)
    assert counts.items == ["b", "c", "a", "d"]  # 3, 3 (b seen first), 2, 1 users
    assert counts.users_per_item.tolist() == [3, 3, 2, 1]


@pytest.mark.parametrize("shrink", [0.0, 1.0, 10.0])
def test_similarity_is_the_shrunk_cosine(shrink) -> None:
    counts = Cooccurrence(TRAIN)
    got = counts.similarity(shrink).toarray()
    for x, i in enumerate(counts.items):
        for y, j in enumerate(counts.items):
            assert got[x, y] == pytest.approx(0.0 if i == j else sim(i, j, shrink))


def test_each_item_keeps_its_k_nearest() -> None:
    counts = Cooccurrence(TRAIN)
    w = neighbourhoods(counts.similarity(0.0), 1).toarray()
    kept = {counts.items[y]: [counts.items[x] for x in range(4) if w[x, y]] for y in range(4)}
    # a: b .816 > c .408; b: a .816 > c .667; c: b .667 > d .577 > a .408; d: c only.
    assert kept == {"a": ["b"], "b": ["a"], "c": ["b"], "d": ["c"]}
    w2 = neighbourhoods(counts.similarity(0.0), 2).toarray()
    assert [counts.items[x] for x in range(4) if w2[x, counts.items.index("c")]] == ["b", "d"]


def test_scores_and_rankings_by_hand() -> None:
    one = ItemKNN.fit(TRAIN, KNNParams(neighbours=1, shrink=0.0))
    # History [a]: a is b's nearest only, so b scores s(a, b); c and d score 0 and follow in popularity order.
    assert one.scores(["a"]) == pytest.approx({"b": sim("a", "b"), "c": 0.0, "a": 0.0, "d": 0.0})
    assert one.rank({"x": ["a"]}, 10) == {"x": ["b", "c", "d"]}
    # History [d]: d is nobody's nearest with k = 1 (popularity order); with k = 2 it is c's second, so c comes first.
    assert one.rank({"x": ["d"]}, 10) == {"x": ["b", "c", "a"]}
    two = ItemKNN.fit(TRAIN, KNNParams(neighbours=2, shrink=1.0))
    assert two.scores(["d"])["c"] == pytest.approx(sim("c", "d", 1.0))
    assert two.rank({"x": ["d"]}, 2) == {"x": ["c", "b"]}
    # History [a, d], k = 3, shrink 1: c = s(a,c) + s(d,c); b = s(a,b).
    three = ItemKNN.fit(TRAIN, KNNParams(neighbours=3, shrink=1.0))
    got = three.scores(["a", "d", "unknown"])
    assert got["c"] == pytest.approx(sim("a", "c", 1) + sim("d", "c", 1)) and got["b"] == pytest.approx(sim("a", "b", 1))
    assert three.rank({"x": ["a", "d", "unknown"]}, 10) == {"x": ["c", "b"]}


def clustered(clusters: int = 4, items: int = 8, users: int = 12, length: int = 6, seed: int = 0) -> dict[str, list[str]]:
    """Users who watch their own cluster's items, plus one item of the next cluster ("noise")."""
    rng = random.Random(seed)
    out = {}
    for c in range(clusters):
        for u in range(users):
            history = [f"c{c}-i{i}" for i in rng.sample(range(items), length)]
            history.insert(rng.randrange(length - 2), f"c{(c + 1) % clusters}-i{rng.randrange(items)}")
            out[f"c{c}-u{u}"] = history
    return out


def test_tuning_scores_every_point_and_picks_the_best() -> None:
    split = LeaveOneOutSplit(clustered())
    grid = KNNGrid(neighbours=(1, 7), shrink=(0.0, 50.0))
    points = tune(split, grid)
    assert [(p.params.neighbours, p.params.shrink) for p in points] == [(1, 0.0), (7, 0.0), (1, 50.0), (7, 50.0)]
    assert best_point(points) == max(points, key=lambda p: p.valid_ndcg10)
    assert points[1].valid_ndcg10 > points[0].valid_ndcg10  # one neighbour leaves most items unscored


def test_run_ranks_test_users_from_their_test_history() -> None:
    split = LeaveOneOutSplit(clustered())
    users = ["c0-u0", "c2-u5"]
    result = run_knn(split, users, depth=3, grid=KNNGrid(neighbours=(7,), shrink=(0.0,)))
    assert set(result.rankings) == set(users) and result.best == KNNParams(neighbours=7, shrink=0.0)
    for user in users:
        ranked = result.rankings[user]
        assert len(ranked) == 3 and not set(ranked) & set(split.test_history(user).item_ids)
        assert ranked[0].split("-")[0] == user.split("-")[0]
    assert "LensKit" in result.implementation
