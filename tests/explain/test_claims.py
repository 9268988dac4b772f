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
