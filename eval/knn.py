"""Item-based kNN as a peer, over the co-occurrence counts of the training prefixes, tuned on validation targets.

Our own code, not LensKit's `ItemKNNScorer`: `pip install --dry-run lenskit` (2025.8.1) would downgrade pandas
(3.1.1 -> 2.3.3, which ranx and seaborn use) and add pyarrow in the venv vLLM shares, so it is not installed.

The model is the classic item-based top-N recommender (Deshpande & Karypis 2004; RecBole's and LensKit's ItemKNN
follow it), over the same counts as the hybrid's co-occurrence member when it counts every pair in a history
(`CooccurrenceRetriever` with `window=None`; the hybrid's own member counts pairs at most 20 positions apart):

- c(i, j): training users (prefixes) holding both i and j; n(i): training users holding i;
- similarity s(i, j) = c(i, j) / (sqrt(n(i) n(j)) + shrink): cosine on the binary user x item matrix, shrunk towards
  0 where the pair has little support (shrink = 0: plain cosine);
- each item j keeps its `neighbours` most similar items N(j) (ties to the more popular item);
- a history H scores j as the sum of s(i, j) over the distinct i in H that are among N(j).

Seen items are never ranked; items scored 0 follow the scored ones in popularity order (training users, then first
appearance), so every list is as long as asked. Items absent from every training prefix are never ranked, as for
co-occurrence and ALS. `neighbours` and `shrink` are the pair of `KNNGrid` with the best validation NDCG@10 (training
prefix -> validation item); the test users are ranked once with it, from their test history (prefix + validation item).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field

from llmrec.data.split import LeaveOneOutSplit
from llmrec.eval.metrics import hit_at, mean, ndcg_at

IMPLEMENTATION = ("llmrec's own item-kNN (eval/knn.py) over the whole-history co-occurrence counts of the training prefixes; "
                  "LensKit not installed: it would downgrade pandas 3.1.1 -> 2.3.3 in the venv vLLM shares")
BATCH = 512
"""Users scored per sparse product (memory only: BATCH x items floats)."""


class KNNParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    neighbours: int = Field(ge=1, description="Most similar items each item keeps.")
    shrink: float = Field(ge=0, description="Added to the cosine's denominator: s = c / (sqrt(n_i n_j) + shrink).")


class KNNGrid(BaseModel):
    """The grid searched on validation NDCG@10: every combination of the values below."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    neighbours: tuple[int, ...] = (10, 25, 50, 100, 200, 400)
    shrink: tuple[float, ...] = (0.0, 5.0, 20.0, 100.0)

    def points(self) -> list[KNNParams]:
        return [KNNParams(neighbours=k, shrink=s) for s, k in itertools.product(self.shrink, self.neighbours)]


class KNNGridPoint(BaseModel):
    params: KNNParams
    valid_ndcg10: float
    valid_hr10: float
    seconds: float = Field(description="Neighbourhoods plus ranking of every validation user.")


class KNNResult(BaseModel):
    rankings: dict[str, list[str]] = Field(description="Our user id -> item ids best first, history excluded.")
    best: KNNParams
    grid: KNNGrid
    scores: list[KNNGridPoint] = Field(description="Every grid point's validation scores, in grid order.")
    valid_users: int
    items: int = Field(description="Items in some training prefix: the only ones ranked.")
    tune_seconds: float
    test_fit_seconds: float
    implementation: str = IMPLEMENTATION


class Cooccurrence:
    """c(i, j) and n(i) of the training prefixes, items in popularity order (so a stable sort breaks ties by it)."""

    def __init__(self, train: Mapping[str, Sequence[str]]) -> None:
        first: dict[str, int] = {}
        users_per_item: dict[str, int] = {}
        for history in train.values():
            for item in dict.fromkeys(history):
                first.setdefault(item, len(first))
                users_per_item[item] = users_per_item.get(item, 0) + 1
        self.items = sorted(first, key=lambda i: (-users_per_item[i], first[i]))
        self.index = {item: n for n, item in enumerate(self.items)}
        x = self.matrix(list(train.values()))
        co = (x.T @ x).tocsr()
        self.users_per_item = co.diagonal().astype(np.float64)
        co.setdiag(0)
        co.eliminate_zeros()
        self.counts = co.tocoo()

    def matrix(self, histories: Sequence[Sequence[str]]) -> sp.csr_matrix:
        """Binary rows over the known items (unknown ones left out)."""
        rows = [sorted({self.index[i] for i in h if i in self.index}) for h in histories]
        indptr = np.cumsum([0] + [len(r) for r in rows])
        indices = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int32, count=int(indptr[-1]))
        return sp.csr_matrix((np.ones(len(indices)), indices, indptr), shape=(len(rows), len(self.items)))

    def similarity(self, shrink: float) -> sp.coo_matrix:
        c = self.counts
        norms = np.sqrt(self.users_per_item)
        return sp.coo_matrix((c.data / (norms[c.row] * norms[c.col] + shrink), (c.row, c.col)), shape=c.shape)


def neighbourhoods(sim: sp.coo_matrix, k: int) -> sp.csr_matrix:
    """W[i, j] = s(i, j) where i is among j's `k` most similar items (ties to the lower index), else 0."""
    order = np.lexsort((sim.row, -sim.data, sim.col))  # by column j, best similarity first, then item order
    cols = sim.col[order]
    starts = np.searchsorted(cols, cols, side="left")
    keep = order[np.arange(len(order)) - starts < k]
    return sp.csr_matrix((sim.data[keep], (sim.row[keep], sim.col[keep])), shape=sim.shape)


class ItemKNN:
    """Ranks any history with one neighbourhood matrix."""

    def __init__(self, counts: Cooccurrence, params: KNNParams) -> None:
        self.counts, self.params = counts, params
        self.weights = neighbourhoods(counts.similarity(params.shrink), params.neighbours)

    @classmethod
    def fit(cls, train: Mapping[str, Sequence[str]], params: KNNParams) -> ItemKNN:
        return cls(Cooccurrence(train), params)

    def scores(self, history: Sequence[str]) -> dict[str, float]:
        """Every known item's score for `history` (seen items included): for tests and diagnostics."""
        row = np.asarray((self.counts.matrix([history]) @ self.weights).todense()).ravel()
        return dict(zip(self.counts.items, row.tolist()))

    def rank(self, histories: Mapping[str, Sequence[str]], depth: int) -> dict[str, list[str]]:
        """Each user's top `depth` unseen known items, best first; ties (zeros included) in popularity order."""
        users, items = list(histories), self.counts.items
        out: dict[str, list[str]] = {}
        for start in range(0, len(users), BATCH):
            group = users[start : start + BATCH]
            x = self.counts.matrix([histories[u] for u in group])
            scores = (x @ self.weights).toarray()
            scores[x.nonzero()] = -np.inf
            d = min(depth, len(items))
            cut = -np.partition(-scores, d - 1, axis=1)[:, d - 1 : d]  # each row's d-th best score
            for row, user in enumerate(group):
                s = scores[row]
                pool = np.flatnonzero(s >= cut[row, 0])  # every item at least as good as the d-th, in popularity order
                best = pool[np.argsort(-s[pool], kind="stable")][:d]
                out[user] = [items[j] for j in best if np.isfinite(s[j])]
        return out


def tune(split: LeaveOneOutSplit, grid: KNNGrid) -> list[KNNGridPoint]:
    """Validation NDCG@10 and HR@10 of every grid point: fitted on the training prefixes, asked with them."""
    histories = {u: split.valid_history(u).item_ids for u in split.valid_users()}
    if not histories:
        raise ValueError("no validation targets to tune item-kNN on")
    counts = Cooccurrence(split.train_histories())
    points = []
    for params in grid.points():
        start = time.perf_counter()
        ranked = ItemKNN(counts, params).rank(histories, 10)
        points.append(KNNGridPoint(params=params, valid_ndcg10=mean(ndcg_at(ranked[u], split.valid[u], 10) for u in histories),
                                   valid_hr10=mean(hit_at(ranked[u], split.valid[u], 10) for u in histories),
                                   seconds=round(time.perf_counter() - start, 2)))
    return points


def best_point(points: Sequence[KNNGridPoint]) -> KNNGridPoint:
    """The highest validation NDCG@10; the first in grid order on a tie."""
    return max(points, key=lambda p: p.valid_ndcg10)


def run_knn(split: LeaveOneOutSplit, users: Sequence[str], depth: int, grid: KNNGrid) -> KNNResult:
    """Tune on validation, then rank `users` from their test histories."""
    start = time.perf_counter()
    points = tune(split, grid)
    tuned = time.perf_counter()
    best = best_point(points).params
    model = ItemKNN.fit(split.train_histories(), best)
    rankings = model.rank({u: split.test_history(u).item_ids for u in users}, depth)
    return KNNResult(rankings=rankings, best=best, grid=grid, scores=points, valid_users=len(split.valid), items=len(model.counts.items),
                     tune_seconds=round(tuned - start, 1), test_fit_seconds=round(time.perf_counter() - tuned, 1))
