"""What loading dropped or assumed reaches the user: in every RecommendResponse and in eval reports; and a
cold start with nothing to recommend is an error, never an empty answer. Real loading, Chroma and embedder;
the LLM is scripted (these tests are about the plumbing of notes, not about the model)."""

import json
from pathlib import Path

import pytest

from llmrec.errors import DatasetError
from llmrec.schemas import RecommendRequest
from llmrec.settings import Settings
from llmrec.testing import ScriptedEngine

ITEMS = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n" + "".join(
    f"{n}\tFilm {n}\t199{n}\t{genre}\n" for n, genre in enumerate(["Comedy", "Drama", "Horror", "Action", "Romance", "Sci-Fi"]))
# four users with four items each, and one row (line 7) naming an item that is not in the .item file
INTER = "user_id:token\titem_id:token\ttimestamp:float\n" + "".join(
    f"u{u}\t{(u + n) % 6}\t{n}\n" for u in range(1, 5) for n in range(4))
INTER = INTER.replace("u2\t2\t0\n", "u2\t2\t0\nu2\tx242\t9\n")
DROPPED = "dirty.inter: dropped 1 of 17 interactions whose item is not in dirty.item (e.g. 'x242' (line 7))"


@pytest.fixture
def home(tmp_path: Path, settings) -> Path:
    """A home with its own scenario `dirty` and Chroma that shares the real cache's models and wheels (read-only)."""
    real, home, data = settings.resolved_home(), tmp_path / "home", tmp_path / "dirty"
    home.mkdir()
    for name in ("models", "wheels"):
        (home / name).symlink_to(real / name)
    data.mkdir()
    (data / "dirty.inter").write_text(INTER)
    (data / "dirty.item").write_text(ITEMS)
    (home / "scenarios" / "dirty").mkdir(parents=True)
    (home / "scenarios" / "dirty" / "scenario.json").write_text(json.dumps({"name": "dirty", "dataset": str(data)}))
    return home


def test_every_response_carries_the_load_notes(home: Path) -> None:
    from llmrec.pipeline import build_pipeline

    pipeline = build_pipeline(Settings(home=home), "dirty", engine=ScriptedEngine(), progress=False)
    assert pipeline.dataset.report.notes == (DROPPED,)
    personal = pipeline.recommend(RecommendRequest(user_id="u2", k=2))
    cold = pipeline.recommend(RecommendRequest(history=(), k=2))
    assert DROPPED in personal.notes and len(personal.recommendations) == 2
    assert cold.cold_start and cold.notes[0] == DROPPED and cold.notes[-1].startswith("empty history")


def test_an_empty_cold_start_pool_is_an_error_not_an_empty_answer(home: Path) -> None:
    from llmrec.pipeline import build_pipeline, popular_diverse

    pipeline = build_pipeline(Settings(home=home), "dirty", engine=ScriptedEngine(), progress=False)
    assert popular_diverse(pipeline.dataset, pipeline.popularity, 3)  # the real pool is not empty
    pipeline.popularity = {}  # what fitting on histories that are all empty leaves
    with pytest.raises(DatasetError, match="dataset dirty: no item has an interaction .* nothing to recommend"):
        pipeline.recommend(RecommendRequest(history=(), k=3))


@pytest.mark.slow  # the paired tests use ranx (numba-compiled on first use)
def test_eval_report_lists_the_load_notes(tmp_path: Path, home: Path) -> None:
    from llmrec.eval.harness import EvalConfig, run_eval

    heard: list[str] = []
    config = EvalConfig(scenario="dirty", position_bias_users=0, explain_users=0, bootstrap=100)
    run_eval(Settings(home=home), config, tmp_path / "out", engine=ScriptedEngine(), progress=False, notify=heard.extend)
    assert heard == [DROPPED]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["dataset"]["notes"] == [DROPPED] and report["dataset"]["dropped_unknown_items"] == 1
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "## Data" in markdown and f"- {DROPPED}" in markdown
