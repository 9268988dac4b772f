"""Explainer logic with a scripted engine: acceptance, retry, template fallback."""

from llmrec.agents.explainer import LLMExplainer, _finish
from llmrec.agents.grounding import GroundingValidator
from llmrec.prompts import ExplainPromptBuilder
from llmrec.schemas import Item
from llmrec.testing import ScriptedEngine

ITEMS = [Item(item_id="1", title="Toy Story", year=1995, genres=("Animation", "Comedy")),
         Item(item_id="2", title="Aladdin", year=1992, genres=("Animation", "Comedy", "Musical")),
         Item(item_id="3", title="Patton", year=1970, genres=("Drama", "War"))]


def explainer(text):
    return LLMExplainer(ScriptedEngine(text=text), ExplainPromptBuilder(), GroundingValidator(ITEMS))


def test_grounded_continuation_is_accepted():
    [e] = explainer(lambda p: " it is an animated comedy.").explain([ITEMS[0]], [ITEMS[1]])
    assert e.source == "llm" and e.cited_item_ids == ("1",)
    assert e.text == 'Because you watched "Toy Story" (1995), you may like "Aladdin" because it is an animated comedy.'


def test_empty_continuation_falls_back_to_the_template():
    [e] = explainer(lambda p: "").explain([ITEMS[0]], [ITEMS[1]])
    assert e.source == "template" and "no-reason" in e.problems


def test_wrong_genre_is_retried_then_replaced():
    [e] = explainer(lambda p: " it is a gripping war film.").explain([ITEMS[0]], [ITEMS[1]])
    assert e.source == "template" and "wrong-genre" in e.problems
    assert e.text.startswith('Because you watched "Toy Story", you may like "Aladdin" (1992)')


def test_finish_cuts_at_the_first_sentence_end_outside_quotes():
    assert _finish('you may like "Mrs. Doubtfire" because', ' it is funny. Also more.') == \
        'you may like "Mrs. Doubtfire" because it is funny.'
    assert _finish('like "Hot Shots! Part Deux" because', " it spoofs. x") == 'like "Hot Shots! Part Deux" because it spoofs.'
