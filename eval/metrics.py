"""Ranking metrics for one relevant item per user (leave-one-out), plus mean aggregation.

`ranked` is a best-first list of item ids; positions are 0-based, so the first item has rank 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence


def _position(ranked: Sequence[str], target: str, k: int | None = None) -> int | None:
    if k is not None and k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    window = ranked if k is None else ranked[:k]
    try:
        return list(window).index(target)
    except ValueError:
        return None


def hit_at(ranked: Sequence[str], target: str, k: int) -> float:
    """1.0 if the target is among the first k items, else 0.0."""
    return 0.0 if _position(ranked, target, k) is None else 1.0


def recall_at(ranked: Sequence[str], target: str, k: int) -> float:
    """Recall@k with a single relevant item, which is exactly Hit@k."""
    return hit_at(ranked, target, k)


def ndcg_at(ranked: Sequence[str], target: str, k: int) -> float:
    """1/log2(rank+2) if the target is in the first k (0-based rank), else 0; the ideal DCG is 1."""
    rank = _position(ranked, target, k)
    return 0.0 if rank is None else 1.0 / math.log2(rank + 2)


def mrr(ranked: Sequence[str], target: str) -> float:
    """Reciprocal rank over the whole list: 1/(rank+1), 0 if the target is absent."""
    rank = _position(ranked, target)
    return 0.0 if rank is None else 1.0 / (rank + 1)


def mean(values: Iterable[float]) -> float:
    """Arithmetic mean; refuses an empty input rather than reporting a misleading 0."""
    values = list(values)
    if not values:
        raise ValueError("mean of no values")
    return math.fsum(values) / len(values)


def mean_rows(rows: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Average per-user metric rows (same keys in every row) into one row."""
    rows = list(rows)
    if not rows:
        raise ValueError("mean of no rows")
    return {key: mean(row[key] for row in rows) for key in rows[0]}


def evaluate_ranking(ranked: Sequence[str], target: str, ks: Sequence[int] = (10, 20, 50)) -> dict[str, float]:
    """The standard row for one user: HR@k for each k, NDCG@10 and MRR."""
    row = {f"HR@{k}": hit_at(ranked, target, k) for k in ks}
    row["NDCG@10"] = ndcg_at(ranked, target, 10)
    row["MRR"] = mrr(ranked, target)
    return row
