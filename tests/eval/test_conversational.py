"""The conversational eval's simulated user, and one small run of the whole protocol.

The run uses ScriptedEngine for the LLM (it checks the protocol's bookkeeping, with the real catalog,
retriever and Chroma); the real engine's numbers come from `llmrec eval --conversational` (README).
"""

from collections import Counter

from llmrec.agents.constraints import Constraints
from llmrec.eval.conversational import ConversationalConfig, SimulatedUser, run_conversational
from llmrec.schemas import Item
from llmrec.testing import ScriptedEngine

TARGET = Item(item_id="t", title="Target", year=1994, genres=("Crime", "Film-Noir"))
COUNTS = Counter({"Crime": 109, "Film-Noir": 24, "Romance": 247, "Comedy": 505})


def shown(*specs):
    return [Item(item_id=str(n), title=f"Film {n}", year=year, genres=genres) for n, (year, genres) in enumerate(specs)]


def test_the_simulated_user_opens_with_the_rarest_genre_and_accepts_the_target():
    user = SimulatedUser(TARGET, COUNTS)
    assert user.opening() == "I'm in the mood for Film-Noir"
    assert user.respond([*shown((1994, ("Crime",))), TARGET], Constraints()) is None


def test_the_simulated_user_rejects_with_a_reason_from_the_catalog():
    user = SimulatedUser(TARGET, COUNTS)
    user.opening()
    wrong_era = shown((1975, ("Film-Noir",)), (1994, ("Film-Noir",)))
    assert user.respond(wrong_era, Constraints()) == "No, those aren't it. Something from the 1990s"
    right_era = shown((1994, ("Film-Noir", "Romance")), (1995, ("Film-Noir", "Romance")))
    nineties = Constraints(year_from=1990, year_to=1999)
    assert user.respond(right_era, nineties) == "No, I'd like something Crime"
    assert user.respond(right_era, nineties.model_copy(update={"genres": ("Crime", "Film-Noir")})) == "No, not Romance"
    applied = Constraints(genres=("Crime", "Film-Noir"), exclude_genres=("Romance",), year_from=1990, year_to=1999)
    assert user.respond(right_era, applied) == "No, something else"


def test_a_small_run_reports_hits_turns_and_the_pipeline_on_the_same_users(settings, tmp_path):
    config = ConversationalConfig(users=4, turns=3, k=5, llm_understanding=False, bootstrap=100)
    report = run_conversational(settings, config, tmp_path, engine=ScriptedEngine())
    assert report["users"] == 4
    hits = [report["conversational"][f"Hit@{t} turns"]["mean"] for t in (1, 2, 3)]
    assert hits == sorted(hits)  # a hit by turn t is a hit by every later turn
    turns = report["conversational"]["mean turns to a hit (miss = 4)"]["mean"]
    assert 1 <= turns <= 4
    stages = ("understand", "recommend", "recommend:retrieve", "recommend:rank", "explain", "reply")  # the graph calls the one pipeline path
    assert {f"seconds per turn in {s}" for s in stages} <= set(report["conversational"])
    assert set(report["pipeline, history alone"]) == {"HR@5", "HR@15"}
    assert (tmp_path / "conversational.json").exists() and "Hit@3 turns" in (tmp_path / "conversational.md").read_text()
