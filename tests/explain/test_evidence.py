"""Evidence claims only what its support carries: one viewer threshold on every path, "like X" only when the item is
close to X, and co-watch figures ranked by the Wilson lower bound of their share. The last tests use ML-100K itself."""

import pytest

from llmrec.explain.evidence import MIN_VIEWERS, CoWatch, evidence, like_claims, wilson_lower
from llmrec.explain.explainer import LLMExplainer
from llmrec.explain.grounding import GroundingValidator
from llmrec.prompts import ExplainPromptBuilder
from llmrec.schemas import Item
from llmrec.testing import ScriptedEngine

FARGO = Item(item_id="100", title="Fargo", year=1996, genres=("Crime", "Drama", "Thriller"))
TOY = Item(item_id="1", title="Toy Story", year=1995, genres=("Animation", "Children's", "Comedy"))
LOVE = Item(item_id="1500", title="Love and Death on Long Island", year=1997, genres=("Comedy", "Drama"))
HEAT = Item(item_id="6", title="Heat", year=1995, genres=("Action", "Crime", "Thriller"))


def histories(groups):
    """user -> items, from (number of users, items each watched) groups."""
    out, n = {}, 0
    for count, items in groups:
        for _ in range(count):
            out[f"u{n}"] = list(items)
            n += 1
    return out


def test_wilson_lower_bound_rewards_support():
    assert wilson_lower(1, 2) < wilson_lower(97, 508) < 97 / 508
    assert wilson_lower(0, 10) == 0.0 and wilson_lower(0, 0) == 0.0
    assert wilson_lower(4, 6) < wilson_lower(30, 60)  # a higher raw share (.67 > .5) on less support ranks lower


def test_one_viewer_of_two_is_never_cited_on_any_path():
    # The case: 1 of 2 people who watched Love and Death also watched the item, 97 of 508 Fargo's viewers did.
    cowatch = CoWatch(histories([(1, ["1500", "6"]), (1, ["1500"]), (97, ["100", "6"]), (411, ["100"])]))
    assert cowatch.best_anchor("6", ["100", "1500"]) == ("100", 508, 97)
    only = cowatch.best_anchor("6", ["1500"])
    assert only is None and MIN_VIEWERS == 5
    # The chat calls `evidence(item, history, cowatch, matches, anchor)` with no threshold: the shared one applies.
    text = evidence(HEAT, [LOVE], cowatch, "Crime")
    assert "Love and Death" not in text and "1 also watched" not in text


def test_co_watch_figures_prefer_support_over_a_raw_share():
    cowatch = CoWatch(histories([(4, ["1", "6"]), (2, ["1"]), (30, ["100", "6"]), (30, ["100"])]))
    assert cowatch.best_anchor("6", ["100", "1"]) == ("100", 60, 30)  # 30 of 60 over 4 of 6


def test_like_x_is_written_only_when_the_item_is_close_to_x():
    # 40 users watched Fargo and Heat together, 60 watched neither, 100 watched Toy Story with Fargo or alone, like everyone.
    cowatch = CoWatch(histories([(40, ["100", "6"]), (50, ["100", "1"]), (50, ["1"]), (60, ["7"])]))
    assert cowatch.close("6", "100") and not cowatch.close("1", "100")
    assert evidence(HEAT, [], cowatch, anchor=FARGO).startswith("Like Fargo (1996), it is Crime, Thriller.")
    toy = evidence(TOY, [], cowatch, anchor=FARGO)
    assert "Like" not in toy and "Fargo" not in toy  # nothing shared, nothing close: Fargo is not named at all
    drama = TOY.model_copy(update={"genres": ("Comedy", "Drama")})
    assert evidence(drama, [], cowatch, anchor=FARGO).startswith("It shares Drama with Fargo (1996).")
    assert evidence(drama, [], cowatch, anchor=FARGO, near=lambda a, b: True).startswith("Like Fargo (1996), it is Drama.")


def test_like_claims_are_found_in_any_wording():
    history = [FARGO, TOY]
    assert like_claims("Like Fargo (1996), it is Crime.", history) == [FARGO]
    assert like_claims('You may like "Heat" because it is a thriller like fargo.', history) == [FARGO]
    assert like_claims('You may like "Heat" because fans of Toy Story watched it.', history) == []


def test_an_unsupported_like_in_a_reason_is_not_shipped():
    cowatch = CoWatch(histories([(40, ["100", "6"]), (50, ["100", "1"]), (50, ["1"]), (60, ["7"])]))
    validator = GroundingValidator([FARGO, TOY, HEAT])
    make = lambda said: LLMExplainer(ScriptedEngine(text=lambda p: said), ExplainPromptBuilder(), validator, cowatch=cowatch)  # noqa: E731
    [e] = make(" it is a cartoon for kids, just like Fargo.").explain([FARGO], [TOY])
    assert e.source == "template" and "unsupported-like" in e.problems
    [e] = make(" it is a tense heist in a snowy town, just like Fargo.").explain([FARGO], [HEAT])
    assert e.source == "llm" and e.problems == ()


@pytest.fixture(scope="module")
def movielens():
    from llmrec.data.datasets import load_dataset
    from llmrec.settings import Settings

    dataset = load_dataset("ml-100k", Settings().resolved_home())
    return dataset, CoWatch(dataset.histories())


def by_title(dataset, title):
    return next(i for i in dataset.items.values() if i.title == title)


def test_on_movielens_toy_story_is_not_like_fargo_but_aladdin_is_like_toy_story(movielens):
    """The issue's case on the real interactions: an anchored chat list said "Like Fargo (1996)" on Toy Story."""
    dataset, cowatch = movielens
    fargo, toy, aladdin = (by_title(dataset, t) for t in ("Fargo", "Toy Story", "Aladdin"))
    jedi, star_wars = by_title(dataset, "Return of the Jedi"), by_title(dataset, "Star Wars")
    assert "Like Fargo" not in evidence(toy, [fargo], cowatch, anchor=fargo)
    assert evidence(aladdin, [toy], cowatch, anchor=toy).startswith("Like Toy Story (1995)")
    assert evidence(jedi, [star_wars], cowatch, anchor=star_wars).startswith("Like Star Wars (1977)")
    assert not cowatch.close(by_title(dataset, "Lion King, The").item_id, fargo.item_id)


# --- the domain's words (issue 18.7): a books list said "people who watched" -------------------------------------------

DUNE = Item(item_id="b8", title="Dune", year=1965, genres=("Science Fiction",))
FOUNDATION = Item(item_id="b9", title="Foundation", year=1951, genres=("Science Fiction",))


def test_the_evidence_speaks_the_domains_words_and_its_figures_are_masked():
    from llmrec.domains import load_domain
    from llmrec.explain.evidence import mask_figures

    cowatch = CoWatch(histories([(12, ["b8", "b9"]), (30, ["b8"])]))
    books = load_domain("books")
    text = evidence(FOUNDATION, [DUNE], cowatch, domain=books)
    assert text == "Of the 42 people who read Dune (1965), 12 also read it; both are Science Fiction."
    assert mask_figures(text) == "Of the # people who read Dune (1965), # also read it; both are Science Fiction."
    assert evidence(FOUNDATION, [], cowatch, domain=books) == "Read by 12 people here."
    generic = evidence(FOUNDATION, [DUNE], cowatch, domain=load_domain("item"))
    assert mask_figures(generic) == "Of the # people who interacted with Dune (1965), # also interacted with it; both are Science Fiction."
    assert "watch" not in text + generic  # and movies keep their words, as the tests above check


def test_a_books_explainer_writes_read_and_ships_a_grounded_reason():
    from llmrec.domains import load_domain
    from llmrec.explain.claims import ClaimChecker
    from llmrec.prompts import ExplainPromptConfig

    cowatch = CoWatch(histories([(12, ["b8", "b9"]), (30, ["b8"])]))
    catalog = [DUNE, FOUNDATION, Item(item_id="b0", title="Gravity (A)", year=1999)]  # "A": no title (test_grounding)
    validator = GroundingValidator(catalog)
    explainer = LLMExplainer(ScriptedEngine(text=lambda p: " it is a galactic empire saga, a good read."),
                             ExplainPromptBuilder(ExplainPromptConfig(domain="book")), validator, cowatch=cowatch,
                             claims=ClaimChecker(catalog, validator, domain=load_domain("book")))
    [e] = explainer.explain([DUNE], [FOUNDATION])
    assert e.source == "llm" and e.problems == () and e.text.startswith("Of the 42 people who read Dune (1965), 12 also read it")
    [plain] = LLMExplainer(ScriptedEngine(text=lambda p: " it is a book you will read."), ExplainPromptBuilder(ExplainPromptConfig(domain="book")),
                           validator, cowatch=cowatch).explain([DUNE], [FOUNDATION])
    assert plain.source == "template" and "no-new-information" in plain.problems  # "book" and "read" say nothing new
