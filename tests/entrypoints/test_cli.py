"""The command line as a user runs it: one-line errors with exit codes, JSON output."""

import json
import os
import re
import subprocess
import sys

import pytest


def llmrec(*args, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "llmrec.entrypoints.cli", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def test_unknown_user_is_one_line_and_exit_3():
    result = llmrec("recommend", "--user", "99999")
    assert result.returncode == 3
    lines = [line for line in result.stderr.splitlines() if line.startswith("llmrec:")]
    assert lines == ["llmrec: error: unknown user '99999' in dataset ml-100k"], result.stderr[-1000:]
    assert "Traceback" not in result.stderr


def test_unknown_item_in_history_exit_3():
    result = llmrec("recommend", "--history", "1,2,abc")
    assert result.returncode == 3 and "abc" in result.stderr and "Traceback" not in result.stderr


def test_unknown_scenario_exit_3():
    result = llmrec("recommend", "--user", "196", "--scenario", "nope")
    assert result.returncode == 3 and "unknown scenario 'nope'" in result.stderr


def test_malformed_dataset_is_a_clear_error(tmp_path):
    data = tmp_path / "broken"
    data.mkdir()
    (data / "broken.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n1\t2\tnot-a-number\n")
    (data / "broken.item").write_text("item_id:token\tmovie_title:token_seq\n2\tX\n")
    scenario = tmp_path / "home" / "scenarios" / "broken" / "scenario.json"
    scenario.parent.mkdir(parents=True)
    scenario.write_text(json.dumps({"name": "broken", "dataset": str(data)}))
    result = llmrec("recommend", "--user", "1", "--scenario", "broken", env={"LLMREC_HOME": str(tmp_path / "home")})
    assert result.returncode == 4 and "broken.inter" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.llm
def test_recommend_json_is_a_valid_response():
    from llmrec.schemas import RecommendResponse

    result = llmrec("recommend", "--user", "196", "--k", "3", "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    response = RecommendResponse.model_validate_json(result.stdout)
    assert response.user_id == "196" and len(response.recommendations) == 3


def test_bad_settings_are_one_line_not_a_traceback():
    result = llmrec("recommend", "--user", "196", env={"LLMREC_CANDIDATES": "many"})
    assert result.returncode == 2 and "candidates" in result.stderr and "Traceback" not in result.stderr


def test_recommend_without_user_or_history_is_a_usage_error_exit_2():
    """argparse answers first (exit 2), as the README's table says."""
    result = llmrec("recommend")
    assert result.returncode == 2 and "--user" in result.stderr and "Traceback" not in result.stderr


DIRTY_ITEMS = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n" + "".join(
    f"{n}\tFilm {n}\t199{n}\t{genre}\n" for n, genre in enumerate(["Comedy", "Drama", "Horror", "Action", "Romance", "Sci-Fi"]))
INTER_HEADER = "user_id:token\titem_id:token\ttimestamp:float\n"
# 8 rows: item 'x242' (line 5) is not in the .item file, and u1 watches item 0 twice
DIRTY_INTER = INTER_HEADER + "u1\t0\t1\nu1\t1\t2\nu1\t0\t3\nu2\tx242\t4\nu2\t2\t5\nu2\t3\t6\nu3\t4\t7\nu3\t1\t8\n"


def dataset_home(tmp_path, inter: str):
    """A home with its own scenario `dirty` and Chroma that shares the real cache's models and wheels (read-only)."""
    from llmrec.settings import Settings

    real, home, data = Settings().resolved_home(), tmp_path / "home", tmp_path / "dirty"
    for name in ("models", "wheels"):
        (home / name).parent.mkdir(parents=True, exist_ok=True)
        (home / name).symlink_to(real / name)
    data.mkdir()
    (data / "dirty.inter").write_text(inter)
    (data / "dirty.item").write_text(DIRTY_ITEMS)
    (home / "scenarios" / "dirty").mkdir(parents=True)
    (home / "scenarios" / "dirty" / "scenario.json").write_text(json.dumps({"name": "dirty", "dataset": str(data)}))
    return {"LLMREC_HOME": str(home)}


def notes_on_stderr(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("llmrec: note: ")]


def test_index_and_bootstrap_print_every_load_note_on_stderr(tmp_path):
    env = dataset_home(tmp_path, DIRTY_INTER)
    for command in ("index", "bootstrap"):
        result = llmrec(command, "--scenario", "dirty", env=env)
        assert result.returncode == 0, result.stderr[-2000:]
        assert notes_on_stderr(result) == [
            "llmrec: note: dirty.inter: dropped 1 of 8 interactions whose item is not in dirty.item (e.g. 'x242' (line 5))",
            "llmrec: note: dirty.inter: 1 repeated (user, item) interactions kept in histories",
        ], result.stderr[-2000:]
        assert "note" not in result.stdout


@pytest.mark.parametrize(("inter", "message"), [
    (INTER_HEADER, r"dirty/dirty\.inter: no interactions \(a header and no rows\)"),
    (INTER_HEADER + "u1\t0\t1\nu1\tx1\t2\nu2\tx2\t3\n", r"dirty/dirty\.inter: 2 of 3 interactions name items that are not in dirty\.item"),
    ("user_id:token\titem_id:token\ttimestamp:token\nu1\t0\t2020-01-01\n",
     r"dirty\.inter line 2: timestamp value '2020-01-01' is not a finite number"),
    ("user_id:token\titem_id:token\trating:token\nu1\t0\tgood\n", r"dirty\.inter line 2: rating value 'good' is not a finite number"),
])
def test_unusable_interaction_files_are_exit_4_before_any_model_loads(tmp_path, inter, message):
    result = llmrec("recommend", "--user", "u1", "--json", "--scenario", "dirty", env=dataset_home(tmp_path, inter))
    assert result.returncode == 4 and result.stdout == "", result.stderr[-2000:]
    [line] = result.stderr.strip().splitlines()
    assert re.search(message, line) and line.startswith("llmrec: error: "), line


@pytest.mark.llm
def test_recommend_json_carries_the_load_notes_and_prints_them_on_stderr(tmp_path):
    from llmrec.schemas import RecommendResponse

    result = llmrec("recommend", "--user", "u2", "--k", "2", "--json", "--scenario", "dirty", env=dataset_home(tmp_path, DIRTY_INTER))
    assert result.returncode == 0, result.stderr[-2000:]
    response = RecommendResponse.model_validate_json(result.stdout)  # stdout stays one JSON document
    dropped = "dirty.inter: dropped 1 of 8 interactions whose item is not in dirty.item (e.g. 'x242' (line 5))"
    assert dropped in response.notes and len(response.recommendations) == 2
    assert f"llmrec: note: {dropped}" in notes_on_stderr(result)


def test_adapters_list_shows_each_scenarios_adapter_from_its_manifest(eval_home):
    adapter = eval_home / "scenarios" / "movies2" / "adapter"
    adapter.mkdir(parents=True)
    manifest = {"objective": "pointwise", "base_model": "/somewhere/models/SmolLM2-135M-Instruct", "data_fingerprint": "abcdef1234567890",
                "valid_ndcg10_alone": 0.1161, "valid_ndcg10_fused": 0.1402}
    (adapter / "manifest.json").write_text(json.dumps(manifest))
    (adapter / "adapter_model.safetensors").write_bytes(b"\0" * 4096)
    scenario = {"name": "movies2", "dataset": "ml-100k", "domain": "movie", "adapter": {"name": "movies2", "path": str(adapter)},
                "fusion": {"weight": 0.0625}}
    (adapter.parent / "scenario.json").write_text(json.dumps(scenario))
    result = llmrec("adapters", "list", env={"LLMREC_HOME": str(eval_home)})
    assert result.returncode == 0, result.stderr[-1000:]
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert rows[0][:4] == ["scenario", "adapter", "objective", "base"]
    assert ["movies2", "movies2", "pointwise", "SmolLM2-135M-Instruct", "abcdef123456", "4", "0.1161", "0.1402", "0.0625"] in rows
    assert all(row[0] != "movies" for row in rows[1:])  # a scenario without an adapter has no line
