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


def test_selection_and_gate_users_are_disjoint_deterministic_and_recorded():
    from llmrec.adapters.fit import USER_SPLIT_RULE, fit_weight_halves, validation_halves

    users = [str(n) for n in range(1, 401)]
    halves = validation_halves(users, seed=0)
    assert not set(halves.selection) & set(halves.gate) and sorted(halves.selection + halves.gate) == sorted(users)
    assert 150 < len(halves.selection) < 250 and validation_halves(users, seed=0) == halves
    # a user's half is its own: a sample of the users (another objective's, another --users) splits the same way
    sample = validation_halves(users[::3], seed=0)
    assert set(sample.selection) <= set(halves.selection) and set(sample.gate) <= set(halves.gate)
    fit = fit_weight_halves({u: run(8, 8) for u in users}, seed=0)
    record = fit.record()
    assert record["selection_users"] == len(halves.selection) and record["gate_users"] == len(halves.gate)
    assert record["user_split"].startswith(USER_SPLIT_RULE) and set(record["gate_grid"]) == {str(fit.best), "inf"}


def test_a_weight_that_wins_on_the_selection_users_only_is_not_shipped():
    """The LLM finds the target for every selection user and misleads every gate user: the old in-sample gate shipped it."""
    from llmrec.adapters.fit import fit_weight_halves, validation_halves

    users = [str(n) for n in range(200)]
    halves = validation_halves(users, seed=0)
    runs = {u: run(1, 1) for u in halves.selection} | {u: run(0, 1) for u in halves.gate}
    in_sample = fit_weight([runs[u] for u in halves.selection])  # tested on the users it was chosen on, it ships
    assert not math.isinf(in_sample.weight)
    fit = fit_weight_halves(runs, seed=0)
    assert not math.isinf(fit.best) and fit.table[fit.best] > fit.table[math.inf]  # chosen on the selection half
    assert math.isinf(fit.weight) and fit.p_value >= GATE_ALPHA  # the gate half does not confirm it
    assert fit.gate_table[fit.best] < fit.gate_table[math.inf]


def test_a_gain_the_gate_half_confirms_ships_without_a_grid_correction():
    from llmrec.adapters.fit import fit_weight_halves

    runs = {str(n): run(8, 8) if n % 5 else run(0, 3) for n in range(100)}
    fit = fit_weight_halves(runs, seed=0)
    assert not math.isinf(fit.weight) and fit.weight == fit.best and fit.p_value < GATE_ALPHA
