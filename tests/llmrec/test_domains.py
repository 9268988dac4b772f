"""Domains as data: the built-in files, the generic fallback, and a second domain written by a test with no code change."""

import json

import pytest
from pydantic import ValidationError

from llmrec.agents.constraints import Constraints, read_rules
from llmrec.domains import GENERIC, builtin_domains, load_domain
from llmrec.explain.claims import ClaimChecker
from llmrec.schemas import Item

BOOKS = [
    Item(item_id="b1", title="Hobbit, The", year=1937, genres=("Fantasy",)),
    Item(item_id="b2", title="Murder on the Orient Express", year=1934, genres=("Mystery",)),
    Item(item_id="b3", title="Name of the Wind, The", year=2007, genres=("Fantasy",)),
    Item(item_id="b4", title="Jonathan Strange & Mr Norrell", year=2004, genres=("Fantasy", "Mystery")),
    Item(item_id="b5", title="Big Sleep, The", year=1939, genres=("Mystery",)),
]
SUBJECTS = sorted({g for item in BOOKS for g in item.genres})


@pytest.fixture
def tiny_books(tmp_path):
    """A domain file of the test's own: nouns, a lexicon with synonyms, moods and a comparative."""
    path = tmp_path / "tiny-books.json"
    path.write_text(json.dumps({
        "name": "tiny-books", "noun": "book", "plural": "books", "consumed": "read", "audience": "readers", "consume": "read",
        "item_words": ["book", "books", "novel", "novels"],
        "synonyms": {"Fantasy": ["sword and sorcery", "high fantasy"], "Mystery": ["whodunit", "detective story"]},
        "moods": {"Fantasy": ["dragons", "wizards"]},
        "comparatives": {"cosier": {"exclude_genres": ["Mystery"]}},
    }))
    return load_domain(path)


def test_the_issues_sentence_reads_with_the_books_lexicon_and_no_code_change(tiny_books):
    reading = read_rules("something like a fantasy novel but not mystery", SUBJECTS, domain=tiny_books)
    assert reading == Constraints(genres=("Fantasy",), exclude_genres=("Mystery",))
    assert [i.item_id for i in BOOKS if reading.matches(i)] == ["b1", "b3"]
    assert read_rules("a whodunit with dragons from the thirties", SUBJECTS, domain=tiny_books) == \
        Constraints(genres=("Mystery", "Fantasy"), year_from=1930, year_to=1939)  # decade words come from generic.json
    assert read_rules("sword and sorcery, but cosier", SUBJECTS, domain=tiny_books) == \
        Constraints(genres=("Fantasy",), exclude_genres=("Mystery",))
    assert read_rules("I loved The Hobbit", SUBJECTS, domain=tiny_books).liked_titles == ("The Hobbit",)


def test_the_same_words_mean_nothing_in_a_domain_that_lacks_them(tiny_books):
    assert read_rules("a whodunit with dragons", SUBJECTS, domain=GENERIC) == Constraints()
    assert read_rules("a whodunit with dragons", SUBJECTS, domain=tiny_books).genres == ("Mystery", "Fantasy")


def test_claims_read_the_domains_genre_names(tiny_books):
    checker = ClaimChecker(BOOKS, domain=tiny_books)
    check = checker.check("it is a detective story, like The Big Sleep", BOOKS[1], [BOOKS[4]])
    assert [(c.kind, c.text, c.outside) for c in check.claims if c.kind == "genre"] == [("genre", "detective story", False)]
    wrong = checker.check("it is sword and sorcery", BOOKS[1], [BOOKS[4]])
    assert [(c.kind, c.text) for c in wrong.outside] == [("genre", "sword and sorcery")]


def test_built_in_domains_load_by_name_or_noun():
    assert {"generic", "movies", "books"} <= set(builtin_domains())
    movies = load_domain("movie")  # what a scenario's `domain` field holds today
    assert movies is load_domain("movies") and (movies.noun, movies.plural, movies.consumed) == ("movie", "movies", "watched")
    assert "funnier" in movies.lexicon(["Comedy"]) and movies.decades["eighties"] == 1980
    books = load_domain("book")
    assert books.name == "books" and books.lexicon(["Fantasy"])["dragons"].genres == ("Fantasy",)
    assert load_domain("item") is GENERIC and GENERIC.noun == "item"
    podcast = load_domain("podcast")  # a noun with no file: generic words under its own noun
    assert (podcast.noun, podcast.plural, podcast.synonyms) == ("podcast", "podcasts", {})


def test_the_built_in_scenarios_domain_names_a_domain_file():
    from llmrec.scenario import builtin_names, load_scenario

    for name in builtin_names():
        scenario = load_scenario(name, __import__("pathlib").Path("/nonexistent"))
        assert load_domain(scenario.domain).name in builtin_domains()


def test_a_malformed_domain_file_is_refused(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"name": "bad", "synonym": {"Fantasy": ["magic"]}}))  # a typo of "synonyms"
    with pytest.raises(ValidationError):
        load_domain(path)


def test_lexicon_keeps_only_catalog_genres():
    movies = load_domain("movies")
    lexicon = movies.lexicon(["Comedy", "Drama"])
    assert "cowboy" not in lexicon and lexicon["funny"].genres == ("Comedy",)
    assert movies.lexicon(["Comedy"])["darker"].exclude_genres == ("Comedy",)
    assert movies.names(["Romance", "Comedy"])["rom com"] == ("Romance", "Comedy")
