"""The pieces the methods are built from: rerank-then-tail, sampled negatives, position placements."""

from __future__ import annotations

from llmrec.eval.methods import Case, as_candidates, fused_order, oracle, rerank_head, restrict, sample_items
from llmrec.eval.position_bias import placements
from llmrec.protocols import LLMScores
from llmrec.schemas import UserHistory


def scores(logprobs):
    return LLMScores(list(logprobs), history_used=1, history_dropped=0, prompt_tokens=10)


def test_fused_order_follows_weight() -> None:
    cands = as_candidates(["a", "b", "c"])
    llm = scores([-3.0, -2.0, -0.1])  # the LLM prefers c
    assert fused_order(cands, llm, 0.0) == ["c", "b", "a"]
    assert fused_order(cands, llm, float("inf")) == ["a", "b", "c"]


def test_rerank_head_keeps_the_retrievers_tail() -> None:
    head = {"u": as_candidates(["a", "b"])}
    out = rerank_head(head, {"u": ["a", "b", "c", "d"]}, {"u": scores([-2.0, -0.5])}, 0.0)
    assert out == {"u": ["b", "a", "c", "d"]}


def test_sampled_items_are_seeded_unseen_and_hold_the_target() -> None:
    case = Case("u1", UserHistory(user_id="u1", item_ids=("1", "2")), "3")
    catalog = [str(i) for i in range(1, 60)]
    items = sample_items(case, catalog, 19, seed=0)
    assert len(items) == 20 == len(set(items)) and "3" in items and not {"1", "2"} & set(items)
    assert items == sample_items(case, catalog, 19, seed=0) != sample_items(case, catalog, 19, seed=1)


def test_restrict_orders_by_the_full_list_then_seeded_random() -> None:
    order = restrict(["x", "t", "y", "z"], ["z", "q", "t", "r"], seed=0, user="u")
    assert order[:2] == ["t", "z"] and set(order[2:]) == {"q", "r"}
    assert order == restrict(["x", "t", "y", "z"], ["z", "q", "t", "r"], seed=0, user="u")


def test_placements_move_only_the_target() -> None:
    cands = as_candidates(["a", "t", "b"])
    assert placements(cands, "t") == [["t", "a", "b"], ["a", "t", "b"], ["a", "b", "t"]]


def test_oracle_puts_the_target_first_only_where_the_candidates_hold_it() -> None:
    head = {"u": as_candidates(["a", "b", "c"]), "v": as_candidates(["a", "b"])}
    tails = {"u": ["a", "b", "c", "d"], "v": ["a", "b", "x", "y"]}
    out = oracle(head, tails, {"u": "c", "v": "y"})
    assert out == {"u": ["c", "a", "b", "d"], "v": ["a", "b", "x", "y"]}


def test_held_out_retrievers_never_learn_the_users_own_future() -> None:
    """The cold-start slice and listwise training examples: a user's retriever must not know their later items."""
    from llmrec.data.split import LeaveOneOutSplit
    from llmrec.eval.methods import held_out_retrievers
    from llmrec.retrieval.retrievers import HybridRetriever
    from llmrec.schemas import UserHistory

    # only "cold" ever took "a" and "secret" together: a retriever fitted on its full prefix ranks "secret" after "a"
    histories = {"cold": ["a", "secret", "x", "v", "t"], **{f"u{n}": ["b", "c", "d", "e", "f"] for n in range(8)}}
    split = LeaveOneOutSplit(histories)
    full = HybridRetriever().fit(split.train_histories())
    history = UserHistory(user_id="cold", item_ids=("a",))
    assert "secret" in [c.item_id for c in full.retrieve(history, 3) if "cooccurrence" in c.sources]
    [(group, held_out)] = [(g, r) for g, r in held_out_retrievers(full, split, ["cold"], keep=1) if "cold" in g]
    assert group == ["cold"] and "secret" not in [c.item_id for c in held_out.retrieve(history, 3) if "cooccurrence" in c.sources]
    assert "secret" in [c.item_id for c in full.retrieve(history, 3) if "cooccurrence" in c.sources]  # the original is unchanged
    # keep=None: the user is left out of the fit entirely (a training example cut at any position)
    [(_, left_out)] = list(held_out_retrievers(full, split, ["cold"], keep=None))
    assert "a" not in left_out.popularity._vocab.pos
