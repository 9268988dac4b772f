"""Chroma catalog index: idempotent builds, reopening a persisted collection, queries."""

from __future__ import annotations

import hashlib
from pathlib import Path

import chromadb
import numpy as np
import pytest
from chromadb.api.client import SharedSystemClient
from chromadb.config import Settings as ChromaSettings

from llmrec.errors import ChromaUnavailable, DatasetError
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
    book = Item(item_id="3", title="Clara Callan", year=2001, attributes=(("author", "Richard Bruce Wright"), ("publisher", "Dell.")))
    assert item_document(book) == "Clara Callan (2001). Author: Richard Bruce Wright. Publisher: Dell."
    assert item_document(book.model_copy(update={"genres": ("Fiction",)})) == (
        "Clara Callan (2001). Genres: Fiction. Author: Richard Bruce Wright. Publisher: Dell.")


# sha256 of "\n".join(item_document(item) for every item), computed with the code before attributes existed
MOVIELENS_DOCUMENTS = {"ml-100k": "c93940e60ff99f5167b527a8758cfbaf717e590cafa75f5efac192eb245fda7b",
                       "ml-1m": "4f4ad4fb9e3337a46302550551fa29ce98340a2e9d37c21b7f33e4ce22079e99"}


@pytest.mark.parametrize("name", ["ml-100k", pytest.param("ml-1m", marks=pytest.mark.slow)])
def test_movielens_documents_are_byte_identical(name: str) -> None:
    """No MovieLens movie has attributes, so its Chroma document (and so its doc_hash: no rebuild) is unchanged."""
    from llmrec.data.datasets import load_dataset

    items = load_dataset(name, Settings().resolved_home()).items.values()
    assert hashlib.sha256("\n".join(item_document(item) for item in items).encode()).hexdigest() == MOVIELENS_DOCUMENTS[name]


def test_book_crossing_documents_name_the_author() -> None:
    from llmrec.data.datasets import load_dataset

    data = load_dataset("book-crossing", Settings().resolved_home())
    assert item_document(data.item("0440234743")) == "The Testament (1999). Author: John Grisham. Publisher: Dell."
    assert collection_name("ml-100k", "all-MiniLM-L6-v2", "0123456789ab") == "llmrec-ml-100k-all-minilm-l6-v2-0123456789ab"
    assert collection_name("My Data!", "x", "k") == "llmrec-my-data-x-k"
    long = collection_name("d" * 600, "e" * 600, "0123456789ab")
    assert len(long) <= 512 and long.endswith("-0123456789ab")  # the key survives any name length


def write_atomic(folder: Path, items: list[Item]) -> Path:
    """A RecBole folder named like its .inter file, with one interaction per item."""
    folder.mkdir(parents=True)
    lines = "".join(f"{item.item_id}\t{item.title}\t{item.year}\t{' '.join(item.genres)}\n" for item in items)
    (folder / f"{folder.name}.item").write_text("item_id:token\ttitle:token_seq\tyear:token\tgenre:token_seq\n" + lines)
    rows = "".join(f"u{n % 2}\t{item.item_id}\t{n}\n" for n, item in enumerate(items))
    (folder / f"{folder.name}.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n" + rows)
    return folder


def test_same_named_datasets_in_two_folders_never_share_a_collection(tmp_path: Path, embedder: SentenceEmbedder) -> None:
    """Two user folders both called `ml-100k`, and the built-in: three collections, each holding only its own items."""
    from llmrec.data.datasets import load_dataset
    from llmrec.pipeline import build_index

    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    (home / "models" / "all-MiniLM-L6-v2").symlink_to(embedder.config.model_dir)
    settings = Settings(home=home)
    scifi, romance = ITEMS[:6], [item.model_copy(update={"item_id": f"x{n}"}) for n, item in enumerate(ITEMS[6:12])]
    first = load_dataset(str(write_atomic(tmp_path / "a" / "ml-100k", scifi)), home)
    second = load_dataset(str(write_atomic(tmp_path / "b" / "ml-100k", romance)), home)
    assert first.name == second.name == "ml-100k" and first.source != second.source
    one, two = build_index(settings, first, progress=False), build_index(settings, second, progress=False)
    builtin = CatalogIndex("ml-100k", embedder, home)
    assert len({one.name, two.name, builtin.name}) == 3
    assert (one.count(), two.count()) == (6, 6)
    for index, data in ((one, first), (two, second)):
        found = {item_id for item_id, _ in index.similar("a film", 50)}
        assert found == set(data.item_ids)
    again = CatalogIndex(first.name, embedder, home, source=first.source).build(first.items.values(), progress=False)
    assert (again.added, again.updated, again.unchanged) == (0, 0, 6)  # the second folder re-embedded nothing of the first
    client = chromadb.PersistentClient(path=str(home / "chroma"), settings=ChromaSettings(anonymized_telemetry=False))
    assert sorted(c.name for c in client.list_collections()) == sorted([one.name, two.name])  # the built-in's name untouched


def test_a_changed_item_in_the_same_folder_is_the_only_one_embedded_again(tmp_path: Path, embedder: SentenceEmbedder) -> None:
    """The collection is keyed by the folder (its source), not by its content: an edit updates it in place."""
    from llmrec.data.datasets import load_dataset

    folder = write_atomic(tmp_path / "shop", ITEMS[:6])
    data = load_dataset(str(folder), tmp_path)
    index = CatalogIndex(data.name, embedder, tmp_path, source=data.source)
    assert index.build(data.items.values(), progress=False).added == 6
    fingerprint = index.collection.metadata["llmrec_fingerprint"]
    item_file = folder / "shop.item"
    item_file.write_text(item_file.read_text().replace("Star Voyage", "Star Voyage II"))
    edited = load_dataset(str(folder), tmp_path)
    again = CatalogIndex(edited.name, embedder, tmp_path, source=edited.source)
    assert again.name == index.name
    counts = again.build(edited.items.values(), progress=False)
    assert (counts.added, counts.updated, counts.unchanged, counts.removed) == (0, 1, 5, 0)
    metadata = again.collection.metadata
    assert metadata["llmrec_fingerprint"] != fingerprint and metadata["llmrec_source"] == str(folder.resolve())
    assert again.collection.get(ids=["S0"], include=["documents"])["documents"] == ["Star Voyage II (1990). Genres: Sci-Fi."]


def test_a_collection_of_another_source_is_refused(tmp_path: Path, embedder: SentenceEmbedder) -> None:
    index = CatalogIndex("tiny", embedder, tmp_path)
    index.build(ITEMS[:3], progress=False)
    index.collection.modify(metadata={**index.collection.metadata, "llmrec_source": "/somewhere/else"})
    SharedSystemClient.clear_system_cache()
    with pytest.raises(DatasetError, match=r"belongs to dataset source '/somewhere/else', not 'tiny'"):
        CatalogIndex("tiny", embedder, tmp_path).count()


def test_similar_returns_only_items_of_the_catalog_it_built(index: CatalogIndex) -> None:
    index.build(ITEMS, progress=False)
    index.collection.upsert(ids=["foreign"], embeddings=[index.embeddings_for(["S0"])["S0"]], documents=["x"])
    assert "foreign" not in {item_id for item_id, _ in index.similar("Star Voyage", 10)}


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
