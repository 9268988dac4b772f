"""Explanation quality: the claim rates over generated parts, through `measure` with a scripted explainer and the report."""

from __future__ import annotations

import pytest

from llmrec.eval.explanations import claim_rates, information_rates, measure, support_rates
from llmrec.eval.markdown import _explanations
from llmrec.eval.methods import Case
from llmrec.explain.claims import ClaimChecker
from llmrec.explain.evidence import CoWatch
from llmrec.explain.explainer import Explained, LLMExplainer
from llmrec.explain.grounding import GroundingValidator
from llmrec.prompts import ExplainPromptBuilder
from llmrec.schemas import Explanation, Item, UserHistory
from llmrec.testing import ScriptedEngine

# ML-100K's own facts for these titles.
CATALOG = {i.item_id: i for i in [
    Item(item_id="1", title="Toy Story", year=1995, genres=("Animation", "Children's", "Comedy")),
    Item(item_id="50", title="Star Wars", year=1977, genres=("Action", "Adventure", "Romance", "Sci-Fi", "War")),
    Item(item_id="100", title="Fargo", year=1996, genres=("Crime", "Drama", "Thriller")),
    Item(item_id="167", title="Private Benjamin", year=1980, genres=("Comedy",)),
    Item(item_id="257", title="Men in Black", year=1997, genres=("Action", "Adventure", "Comedy", "Sci-Fi")),
]}
HISTORY = [CATALOG["100"], CATALOG["1"]]


def part(item_id: str, generated: str, attempts: tuple[str, ...] | None = None) -> Explained:
    text = "Like Fargo (1996)." + (f' You may like it because {generated}.' if generated else "")
    explanation = Explanation(item_id=item_id, text=text, source="llm" if generated else "template", cited_item_ids=("100",))
    return Explained(explanation, "Like Fargo (1996).", generated, attempts if attempts is not None else ((generated,) if generated else ()))


def test_claim_rates_count_explanations_claims_and_kinds():
    rows = [(CATALOG["167"], HISTORY, [], part("167", "it is a comedy film about a young boy who is a hero")),
            (CATALOG["167"], HISTORY, [], part("167", "it is a comedy from 1980, like Fargo")),
            (CATALOG["257"], HISTORY, [], part("257", "fans of Star Wars loved this comedy")),
            (CATALOG["257"], HISTORY, [], part("257", "", attempts=("it is a horror film starring Will Smith",)))]
    rates = claim_rates(ClaimChecker(CATALOG.values()), rows)
    assert rates.with_generated == 3 and rates.generated_outside == 2 / 3
    # found: genre comedy ×3, plot 1, title Fargo + title Star Wars, year 1980 = 7; outside: plot, Star Wars.
    assert rates.claims == 7 and rates.claims_outside == 2 / 7
    assert rates.by_kind["plot"] == {"found": 1, "outside": 1} and rates.by_kind["title"] == {"found": 2, "outside": 1}
    assert rates.by_kind["genre"] == {"found": 3, "outside": 0} and rates.by_kind["year"] == {"found": 1, "outside": 0}
    assert rates.attempts == 4 and rates.attempts_outside == 3 / 4  # the rejected horror/starring attempt counts here
    assert [e["outside"] for e in rates.examples] == [["plot: about a young boy who is a hero"], ["title: Star Wars"]]


def test_measure_reports_the_rate_and_the_report_shows_it():
    # Every reason the scripted model writes invents a plot; the validator lets it through (it checks titles, genres, years).
    engine = ScriptedEngine(text=lambda p: " it is a comedy about a soldier who finds love.")
    cowatch = CoWatch({u: ["100", "167", "257"] for u in "abcdef"})
    explainer = LLMExplainer(engine, ExplainPromptBuilder(), GroundingValidator(CATALOG.values()), cowatch=cowatch)
    cases = [Case(user_id="u1", history=UserHistory(user_id="u1", item_ids=("100", "1")), target="167")]
    quality = measure(explainer, CATALOG, cases, {"u1": ["167", "257"]}, k=2, progress=False)
    assert quality.first_try_accepted == 1.0 and quality.claims.with_generated == 2
    assert quality.claims.generated_outside == 1.0 and quality.claims.by_kind["plot"] == {"found": 2, "outside": 2}
    assert quality.claims.by_kind["genre"] == {"found": 2, "outside": 0}
    lines = "\n".join(_explanations({"method": "llmrec", "k": 2, **quality.model_dump()}))
    assert "| shipped generated parts stating something outside the catalog / history | 100.0% of 2 |" in lines
    assert "plot 2/2" in lines and "about a soldier who finds love" in lines


def test_like_claims_without_co_watch_support_are_counted_and_the_explainer_makes_none():
    # 30 users watched Fargo and Men in Black together; 60 watched Private Benjamin, 30 of them with Fargo, as everyone did.
    cowatch = CoWatch({**{f"a{n}": ["100", "257"] for n in range(30)}, **{f"b{n}": ["100", "167"] for n in range(30)},
                       **{f"c{n}": ["167"] for n in range(30)}, **{f"d{n}": ["1"] for n in range(60)}})
    explainer = LLMExplainer(ScriptedEngine(text=lambda p: " it has a soldier."), ExplainPromptBuilder(),
                             GroundingValidator(CATALOG.values()), cowatch=cowatch)
    old = Explanation(item_id="167", text="Like Fargo (1996), it is Comedy.", source="template")  # what the chat printed for any item
    rates = support_rates(explainer, [(CATALOG["167"], HISTORY, old), (CATALOG["257"], HISTORY, old.model_copy(update={"item_id": "257"}))])
    assert rates.like_claims == 2 and rates.like_supported == 0.5 and rates.examples[0]["like"] == "Fargo (1996)"
    cases = [Case(user_id="u1", history=UserHistory(user_id="u1", item_ids=("100",)), target="167")]
    quality = measure(explainer, CATALOG, cases, {"u1": ["167", "257"]}, k=2, progress=False)
    assert quality.support.like_supported == 1.0
    lines = "\n".join(_explanations({"method": "llmrec", "k": 2, **quality.model_dump()}))
    assert '"like X" claims supported by co-watch figures' in lines


def test_information_counts_the_reasons_that_add_something_and_the_report_shows_it():
    rows = [(CATALOG["167"], part("167", "it is a comedy from 1980")), (CATALOG["257"], part("257", "it has aliens in black suits")),
            (CATALOG["257"], part("257", "", attempts=("it is a funny sci-fi action comedy",)))]
    explainer = LLMExplainer(ScriptedEngine(text=lambda p: ""), ExplainPromptBuilder(), GroundingValidator(CATALOG.values()))
    rates = information_rates(explainer, rows)
    assert rates.with_generated == 2 and rates.generated_informative == 0.5
    assert rates.attempts == 3 and rates.attempts_informative == 1 / 3
    assert [e["generated"] for e in rates.examples] == ["it is a comedy from 1980", "it is a funny sci-fi action comedy"]
    # Through the explainer, a reason that repeats the genres is dropped: every shipped reason adds something.
    engine = ScriptedEngine(text=lambda p: " it is a comedy." if "Private Benjamin" in p.split("Recommended")[-1] else " it has aliens.")
    explainer = LLMExplainer(engine, ExplainPromptBuilder(), GroundingValidator(CATALOG.values()),
                             cowatch=CoWatch({u: ["100", "167", "257"] for u in "abcdef"}))
    cases = [Case(user_id="u1", history=UserHistory(user_id="u1", item_ids=("100", "1")), target="167")]
    quality = measure(explainer, CATALOG, cases, {"u1": ["167", "257"]}, k=2, progress=False)
    assert quality.information.with_generated == 1 and quality.information.generated_informative == 1.0
    assert quality.information.attempts_informative == 0.5 and quality.problems == {"no-new-information": 1}
    lines = "\n".join(_explanations({"method": "llmrec", "k": 2, **quality.model_dump()}))
    assert "| shipped generated reasons adding information beyond the evidence | 100.0% of 1 |" in lines
    assert "| all attempts adding information beyond the evidence | 50.0% of 2 |" in lines


@pytest.mark.llm
def test_real_explanations_ship_only_reasons_that_add_something_and_only_supported_likes(pipeline):
    """The real engine, explainer and ML-100K co-watch figures over a few users' top 5; the rates are printed."""
    users = ["196", "186", "22", "244"]
    cases = [Case(user_id=u, history=pipeline.dataset.history(u), target="") for u in users]
    rankings = {c.user_id: [r.item_id for r in pipeline.retriever.retrieve(c.history, 5)] for c in cases}
    quality = measure(pipeline.explainer, pipeline.dataset.items, cases, rankings, k=5, progress=False)
    print(quality.information, quality.support, quality.problems, [e["text"] for e in quality.examples], sep="\n")
    assert quality.support.like_supported == 1.0
    assert quality.information.attempts == 20
    if quality.information.with_generated:
        assert quality.information.generated_informative == 1.0
