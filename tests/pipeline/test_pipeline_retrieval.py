"""The pipeline's retrieval stage with real Chroma: more items than the LLM reranks, and a Chroma server
that dies mid-run. The LLM is scripted here (these tests are about retrieval, not about the model)."""

import pytest

from llmrec.schemas import RecommendRequest
from llmrec.testing import ScriptedEngine, start_chroma_server

pytestmark = pytest.mark.slow


def test_k_beyond_the_candidates_is_filled_in_the_retrievers_order_and_says_so(scripted_pipeline):
    response = scripted_pipeline.recommend(RecommendRequest(user_id="196", k=30))
    n = scripted_pipeline.settings.candidates
    assert len(response.recommendations) == 30
    assert [r.rank for r in response.recommendations] == list(range(1, 31))
    tail = response.recommendations[n:]
    assert [r.retriever_rank for r in tail] == list(range(n, 30)) and all(r.llm_logprob is None for r in tail)
    assert any(f"positions {n + 1}-30 are in the retriever's order" in note for note in response.notes)
    seen = set(scripted_pipeline.dataset.history("196").item_ids)
    ids = [r.item.item_id for r in response.recommendations]
    assert len(set(ids)) == 30 and not seen & set(ids)


@pytest.fixture()
def chroma_server(tmp_path):
    proc, url = start_chroma_server(tmp_path / "chroma")
    yield proc, url
    if proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=20)


def test_a_chroma_server_stopped_mid_run_gives_collaborative_candidates_and_a_note(settings, chroma_server):
    """Real `chroma run`: the first request uses it, then the server is stopped and the next request still answers."""
    from llmrec.pipeline import build_pipeline

    proc, url = chroma_server
    pipeline = build_pipeline(settings.model_copy(update={"chroma_url": url}), "movies", engine=ScriptedEngine(), progress=False)
    first = pipeline.recommend(RecommendRequest(user_id="196", k=5))
    assert not any("Chroma" in note for note in first.notes)
    proc.terminate()
    proc.wait(timeout=20)
    second = pipeline.recommend(RecommendRequest(user_id="1", k=5))  # another user: nothing cached for it
    assert len(second.recommendations) == 5
    assert any("Chroma was unavailable" in note for note in second.notes), second.notes
