"""CatalogIndex against a real Chroma server (`chroma run`) on loopback."""

import pytest

from llmrec.errors import ChromaUnavailable
from llmrec.retrieval.embedder import SentenceEmbedder, ensure_minilm
from llmrec.retrieval.index import CatalogIndex, IndexConfig
from llmrec.schemas import Item
from llmrec.testing import free_port, start_chroma_server


@pytest.fixture(scope="module")
def chroma_url(tmp_path_factory):
    proc, url = start_chroma_server(tmp_path_factory.mktemp("chroma"))
    yield url
    proc.terminate()
    proc.wait(timeout=20)


def test_index_and_query_through_a_chroma_server(chroma_url, tmp_path):
    from llmrec.settings import Settings

    embedder = SentenceEmbedder(ensure_minilm(Settings().resolved_home()))
    items = [Item(item_id=str(i), title=t, year=1995, genres=g) for i, (t, g) in enumerate(
        [("Toy Story", ("Animation",)), ("Heat", ("Crime",)), ("Casino", ("Crime",)), ("Babe", ("Children's",))])]
    index = CatalogIndex("tiny", embedder, tmp_path, IndexConfig(chroma_url=chroma_url))
    assert index.build(items, progress=False).added == 4
    assert index.build(items, progress=False).added == 0
    found = [i for i, _ in index.similar("gangster crime film", 2, exclude_ids=["1"])]
    assert "2" in found and "1" not in found


def test_unreachable_server_is_a_clear_error(tmp_path):
    from llmrec.settings import Settings

    embedder = SentenceEmbedder(ensure_minilm(Settings().resolved_home()))
    index = CatalogIndex("tiny", embedder, tmp_path, IndexConfig(chroma_url=f"http://127.0.0.1:{free_port()}"))
    with pytest.raises(ChromaUnavailable, match="127.0.0.1"):
        index.count()
