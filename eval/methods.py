"""The compared methods. Each turns the evaluated users' test histories into best-first item lists.

- Retriever methods (popularity, embedding, co-occurrence, hybrid) rank all unseen items: their list is
  their own top `depth`.
- LLM methods rerank the hybrid retriever's first `candidates` items with label log-probabilities fused
  with the retriever rank (`agents.ranker.fuse`); positions after the candidates keep the hybrid order.
  One LLM pass per user serves every fusion weight, so "llmrec" and "llm-only" cost one scoring.
- The sampled protocol ranks the target plus seeded random negatives: a retriever orders them by its
  full-catalog list, the LLM reranks them directly.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from llmrec.protocols import AdapterRef, LLMScores, Retriever, ScoringRanker
from llmrec.ranking.fusion import ShortHistoryWeight, fuse, weight_for
from llmrec.schemas import Candidate, Item, UserHistory

Rankings = dict[str, list[str]]


@dataclass(frozen=True)
class Case:
    """One evaluated user: the history the methods see and the held-out target."""

    user_id: str
    history: UserHistory
    target: str


@dataclass(frozen=True)
class RetrieverMethod:
    name: str
    description: str
    retriever: Retriever


@dataclass
class LLMVariant:
    """One LLM (base or with an adapter) and the fusion weights reported for it, by method name."""

    label: str
    ranker: ScoringRanker
    weights: dict[str, float]
    adapter: AdapterRef | None = None
    short: ShortHistoryWeight | None = None
    """Applied to the fused methods (weight != 0), as the ranker does."""
    descriptions: dict[str, str] = field(default_factory=dict)


def retriever_methods(hybrid) -> list[RetrieverMethod]:
    """The hybrid's own members (fitted with it on the training split), then the hybrid itself."""
    members = {m.name: m for m in [*hybrid.members, hybrid.popularity]}
    described = [
        ("popularity", "most training interactions first"),
        ("embedding", "MiniLM item vectors in Chroma, recency-weighted profile of the last 10 items"),
        ("cooccurrence", "item-item cosine co-occurrence (the hybrid's member: last 10 items, decay .8, window 20)"),
    ]
    methods = [RetrieverMethod(name, text, members[name]) for name, text in described if name in members]
    methods.append(RetrieverMethod("hybrid", "the pipeline's retriever: weighted RRF of the three above", hybrid))
    return methods


HELD_OUT_FOLDS = 5
"""Users are fitted around in this many groups (by user id hash): each group's retriever learns from the other 80%."""


def refit(hybrid, histories: Mapping[str, Sequence[str]]):
    """A copy of `hybrid` (same config, index and members) fitted on `histories`; `hybrid` itself is unchanged."""
    import copy

    members = {id(m): copy.copy(m) for m in [*hybrid.members, hybrid.popularity]}
    clone = copy.copy(hybrid)
    clone.members = [members[id(m)] for m in hybrid.members]
    clone.popularity = members[id(hybrid.popularity)]
    return clone.fit(histories)


def held_out_retrievers(hybrid, split, users: Sequence[str], keep: int | None, seed: int = 0, folds: int = HELD_OUT_FOLDS):
    """(group of `users`, a copy of `hybrid` fitted without that group's future), group by group.

    A retriever fitted on every training prefix has seen the user's later items: the cold-start slice's user (given
    only their first `keep` items) and a training example cut at position p (`keep=None`: the user left out) would be
    ranked by co-occurrences with their own future. Each group's copy is fitted on `split.histories_without(group,
    keep)`: the other users' training prefixes and the group's first `keep` items. One copy at a time is alive."""
    wanted = set(users)
    for group in split.folds(folds, seed):
        chosen = [u for u in group if u in wanted]
        if chosen:
            yield chosen, refit(hybrid, split.histories_without(group, keep))


def retrieve_all(retriever: Retriever, cases: Sequence[Case], depth: int, desc: str,
                 progress: bool = True) -> tuple[dict[str, list[Candidate]], list[float]]:
    """Every user's top `depth` candidates and the seconds each retrieval took."""
    out: dict[str, list[Candidate]] = {}
    seconds: list[float] = []
    for case in tqdm(cases, desc=desc, unit="user", disable=not progress):
        start = time.perf_counter()
        out[case.user_id] = retriever.retrieve(case.history, depth)
        seconds.append(time.perf_counter() - start)
    return out, seconds


def ids(candidates: Mapping[str, Sequence[Candidate]]) -> Rankings:
    return {user: [c.item_id for c in cands] for user, cands in candidates.items()}


def fused_order(candidates: Sequence[Candidate], scores: LLMScores, weight: float) -> list[str]:
    """Candidate ids by fused score, ties to the better retriever rank (as `LLMRanker.rank_scored`)."""
    ranks = [c.retriever_rank for c in candidates]
    fused = fuse(scores.logprobs, ranks, weight)
    return [candidates[i].item_id for i in sorted(range(len(candidates)), key=lambda i: (-fused[i], ranks[i]))]


def score_all(ranker: ScoringRanker, catalog: Mapping[str, Item], cases: Sequence[Case],
              candidates: Mapping[str, Sequence[Candidate]], batch: int, desc: str,
              progress: bool = True) -> tuple[dict[str, LLMScores], list[float]]:
    """LLM scores for each user's candidates, `batch` users per engine call; seconds per user (amortised)."""
    scores: dict[str, LLMScores] = {}
    seconds: list[float] = []
    with tqdm(total=len(cases), desc=desc, unit="user", disable=not progress) as bar:
        for start in range(0, len(cases), batch):
            group = cases[start : start + batch]
            requests = [([catalog[i] for i in case.history.item_ids], candidates[case.user_id]) for case in group]
            began = time.perf_counter()
            results = ranker.score_many(requests)
            elapsed = time.perf_counter() - began
            for case, result in zip(group, results):
                scores[case.user_id] = result
            seconds.extend([elapsed / len(group)] * len(group))
            bar.update(len(group))
    return scores, seconds


def rerank_head(head: Mapping[str, Sequence[Candidate]], tails: Mapping[str, Sequence[str]],
                scores: Mapping[str, LLMScores], weight: float, short: ShortHistoryWeight | None = None) -> Rankings:
    """Reranked candidates followed by the rest of the retriever's list (positions after the head); `short`: the
    weight for short histories, as the ranker applies it."""
    out: Rankings = {}
    for user, cands in head.items():
        reranked = fused_order(cands, scores[user], weight_for(scores[user], weight, short))
        head_ids = set(reranked)
        out[user] = reranked + [i for i in tails[user] if i not in head_ids]
    return out


def oracle(head: Mapping[str, Sequence[Candidate]], tails: Mapping[str, Sequence[str]], targets: Mapping[str, str]) -> Rankings:
    """The reranker's ceiling: the target moved first where it is among the candidates; otherwise the retriever's list."""
    out: Rankings = {}
    for user, cands in head.items():
        ids_ = [c.item_id for c in cands]
        target = targets[user]
        if target in ids_:
            ids_ = [target, *(i for i in ids_ if i != target)]
        shown = set(ids_)
        out[user] = ids_ + [i for i in tails[user] if i not in shown]
    return out


# --- sampled protocol ---------------------------------------------------------------------------


def sample_items(case: Case, catalog_ids: Sequence[str], negatives: int, seed: int) -> list[str]:
    """The target plus `negatives` unseen items drawn with a per-user seed, shuffled (the order means nothing)."""
    rng = random.Random(f"{seed}:sampled:{case.user_id}")
    seen = set(case.history.item_ids) | {case.target}
    pool = [i for i in catalog_ids if i not in seen]
    items = [case.target, *rng.sample(pool, min(negatives, len(pool)))]
    rng.shuffle(items)
    return items


def restrict(full_order: Sequence[str], items: Sequence[str], seed: int, user: str) -> list[str]:
    """`items` in the order of a method's full list; items it never ranks follow in seeded random order."""
    position = {item: p for p, item in enumerate(full_order)}
    ranked = sorted((i for i in items if i in position), key=position.__getitem__)
    rest = [i for i in items if i not in position]
    random.Random(f"{seed}:unranked:{user}").shuffle(rest)
    return ranked + rest


def as_candidates(order: Sequence[str]) -> list[Candidate]:
    return [Candidate(item_id=i, retriever_rank=r, retriever_score=0.0) for r, i in enumerate(order)]
