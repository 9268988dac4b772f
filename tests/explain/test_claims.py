"""The claim extractor on hand-written reasons, with ML-100K's own titles, years and genres."""

import pytest

from llmrec.explain.claims import ClaimChecker
from llmrec.schemas import Item

CATALOG = [
    Item(item_id="1", title="Toy Story", year=1995, genres=("Animation", "Children's", "Comedy")),
    Item(item_id="50", title="Star Wars", year=1977, genres=("Action", "Adventure", "Romance", "Sci-Fi", "War")),
    Item(item_id="71", title="Lion King, The", year=1994, genres=("Animation", "Children's", "Musical")),
    Item(item_id="95", title="Aladdin", year=1992, genres=("Animation", "Children's", "Comedy", "Musical")),
    Item(item_id="98", title="Silence of the Lambs, The", year=1991, genres=("Drama", "Thriller")),
    Item(item_id="100", title="Fargo", year=1996, genres=("Crime", "Drama", "Thriller")),
    Item(item_id="167", title="Private Benjamin", year=1980, genres=("Comedy",)),
    Item(item_id="172", title="Empire Strikes Back, The", year=1980, genres=("Action", "Adventure", "Drama", "Romance", "Sci-Fi", "War")),
    Item(item_id="257", title="Men in Black", year=1997, genres=("Action", "Adventure", "Comedy", "Sci-Fi")),
]
BY_ID = {i.item_id: i for i in CATALOG}
CHECKER = ClaimChecker(CATALOG)
HISTORY = [BY_ID["100"], BY_ID["1"]]  # Fargo, Toy Story
BENJAMIN = BY_ID["167"]


def outside(text, target=BENJAMIN, history=HISTORY, cited=()):
    return [(c.kind, c.text) for c in CHECKER.check(text, target, history, cited).outside]


def test_the_issues_example_flags_the_invented_plot():
    check = CHECKER.check("it is a comedy film about a young boy who is a hero", BENJAMIN, HISTORY)
    assert [(c.kind, c.outside) for c in check.claims] == [("plot", True), ("genre", False)]
    assert check.outside[0].text == "about a young boy who is a hero"


def test_a_correct_reason_states_nothing_outside():
    check = CHECKER.check("it is a comedy from 1980, like Fargo", BENJAMIN, HISTORY)
    assert {c.kind for c in check.claims} == {"title", "genre", "year"} and check.outside == ()
    assert outside("it is a comedy from the 80s, as funny as Toy Story") == []


@pytest.mark.parametrize("text,expected", [
    ("it is a gripping thriller", [("genre", "thriller")]),
    ("it is an animated comedy", [("genre", "animated")]),
    ("it is a romantic sci-fi adventure", [("genre", "romantic"), ("genre", "sci-fi"), ("genre", "adventure")]),
    ("it is a comedy from 1977", [("year", "1977")]),
    ("it is a comedy from the 1990s", [("year", "1990s")]),
    ("it is a classic from the nineties", [("year", "nineties")]),
])
def test_wrong_genres_and_years_are_flagged(text, expected):
    assert outside(text) == expected


def test_genres_and_years_of_a_named_or_cited_history_item_are_allowed():
    assert outside("like Fargo, it is a dark thriller") == []
    assert outside("both are thrillers from 1996", cited=[BY_ID["100"]]) == []
    assert outside("both are thrillers from 1996") == [("genre", "thrillers"), ("year", "1996")]


@pytest.mark.parametrize("text,expected", [
    ("fans of Star Wars loved it", [("title", "Star Wars")]),
    ('it is as funny as "The Lion King"', [("title", "Lion King, The")]),
    ("it is like The Empire Strike Back", [("title", "The Empire Strike Back")]),  # a near spelling, fuzzy-matched
    ("it is a comedy like Star Trek Voyager", [("title", "Star Trek Voyager")]),  # not in the catalog at all
    ('it plays like "Space Bandits"', [("title", "Space Bandits")]),
])
def test_titles_outside_the_history_are_flagged(text, expected):
    assert outside(text) == expected


def test_titles_in_the_history_or_the_item_itself_are_not():
    assert outside('it is a comedy like "Toy Story" and "Private Benjamin" itself') == []
    assert outside("it is like The Silence of the Lambs", target=BY_ID["100"], history=[BY_ID["98"]]) == []


@pytest.mark.parametrize("text,kind,claim", [
    ("it is a comedy starring Goldie Hawn", "people", "starring Goldie Hawn"),
    ("it was directed by a master", "people", "directed by a master"),
    ("it is a classic Disney movie", "people", "Disney movie"),
    ("of the movie's themes of redemption and personal growth", "plot", "themes of redemption"),
    ("it tells the story of a woman who joins the army", "plot", "tells the story of a woman who joins the army"),
    ("it is based on a true story", "plot", "based on a true story"),
    ("it is a classic that has been widely acclaimed", "people", "widely acclaimed"),
    ("of the 34 people who watched it", "figure", "34 people who watched it"),  # a real generated reason
    ("90% of viewers loved it", "figure", "90% of viewers loved it"),
])
def test_plot_and_people_claims_are_always_outside(text, kind, claim):
    assert (kind, claim) in outside(text)


def test_genre_words_inside_a_title_or_a_title_cased_genre_are_not_misread():
    assert outside("it is a Sci-Fi Comedy like Toy Story", target=BY_ID["257"]) == []
    assert outside("it has Action Movies fans", target=BY_ID["257"]) == []
    assert outside("fans of Star Wars will like it", target=BY_ID["257"], history=[BY_ID["50"]]) == []


def test_years_and_decades_are_not_figures():
    assert [c.kind for c in CHECKER.check("it is a comedy from 1980", BENJAMIN, HISTORY).claims] == ["genre", "year"]


def test_opinions_are_not_claims():
    assert CHECKER.check("it is a great, heartwarming watch", BENJAMIN, HISTORY).claims == ()


# --- authors: a claim the catalog holds for books --------------------------------------------------------------

def _book(item_id, title, year, author):
    return Item(item_id=item_id, title=title, year=year, attributes=(("author", author), ("publisher", "Putnam")))


BOOKS = [_book("b1", "The Kitchen God's Wife", 1991, "Amy Tan"), _book("b2", "The Joy Luck Club", 1989, "Amy Tan"),
         _book("b3", "The Testament", 1999, "John Grisham"), _book("b4", "Clive Cussler", 1998, "Someone Else"),
         _book("b5", "Sahara", 1992, "Clive Cussler")]
BOOK = {i.item_id: i for i in BOOKS}


def book_claims(text, target, history, cited=()):
    from llmrec.domains import load_domain

    checker = ClaimChecker(BOOKS, domain=load_domain("book"))
    return [(c.kind, c.text, c.outside) for c in checker.check(text, target, history, cited).claims]


def test_the_items_own_author_is_a_claim_the_catalog_holds():
    history = [BOOK["b3"]]
    for text in ("it is by Amy Tan", "it is written by Amy Tan", "another novel by Amy Tan"):
        assert book_claims(text, BOOK["b1"], history) == [("people", "Amy Tan", False)], text
    # a named history item's author too; another book's author is outside
    assert book_claims("like The Testament, it is by John Grisham", BOOK["b1"], history) == [
        ("title", "The Testament", False), ("people", "John Grisham", False)]
    assert book_claims("it is by John Grisham", BOOK["b1"], history) == [("people", "John Grisham", True)]
    assert book_claims("it is written by Stephen King", BOOK["b1"], history)[0][::2] == ("people", True)  # not an author here


def test_an_author_is_not_read_as_a_title_of_the_same_words():
    from llmrec.explain.grounding import GroundingValidator

    history = [BOOK["b3"]]
    assert book_claims("it is by Clive Cussler", BOOK["b5"], history) == [("people", "Clive Cussler", False)]
    assert "unwatched-title" not in GroundingValidator(BOOKS).check("The Testament fans: by Clive Cussler.", history, BOOK["b5"])[1]
    assert "unwatched-title" in GroundingValidator(BOOKS).check("The Testament fans: Clive Cussler.", history, BOOK["b1"])[1]


def test_movies_still_flag_people():
    assert outside("written by Amy Tan") == [("people", "written by Amy Tan")]
    assert outside("a book about a hero") == [("plot", "book about a hero")]  # "book" is a plot cue for movies


def test_books_reasons_generated_on_book_crossing_are_checked_in_books_words():
    """Reasons SmolLM2 wrote for Book-Crossing users (issue 18.7); "book" is the domain's word there, not a plot cue."""
    history = [BOOK["b3"]]
    assert book_claims("it is a book about justice and the justice system", BOOK["b1"], history) == [
        ("plot", "about justice", True)]
    assert book_claims("it is a classic book that has been widely acclaimed", BOOK["b1"], history) == [
        ("people", "widely acclaimed", True)]
    assert book_claims("it is a classic novel by Amy Tan", BOOK["b1"], history) == [("people", "Amy Tan", False)]
