"""Held-out phrasings: messages written apart from the rules (not the strings their patterns were written from),
each with the reading a person would give it. The rules must read most of them right; the share is printed, and a
drop below the floor fails. A message the rules cannot read should at least say so (`unread`), never invert."""

import pytest

from llmrec.agents.constraints import read_rules
from tests.agents.test_constraints import VOCABULARY

# (message, the fields a person reads from it; every other field must stay at its default)
HELD_OUT = [
    # negation, questions and other people's taste: never a like
    ("honestly I never really enjoyed Casablanca", {"excluded_titles": ("Casablanca",)}),
    ("I'm not a big fan of Braveheart", {"excluded_titles": ("Braveheart",)}),
    ("Have you got anything similar to Alien?", {"mentions": ("Alien",)}),
    ('do you think "Vertigo" is worth it?', {"mentions": ("Vertigo",)}),
    ("my brother loved Scream", {"mentions": ("Scream",)}),
    ("none of my friends liked Twister", {"unread": ("none of my friends liked Twister",)}),
    ("I really loved Amadeus", {"liked_titles": ("Amadeus",)}),
    ("we enjoyed Babe a lot", {"liked_titles": ("Babe",)}),
    ("I didn't care for Contact", {"excluded_titles": ("Contact",)}),
    ("Would I like Gattaca?", {"mentions": ("Gattaca",)}),
    ("please no more Speed", {"excluded_titles": ("Speed",)}),
    ("I can't stand Cats", {"excluded_titles": ("Cats",)}),
    # years and eras
    ("anything made before 1975", {"year_to": 1974}),
    ("something released after 1995", {"year_from": 1996}),
    ("nothing older than 1980 please", {"year_from": 1980}),
    ("not newer than 1970", {"year_to": 1970}),
    ("the sixties or seventies", {"year_from": 1960, "year_to": 1979}),
    ("a 70s or 80s thriller", {"genres": ("Thriller",), "year_from": 1970, "year_to": 1989}),
    ("80s or later", {"year_from": 1980}),
    ("the 1950s or before", {"year_to": 1959}),
    ("up to 1965", {"year_to": 1965}),
    ("from 1994", {"year_from": 1994, "year_to": 1994}),
    ("westerns from before the 60s", {"genres": ("Western",), "year_to": 1959}),
    ("something more recent", {"era": "newer"}),
    # genres, exclusions, comparatives
    ("a cartoon for the kids", {"genres": ("Animation", "Children's")}),
    ("no musicals and nothing animated", {"exclude_genres": ("Musical", "Animation")}),
    ("a sci fi flick but without any romance", {"genres": ("Sci-Fi",), "exclude_genres": ("Romance",)}),
    ("like the first one but scarier", {"genres": ("Horror",), "more_like": 1}),
    ("same again, only funnier", {"genres": ("Comedy",)}),
    ("a darker one", {"exclude_genres": ("Comedy", "Children's", "Musical", "Animation")}),
    ("something a little less gloomy", {"unread": ("less gloomy",)}),
    ("something a bit weirder", {"unread": ("weirder",)}),
    ("a whodunit, not too scary", {"genres": ("Mystery",), "exclude_genres": ("Horror",)}),
    ("avoid war films", {"exclude_genres": ("War",)}),
    ("I hate westerns but love a good heist", {"genres": ("Crime",), "exclude_genres": ("Western",)}),
    ("something in the vein of Chinatown", {"mentions": ("Chinatown",)}),
    ("don't show me Jaws or anything horror", {"excluded_titles": ("Jaws",), "exclude_genres": ("Horror",)}),
    ("a documentary", {"genres": ("Documentary",)}),
    ("a romcom from the nineties", {"genres": ("Romance", "Comedy"), "year_from": 1990, "year_to": 1999}),
    ("show me #4 again but newer", {"more_like": 4, "era": "newer"}),
]
FLOOR = 0.8


def _read(message):
    return read_rules(message, VOCABULARY).model_dump(exclude_defaults=True)


def test_the_rules_read_most_held_out_phrasings_right(capsys):
    wrong = [(m, expected, _read(m)) for m, expected in HELD_OUT if _read(m) != expected]
    share = 1 - len(wrong) / len(HELD_OUT)
    with capsys.disabled():
        print(f"\nheld-out phrasings read right: {len(HELD_OUT) - len(wrong)}/{len(HELD_OUT)} = {share:.0%}")
        for m, expected, got in wrong:
            print(f"  {m!r}: expected {expected}, got {got}")
    assert share >= FLOOR


@pytest.mark.parametrize("message, expected", HELD_OUT)
def test_no_held_out_phrasing_is_read_as_a_like_it_is_not(message, expected):
    """Whatever else is missed, a title is never stored as a like unless the user said they liked it."""
    assert set(_read(message).get("liked_titles", ())) <= set(expected.get("liked_titles", ()))
