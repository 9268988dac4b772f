"""The merge table's logic over eval folders written by hand (rankings, report.json): the pairing, the checks, the exit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmrec.adapters.merge_report import MergeTableSpec, build, main, markdown
from llmrec.errors import LLMRecError
from llmrec.eval import stats

USERS = [f"u{i}" for i in range(30)]
TARGETS = {u: f"t{i}" for i, u in enumerate(USERS)}


def ranked(user: str, position: int) -> list[str]:
    """A list of 20 with the user's target at `position` (None: missing)."""
    items = [f"x{j}" for j in range(20)]
    if position is not None:
        items[position] = TARGETS[user]
    return items


def run(folder: Path, fused: dict, alone: dict | None, split: str = "s1", users=USERS, weight=0.5) -> Path:
    folder.mkdir(parents=True)
    hybrid = {u: ranked(u, i % 15) for i, u in enumerate(users)}
    methods = {"hybrid": hybrid, "llmrec-embedding": fused, **({"embedding-only": alone} if alone else {})}
    report = {"run_id": folder.name, "identity": {"split": {"fingerprint": split}, "adapter": {"name": folder.name}},
              "fusion_weight": weight, "fusion_fit": {"best_weight": weight, "p_value": 0.01, "gate_users": 12}, "methods": {}}
    for name, lists in methods.items():
        (folder / f"rankings-{name}.jsonl").write_text("".join(json.dumps({"user_id": u, "target": TARGETS[u], "ranked": lists[u]}) + "\n"
                                                              for u in users))
        report["methods"][name] = {"full": {"NDCG@10": stats.bootstrap_ci([stats.ndcg_at(lists[u], TARGETS[u], 10) for u in users],
                                                                          100, 0).model_dump()}}
    (folder / "report.json").write_text(json.dumps(report))
    return folder


def lists(shift: int) -> dict[str, list[str]]:
    return {u: ranked(u, (i + shift) % 12) for i, u in enumerate(USERS)}


def test_each_row_is_paired_against_the_side_by_side_adapter_on_the_same_users(tmp_path):
    own = run(tmp_path / "own", lists(0), lists(1))
    merged = run(tmp_path / "merged", lists(3), None)  # w = 0 already: its fused list is its alone list
    table = build(MergeTableSpec(rows={"own": {"d": own}, "merged": {"d": merged}}, side_by_side={"d": "own"}, commands=["llmrec eval ..."]))
    cell = table["rows"][1]["cells"]["d"]
    expected = stats.paired_test(lists(3), lists(0), TARGETS, USERS, ("merged", "own"))
    assert cell["fused_vs_side_by_side"]["p_value"] == expected.p_value
    assert cell["fused_vs_side_by_side"]["delta"] == pytest.approx(expected.mean_a - expected.mean_b, abs=1e-5)
    alone = stats.paired_test(lists(3), lists(1), TARGETS, USERS, ("merged", "own"))
    assert cell["alone_vs_side_by_side"]["delta"] == pytest.approx(alone.mean_a - alone.mean_b, abs=1e-5)
    assert "fused_vs_side_by_side" not in table["rows"][0]["cells"]["d"]
    assert table["datasets"]["d"]["users"] == len(USERS) and cell["fusion"]["gate_p"] == 0.01
    text = markdown(table)
    assert "| merged |" in text and "(side by side)" in text and "llmrec eval ..." in text


@pytest.mark.parametrize("case", ["users", "split"])
def test_runs_that_do_not_share_users_or_split_are_refused(tmp_path, case):
    own = run(tmp_path / "own", lists(0), lists(1))
    other = run(tmp_path / "other", lists(2), lists(2), split="s2" if case == "split" else "s1",
                users=USERS[:-1] if case == "users" else USERS)
    with pytest.raises(LLMRecError, match="differ"):
        build(MergeTableSpec(rows={"own": {"d": own}, "other": {"d": other}}, side_by_side={"d": "own"}))


def test_a_folder_without_embedding_rankings_is_one_line_and_an_exit_code(tmp_path, capsys):
    folder = run(tmp_path / "own", lists(0), lists(1))
    (folder / "rankings-llmrec-embedding.jsonl").unlink()
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"rows": {"own": {"d": str(folder)}}, "side_by_side": {"d": "own"}}))
    assert main([str(spec), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "no llmrec-embedding rankings" in err and "\n" not in err
    assert main([str(tmp_path / "missing.json"), str(tmp_path / "out")]) == 1
