"""`llmrec chat` as a user runs it: messages through a pipe, one reply each; bad input is one line."""

import os
import subprocess
import sys

import pytest


def chat(*args, stdin="", env=None, timeout=900):
    return subprocess.run([sys.executable, "-m", "llmrec.entrypoints.cli", "chat", *args], input=stdin, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def test_unknown_user_is_one_line_and_exit_3(tmp_path):
    result = chat("--user", "99999", env={"LLMREC_CHAT_STORE": str(tmp_path)})
    assert result.returncode == 3 and "unknown user '99999'" in result.stderr and "Traceback" not in result.stderr


def test_tools_planner_without_a_server_is_one_line(tmp_path):
    result = chat("--user", "196", "--planner", "tools", env={"LLMREC_CHAT_STORE": str(tmp_path)})
    assert result.returncode == 1 and "--llm-url" in result.stderr and "Traceback" not in result.stderr


def test_a_message_over_the_cap_is_one_line_and_exit_2(tmp_path):
    """The cap is checked before any model runs (`llmrec.schemas.LIMITS.message_chars`)."""
    result = chat("--user", "196", stdin="a" * 2001 + "\n", env={"LLMREC_CHAT_STORE": str(tmp_path)})
    assert result.returncode == 2 and "the message is too long: 2001 characters, the limit is 2000" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()[-1]) < 200


@pytest.mark.llm
def test_two_lines_through_a_pipe_get_two_replies_and_the_session_continues(tmp_path):
    env = {"LLMREC_CHAT_STORE": str(tmp_path)}
    result = chat("--scenario", "movies", "--user", "196", "--session", "pipe", stdin="something funny from the 90s\nbut not a romance\n",
                  env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    replies = [block for block in result.stdout.split("\n\n") if block.strip()]
    assert len(replies) == 2, result.stdout
    assert replies[0].startswith("Looking for: Comedy · 1990–1999\n")
    assert replies[1].startswith("Looking for: Comedy · 1990–1999 · not Romance\n")
    assert all(block.count("   why: ") == 5 for block in replies)
    again = chat("--session", "pipe", stdin="from the 80s\n", env=env)  # a new process continues the stored session, on its scenario
    assert again.returncode == 0 and again.stdout.startswith("Looking for: Comedy · 1980–1989 · not Romance\n"), again.stdout


@pytest.mark.llm
def test_a_cold_start_asks_about_tastes(tmp_path):
    result = chat("--scenario", "movies", stdin="hello\n", env={"LLMREC_CHAT_STORE": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "No history: tell me genres" in result.stderr and "can't personalise yet" in result.stdout


def test_without_a_scenario_a_history_no_catalog_holds_is_one_line_and_exit_3(tmp_path):
    """Routed by its items (`agents.routed`), before any model loads."""
    result = chat("--history", "no-such-item,nor-this", env={"LLMREC_CHAT_STORE": str(tmp_path)})
    assert result.returncode == 3 and "no scenario's catalog holds these items (no-such-item, nor-this)" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_session_keeps_its_scenario(tmp_path):
    from llmrec.agents.routed import _Bindings

    _Bindings(tmp_path / "routes.sqlite", 5.0).put("s1", "movies", "named by the caller")
    result = chat("--scenario", "books", "--session", "s1", env={"LLMREC_CHAT_STORE": str(tmp_path)})
    assert result.returncode == 3 and "session 's1' belongs to scenario 'movies'" in result.stderr and "Traceback" not in result.stderr
