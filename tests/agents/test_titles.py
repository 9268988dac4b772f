"""Titles as users write them, resolved against the real ML-100K catalog (rapidfuzz, then Chroma as a second opinion)."""

import pytest

from llmrec.agents.titles import TitleResolver


@pytest.fixture(scope="module")
def catalog(settings):
    from llmrec.data.datasets import load_dataset

    return load_dataset("ml-100k", settings.resolved_home())


@pytest.fixture(scope="module")
def resolver(settings, catalog):
    from llmrec.pipeline import build_index

    return TitleResolver(catalog.items.values(), catalog.popularity(), build_index(settings, catalog, progress=False))


def label(catalog, match):
    return catalog.items[match.item_id].label() if match.item_id else None


@pytest.mark.parametrize("query, expected", [
    ("The Godfather", "Godfather, The (1972)"),      # natural article order ⇔ the catalog's
    ("Godfather, The", "Godfather, The (1972)"),
    ("Il Postino", "Postino, Il (1994)"),
    ("Empire Strikes Back", "Empire Strikes Back, The (1980)"),  # without its article
    ("Terminator 2", "Terminator 2: Judgment Day (1991)"),        # before the colon
    ("Pulp Fictoin", "Pulp Fiction (1994)"),                       # a typo
    ("Sabrina (1954)", "Sabrina (1954)"),                         # the year picks between remakes
    ("Sabrina", "Sabrina (1995)"),                                # else the more watched one
])
def test_titles_resolve_in_either_article_order_and_with_typos(resolver, catalog, query, expected):
    assert label(catalog, resolver.resolve(query)) == expected


def test_chroma_confirms_a_middling_fuzzy_match(resolver, catalog):
    match = resolver.resolve("Wallace and Gromit")
    assert match.how == "fuzzy+chroma" and label(catalog, match).startswith("Wallace & Gromit")
    alone = TitleResolver(catalog.items.values(), catalog.popularity(), index=None).resolve("Wallace and Gromit")
    assert alone.item_id is None  # without the second opinion it is a question, not a guess


def test_unresolved_titles_are_questions_never_guesses(resolver, catalog):
    assert resolver.resolve("Xqzzyv Blorp").item_id is None and resolver.resolve("Xqzzyv Blorp").suggestion is None
    shawshank = resolver.resolve("Shawshank")
    assert shawshank.item_id is None and catalog.items[shawshank.suggestion].title == "Shawshank Redemption, The"
    sequel = resolver.resolve("Die Hard 3")  # "Die Hard 2" scores 90 on spelling, but the number differs
    assert sequel.item_id is None


def test_a_list_of_titles_is_split_when_it_does_not_resolve_whole(resolver, catalog):
    found = resolver.resolve_all(["Star Wars and Fargo"])
    assert [label(catalog, m) for m in found] == ["Star Wars (1977)", "Fargo (1996)"]


def test_is_title_is_exact(resolver):
    assert resolver.is_title("The Godfather") and resolver.is_title("Last Action Hero") and resolver.is_title("Fargo (1996)")
    assert not resolver.is_title("something funny") and not resolver.is_title("Godfahter")
