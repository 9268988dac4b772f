"""The fusion weight's significance gate (`adapters.fit.fit_weight`): own logic, synthetic runs."""

from __future__ import annotations

import math
import random

from llmrec.adapters.fit import GATE_ALPHA, choose_weight, fit_weight
from llmrec.protocols import LLMScores

IDS = [f"i{n}" for n in range(20)]


def run(target_rank: int, llm_top: int) -> tuple:
    """The target at `target_rank` in the retriever's order; the LLM puts item `llm_top` first, the rest flat."""
    logprobs = [0.0 if n == llm_top else -5.0 for n in range(20)]
    return IDS, LLMScores(logprobs, 0, 0, 0), list(range(20)), IDS[target_rank]


def test_a_consistent_gain_ships_its_weight():
    runs = [run(8, 8) for _ in range(40)] + [run(0, 3) for _ in range(10)]  # the LLM finds the target most of the time
    fit = fit_weight(runs)
    assert not math.isinf(fit.weight) and fit.weight == fit.best and fit.p_value < GATE_ALPHA
    assert fit.table[fit.weight] > fit.table[math.inf]


def test_a_gain_within_noise_keeps_the_retrievers_order():
    # the LLM lifts the retriever's second item to first: right for 12 users, wrong for 10 (a small in-sample gain)
    runs = [run(1, 1) for _ in range(12)] + [run(0, 1) for _ in range(10)]
    random.Random(0).shuffle(runs)
    table = choose_weight(runs)
    fit = fit_weight(runs)
    assert not math.isinf(fit.best) and table[fit.best] > table[math.inf]  # the grid alone would ship the LLM
    assert math.isinf(fit.weight) and fit.p_value >= GATE_ALPHA  # the gate does not
    assert fit.record() == {"best_weight": fit.best, "p_value": fit.p_value, "alpha": GATE_ALPHA}


def test_an_llm_that_only_hurts_keeps_the_retrievers_order_without_a_test():
    runs = [run(0, 5) for _ in range(30)]
    fit = fit_weight(runs)
    assert math.isinf(fit.best) and math.isinf(fit.weight) and fit.p_value is None


def test_the_p_value_is_corrected_for_picking_the_best_of_the_grid():
    # 13 users gain and 5 lose as much: one-sided p = .028 for one weight tried, but the best of 7 finite weights
    runs = [run(1, 1) for _ in range(13)] + [run(0, 1) for _ in range(5)]
    fit = fit_weight(runs)
    assert not math.isinf(fit.best) and math.isinf(fit.weight)
    assert math.isclose(fit.p_value, min(1.0, 0.0283 * 7), abs_tol=2e-4)
    assert not math.isinf(fit_weight(runs, grid=(fit.best, math.inf)).weight)  # with the one weight alone, it would ship
