"""`Pipeline.recommend` with a typed retrieval filter (`ItemFilter`), the chat's path, on the real catalog and Chroma
index. The LLM is scripted (these test retrieval under a filter and the one path's wiring, not the model)."""

import threading

from llmrec.schemas import ItemFilter, RecommendRequest


def test_a_filter_narrows_retrieval_and_its_exclusions_never_come_back(scripted_pipeline):
    pipeline = scripted_pipeline
    history = pipeline.dataset.history("196").item_ids
    plain = pipeline.recommend(RecommendRequest(history=history, k=5, filter=ItemFilter(genres=("Comedy",), year_from=1990, year_to=1999)))
    first = [r.item.item_id for r in plain.recommendations]
    assert len(first) == 5 and plain.matched >= 5
    assert plain.ranking == "retriever"  # the scripted engine has no fitted weight: the retriever's order, and it says so
    assert all("Comedy" in r.item.genres and 1990 <= r.item.year <= 1999 for r in plain.recommendations)
    where = ItemFilter(genres=("Comedy",), year_from=1990, year_to=1999, exclude=tuple(first[:2]), disliked=(first[2],))
    again = pipeline.recommend(RecommendRequest(history=history, k=5, filter=where))
    assert not set(first[:3]) & {r.item.item_id for r in again.recommendations}
    assert not set(history) & {r.item.item_id for r in again.recommendations}


def test_a_filter_with_no_history_is_a_cold_start_within_the_filter(scripted_pipeline):
    response = scripted_pipeline.recommend(RecommendRequest(history=(), k=5, filter=ItemFilter(genres=("Horror",), year_from=1980, year_to=1989)))
    assert response.ranking == "cold-start" and response.cold_start and len(response.recommendations) == 5
    assert all("Horror" in r.item.genres and 1980 <= r.item.year <= 1989 for r in response.recommendations)


def test_an_impossible_filter_says_so(scripted_pipeline):
    response = scripted_pipeline.recommend(RecommendRequest(history=("1",), k=5, filter=ItemFilter(genres=("Film-Noir", "Animation"),
                                                                                                     year_from=2000)))
    assert response.recommendations == () and response.matched == 0
    assert any("no catalog item passes these filters" in n for n in response.notes)


def test_the_agent_needs_are_explicit_pipeline_attributes(scripted_pipeline):
    assert scripted_pipeline.index is not None and scripted_pipeline.index.count() == len(scripted_pipeline.dataset.items)
    popular = scripted_pipeline.popular
    assert len(popular) > 100 and scripted_pipeline.popularity[popular[0]] >= scripted_pipeline.popularity[popular[-1]]


def test_concurrent_calls_from_several_threads_answer_as_one_at_a_time(scripted_pipeline):
    requests = [RecommendRequest(user_id=u, k=5) for u in ("196", "186", "22", "244")]
    requests += [RecommendRequest(history=scripted_pipeline.dataset.history("196").item_ids, k=5, filter=ItemFilter(genres=("Drama",)))]
    alone = [[r.item.item_id for r in scripted_pipeline.recommend(q).recommendations] for q in requests]
    together: dict[int, list[str]] = {}

    def call(n):
        together[n] = [r.item.item_id for r in scripted_pipeline.recommend(requests[n]).recommendations]

    threads = [threading.Thread(target=call, args=(n,)) for n in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert [together[n] for n in range(len(requests))] == alone


def test_no_mystery_keeps_a_comedy_whose_title_holds_the_word(scripted_pipeline):
    """Issue 17.19: the exclusion ran as Chroma `$not_contains` on the document text, so "no mystery" dropped
    Mystery Science Theater 3000 (Comedy, Sci-Fi). Exclusions are checked on the catalog item's genres."""
    pipeline = scripted_pipeline
    mst3k = "109"
    assert pipeline.dataset.items[mst3k].genres == ("Comedy", "Sci-Fi")
    found = pipeline.search("Mystery Science Theater 3000: The Movie (1996)", ItemFilter(exclude_genres=("Mystery",)), n=10)
    assert mst3k in found
    assert all("Mystery" not in pipeline.dataset.items[i].genres for i in found)
