"""Chroma catalog index: idempotent builds, reopening a persisted collection, queries."""

from __future__ import annotations

from pathlib import Path

import chromadb
import numpy as np
import pytest
from chromadb.api.client import SharedSystemClient
from chromadb.config import Settings as ChromaSettings

from llmrec.errors import ChromaUnavailable
from llmrec.retrieval.embedder import SentenceEmbedder, ensure_minilm
from llmrec.retrieval.index import CatalogIndex, IndexConfig, collection_name, item_document
from llmrec.schemas import Item
from llmrec.settings import Settings

TITLES = {
    "Sci-Fi": ["Star Voyage", "Galaxy Patrol", "Robot Uprising", "Mars Colony", "Alien Signal", "Time Loop"],
    "Romance": ["Love in Paris", "Summer Wedding", "Letters to Anna", "Second Chances", "The Proposal Again", "Autumn Kiss"],
    "Animation": ["Talking Cats", "The Little Dragon", "Toy Kingdom", "Ocean Friends", "Magic Pencil", "Bunny Rescue"],
}
ITEMS = [Item(item_id=f"{genre[0]}{n}", title=title, year=1990 + n, genres=(genre,))
         for genre, titles in TITLES.items() for n, title in enumerate(titles)]


@pytest.fixture(scope="module")
def embedder() -> SentenceEmbedder:
    return SentenceEmbedder(ensure_minilm(Settings().resolved_home()))


@pytest.fixture
def index(tmp_path: Path, embedder: SentenceEmbedder) -> CatalogIndex:
    return CatalogIndex("tiny", embedder, tmp_path, IndexConfig(batch_size=7))


def test_document_and_collection_name() -> None:
    item = Item(item_id="1", title="Toy Story", year=1995, genres=("Animation", "Comedy"))
    assert item_document(item) == "Toy Story (1995). Genres: Animation, Comedy."
    assert item_document(Item(item_id="2", title="No Year")) == "No Year."
    assert collection_name("ml-100k", "all-MiniLM-L6-v2") == "llmrec-ml-100k-all-minilm-l6-v2"
    assert collection_name("My Data!", "x") == "llmrec-my-data-x"


def test_build_is_idempotent_and_tracks_changes(index: CatalogIndex) -> None:
    first = index.build(ITEMS, progress=False)
    assert (first.added, first.updated, first.unchanged) == (len(ITEMS), 0, 0)
    again = index.build(ITEMS, progress=False)
    assert (again.added, again.updated, again.unchanged) == (0, 0, len(ITEMS))
    changed = [ITEMS[0].model_copy(update={"title": "Star Voyage II"}), *ITEMS[1:-1]]
    third = index.build(changed, progress=False)
    assert (third.added, third.updated, third.unchanged, third.removed) == (0, 1, len(ITEMS) - 2, 1)
    assert index.count() == len(ITEMS) - 1
    stored = index.collection.get(ids=["S0"], include=["metadatas", "documents"])
    assert stored["documents"] == ["Star Voyage II (1990). Genres: Sci-Fi."]
    assert stored["metadatas"][0]["genres"] == "|Sci-Fi|" and stored["metadatas"][0]["year"] == 1990


def test_similar_excludes_ids_and_finds_neighbours(index: CatalogIndex) -> None:
    index.build(ITEMS, progress=False)
    pairs = index.similar("A spaceship crew explores a distant galaxy. Genres: Sci-Fi.", 5, exclude_ids={"S1"})
    assert len(pairs) == 5 and "S1" not in {i for i, _ in pairs}
    assert [d for _, d in pairs] == sorted(d for _, d in pairs)
    assert sum(i.startswith("S") for i, _ in pairs) >= 3
    everything = index.similar(index.embeddings_for(["R0"])["R0"], 100, exclude_ids={"R0"})
    assert len(everything) == len(ITEMS) - 1
    assert index.similar("anything", 0) == []


def test_embeddings_for_reads_stored_vectors(index: CatalogIndex, embedder: SentenceEmbedder) -> None:
    index.build(ITEMS, progress=False)
    vectors = index.embeddings_for(["A2", "missing", "S3"])
    assert list(vectors) == ["A2", "S3"]
    expected = embedder.encode([item_document(ITEMS[14])])[0]
    assert np.allclose(vectors["A2"], expected, atol=1e-5)


def test_reopened_collection_rebuilds_the_registered_embedder(tmp_path: Path, index: CatalogIndex) -> None:
    index.build(ITEMS, progress=False)
    SharedSystemClient.clear_system_cache()  # drop the in-process client so the data is read from disk
    # the same settings as CatalogIndex: Chroma refuses two clients of one path with different settings
    client = chromadb.PersistentClient(path=str(tmp_path / "chroma"), settings=ChromaSettings(anonymized_telemetry=False))
    collection = client.get_collection(index.name)  # no embedding function passed: rebuilt from its config
    rebuilt = collection.configuration["embedding_function"]
    assert isinstance(rebuilt, SentenceEmbedder) and rebuilt.get_config() == index.embedder.get_config()
    assert collection.count() == len(ITEMS)
    found = collection.query(query_texts=["cartoon animals for kids"], n_results=3, include=["distances"])
    assert all(i.startswith("A") for i in found["ids"][0])
    again = CatalogIndex("tiny", index.embedder, tmp_path).build(ITEMS, progress=False)
    assert again.added == 0 and again.unchanged == len(ITEMS)


def test_unreachable_server_is_chroma_unavailable(tmp_path: Path, embedder: SentenceEmbedder) -> None:
    dead = CatalogIndex("tiny", embedder, tmp_path, IndexConfig(chroma_url="http://127.0.0.1:9"))
    with pytest.raises(ChromaUnavailable, match=r"http://127\.0\.0\.1:9"):
        dead.count()
    with pytest.raises(ChromaUnavailable, match="not http"):
        CatalogIndex("tiny", embedder, tmp_path, IndexConfig(chroma_url="localhost:8000")).count()
