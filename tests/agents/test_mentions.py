"""Mentions, unread parts and the scenario's domain in the chat agent, with the real catalog, Chroma index and SQLite files.

The LLM is ScriptedEngine and understanding is the rules alone: these test how the conversation uses the rules'
reading (`Constraints.mentions`, `Constraints.unread`) and which domain it is wired with, not the model.
"""

import dataclasses


def item_id(pipeline, label):
    return next(i for i, item in pipeline.dataset.items.items() if item.label() == label)


def test_something_like_heat_anchors_heat_this_turn_and_stores_nothing(agent, scripted_pipeline):
    heat = item_id(scripted_pipeline, "Heat (1995)")
    result = agent.say("like-heat", "something like Heat", user_id="196")
    state = agent.state("like-heat")
    assert state.anchors == (heat,) and "close to Heat (1995)" in result.reply
    assert state.feedback == () and agent.stages.store.events("196") == []
    assert heat not in {r.item.item_id for r in result.items}


def test_a_question_about_a_title_anchors_it_and_stores_nothing(agent, scripted_pipeline):
    fargo = item_id(scripted_pipeline, "Fargo (1996)")
    result = agent.say("ask-fargo", 'Is "Fargo" any good?', user_id="196")
    assert agent.state("ask-fargo").anchors == (fargo,) and "close to Fargo (1996)" in result.reply
    assert agent.state("ask-fargo").feedback == () and agent.stages.store.events("196") == []


def test_a_mention_is_the_newest_anchor(agent, scripted_pipeline):
    fargo, heat = item_id(scripted_pipeline, "Fargo (1996)"), item_id(scripted_pipeline, "Heat (1995)")
    agent.say("newest", "I loved Heat", user_id="196")
    result = agent.say("newest", 'what about "Fargo"?')
    assert agent.state("newest").anchors == (heat, fargo) and "close to Fargo (1996)" in result.reply
    assert [e.event for e in agent.stages.store.events("196")] == ["like"]  # the like only


def test_i_never_liked_fargo_is_a_dislike_and_the_list_is_not_close_to_it(agent, scripted_pipeline):
    fargo = item_id(scripted_pipeline, "Fargo (1996)")
    agent.say("never-fargo", "something like Fargo", user_id="196")
    result = agent.say("never-fargo", "I never liked Fargo")
    assert [(e.item, e.event) for e in agent.stages.store.events("196")] == [(fargo, "dislike")]
    assert fargo not in agent.state("never-fargo").anchors
    assert "close to Fargo" not in result.reply and fargo not in {r.item.item_id for r in result.items}


def test_a_reset_keeps_this_turns_mentions(agent, scripted_pipeline):
    heat = item_id(scripted_pipeline, "Heat (1995)")
    agent.say("reset", "I loved Fargo", user_id="196")
    result = agent.say("reset", "something like Heat instead")
    assert agent.state("reset").anchors == (heat,) and "close to Heat (1995)" in result.reply


def test_what_the_rules_cannot_read_is_named_in_one_line(agent, scripted_pipeline):
    heat = item_id(scripted_pipeline, "Heat (1995)")
    result = agent.say("unread", "something like Heat but more violent", user_id="196")
    assert agent.state("unread").anchors == (heat,)
    lines = [line for line in result.reply.splitlines() if "I couldn't read" in line]
    assert lines == ["note: I couldn't read: more violent"]
    assert "I couldn't read" not in agent.say("unread", "something funnier").reply  # "funnier" is read: Comedy


# --- the scenario's domain ------------------------------------------------------------------------


def test_the_agent_takes_its_words_and_examples_from_the_scenarios_domain(settings, scripted_pipeline, tmp_path):
    """A pipeline whose scenario says 'book': the understander's system prompt and few-shot examples, the rules'
    lexicon and the fixed wording are the books domain's, with no code change."""
    from llmrec.agents.conversation import ChatConfig, build_agent
    from llmrec.domains import load_domain

    books = dataclasses.replace(scripted_pipeline, scenario=scripted_pipeline.scenario.model_copy(update={"domain": "book"}))
    agent = build_agent(settings, pipeline=books, config=ChatConfig(store=tmp_path, llm_understanding=False))
    domain = load_domain("book")
    assert agent.understander.domain is domain and agent.stages.domain is domain
    assert agent.words.which == "Which book do you mean?"
    messages = [m.content for m in agent.understander.messages("a sleuth")]
    assert "books" in messages[0] and "movies" not in messages[0]
    assert messages[1:-1:2] == [s.message for s in domain.shots] and not any("film" in m or "Titanic" in m for m in messages)
    assert agent.understander.read("a sleuth").rules.genres == ("Mystery",)  # the books lexicon: a sleuth is a Mystery


def test_every_built_in_domain_has_examples_in_its_own_words():
    from llmrec.agents.understand import Extraction
    from llmrec.domains import builtin_domains, load_domain

    for name in builtin_domains():
        domain = load_domain(name)
        assert domain.shots, name
        for shot in domain.shots:
            Extraction.model_validate(shot.answer)  # each example is an answer of the schema
    assert {s.message for s in load_domain("book").shots}.isdisjoint(s.message for s in load_domain("movie").shots)
