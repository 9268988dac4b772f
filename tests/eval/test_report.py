"""Run ids, the refusal to overwrite another run, staging, and the rankings file format."""

from __future__ import annotations

import json
import math

import pytest

from llmrec.errors import LLMRecError
from llmrec.eval.report import OutputFolder, RunConflict, folder_hash, read_rankings, run_id, write_json, write_rankings


def test_run_id_is_short_stable_and_sensitive() -> None:
    payload = {"eval": {"users": 50, "seed": 0}, "fusion_weight": math.inf, "split": "abc"}
    assert run_id(payload) == run_id(dict(reversed(list(payload.items()))))
    assert len(run_id(payload)) == 12
    assert run_id(payload) != run_id({**payload, "fusion_weight": 0.5})
    assert run_id(payload) != run_id({**payload, "eval": {"users": 51, "seed": 0}})


def test_folder_hash_follows_bytes_and_names(tmp_path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "w.bin").write_bytes(b"123")
    first = folder_hash(tmp_path / "a")
    (tmp_path / "a" / "w.bin").write_bytes(b"124")
    assert folder_hash(tmp_path / "a") != first
    assert folder_hash(None) is None


def _finish(folder: OutputFolder, files: dict[str, str]) -> None:
    stage = folder.begin()
    for name, text in files.items():
        (stage / name).write_text(text)
    write_json(stage / "report.json", {"run_id": folder.run_id})
    folder.commit()


def test_refuses_another_run_unless_forced(tmp_path) -> None:
    out = tmp_path / "out"
    _finish(OutputFolder(out, "aaa"), {"rankings-x.jsonl": "old\n", "report.md": "old"})
    with pytest.raises(RunConflict) as error:
        OutputFolder(out, "bbb").begin()
    assert isinstance(error.value, LLMRecError) and error.value.exit_code != 0
    assert "aaa" in str(error.value) and "--force" in str(error.value)
    assert json.loads((out / "report.json").read_text())["run_id"] == "aaa"  # untouched
    _finish(OutputFolder(out, "aaa"), {"report.md": "again"})  # the same run may overwrite itself
    assert (out / "report.md").read_text() == "again"
    _finish(OutputFolder(out, "bbb", force=True), {"rankings-y.jsonl": "new\n", "report.md": "new"})
    assert sorted(p.name for p in out.iterdir()) == ["rankings-y.jsonl", "report.json", "report.md"]  # old run's files gone
    assert json.loads((out / "report.json").read_text())["run_id"] == "bbb"


def test_commit_checks_again(tmp_path) -> None:
    out = tmp_path / "out"
    late = OutputFolder(out, "late")
    late.begin()
    _finish(OutputFolder(out, "first"), {})  # another run finished while this one was running
    with pytest.raises(RunConflict):
        late.commit()


def test_rankings_file_format(tmp_path) -> None:
    path = write_rankings(tmp_path, "hybrid", {"196": ["242", "302"], "7": ["1"]}, {"196": "302", "7": "9"}, ["7", "196"])
    assert path.name == "rankings-hybrid.jsonl"
    lines = path.read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"user_id": "7", "target": "9", "ranked": ["1"]},
        {"user_id": "196", "target": "302", "ranked": ["242", "302"]},
    ]
    assert read_rankings(path)[1]["ranked"] == ["242", "302"]


def test_json_writer_handles_infinity_and_models(tmp_path) -> None:
    from llmrec.eval.stats import Estimate

    write_json(tmp_path / "r.json", {"w": math.inf, "e": Estimate(mean=0.5, low=0.1, high=0.9, n=3)})
    data = json.loads((tmp_path / "r.json").read_text())
    assert data == {"w": "inf", "e": {"mean": 0.5, "low": 0.1, "high": 0.9, "n": 3}}
