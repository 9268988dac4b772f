"""The LLM's part in reading a message: validation, one retry, fallback, and what it may add.

These use ScriptedEngine (llmrec.testing) to produce exact outputs, valid and invalid, for llmrec's own
logic. The real engine's structured output is exercised in test_conversation.py (marked llm).
"""

import json

from llmrec.agents.chat_models import EngineChatModel, compact_json_grammar
from llmrec.agents.constraints import Constraints, read_rules
from llmrec.agents.understand import Extraction, Understander, decades, extraction_schema, merge
from llmrec.testing import ScriptedEngine
from tests.agents.test_constraints import VOCABULARY

DECADES = decades([1935, 1994, 1981])


def answer(**fields):
    base = {"genres": [], "not_genres": [], "decade": "any", "liked": [], "disliked": []}
    return json.dumps({**base, **fields})


def understander(*outputs):
    replies = iter(outputs)
    engine = ScriptedEngine(text=lambda prompt: next(replies))
    return Understander(EngineChatModel(engine=engine), VOCABULARY, DECADES), engine


def test_schema_holds_catalog_enums_and_the_grammar_allows_no_whitespace():
    schema = extraction_schema(VOCABULARY, DECADES)
    assert schema["properties"]["genres"]["items"]["enum"] == sorted(g for g in VOCABULARY if g != "unknown")
    assert schema["properties"]["decade"]["enum"] == ["any", "1930s", "1980s", "1990s"]
    root = next(line for line in compact_json_grammar(schema).splitlines() if line.startswith("root ::="))
    assert root.startswith('root ::= (("{" "\\"genres\\"" ":"') and "[ \\n" not in root  # keys in schema order, no whitespace


def test_a_valid_answer_is_used_first_time():
    reader, engine = understander(answer(genres=["Comedy"], decade="1990s"))
    reading = reader.read("something funny from the 90s")
    assert reading.llm_status == "valid" and reading.merged.genres == ("Comedy",)
    assert reader.stats.calls == 1 and reader.stats.valid_first == 1 and reader.stats.invalid_outputs == 0
    assert engine.calls == [("generate", 1)]


def test_an_invalid_answer_is_retried_once_then_the_rules_answer_alone():
    reader, _ = understander('{"genres":["Comedy"', answer(genres=["Comedy"]))  # cut short, then fine
    assert reader.read("a comedy").llm_status == "retried"
    reader, _ = understander('{"genres":["Space Opera"]}', "not json at all")  # outside the catalog, then garbage
    reading = reader.read("something funny, not a romance")
    assert reading.llm_status == "fallback" and reading.llm is None
    assert reading.merged == reading.rules and reading.merged.genres == ("Comedy",)
    stats = reader.stats
    assert (stats.calls, stats.retried, stats.invalid_outputs, stats.fallbacks) == (1, 1, 2, 1)
    assert stats.invalid_rate() == 1.0


def test_a_genre_or_decade_outside_the_catalog_invalidates_the_answer():
    reader, _ = understander("")
    assert reader.validate(answer(genres=["Comedy"])) == Extraction(genres=("Comedy",), not_genres=(), decade="any", liked=(),
                                                                     disliked=())
    assert reader.validate(answer(genres=["Space Opera"])) is None
    assert reader.validate(answer(decade="2050s")) is None
    assert reader.validate(answer(liked=["a", "b", "c"])) is None  # more titles than the schema allows


def test_the_llm_adds_only_what_the_message_supports():
    """A 135M model copies its few-shot example ('Thriller', 'Alien'); none of that may reach the constraints."""
    copied = Extraction(genres=("Thriller",), not_genres=("Comedy",), decade="1980s", liked=("Alien",), disliked=())
    merged, added, dropped = merge(Constraints(), copied, "something for tonight", VOCABULARY)
    assert merged == Constraints() and added == []
    assert sorted(dropped) == ["decade:1980s", "genre:Comedy", "genre:Thriller", "title:Alien"]


def test_the_llm_fills_gaps_the_rules_leave():
    message = "a comdy please, Fargo was great but never again Titanic"
    rules = read_rules(message, VOCABULARY)
    assert rules.genres == () and rules.liked_titles == ()
    llm = Extraction(genres=("Comedy",), not_genres=(), decade="any", liked=("Fargo",), disliked=("Titanic",))
    merged, added, _ = merge(rules, llm, message, VOCABULARY)
    assert merged.genres == ("Comedy",) and merged.liked_titles == ("Fargo",) and merged.excluded_titles == ("Titanic",)
    assert added == ["genre:Comedy", "title:Fargo", "title:Titanic"]


def test_the_rules_negation_decides_the_side_of_an_llm_title():
    message = "never Titanic"
    llm = Extraction(genres=(), not_genres=(), decade="any", liked=("Titanic",), disliked=())
    merged, _, _ = merge(read_rules(message, VOCABULARY), llm, message, VOCABULARY)
    assert merged.liked_titles == () and merged.excluded_titles == ("Titanic",)


def test_rules_only_makes_no_llm_call():
    from llmrec.agents.understand import UnderstandConfig

    engine = ScriptedEngine(fail="must not be called")
    reader = Understander(EngineChatModel(engine=engine), VOCABULARY, DECADES, UnderstandConfig(use_llm=False))
    assert reader.read("a war movie").merged.genres == ("War",) and reader.stats.calls == 0


def test_an_unavailable_llm_leaves_the_rules():
    reader = Understander(EngineChatModel(engine=ScriptedEngine(fail="down")), VOCABULARY, DECADES)
    reading = reader.read("a war movie")
    assert reading.llm_status == "unavailable" and reading.merged.genres == ("War",) and reader.stats.unavailable == 1
