"""The external peers inside an eval run (scripted LLM): SASRec served from the cache, ALS tuned on validation.

No RecBole training here (CI never trains SASRec): the SASRec result is a stored cache entry whose
rankings are the popularity order, which is enough to check the wiring, the report and the plot.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from llmrec.data.datasets import load_dataset
from llmrec.data.split import LeaveOneOutSplit
from llmrec.eval.als_implicit import ALSGrid
from llmrec.eval.harness import EvalConfig, run_eval
from llmrec.eval.sasrec_recbole import SASRecConfig, SASRecResult
from llmrec.settings import Settings
from llmrec.testing import ScriptedEngine

pytest.importorskip("implicit")

CURVE = [{"epoch": e, "train_loss": 1000.0 - 10 * e, "train_s": 100.0, "valid_ndcg10": v, "valid_hr10": 2 * v, "valid_s": 2.0}
         for e, v in enumerate([0.05, 0.07, 0.08, 0.079, 0.078])]


def _store_sasrec(home: Path, config: EvalConfig) -> None:
    split = LeaveOneOutSplit.from_dataset(load_dataset("ml-100k", home))
    key = SASRecConfig(max_epochs=config.sasrec_max_epochs, patience=config.sasrec_patience, seed=config.seed).key(split.fingerprint())
    popular = [i for i, _ in Counter(i for h in split.train.values() for i in h).most_common()]
    rankings = {u: [i for i in popular if i not in set(split.test_history(u).item_ids)] for u in split.test}
    result = SASRecResult(rankings=rankings, epochs=5, best_epoch=2, max_epochs=config.sasrec_max_epochs, patience=config.sasrec_patience,
                          valid_curve=CURVE, train_seconds=510.0, best_valid_ndcg10=0.08, torch_threads=1, items_in_vocabulary=1680,
                          train_rows=97000, recbole_config={"hidden_size": 64})
    folder = home / "eval-cache" / "sasrec" / key
    folder.mkdir(parents=True)
    (folder / "result.json").write_text(result.model_dump_json())


@pytest.mark.slow  # the paired tests use ranx (numba-compiled on first use)
def test_peers_are_ranked_reported_and_plotted(tmp_path, eval_home) -> None:
    grid = ALSGrid(factors=(8, 16), regularization=(10.0,), alpha=(1.0,), iterations=(5,))
    config = EvalConfig(users=6, position_bias_users=0, explain_users=0, bootstrap=100, sampled=True, baselines=("sasrec", "als"),
                        sasrec_patience=2, als_grid=grid)
    _store_sasrec(eval_home, config)
    out = tmp_path / "out"
    run_eval(Settings(home=eval_home), config, out, engine=ScriptedEngine(), progress=False)
    report = json.loads((out / "report.json").read_text())
    assert {"sasrec", "als"} <= set(report["methods"]) and all("sampled" in report["methods"][m] for m in ("sasrec", "als"))
    assert report["sasrec"]["cached"] and [r["valid_ndcg10"] for r in report["sasrec"]["valid_curve"]] == [r["valid_ndcg10"] for r in CURVE]
    assert report["als"]["status"] == "ok" and len(report["als"]["scores"]) == 2
    assert report["als"]["best"] == max(report["als"]["scores"], key=lambda p: p["valid_ndcg10"])["params"]
    for name in ("sasrec", "als"):
        rows = [json.loads(line) for line in (out / f"rankings-{name}.jsonl").read_text().splitlines()]
        assert len(rows) == 6 and all(len(r["ranked"]) == 100 for r in rows)
    markdown = (out / "report.md").read_text()
    assert "Validation NDCG@10 by epoch (0-based): 0: 0.0500, 1: 0.0700, 2: 0.0800" in markdown
    assert "stopped by early stopping after 2 epochs" in markdown and "![SASRec validation curve](sasrec_valid.png)" in markdown
    assert "## ALS (implicit) peer" in markdown and "Chosen: " in markdown
    assert (out / "sasrec_valid.png").stat().st_size > 1000


def test_peers_not_requested_are_said_so() -> None:
    from llmrec.eval.markdown import _als, _sasrec

    assert "not requested" in " ".join(_sasrec({"status": "not requested (--baselines sasrec)"}))
    assert _als({"status": "ALS skipped: x"})[-1] == "ALS skipped: x."
