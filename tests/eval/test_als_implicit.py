"""ALS (implicit) as a peer: fitted on training prefixes, history excluded, tuned on validation targets."""

from __future__ import annotations

import random

import pytest

from llmrec.data.split import LeaveOneOutSplit
from llmrec.eval.als_implicit import ALSGrid, ALSParams, ALSPeer, best_point, run_als, tune

pytest.importorskip("implicit")

GOOD = ALSParams(factors=4, regularization=0.1, alpha=10.0, iterations=15)  # one factor per cluster below


def clustered_histories(clusters: int = 4, items: int = 8, users: int = 12, length: int = 6, seed: int = 0) -> dict[str, list[str]]:
    """Users who only ever watch items of their own cluster ("c2-i5" is item 5 of cluster 2)."""
    rng = random.Random(seed)
    return {f"c{c}-u{u}": [f"c{c}-i{i}" for i in rng.sample(range(items), length)] for c in range(clusters) for u in range(users)}


def cluster(item_or_user: str) -> str:
    return item_or_user.split("-")[0]


def test_recovers_the_cluster_of_a_history() -> None:
    peer = ALSPeer(clustered_histories(), GOOD, seed=0)
    ranked = peer.rank({"new": ["c1-i0", "c1-i3"], "other": ["c3-i2"]}, depth=5)
    assert [cluster(i) for i in ranked["new"]] == ["c1"] * 5
    assert [cluster(i) for i in ranked["other"]] == ["c3"] * 5


def test_history_and_unfitted_items_are_never_ranked() -> None:
    peer = ALSPeer(clustered_histories(), GOOD, seed=0)
    history = ["c0-i0", "c0-i1", "c0-i2", "never-seen-in-training"]
    ranked = peer.rank({"u": history}, depth=1000)["u"]
    assert len(ranked) == len(peer.items) - 3 and not set(history) & set(ranked)
    assert len(set(ranked)) == len(ranked) and set(ranked) <= set(peer.items)


def test_tuning_picks_the_setting_that_is_better_on_validation() -> None:
    # Four disjoint clusters: one factor gives every user the same item order (popularity-like), four separate them.
    split = LeaveOneOutSplit(clustered_histories())
    points = tune(split, ALSGrid(factors=(1, 4), regularization=(0.1,), alpha=(10.0,), iterations=(15,)), seed=0)
    assert [p.params.factors for p in points] == [1, 4]
    assert points[1].valid_ndcg10 > points[0].valid_ndcg10 + 0.2
    assert best_point(points).params.factors == 4


def test_ties_go_to_the_first_setting_in_grid_order() -> None:
    split = LeaveOneOutSplit(clustered_histories())
    points = tune(split, ALSGrid(factors=(4, 4), regularization=(0.1,), alpha=(10.0,), iterations=(15,)), seed=0)
    assert points[0].valid_ndcg10 == points[1].valid_ndcg10 and best_point(points) is points[0]


def test_run_ranks_test_users_from_their_test_history() -> None:
    histories = clustered_histories()
    split = LeaveOneOutSplit(histories)
    users = ["c0-u0", "c2-u5"]
    result = run_als(split, users, depth=3, grid=ALSGrid(factors=(4,), regularization=(0.1,), alpha=(10.0,), iterations=(15,)), seed=0)
    assert set(result.rankings) == set(users) and result.best == GOOD
    for user in users:
        # The validation item is part of the test history, so it is excluded like the training prefix.
        assert len(result.rankings[user]) == 3 and not set(result.rankings[user]) & set(split.test_history(user).item_ids)
        assert all(cluster(i) == cluster(user) for i in result.rankings[user])
