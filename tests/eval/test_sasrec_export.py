"""Our split as RecBole benchmark files: one explicit sequence row per target, ids as dense tokens."""

from __future__ import annotations

import json
from pathlib import Path

from llmrec.eval.sasrec_recbole import DATASET_NAME, SKIPPED, SASRecConfig, run_sasrec, write_benchmark
from llmrec.eval.split import LeaveOneOutSplit

HISTORIES = {"u1": ["a", "b", "c", "d", "e"], "u2": ["x", "y", "z"], "short": ["p", "q"]}


def _rows(path: Path) -> list[list[str]]:
    lines = path.read_text().splitlines()
    assert lines[0] == "user_id:token\titem_id_list:token_seq\titem_id:token"
    return [line.split("\t") for line in lines[1:]]


def test_benchmark_files_follow_our_split(tmp_path) -> None:
    split = LeaveOneOutSplit(HISTORIES)
    users, items = write_benchmark(split, tmp_path, max_len=2)
    assert users == ["short", "u1", "u2"] and items == ["a", "b", "c", "d", "e", "p", "q", "x", "y", "z"]
    tok = {i: f"i{n}" for n, i in enumerate(items)}
    data = tmp_path / "data" / DATASET_NAME
    # "short" (no target) still trains p->q, like the retrievers; u1 trains a->b, (a b)->c; u2's prefix (x) has no step.
    assert _rows(data / f"{DATASET_NAME}.train.inter") == [["u0", tok["p"], tok["q"]], ["u1", tok["a"], tok["b"]],
                                                           ["u1", f"{tok['a']} {tok['b']}", tok["c"]]]
    assert _rows(data / f"{DATASET_NAME}.valid.inter") == [["u1", f"{tok['b']} {tok['c']}", tok["d"]], ["u2", tok["x"], tok["y"]]]
    assert _rows(data / f"{DATASET_NAME}.test.inter") == [["u1", f"{tok['c']} {tok['d']}", tok["e"]],  # truncated to max_len
                                                          ["u2", f"{tok['x']} {tok['y']}", tok["z"]]]
    histories = json.loads((tmp_path / "histories.json").read_text())
    assert histories["u1"] == [tok[i] for i in "abcd"] and "u0" not in histories  # the whole test history is masked


def test_missing_recbole_venv_is_a_skip_not_an_error(tmp_path) -> None:
    config = SASRecConfig(python=tmp_path / "no-venv" / "bin" / "python")
    assert run_sasrec(LeaveOneOutSplit(HISTORIES), config, tmp_path, tmp_path) == SKIPPED
    assert "make baselines" in SKIPPED


def test_cache_key_follows_split_and_config() -> None:
    config = SASRecConfig()
    assert config.key("s1") == SASRecConfig(python=Path("/elsewhere")).key("s1")
    assert config.key("s1") != config.key("s2") != SASRecConfig(epochs=3).key("s2")
