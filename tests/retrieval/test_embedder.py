"""all-MiniLM-L6-v2 through plain transformers, and its Chroma embedding-function contract."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from chromadb.utils.embedding_functions import known_embedding_functions

from llmrec.errors import AssetError
from llmrec.retrieval.embedder import SentenceEmbedder, ensure_minilm
from llmrec.settings import Settings


@pytest.fixture(scope="module")
def embedder() -> SentenceEmbedder:
    return SentenceEmbedder(ensure_minilm(Settings().resolved_home()))


def test_model_folder_is_unpacked_once() -> None:
    folder = ensure_minilm(Settings().resolved_home())
    assert (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file()
    start = time.perf_counter()
    assert ensure_minilm(Settings().resolved_home()) == folder
    assert time.perf_counter() - start < 0.5


def test_matches_sentence_transformers_output(embedder: SentenceEmbedder) -> None:
    # Reference values from sentence-transformers 6.2 on the same folder (max abs difference was 0.0).
    vector = embedder.encode(["hello"])[0]
    assert vector.dtype == np.float32 and vector.shape == (384,)
    assert vector[:4] == pytest.approx([-0.06277178, 0.05495878, 0.05216482, 0.08578999], abs=1e-5)


def test_batches_keep_input_order_and_unit_norm(embedder: SentenceEmbedder) -> None:
    texts = ["short", "a somewhat longer sentence about films", "mid length text", "x " * 400]
    together = embedder.encode(texts)
    alone = np.stack([embedder.encode([t])[0] for t in texts])
    assert np.allclose(together, alone, atol=1e-5)
    assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)


def test_similar_texts_are_closer(embedder: SentenceEmbedder) -> None:
    space, war, love = embedder.encode(["Star Wars. Genres: Sci-Fi, Action.", "Space battle in a galaxy. Genres: Sci-Fi.",
                                        "Sleepless in Seattle. Genres: Romance, Comedy."])
    assert float(space @ war) > float(space @ love)


def test_chroma_contract_round_trips(embedder: SentenceEmbedder) -> None:
    assert known_embedding_functions[SentenceEmbedder.name()] is SentenceEmbedder
    rebuilt = SentenceEmbedder.build_from_config(embedder.get_config())
    assert rebuilt.get_config() == embedder.get_config()
    assert embedder.get_config()["batch_size"] == 64
    assert len(embedder(["one", "two"])) == 2


def test_construction_is_lazy(tmp_path: Path) -> None:
    lazy = SentenceEmbedder(tmp_path / "not-a-model")  # nothing is read yet
    assert lazy.model_id == "not-a-model"
    with pytest.raises(AssetError, match="no config.json"):
        lazy.encode(["text"])
