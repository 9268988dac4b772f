"""The embedding adapter as a retriever: its item vectors in a real (embedded) Chroma, alone and in the hybrid."""

import numpy as np
import pytest

from llmrec.engines.encoder import ItemVectors
from llmrec.ranking.embedding import EmbeddingRanker, TwoTower, TwoTowerConfig
from llmrec.retrieval.encoder_retriever import EncoderRetriever, exact_top
from llmrec.retrieval.retrievers import HybridConfig, HybridRetriever
from llmrec.schemas import UserHistory


@pytest.fixture
def ranker() -> EmbeddingRanker:
    rng = np.random.default_rng(0)
    ids = tuple(f"i{n}" for n in range(60))
    dim, width = 8, 4
    tensors = {"center": np.zeros(dim, np.float32), "scale": np.ones(dim, np.float32),
               "item_weight": rng.normal(size=(dim, width)).astype(np.float32), "item_bias": np.zeros(width, np.float32),
               "user_weight": rng.normal(size=(dim, width)).astype(np.float32), "user_bias": np.zeros(width, np.float32)}
    tower = TwoTower(tensors, TwoTowerConfig(history_items=3, decay=0.8, dim=width))
    return EmbeddingRanker(tower, ItemVectors(ids, rng.normal(size=(len(ids), dim)).astype(np.float32)))


def test_chroma_returns_the_exact_inner_product_top_k_without_seen_items(tmp_path, ranker) -> None:
    retriever = EncoderRetriever(ranker, "hash-a", tmp_path, progress=False)
    for history in (("i1", "i2", "i3"), ("i10",), ("i5", "i40", "i7", "i33")):
        got = [c.item_id for c in retriever.retrieve(UserHistory(user_id=None, item_ids=history), 10)]
        assert got == exact_top(ranker, history, 10) and not set(got) & set(history)
    # Filled once: a second retriever over the same adapter content reuses the collection; other content gets its own.
    again = EncoderRetriever(ranker, "hash-a", tmp_path, progress=False)
    assert again.name_in_chroma == retriever.name_in_chroma and again.collection.count() == 60
    assert EncoderRetriever(ranker, "hash-b", tmp_path, progress=False).name_in_chroma != retriever.name_in_chroma
    assert retriever.retrieve(UserHistory(user_id=None, item_ids=("unknown",)), 5) == []


def test_the_hybrid_takes_it_as_a_member_with_its_own_weight(tmp_path, ranker) -> None:
    encoder = EncoderRetriever(ranker, "hash-a", tmp_path, progress=False)
    histories = {f"u{n}": [f"i{(n * 7 + j) % 60}" for j in range(8)] for n in range(30)}
    history = UserHistory(user_id=None, item_ids=("i1", "i2", "i3"))
    without = HybridRetriever().fit(histories)
    assert "llm-encoder" not in {m.name for m in HybridRetriever(extra=[encoder]).fit(histories).members}  # no weight: not asked
    voted = HybridRetriever(HybridConfig(weights={**HybridConfig().weights, "llm-encoder": 5.0}), extra=[encoder]).fit(histories)
    got = voted.retrieve(history, 10)
    assert any("llm-encoder" in c.sources for c in got)
    assert [c.item_id for c in got] != [c.item_id for c in without.retrieve(history, 10)]
