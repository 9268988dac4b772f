"""SASRec via RecBole without training it: our split as benchmark files, the runner's masked validation
metric, its per-epoch curve mapped back into our result, the cache key and lock. CI never trains SASRec."""

from __future__ import annotations

import fcntl
import json
import math
from pathlib import Path

import pytest

from llmrec.data.split import LeaveOneOutSplit
from llmrec.eval._sasrec_runner import mask_seen, ndcg_hr_at10, target_ranks
from llmrec.eval.sasrec_recbole import DATASET_NAME, SKIPPED, SASRecConfig, SASRecResult, from_runner, run_sasrec, write_benchmark

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
    # Whole histories, not the max_len window, are masked: the training prefix for validation, + the valid item for test.
    assert histories["valid"]["u1"] == [tok[i] for i in "abc"] and histories["test"]["u1"] == [tok[i] for i in "abcd"]
    assert "u0" not in histories["valid"] and "u0" not in histories["test"]


def test_missing_recbole_venv_is_a_skip_not_an_error(tmp_path) -> None:
    config = SASRecConfig(python=tmp_path / "no-venv" / "bin" / "python")
    assert run_sasrec(LeaveOneOutSplit(HISTORIES), config, tmp_path, tmp_path) == SKIPPED
    assert "make baselines" in SKIPPED


def test_cache_key_follows_split_and_config() -> None:
    config = SASRecConfig()
    assert config.key("s1") == SASRecConfig(python=Path("/elsewhere"), threads=2, timeout_s=5).key("s1")  # speed only
    keys = {config.key("s1"), config.key("s2"), SASRecConfig(max_epochs=50).key("s1"), SASRecConfig(patience=3).key("s1"),
            SASRecConfig(seed=1).key("s1")}
    assert len(keys) == 5


def test_validation_metric_masks_history_and_padding() -> None:
    torch = pytest.importorskip("torch")
    # Item 0 is RecBole's padding id. Row 0: target 3 is behind items 0 (padding) and 1 (seen): rank 0 once masked.
    # Row 1: target 2 is behind item 4 only -> rank 1. Row 2: the target itself is in the history -> a miss, never a hit.
    scores = torch.tensor([[9.0, 8.0, 1.0, 5.0, 2.0], [9.0, 1.0, 5.0, 2.0, 6.0], [1.0, 2.0, 9.0, 3.0, 4.0]])
    mask_seen(scores, [torch.tensor([1]), torch.tensor([], dtype=torch.long), torch.tensor([2])])
    assert torch.isinf(scores[:, 0]).all() and math.isinf(scores[0, 1]) and math.isinf(scores[2, 2])
    ranks = target_ranks(scores, torch.tensor([3, 2, 2]))
    assert ranks == [0.0, 1.0, math.inf]
    ndcg, hr = ndcg_hr_at10(ranks)
    assert ndcg == pytest.approx((1 + 1 / math.log2(3)) / 3) and hr == pytest.approx(2 / 3)


CURVE = [{"epoch": e, "train_loss": 900.0 - e, "train_s": 160.0, "valid_ndcg10": v, "valid_hr10": 2 * v, "valid_s": 3.0}
         for e, v in enumerate([0.05, 0.08, 0.09, 0.085, 0.084])]


def _runner_output() -> dict:
    return {"rankings": {"u1": ["i2", "i0"], "u0": ["i1"]}, "epochs": 5, "best_epoch": 2, "max_epochs": 200, "patience": 2,
            "valid_curve": CURVE, "train_seconds": 815.0, "best_valid_ndcg10": 0.09, "torch_threads": 2,
            "items_in_vocabulary": 3, "train_rows": 10, "recbole_config": {"hidden_size": 64}}


def test_runner_output_maps_back_to_our_ids_with_its_curve() -> None:
    result = from_runner(_runner_output(), users=["alice", "bob"], items=["x", "y", "z"])
    assert result.rankings == {"bob": ["z", "x"], "alice": ["y"]}
    assert [r.valid_ndcg10 for r in result.valid_curve] == [0.05, 0.08, 0.09, 0.085, 0.084]
    assert max(result.valid_curve, key=lambda r: r.valid_ndcg10).epoch == result.best_epoch == 2
    with pytest.raises(ValueError):  # a runner that lost its curve is refused, not cached
        from_runner({k: v for k, v in _runner_output().items() if k != "valid_curve"}, ["alice", "bob"], ["x", "y", "z"])


def test_a_cached_result_is_served_without_recbole(tmp_path) -> None:
    split = LeaveOneOutSplit(HISTORIES)
    config = SASRecConfig(python=tmp_path / "no-venv" / "bin" / "python")
    folder = tmp_path / "eval-cache" / "sasrec" / config.key(split.fingerprint())
    folder.mkdir(parents=True)
    stored = from_runner(_runner_output(), users=["u1", "u2"], items=["a", "b", "c"])
    (folder / "result.json").write_text(stored.model_dump_json())
    served = run_sasrec(split, config, tmp_path, tmp_path)
    assert isinstance(served, SASRecResult) and served.cached and served.valid_curve == stored.valid_curve


def test_a_configuration_being_trained_elsewhere_is_a_skip(tmp_path) -> None:
    split = LeaveOneOutSplit(HISTORIES)
    python = tmp_path / "python"
    python.write_text("")  # never run: the lock is checked first
    config = SASRecConfig(python=python)
    folder = tmp_path / "eval-cache" / "sasrec" / config.key(split.fingerprint())
    folder.mkdir(parents=True)
    with (folder / "training.lock").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        status = run_sasrec(split, config, tmp_path, tmp_path)
    assert isinstance(status, str) and "another process is training" in status and "curve.jsonl" in status
