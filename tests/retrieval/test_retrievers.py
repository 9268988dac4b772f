"""Retriever conformance (every retriever) plus each one's own behaviour, on tiny and real data."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import pytest

from llmrec.data.datasets import load_dataset
from llmrec.data.split import LeaveOneOutSplit
from llmrec.eval.metrics import hit_at, mean
from llmrec.protocols import Retriever
from llmrec.retrieval.embedder import SentenceEmbedder, ensure_minilm
from llmrec.retrieval.index import CatalogIndex
from llmrec.retrieval.retrievers import (
    CooccurrenceConfig,
    CooccurrenceRetriever,
    EmbeddingRetriever,
    HybridConfig,
    HybridRetriever,
    PopularityRetriever,
    fuse,
)
from llmrec.schemas import Candidate, Item, UserHistory
from llmrec.settings import Settings

GENRES = {"Sci-Fi": "S", "Romance": "R", "Animation": "A"}
ITEMS = [Item(item_id=f"{p}{n}", title=f"{genre} story number {n}", year=1990 + n, genres=(genre,))
         for genre, p in GENRES.items() for n in range(8)]
# Users stay mostly inside one genre and walk through it in order, so neighbours are predictable.
TRAIN = {f"{p}-fan{u}": [f"{p}{(u + j) % 8}" for j in range(5)] + [f"{q}{u % 8}"]
         for u in range(6) for p, q in (("S", "R"), ("R", "A"), ("A", "S"))}
HISTORIES = [
    UserHistory(user_id="u", item_ids=("S0", "S1", "S2")),
    UserHistory(user_id="u", item_ids=("R3", "A0", "A0", "R4")),  # a repeat must not appear twice or at all
    UserHistory(user_id=None, item_ids=tuple(i.item_id for i in ITEMS[:20])),  # almost everything seen
    UserHistory(user_id=None, item_ids=()),
    UserHistory(user_id=None, item_ids=("never-seen-item",)),
]


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> CatalogIndex:
    built = CatalogIndex("tiny", SentenceEmbedder(ensure_minilm(Settings().resolved_home())), tmp_path_factory.mktemp("home"))
    built.build(ITEMS, progress=False)
    return built


FACTORIES: dict[str, Callable[[CatalogIndex], object]] = {
    "popularity": lambda index: PopularityRetriever(),
    "cooccurrence": lambda index: CooccurrenceRetriever(),
    "cooccurrence-window": lambda index: CooccurrenceRetriever(CooccurrenceConfig(window=2, decay=0.8)),
    "embedding": lambda index: EmbeddingRetriever(index),
    "hybrid": lambda index: HybridRetriever(index=index),
    "hybrid-no-index": lambda index: HybridRetriever(),
}


@pytest.mark.parametrize("kind", list(FACTORIES))
@pytest.mark.parametrize("k", [1, 5, 30])
def test_conformance(kind: str, k: int, index: CatalogIndex) -> None:
    retriever = FACTORIES[kind](index)
    retriever.fit(TRAIN)
    assert isinstance(retriever, Retriever)
    for history in HISTORIES:
        found = retriever.retrieve(history, k)
        ids = [c.item_id for c in found]
        assert all(isinstance(c, Candidate) for c in found)
        assert len(found) <= k and len(set(ids)) == len(ids)
        assert not set(ids) & set(history.item_ids)
        assert [c.retriever_rank for c in found] == list(range(len(found)))
        scores = [c.retriever_score for c in found]
        assert scores == sorted(scores, reverse=True) and all(math.isfinite(s) for s in scores)
        assert all(c.sources for c in found)


@pytest.mark.parametrize("kind", ["hybrid", "hybrid-no-index", "popularity"])
def test_fills_to_k_when_the_catalog_allows(kind: str, index: CatalogIndex) -> None:
    retriever = FACTORIES[kind](index)
    retriever.fit(TRAIN)
    for history in HISTORIES:
        unseen = {i.item_id for i in ITEMS} - set(history.item_ids)
        assert len(retriever.retrieve(history, 10)) == min(10, len(unseen))


def test_popularity_orders_by_training_count_then_first_seen() -> None:
    retriever = PopularityRetriever().fit({"u1": ["a", "b", "c"], "u2": ["a", "b"], "u3": ["b", "c"]})
    found = retriever.retrieve(UserHistory(user_id=None, item_ids=()), 5)
    assert [(c.item_id, c.retriever_score) for c in found] == [("b", 3.0), ("a", 2.0), ("c", 2.0)]
    assert [c.item_id for c in retriever.retrieve(UserHistory(user_id=None, item_ids=("b",)), 5)] == ["a", "c"]


def test_cooccurrence_cosine_golden_values() -> None:
    train = {"u1": ["a", "b", "c"], "u2": ["a", "b"], "u3": ["b", "c"]}  # users per item: a=2, b=3, c=2
    retriever = CooccurrenceRetriever().fit(train)
    found = retriever.retrieve(UserHistory(user_id=None, item_ids=("a",)), 5)
    assert [c.item_id for c in found] == ["b", "c"]
    assert found[0].retriever_score == pytest.approx(2 / math.sqrt(6))  # a,b together for 2 users
    assert found[1].retriever_score == pytest.approx(1 / 2)
    decayed = CooccurrenceRetriever(CooccurrenceConfig(decay=0.5)).fit(train)
    (only,) = decayed.retrieve(UserHistory(user_id=None, item_ids=("a", "c")), 5)  # c most recent: weight 1, a: 0.5
    assert only.item_id == "b" and only.retriever_score == pytest.approx(1.5 * 2 / math.sqrt(6))


def test_cooccurrence_window_counts_only_nearby_pairs() -> None:
    train = {"u1": ["a", "b", "c"], "u2": ["a", "b"], "u3": ["b", "c"]}
    windowed = CooccurrenceRetriever(CooccurrenceConfig(window=1)).fit(train)
    assert [c.item_id for c in windowed.retrieve(UserHistory(user_id=None, item_ids=("a",)), 5)] == ["b"]


def test_cooccurrence_uses_only_the_last_n_distinct_items() -> None:
    train = {"u1": ["a", "x"], "u2": ["b", "y"]}
    retriever = CooccurrenceRetriever(CooccurrenceConfig(last_n=1)).fit(train)
    assert [c.item_id for c in retriever.retrieve(UserHistory(user_id=None, item_ids=("a", "b", "b")), 5)] == ["y"]


def test_embedding_retriever_stays_in_the_genre(index: CatalogIndex) -> None:
    found = EmbeddingRetriever(index).retrieve(UserHistory(user_id=None, item_ids=("R0", "R1", "R2")), 3)
    assert all(c.item_id.startswith("R") for c in found)


def test_hybrid_names_its_sources_and_falls_back_to_popularity(index: CatalogIndex) -> None:
    hybrid = HybridRetriever(index=index).fit(TRAIN)
    assert [m.name for m in hybrid.members] == ["cooccurrence", "embedding", "popularity"]
    found = hybrid.retrieve(UserHistory(user_id=None, item_ids=("S0", "S1")), 10)
    assert {"cooccurrence", "embedding", "popularity"} <= {s for c in found for s in c.sources}
    assert found[0].sources[0] == "cooccurrence"
    cold = hybrid.retrieve(UserHistory(user_id=None, item_ids=()), 5)
    popular = PopularityRetriever().fit(TRAIN).retrieve(UserHistory(user_id=None, item_ids=()), 5)
    assert [c.item_id for c in cold] == [c.item_id for c in popular]
    assert HybridRetriever(HybridConfig(weights={"cooccurrence": 1.0}), index=index).members[0].name == "cooccurrence"


def test_fuse_is_weighted_rrf() -> None:
    def cands(*ids: str) -> list[Candidate]:
        return [Candidate(item_id=i, retriever_rank=r, retriever_score=1.0) for r, i in enumerate(ids)]

    fused = fuse({"x": cands("a", "b"), "y": cands("b", "c")}, {"x": 1.0, "y": 0.5}, rrf_k=1)
    # vote = w / (rrf_k + rank + 1): b = 1/3 + 0.5/2, a = 1/2, c = 0.5/3
    assert fused == [("b", pytest.approx(1 / 3 + 0.25), ("x", "y")), ("a", 0.5, ("x",)), ("c", pytest.approx(0.5 / 3), ("y",))]


def test_unfitted_retriever_says_so() -> None:
    with pytest.raises(RuntimeError, match="before fit"):
        CooccurrenceRetriever().retrieve(UserHistory(user_id=None, item_ids=("a",)), 3)


def test_ml100k_speed_and_hybrid_not_worse_than_cooccurrence() -> None:
    data = load_dataset("ml-100k", Settings().resolved_home())
    split = LeaveOneOutSplit.from_dataset(data)
    start = time.perf_counter()
    cooc = CooccurrenceRetriever().fit(split.train_histories())
    cooc_hr = mean(hit_at([c.item_id for c in cooc.retrieve(split.valid_history(u), 20)], t, 20) for u, t in split.valid.items())
    assert time.perf_counter() - start < 15  # 943 users: seconds, not minutes
    hybrid = HybridRetriever().fit(split.train_histories())  # without the embedding member: no index here
    hybrid_hr = mean(hit_at([c.item_id for c in hybrid.retrieve(split.valid_history(u), 20)], t, 20) for u, t in split.valid.items())
    assert cooc_hr == pytest.approx(0.2895, abs=0.002)
    assert hybrid_hr >= cooc_hr
