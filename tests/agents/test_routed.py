"""A chat with no scenario (issue 18.7): the first message, the history or the user routes the session, the reply says
where and why, an ambiguous first message gets a question that the next message answers, and a session stays where it
started. Two small domains written by the test (a shelf of books, a few reels of film), real Chroma and MiniLM, the real
engine shared by both scenarios' pipelines."""

from __future__ import annotations

import json

import pytest

from llmrec.errors import NoRoute

pytestmark = pytest.mark.slow

BOOKS = [  # id, title, year, genres, author
    ("b1", "The Hobbit", 1937, "Fantasy", "J. R. R. Tolkien"), ("b2", "A Wizard of Earthsea", 1968, "Fantasy", "Ursula K. Le Guin"),
    ("b3", "The Name of the Wind", 2007, "Fantasy", "Patrick Rothfuss"), ("b4", "Mistborn", 2006, "Fantasy", "Brandon Sanderson"),
    ("b5", "The Hound of the Baskervilles", 1902, "Mystery", "Arthur Conan Doyle"), ("b6", "Gaudy Night", 1935, "Mystery", "Dorothy L. Sayers"),
    ("b7", "Dune", 1965, "Science_Fiction", "Frank Herbert"), ("b8", "Foundation", 1951, "Science_Fiction", "Isaac Asimov"),
]
FILMS = [  # id, title, year, genres
    ("m1", "Stagecoach", 1939, "Western"), ("m2", "Rio Bravo", 1959, "Western"), ("m3", "Some Like It Hot", 1959, "Comedy"),
    ("m4", "Airplane!", 1980, "Comedy"), ("m5", "Vertigo", 1958, "Thriller"), ("m6", "North by Northwest", 1959, "Thriller"),
]


def _folder(root, name, header, rows, histories):
    data = root / "data" / name
    data.mkdir(parents=True)
    (data / f"{name}.item").write_text(header + "".join("\t".join(map(str, row)) + "\n" for row in rows))
    inter = [f"{u}\t{i}\t{t}\n" for u, items in histories.items() for t, i in enumerate(items)]
    (data / f"{name}.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n" + "".join(inter))
    return str(data)


def _scenario(root, name, dataset, domain, description):
    path = root / "scenarios" / name / "scenario.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"name": name, "dataset": dataset, "domain": domain, "description": description}))


@pytest.fixture(scope="module")
def two_domains(tmp_path_factory, home, settings):
    """A home with two scenarios, `shelf` (books) and `reels` (movies), and no built-in's data."""
    root = tmp_path_factory.mktemp("routed-home")
    for name in ("models", "wheels"):
        (root / name).symlink_to(home / name)
    reads = {f"r{n}": [b[0] for b in BOOKS[n % 4:] + BOOKS[: n % 4]][:5] for n in range(8)}
    watches = {f"w{n}": [f[0] for f in FILMS[n % 3:] + FILMS[: n % 3]][:4] for n in range(6)}
    shelf = _folder(root, "shelf", "item_id:token\ttitle:token_seq\tyear:token\tclass:token_seq\tauthor:token_seq\n", BOOKS, reads)
    reels = _folder(root, "reels", "item_id:token\ttitle:token_seq\tyear:token\tclass:token_seq\n", FILMS, watches)
    _scenario(root, "shelf", shelf, "book", "A small shelf of novels: fantasy, mystery and science fiction books to read.")
    _scenario(root, "reels", reels, "movie", "A few feature films: comedies, westerns and thrillers to watch.")
    return settings.model_copy(update={"home": root})


@pytest.fixture(scope="module")
def chat(two_domains, engine, tmp_path_factory):
    from llmrec.agents.conversation import ChatConfig
    from llmrec.agents.routed import RoutedChat

    store = tmp_path_factory.mktemp("routed-store")
    return RoutedChat(two_domains, config=ChatConfig(store=store, k=3, llm_understanding=False), scenarios=["shelf", "reels"],
                      engine=engine)


def test_a_first_message_about_books_routes_to_books_and_the_session_stays_there(chat):
    result = chat.say("books", "I'd like a fantasy novel with dragons")
    first, rest = result.reply.split("\n", 1)
    assert result.scenario == "shelf" and first.startswith("Routed to shelf (shelf): the text is most like its description")
    assert result.routed and result.items and all(r.item.item_id.startswith("b") and "Fantasy" in r.item.genres for r in result.items)
    assert rest.startswith("Looking for: Fantasy\n") and rest.count("Read by ") == len(result.items)  # books' own words
    assert "movie" not in result.reply.lower() and "film" not in result.reply.lower() and "watch" not in result.reply.lower()
    later = chat.say("books", "now something funny with cowboys")  # words of the other domain: the session stays on books
    assert later.scenario == "shelf" and not later.routed and not later.reply.startswith("Routed")
    assert all(r.item.item_id.startswith("b") for r in later.items)


def test_an_ambiguous_first_message_gets_a_question_and_the_answer_picks(chat, two_domains):
    from llmrec.agents.conversation import ChatConfig
    from llmrec.agents.routed import RoutedChat

    asked = chat.say("unsure", "recommend something")
    assert asked.scenario is None and asked.items == () and asked.trace == ("route",)
    assert asked.questions == ("Do you mean shelf (A small shelf of novels: fantasy, mystery and science …) or "
                               "reels (A few feature films: comedies, westerns and thrillers to …)? Answer with its name.",)
    assert asked.notes[0].startswith("ambiguous: ") and asked.reply.startswith("? Do you mean shelf")
    again = chat.say("unsure", "hmm")
    assert again.scenario is None and "couldn't tell which one" in again.notes[0] and again.questions == asked.questions
    picked = chat.say("unsure", "the movies, please")
    assert picked.scenario == "reels" and picked.reply.startswith("Routed to reels: you chose it (of shelf, reels)\n")
    assert "a movie you liked" in picked.reply and "Watched by " in picked.reply  # the first message, answered in movies' words
    assert picked.items and all(r.item.item_id.startswith("m") for r in picked.items)
    # a new process (a new RoutedChat on the same store) finds the session where it was bound, without routing again
    assert RoutedChat(two_domains, config=ChatConfig(store=chat.config.store), scenarios=["shelf", "reels"]).scenario("unsure") == "reels"
    assert chat.agent("shelf").stages.pipeline.engine is chat.agent("reels").stages.pipeline.engine  # one engine for both


def test_a_history_routes_by_its_catalog_and_a_mixed_one_is_refused_without_a_binding(chat):
    result = chat.say("shelf-reader", "more like these", history=["b1", "b2"])
    assert result.scenario == "shelf" and "its catalog holds all 2 history item(s)" in result.reply.split("\n")[0]
    assert result.items and not {r.item.item_id for r in result.items} & {"b1", "b2"}
    with pytest.raises(NoRoute, match="different catalogs") as refused:
        chat.say("mixed", "hello", history=["b1", "m1"])
    assert not refused.value.askable and refused.value.exit_code == 3 and chat.bindings.get("mixed") is None
    assert chat.say("reader", "hello", user_id="w2").scenario == "reels"  # a user id is routed by the data that holds it
    with pytest.raises(NoRoute, match="unknown user 'nobody'"):
        chat.say("nobody", "hello", user_id="nobody")


def test_an_answer_picks_by_name_word_number_or_description(chat):
    options = ("shelf", "reels")
    assert chat.pick("shelf", options) == "shelf" and chat.pick("Reels!", options) == "reels"
    assert chat.pick("books", options) == "shelf" and chat.pick("a film", options) == "reels"
    assert chat.pick("2", options) == "reels" and chat.pick("the first one", options) == "shelf"
    assert chat.pick("a novel, I think", options) == "shelf"  # "novel": one of the books domain's item words
    assert chat.pick("something to watch tonight", options) == "reels"  # no name or word of either: the description decides
    assert chat.pick("both?", options) is None and chat.pick("3", options) is None and chat.pick("hmm", options) is None
    assert chat.pick("a long story for the beach", options) is None  # most like the shelf (.27), but not clearly (< .30)


def test_a_question_names_the_options_within_reach(chat):
    # "a funny movie please" on a home with ML-100K, ML-1M and Book-Crossing: the two movie catalogs, not books
    assert chat._close([("movies-1m", 0.19), ("movies", 0.15), ("books", 0.07)]) == ("movies-1m", "movies")
    # "hi": nothing matches, so the best three are offered
    assert chat._close([("movies", 0.09), ("movies-1m", 0.03), ("books", 0.02), ("other", 0.01)]) == ("movies", "movies-1m", "books")
