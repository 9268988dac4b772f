"""The `embedding` adapter as a retriever over the whole catalog: its projected item vectors live in Chroma.

The two-tower adapter scores user·item, so the items' projected vectors go into a Chroma collection with
inner-product space, one collection per adapter content (`folder_hash`) and catalog; the user's vector is
the query. As a member of the hybrid retriever (`HybridRetriever(extra=[...])`, with a weight under
`llm-encoder`), the same LLM that reranks also proposes candidates.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from llmrec.errors import ChromaUnavailable
from llmrec.ranking.embedding import EmbeddingRanker
from llmrec.schemas import Candidate, UserHistory

NAME = "llm-encoder"


class EncoderRetriever:
    """Nearest items to the user's tower vector, from the adapter's item vectors in Chroma."""

    name = NAME

    def __init__(self, ranker: EmbeddingRanker, adapter_hash: str, home: Path, chroma_url: str | None = None, progress: bool = True):
        self.ranker = ranker
        content = hashlib.sha256((adapter_hash + "\n" + "\n".join(ranker.ids)).encode()).hexdigest()[:16]
        self.name_in_chroma = f"llmrec-encoder-{content}"
        self.home, self.chroma_url, self.progress = home, chroma_url, progress
        self._collection: Any = None

    @property
    def collection(self) -> Any:
        """The collection, filled once (the metadata marks it complete only after the last batch)."""
        if self._collection is None:
            from llmrec.retrieval.index import connect

            client = connect(self.chroma_url, self.home)
            collection = client.get_or_create_collection(name=self.name_in_chroma, embedding_function=None,
                                                         configuration={"hnsw": {"space": "ip"}})
            if (collection.metadata or {}).get("llmrec_complete") != "yes" or collection.count() != len(self.ranker.ids):
                self._fill(collection)
            self._collection = collection
        return self._collection

    def _fill(self, collection: Any, batch: int = 1000) -> None:
        ids, matrix = self.ranker.ids, self.ranker.item_matrix
        with tqdm(total=len(ids), desc=f"item vectors into {self.name_in_chroma}", unit="item", disable=not self.progress) as bar:
            for start in range(0, len(ids), batch):
                collection.upsert(ids=list(ids[start : start + batch]), embeddings=matrix[start : start + batch].tolist())
                bar.update(min(batch, len(ids) - start))
        collection.modify(metadata={"llmrec_complete": "yes"})

    def fit(self, histories) -> EncoderRetriever:
        """Nothing to learn here: the towers were trained with the adapter."""
        return self

    def retrieve(self, history: UserHistory, k: int) -> list[Candidate]:
        user = self.ranker.user_vector(history.item_ids)
        if user is None or k <= 0:
            return []
        seen = set(history.item_ids)
        fetch = min(len(self.ranker.ids), k + len(seen))
        try:
            got = self.collection.query(query_embeddings=[np.asarray(user, dtype=np.float32)], n_results=fetch, include=["distances"])
        except (ConnectionError, OSError) as exc:
            raise ChromaUnavailable(f"Chroma failed for {self.name_in_chroma}: {exc}") from None
        # Chroma's inner-product distance is 1 - u·v: smaller is better, so the order is already best first.
        pairs = [(i, 1.0 - float(d)) for i, d in zip(got["ids"][0], got["distances"][0]) if i not in seen][:k]
        return [Candidate(item_id=i, retriever_rank=r, retriever_score=s, sources=(self.name,)) for r, (i, s) in enumerate(pairs)]


def exact_top(ranker: EmbeddingRanker, history: Sequence[str], k: int) -> list[str]:
    """The same ranking by brute force (numpy), for checking what Chroma returns."""
    scores = ranker.catalog_scores(history)
    if scores is None:
        return []
    seen = set(history)
    order = np.argsort(-scores, kind="stable")
    return [ranker.ids[i] for i in order if ranker.ids[i] not in seen][:k]
