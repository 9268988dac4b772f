"""The harness's wiring with a scripted engine (never evidence that the LLM ranks well), and its typed errors."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from llmrec.errors import AdapterMismatch, DatasetError, LLMRecError, UnknownScenario
from llmrec.eval.harness import EvalConfig, run_eval
from llmrec.eval.report import EmptyTestSet, RunConflict
from llmrec.settings import Settings
from llmrec.testing import ScriptedEngine

SMALL = dict(users=6, position_bias_users=1, explain_users=2, explain_k=2, bootstrap=100)


def last_label_engine() -> ScriptedEngine:
    """Prefers the last label, so the LLM-only order reverses the candidates."""
    return ScriptedEngine(score=lambda prompt, n: [-float(n - i) for i in range(n)])


@pytest.mark.slow  # the paired tests use ranx (numba-compiled on first use)
def test_scripted_run_writes_every_file(tmp_path, eval_home) -> None:
    settings = Settings(home=eval_home)
    out = tmp_path / "out"
    outcome = run_eval(settings, EvalConfig(**SMALL, sampled=True), out, engine=last_label_engine(), progress=False)
    report = json.loads((out / "report.json").read_text())
    methods = {"popularity", "embedding", "cooccurrence", "hybrid", "llmrec", "llm-only", "oracle"}
    assert set(report["methods"]) == methods and report["run_id"] == outcome.run_id
    for name in methods:
        rows = [json.loads(line) for line in (out / f"rankings-{name}.jsonl").read_text().splitlines()]
        assert len(rows) == 6 and all(set(r) == {"user_id", "target", "ranked"} and len(r["ranked"]) == 100 for r in rows)
        for section in ("full", "sampled") if name != "oracle" else ("full",):  # no oracle in the sampled protocol
            assert all(0 <= v["low"] <= v["mean"] <= v["high"] <= 1 for v in report["methods"][name][section].values())
    hybrid = [json.loads(x)["ranked"] for x in (out / "rankings-hybrid.jsonl").read_text().splitlines()]
    alone = [json.loads(x)["ranked"] for x in (out / "rankings-llm-only.jsonl").read_text().splitlines()]
    assert all(a[:20] == h[:20][::-1] and a[20:] == h[20:] for a, h in zip(alone, hybrid))
    # The oracle is the reranker's ceiling: never below any reranked method, above hybrid where a target is in the head.
    ndcg = {name: report["methods"][name]["full"]["NDCG@10"]["mean"] for name in methods}
    assert ndcg["oracle"] >= max(ndcg["hybrid"], ndcg["llmrec"], ndcg["llm-only"])
    assert (ndcg["oracle"] > ndcg["hybrid"]) == (report["users_target_in_candidates"] > 0)
    # The cold-start slice: every method again on 3-item histories, its own rankings, paired tests, a report section.
    cold = report["cold_start"]
    assert cold["history_items"] == 3 and set(cold["methods"]) == methods and cold["users"] == 6
    assert {t["a"] for t in cold["paired_tests"]} == {"llmrec", "llm-only"}
    cold_hybrid = [json.loads(x)["ranked"] for x in (out / "rankings-cold-start-hybrid.jsonl").read_text().splitlines()]
    assert cold_hybrid != hybrid and all(len(r) == 100 for r in cold_hybrid)
    assert "## Cold-start slice" in (out / "report.md").read_text()
    assert report["sasrec"]["status"].startswith("not requested")
    assert {"curves.png", "funnel.png", "report.md"} <= {p.name for p in out.iterdir()}
    assert "## Protocol" in (out / "report.md").read_text()
    quality = report["explanations"]
    assert quality["explanations"] == 4 and quality["first_try_accepted"] + quality["retry_accepted"] + quality["template_fallback"] == 1
    # Another config into the same folder is refused before any LLM work; the same run may overwrite itself.
    engine = last_label_engine()
    with pytest.raises(RunConflict):
        run_eval(settings, EvalConfig(**{**SMALL, "seed": 1}), out, engine=engine, progress=False)
    assert engine.calls == []


@pytest.mark.parametrize(("config", "error"), [
    (EvalConfig(users=0), EmptyTestSet),
    (EvalConfig(scenario="nope"), UnknownScenario),
    (EvalConfig(dataset="no-such-dataset"), DatasetError),
])
def test_bad_input_is_a_typed_error(tmp_path, eval_home, config, error) -> None:
    with pytest.raises(error) as caught:
        run_eval(Settings(home=eval_home), config, tmp_path / "out", engine=ScriptedEngine(), progress=False)
    assert caught.value.exit_code != 0 and not (tmp_path / "out").exists()


def test_dataset_without_targets_is_an_empty_test_set(tmp_path, eval_home) -> None:
    data = tmp_path / "tiny"
    data.mkdir()
    (data / "tiny.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n1\ta\t1\n1\tb\t2\n2\ta\t1\n")
    (data / "tiny.item").write_text("item_id:token\tmovie_title:token_seq\na\tA\nb\tB\n")
    _scenario(eval_home, "tiny", dataset=str(data))
    with pytest.raises(EmptyTestSet, match="3 interactions"):
        run_eval(Settings(home=eval_home), EvalConfig(scenario="tiny"), tmp_path / "out", engine=ScriptedEngine(), progress=False)


def test_dataset_must_be_the_scenarios(tmp_path, eval_home) -> None:
    data = tmp_path / "tiny"
    data.mkdir()
    (data / "tiny.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n1\ta\t1\n")
    (data / "tiny.item").write_text("item_id:token\tmovie_title:token_seq\na\tA\n")
    with pytest.raises(LLMRecError, match="built on dataset"):
        run_eval(Settings(home=eval_home), EvalConfig(dataset=str(data)), tmp_path / "out", engine=ScriptedEngine(), progress=False)


def test_adapter_for_another_base_model_is_refused(tmp_path, eval_home, model_dir) -> None:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "someone/Other-7B"}))
    _scenario(eval_home, "mismatch", dataset="ml-100k", adapter={"name": "mismatch", "path": str(adapter)})
    engine = ScriptedEngine()
    engine.config = SimpleNamespace(model=model_dir)  # an in-process engine's config names its base model
    with pytest.raises(AdapterMismatch, match="Other-7B"):
        run_eval(Settings(home=eval_home), EvalConfig(scenario="mismatch"), tmp_path / "out", engine=engine, progress=False)


def _scenario(home: Path, name: str, **fields) -> None:
    path = home / "scenarios" / name / "scenario.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"name": name, "domain": "movie", **fields}))


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        EvalConfig(users=-1)
    with pytest.raises(ValueError):
        EvalConfig(baselines=("bert4rec",))
    assert math.isfinite(EvalConfig().bootstrap)


def test_cli_errors_are_one_line_with_exit_codes(tmp_path) -> None:
    import os
    import subprocess
    import sys

    def llmrec(*args):
        return subprocess.run([sys.executable, "-m", "llmrec.entrypoints.cli", "eval", "--out", str(tmp_path / "o"), *args],
                              capture_output=True, text=True, timeout=300, env=dict(os.environ))

    empty = llmrec("--users", "0")
    assert empty.returncode == 3 and "nobody to evaluate" in empty.stderr and "Traceback" not in empty.stderr
    bad = llmrec("--baselines", "bert4rec")
    assert bad.returncode == 2 and "bad settings or options" in bad.stderr and "Traceback" not in bad.stderr
    unknown = llmrec("--dataset", "ml-1b")
    assert unknown.returncode == 4 and "unknown dataset" in unknown.stderr
