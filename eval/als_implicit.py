"""ALS from the `implicit` library as a second external peer, tuned on our validation targets.

implicit's `AlternatingLeastSquares` (Hu, Koren & Volinsky 2008, conjugate-gradient solver) is fitted
on every user's training prefix as a binary user × item matrix. A user's vector is then recomputed
from the history the model is asked about (`recalculate_user`): the training prefix for the validation
target, the training prefix plus the validation item for the test target. So ALS sees what the
retrievers and SASRec see, and nothing it is tested on. The hyper-parameters are the ones with the best
validation NDCG@10 over a small grid (`ALSGrid`); the test users are ranked once, with that setting.
Items absent from every training prefix have no factors and are never ranked, as for co-occurrence.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field

from llmrec.data.split import LeaveOneOutSplit
from llmrec.eval.metrics import hit_at, mean, ndcg_at

# Speed only. On a busy 2-core machine one ML-100K fit took 0.45 s with 1 OpenMP thread and 0.9 s with 2.
THREADS = 1
SKIPPED = "ALS skipped: the `implicit` package is not installed (pip install -e '.[eval]')"


class ALSParams(BaseModel):
    """One setting of implicit's AlternatingLeastSquares."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    factors: int = Field(ge=1, description="Latent dimensions.")
    regularization: float = Field(ge=0, description="L2 weight on the factors.")
    alpha: float = Field(gt=0, description="Confidence of an observed interaction (implicit scales the binary matrix by it).")
    iterations: int = Field(ge=1, description="ALS sweeps over users and items.")


class ALSGrid(BaseModel):
    """The grid searched on validation NDCG@10: every combination of the values below."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Centred on ML-100K's validation optimum: a first grid (regularization .01-1, alpha 1-40) peaked at its edge.
    factors: tuple[int, ...] = (32, 64, 128)
    regularization: tuple[float, ...] = (1.0, 10.0, 100.0)
    alpha: tuple[float, ...] = (1.0, 5.0, 20.0)
    iterations: tuple[int, ...] = (15, 30)

    def points(self) -> list[ALSParams]:
        combos = itertools.product(self.factors, self.regularization, self.alpha, self.iterations)
        return [ALSParams(factors=f, regularization=r, alpha=a, iterations=i) for f, r, a, i in combos]


class GridPoint(BaseModel):
    params: ALSParams
    valid_ndcg10: float
    valid_hr10: float
    seconds: float = Field(description="Fit plus ranking of every validation user.")


class ALSResult(BaseModel):
    rankings: dict[str, list[str]] = Field(description="Our user id -> item ids best first, history excluded.")
    best: ALSParams
    grid: ALSGrid
    scores: list[GridPoint] = Field(description="Every grid point's validation scores, in grid order.")
    valid_users: int
    items_with_factors: int
    tune_seconds: float
    test_fit_seconds: float
    implicit_version: str


class ALSPeer:
    """ALS fitted on training histories; ranks any history by recomputing its user vector."""

    def __init__(self, train: Mapping[str, Sequence[str]], params: ALSParams, seed: int) -> None:
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        self.items = sorted({i for history in train.values() for i in history})
        self.index = {item: n for n, item in enumerate(self.items)}
        with threadpool_limits(1, "blas"):  # implicit warns that a threaded BLAS slows ALS down severely
            self.model = AlternatingLeastSquares(factors=params.factors, regularization=params.regularization, alpha=params.alpha,
                                                 iterations=params.iterations, random_state=seed, num_threads=THREADS)
            self.model.fit(self._matrix(list(train.values())), show_progress=False)

    def _matrix(self, histories: Sequence[Sequence[str]]):
        """Binary CSR rows over the fitted items; items the model has no factors for are left out."""
        import numpy as np
        from scipy.sparse import csr_matrix

        rows = [sorted({self.index[i] for i in history if i in self.index}) for history in histories]
        indptr = np.cumsum([0] + [len(r) for r in rows])
        indices = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int32, count=int(indptr[-1]))
        return csr_matrix((np.ones(len(indices), dtype=np.float32), indices, indptr), shape=(len(rows), len(self.items)))

    def rank(self, histories: Mapping[str, Sequence[str]], depth: int) -> dict[str, list[str]]:
        """Each user's top `depth` items it has not seen, best first."""
        import numpy as np
        from threadpoolctl import threadpool_limits

        users = list(histories)
        if not users:
            return {}
        with threadpool_limits(1, "blas"):
            ids, scores = self.model.recommend(np.arange(len(users)), self._matrix([histories[u] for u in users]),
                                               N=min(depth, len(self.items)), filter_already_liked_items=True, recalculate_user=True)
        out = {}
        for row, user in enumerate(users):
            seen = set(histories[user])
            out[user] = [self.items[i] for i, s in zip(ids[row], scores[row]) if i >= 0 and np.isfinite(s) and self.items[i] not in seen]
        return out


def tune(split: LeaveOneOutSplit, grid: ALSGrid, seed: int) -> list[GridPoint]:
    """Validation NDCG@10 and HR@10 of every grid point: fitted on the training prefixes, asked with them."""
    train = split.train_histories()
    histories = {u: split.valid_history(u).item_ids for u in split.valid_users()}
    if not histories:
        raise ValueError("no validation targets to tune ALS on")
    points = []
    for params in grid.points():
        start = time.perf_counter()
        ranked = ALSPeer(train, params, seed).rank(histories, 10)
        points.append(GridPoint(params=params, valid_ndcg10=mean(ndcg_at(ranked[u], split.valid[u], 10) for u in histories),
                                valid_hr10=mean(hit_at(ranked[u], split.valid[u], 10) for u in histories),
                                seconds=round(time.perf_counter() - start, 2)))
    return points


def best_point(points: Sequence[GridPoint]) -> GridPoint:
    """The highest validation NDCG@10; the first in grid order on a tie."""
    return max(points, key=lambda p: p.valid_ndcg10)


def run_als(split: LeaveOneOutSplit, users: Sequence[str], depth: int, grid: ALSGrid, seed: int) -> ALSResult | str:
    """Tune on validation, then rank `users` from their test histories; or the reason it was skipped."""
    try:
        import implicit
    except ImportError:
        return SKIPPED
    start = time.perf_counter()
    points = tune(split, grid, seed)
    tuned = time.perf_counter()
    best = best_point(points).params
    peer = ALSPeer(split.train_histories(), best, seed)
    rankings = peer.rank({u: split.test_history(u).item_ids for u in users}, depth)
    return ALSResult(rankings=rankings, best=best, grid=grid, scores=points, valid_users=len(split.valid),
                     items_with_factors=len(peer.items), tune_seconds=round(tuned - start, 1),
                     test_fit_seconds=round(time.perf_counter() - tuned, 1), implicit_version=implicit.__version__)
