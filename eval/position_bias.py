"""Position bias of the LLM ranker: does the target's rank follow where it sits in the prompt?

For users whose test target is among the retriever's candidates, the target is placed at each
position 0..n-1 (the other candidates keep the retriever's order), the list is scored by the LLM,
and the target's rank under the LLM-only order (fusion weight 0) is recorded. A ranker without
position bias gives a flat curve; one that copies the list order gives the diagonal. The
measurement is repeated with permutation averaging (`LLMRankerConfig.permutations`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from pydantic import BaseModel
from tqdm.auto import tqdm

from llmrec.eval.methods import Case, as_candidates, fused_order
from llmrec.ranking.listwise import LLMRanker
from llmrec.schemas import Candidate, Item


class PositionBiasResult(BaseModel):
    users: list[str]
    positions: list[int]
    mean_rank: dict[str, list[float]]
    """Mean 0-based target rank (LLM-only order) per placed position, keyed by 'permutations=N'."""
    hit1: dict[str, list[float]]
    """Share of users whose target ranks first, per placed position."""
    prompts_scored: int
    seconds: float


def placements(candidates: Sequence[Candidate], target: str) -> list[list[str]]:
    """The candidate ids with the target moved to each position in turn, the rest in retriever order."""
    others = [c.item_id for c in sorted(candidates, key=lambda c: c.retriever_rank) if c.item_id != target]
    return [others[:p] + [target] + others[p:] for p in range(len(others) + 1)]


def measure(rankers: Mapping[int, LLMRanker], catalog: Mapping[str, Item], cases: Sequence[Case],
            candidates: Mapping[str, Sequence[Candidate]], progress: bool = True) -> PositionBiasResult:
    """`rankers`: permutations -> ranker. Every case's target must be among its candidates."""
    import time

    started = time.perf_counter()
    n = len(next(iter(candidates.values()))) if candidates else 0
    ranks = {p: np.zeros((len(cases), n)) for p in rankers}
    prompts = 0
    for row, case in enumerate(tqdm(cases, desc="position bias", unit="user", disable=not progress)):
        history = [catalog[i] for i in case.history.item_ids]
        orders = placements(candidates[case.user_id], case.target)
        requests = [(history, as_candidates(order)) for order in orders]
        for perms, ranker in rankers.items():
            scores = ranker.score_many(requests)
            prompts += len(requests) * perms
            for position, (order, result) in enumerate(zip(orders, scores)):
                ranked = fused_order(as_candidates(order), result, 0.0)
                ranks[perms][row, position] = ranked.index(case.target)
    return PositionBiasResult(
        users=[c.user_id for c in cases], positions=list(range(n)),
        mean_rank={f"permutations={p}": r.mean(axis=0).round(3).tolist() for p, r in ranks.items()} if cases else {},
        hit1={f"permutations={p}": (r == 0).mean(axis=0).round(3).tolist() for p, r in ranks.items()} if cases else {},
        prompts_scored=prompts, seconds=round(time.perf_counter() - started, 1),
    )
