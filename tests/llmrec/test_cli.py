"""The command line as a user runs it: one-line errors with exit codes, JSON output."""

import json
import os
import subprocess
import sys

import pytest


def llmrec(*args, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "llmrec.cli", *args], capture_output=True, text=True, timeout=timeout,
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
