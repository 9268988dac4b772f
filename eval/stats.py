"""Per-user metric rows, seeded bootstrap confidence intervals, and ranx paired tests.

Every headline number is a mean over users of a per-user value in [0, 1]; its 95% interval is the
percentile bootstrap over users (resampling users with replacement, seeded). The paired test compares
two methods on the same users with ranx (Student's paired t-test or Fisher's randomisation test).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
from pydantic import BaseModel

from llmrec.eval.metrics import hit_at, mrr, ndcg_at

HIT_KS = (1, 5, 10, 20)
NDCG_KS = (5, 10, 20)
HEADLINE = tuple(f"HR@{k}" for k in HIT_KS) + tuple(f"NDCG@{k}" for k in NDCG_KS) + ("MRR",)


def metric_row(ranked: Sequence[str], target: str) -> dict[str, float]:
    """The headline metrics of one user's list. HR@k equals Recall@k with one target; MRR is over the whole list."""
    row = {f"HR@{k}": hit_at(ranked, target, k) for k in HIT_KS}
    row.update({f"NDCG@{k}": ndcg_at(ranked, target, k) for k in NDCG_KS})
    row["MRR"] = mrr(ranked, target)
    return row


def target_positions(rankings: Mapping[str, Sequence[str]], targets: Mapping[str, str], users: Sequence[str]) -> np.ndarray:
    """0-based position of each user's target in its list; -1 where the list misses it."""
    out = np.full(len(users), -1, dtype=np.int64)
    for n, user in enumerate(users):
        ranked = rankings.get(user, ())
        target = targets[user]
        for p, item in enumerate(ranked):
            if item == target:
                out[n] = p
                break
    return out


def curves(positions: np.ndarray, ks: Sequence[int]) -> dict[str, list[float]]:
    """Mean NDCG@k and Recall@k for each k, from target positions (-1 = missed)."""
    hit = positions >= 0
    gains = np.where(hit, 1.0 / np.log2(np.maximum(positions, 0) + 2), 0.0)
    return {
        "k": list(ks),
        "ndcg": [float(np.mean(np.where(hit & (positions < k), gains, 0.0))) for k in ks],
        "recall": [float(np.mean(hit & (positions < k))) for k in ks],
    }


class Estimate(BaseModel):
    """A mean with its percentile-bootstrap interval."""

    mean: float
    low: float
    high: float
    n: int


def bootstrap_ci(values: Sequence[float] | np.ndarray, resamples: int = 1000, seed: int = 0, level: float = 0.95) -> Estimate:
    """Percentile bootstrap of the mean, resampling the values (users) with replacement.

    Deterministic for a given seed. One value gives a zero-width interval; no values is an error.
    """
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        raise ValueError("bootstrap of no values")
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, 2_000_000 // data.size)  # bounded memory for large user counts
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        means[start:stop] = data[rng.integers(0, data.size, size=(stop - start, data.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Estimate(mean=float(data.mean()), low=float(low), high=float(high), n=int(data.size))


def summarise(rows: Sequence[Mapping[str, float]], resamples: int, seed: int) -> dict[str, Estimate]:
    """Bootstrap every metric of per-user rows; one seed per metric name so methods share resamples."""
    if not rows:
        return {}
    return {name: bootstrap_ci([r[name] for r in rows], resamples, seed) for name in rows[0]}


class PairedTest(BaseModel):
    a: str
    b: str
    metric: str
    test: str
    users: int
    mean_a: float
    mean_b: float
    p_value: float | None
    wins: int
    ties: int
    losses: int
    note: str = ""


def _run(rankings: Mapping[str, Sequence[str]], users: Sequence[str], name: str):
    from ranx import Run

    runs = {}
    for user in users:
        ranked = list(rankings[user]) or ["<empty>"]
        runs[user] = {item: float(len(ranked) - p) for p, item in enumerate(ranked)}
    return Run(runs, name=name)


def paired_test(rankings_a: Mapping[str, Sequence[str]], rankings_b: Mapping[str, Sequence[str]], targets: Mapping[str, str],
                users: Sequence[str], names: tuple[str, str], metric: str = "ndcg@10", test: str = "student") -> PairedTest:
    """ranx `compare` of two runs on per-user `metric` (one relevant item per user); p-value of a vs b."""
    from ranx import Qrels, compare

    k = int(metric.split("@")[1])
    per_a = np.array([ndcg_at(rankings_a[u], targets[u], k) for u in users])
    per_b = np.array([ndcg_at(rankings_b[u], targets[u], k) for u in users])
    diff = per_a - per_b
    p: float | None = 1.0
    note = "identical per-user values: no difference to test"
    if np.any(diff):
        qrels = Qrels({u: {targets[u]: 1} for u in users})
        with warnings.catch_warnings():  # a t-test over very few users divides by zero; reported as undefined below
            warnings.simplefilter("ignore", RuntimeWarning)
            report = compare(qrels, [_run(rankings_a, users, names[0]), _run(rankings_b, users, names[1])], metrics=[metric],
                             stat_test=test, max_p=0.05, random_seed=0)
        d = report.to_dict()
        p, note = d[names[0]]["comparisons"][names[1]][metric], ""
        if p is None or math.isnan(p):
            p, note = None, "test undefined (too few users?)"
        if abs(d[names[0]]["scores"][metric] - per_a.mean()) > 1e-6:
            note = (note + "; " if note else "") + "ranx and llmrec metric values differ"
    return PairedTest(a=names[0], b=names[1], metric=metric.upper(), test=test, users=len(users),
                      mean_a=float(per_a.mean()), mean_b=float(per_b.mean()), p_value=None if p is None else float(p),
                      wins=int((diff > 0).sum()), ties=int((diff == 0).sum()), losses=int((diff < 0).sum()), note=note)
