"""A second domain with no code change (issue 16.3): a few books written by this test, a scenario file that says
"book", and `recommend` and a chat turn on it, with the books lexicon reading the message and the books wording in
the reply. Real Chroma and MiniLM; the LLM is scripted (this is about wiring, not the model)."""

from __future__ import annotations

import json

import pytest

from llmrec.schemas import RecommendRequest
from llmrec.settings import Settings
from llmrec.testing import ScriptedEngine

pytestmark = pytest.mark.slow

BOOKS = [  # id, title, year, genres, author
    ("b1", "The Hobbit", 1937, "Fantasy", "J. R. R. Tolkien"),
    ("b2", "A Wizard of Earthsea", 1968, "Fantasy", "Ursula K. Le Guin"),
    ("b3", "The Name of the Wind", 2007, "Fantasy", "Patrick Rothfuss"),
    ("b4", "Mistborn", 2006, "Fantasy", "Brandon Sanderson"),
    ("b5", "The Hound of the Baskervilles", 1902, "Mystery", "Arthur Conan Doyle"),
    ("b6", "Gaudy Night", 1935, "Mystery", "Dorothy L. Sayers"),
    ("b7", "The Big Sleep", 1939, "Mystery", "Raymond Chandler"),
    ("b8", "Dune", 1965, "Science_Fiction", "Frank Herbert"),
    ("b9", "Foundation", 1951, "Science_Fiction", "Isaac Asimov"),
    ("b10", "Jonathan Strange and Mr Norrell", 2004, "Fantasy Mystery", "Susanna Clarke"),
]
READS = {  # user -> books, oldest first
    "u1": ["b1", "b2", "b5", "b8"], "u2": ["b1", "b3", "b4", "b6"], "u3": ["b2", "b3", "b10", "b9"],
    "u4": ["b5", "b6", "b7", "b1"], "u5": ["b8", "b9", "b1", "b2"], "u6": ["b3", "b4", "b2", "b7"],
    "u7": ["b6", "b7", "b10", "b5"], "u8": ["b4", "b1", "b9", "b3"],
}


@pytest.fixture(scope="module")
def shelf(tmp_path_factory, home):
    root = tmp_path_factory.mktemp("shelf-home")
    for name in ("models", "wheels"):
        (root / name).symlink_to(home / name)
    data = root / "data" / "shelf"
    data.mkdir(parents=True)
    (data / "shelf.item").write_text("item_id:token\ttitle:token_seq\tyear:token\tclass:token_seq\tauthor:token_seq\n"
                                     + "".join(f"{i}\t{t}\t{y}\t{g}\t{a}\n" for i, t, y, g, a in BOOKS))
    rows = [f"{u}\t{b}\t{t}\n" for u, books in READS.items() for t, b in enumerate(books)]
    (data / "shelf.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n" + "".join(rows))
    scenario = root / "scenarios" / "shelf" / "scenario.json"
    scenario.parent.mkdir(parents=True)
    scenario.write_text(json.dumps({"name": "shelf", "dataset": str(data), "domain": "book", "description": "a small shelf of books"}))
    from llmrec.pipeline import build_pipeline

    return build_pipeline(Settings(home=root), "shelf", engine=ScriptedEngine(), progress=False)


def test_recommend_on_a_books_catalog_written_by_the_test(shelf):
    response = shelf.recommend(RecommendRequest(user_id="u1", k=3, explain=True))
    ids = [r.item.item_id for r in response.recommendations]
    assert len(ids) == 3 and not set(ids) & set(READS["u1"]) and set(ids) <= {b[0] for b in BOOKS}
    assert response.recommendations[0].item.attribute("author")  # the author column reached the item
    assert all("movie" not in (r.explanation.text if r.explanation else "") for r in response.recommendations)


def test_a_chat_turn_reads_the_books_lexicon_and_answers_in_books_words(shelf, tmp_path):
    from llmrec.agents.conversation import ChatConfig, build_agent

    agent = build_agent(Settings(home=tmp_path), pipeline=shelf, config=ChatConfig(store=tmp_path, k=3))
    result = agent.say("s1", "something like a fantasy novel but not mystery", user_id="u5")
    assert result.constraints.genres == ("Fantasy",) and result.constraints.exclude_genres == ("Mystery",)
    assert result.items and all("Fantasy" in r.item.genres and "Mystery" not in r.item.genres for r in result.items)
    assert "movie" not in result.reply.lower() and "film" not in result.reply.lower()
    cold = agent.say("s2", "hello")
    assert "book" in cold.reply.lower() and "movie" not in cold.reply.lower()
