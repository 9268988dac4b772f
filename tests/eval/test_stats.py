"""Per-user metric rows, curves and the bootstrap against hand-computed values; the ranx paired test."""

from __future__ import annotations

import math

import numpy as np
import pytest

from llmrec.eval.stats import HEADLINE, bootstrap_ci, curves, metric_row, paired_test, summarise, target_positions


def test_metric_row_golden() -> None:
    row = metric_row(["a", "b", "c", "d", "e"], "c")  # rank 2
    assert tuple(row) == HEADLINE
    assert row == pytest.approx({"HR@1": 0.0, "HR@5": 1.0, "HR@10": 1.0, "HR@20": 1.0, "NDCG@5": 0.5, "NDCG@10": 0.5,
                                 "NDCG@20": 0.5, "MRR": 1 / 3})
    assert set(metric_row(["a"], "z").values()) == {0.0}


def test_positions_and_curves_golden() -> None:
    rankings = {"u1": ["t", "x"], "u2": ["x", "y", "t"], "u3": ["x"]}
    positions = target_positions(rankings, {"u1": "t", "u2": "t", "u3": "t"}, ["u1", "u2", "u3"])
    assert positions.tolist() == [0, 2, -1]
    got = curves(positions, (1, 3))
    assert got["recall"] == pytest.approx([1 / 3, 2 / 3])
    assert got["ndcg"] == pytest.approx([1 / 3, (1 + 0.5) / 3])


def test_bootstrap_two_values_by_hand() -> None:
    # Resampled means of [0, 1] are 0, .5, 1 with probabilities 1/4, 1/2, 1/4: the 2.5% / 97.5% percentiles are 0 and 1.
    est = bootstrap_ci([0.0, 1.0], resamples=2000, seed=0)
    assert (est.mean, est.low, est.high, est.n) == (0.5, 0.0, 1.0, 2)


def test_bootstrap_binomial_by_hand() -> None:
    # 1 hit in 10: resampled hits ~ Binomial(10, .1); P(X=0) = .35 > .025 and P(X<=2) = .93 < .975 <= P(X<=3) = .987.
    est = bootstrap_ci([1.0] + [0.0] * 9, resamples=1000, seed=0)
    assert est.mean == pytest.approx(0.1) and est.low == 0.0 and est.high == pytest.approx(0.3)


def test_bootstrap_is_seeded_and_degenerate_cases() -> None:
    values = np.random.default_rng(1).random(50)
    assert bootstrap_ci(values, seed=3) == bootstrap_ci(values, seed=3)
    assert bootstrap_ci(values, seed=3) != bootstrap_ci(values, seed=4)
    constant = bootstrap_ci([0.25] * 7)
    assert constant.low == constant.high == constant.mean == 0.25
    with pytest.raises(ValueError):
        bootstrap_ci([])
    assert summarise([], 100, 0) == {}
    summary = summarise([{"m": 1.0}, {"m": 0.0}], 200, 0)
    assert summary["m"].mean == 0.5 and summary["m"].low <= 0.5 <= summary["m"].high


@pytest.mark.slow  # ranx compiles with numba on first use (~80 s; cached afterwards)
def test_paired_test_with_ranx() -> None:
    users = [f"u{i}" for i in range(30)]
    targets = {u: "t" for u in users}
    good = {u: ["t", "a", "b"] for u in users}
    bad = {u: (["a", "b", "t"] if i % 3 else ["t", "a", "b"]) for i, u in enumerate(users)}
    result = paired_test(good, bad, targets, users, ("good", "bad"))
    assert result.mean_a == 1.0 and result.mean_b == pytest.approx((10 + 20 * 0.5) / 30)
    assert (result.wins, result.ties, result.losses) == (20, 10, 0)
    assert result.p_value is not None and result.p_value < 1e-3 and result.note == ""
    same = paired_test(good, good, targets, users, ("a", "b"))
    assert same.p_value == 1.0 and "identical" in same.note
    assert not math.isnan(same.mean_a)
