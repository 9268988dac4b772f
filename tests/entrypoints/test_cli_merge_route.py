"""`llmrec adapters merge` and `llmrec recommend --scenario auto` through the CLI: one line and an exit code for bad input."""

from __future__ import annotations

import json

import pytest

from llmrec.entrypoints.cli import main


def user_scenario(home, name, dataset="ml-100k", adapter=None):
    path = home / "scenarios" / name / "scenario.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"name": name, "dataset": dataset, "adapter": adapter}))


def catalog(root, name, ids):
    folder = root / name
    folder.mkdir()
    (folder / f"{name}.item").write_text("item_id:token\ttitle:token_seq\n" + "".join(f"{i}\tT {i}\n" for i in ids))
    (folder / f"{name}.inter").write_text("user_id:token\titem_id:token\n" + "".join(f"u\t{i}\n" for i in ids))
    return str(folder)


def test_merge_with_a_malformed_from_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as caught:
        main(["adapters", "merge", "--home", str(tmp_path), "--into", "x", "--from", "movies:0.5"])
    assert caught.value.code == 2 and "two or more different scenarios" in capsys.readouterr().err


def test_merge_of_a_scenario_without_adapter_is_exit_6_and_writes_nothing(tmp_path, capsys):
    user_scenario(tmp_path, "other")
    assert main(["adapters", "merge", "--home", str(tmp_path), "--into", "both", "--from", "movies:0.5,other:0.5"]) == 6
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no adapter to merge" in err[0]
    assert not (tmp_path / "scenarios" / "both").exists()


def test_auto_with_a_user_id_is_refused(tmp_path, capsys):
    assert main(["recommend", "--home", str(tmp_path), "--scenario", "auto", "--user", "1"]) == 3
    assert "--scenario auto routes a --history" in capsys.readouterr().err


def test_auto_refuses_a_mixed_history_and_routes_a_clean_one(tmp_path, capsys, monkeypatch):
    user_scenario(tmp_path, "films", catalog(tmp_path, "films", ["1", "2"]))
    user_scenario(tmp_path, "books", catalog(tmp_path, "books", ["a", "b"]))
    assert main(["recommend", "--home", str(tmp_path), "--scenario", "auto", "--history", "1,a"]) == 3
    assert "different catalogs" in capsys.readouterr().err

    import llmrec.pipeline as pipeline_module
    from llmrec.errors import LLMRecError

    built = []

    def fake_build(settings, name, progress=True):
        built.append(name)
        raise LLMRecError("stop here")

    monkeypatch.setattr(pipeline_module, "build_pipeline", fake_build)
    # the built-in movies (ml-100k) is a scenario too; 'a', 'b' are in the books catalog alone
    assert main(["recommend", "--home", str(tmp_path), "--scenario", "auto", "--history", "a,b"]) == 1
    assert built == ["books"]
    assert "routed to books" in capsys.readouterr().err
