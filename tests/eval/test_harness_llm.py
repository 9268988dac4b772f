"""The harness end to end with the real vLLM engine (the session's `engine` fixture) on a few ML-100K users."""

from __future__ import annotations

import json

import pytest

from llmrec.eval.harness import EvalConfig, run_eval

pytestmark = [pytest.mark.llm, pytest.mark.slow]


def test_eval_on_four_users_writes_every_file(tmp_path, settings, engine) -> None:
    out = tmp_path / "report"
    config = EvalConfig(users=4, sampled=True, position_bias_users=1, position_bias_permutations=2, explain_users=2,
                        explain_k=2, bootstrap=200)
    outcome = run_eval(settings, config, out, engine=engine, progress=False)
    report = json.loads((out / "report.json").read_text())
    names = set(report["methods"])
    assert {"popularity", "embedding", "cooccurrence", "hybrid", "llmrec"} <= names
    expected = {f"rankings-{n}.jsonl" for n in names} | {"report.json", "report.md", "curves.png", "funnel.png"}
    if report["position_bias"]:
        expected.add("position_bias.png")
    assert expected <= {p.name for p in out.iterdir()} and not list(out.glob(".staging-*"))
    users = None
    for name in names:
        rows = [json.loads(line) for line in (out / f"rankings-{name}.jsonl").read_text().splitlines()]
        users = users or [r["user_id"] for r in rows]
        assert [r["user_id"] for r in rows] == users and len(users) == 4
        assert all(len(r["ranked"]) == len(set(r["ranked"])) == 100 for r in rows)
        for section in ("full", "in_candidates", "sampled"):
            for estimate in report["methods"][name].get(section, {}).values():
                assert 0.0 <= estimate["low"] <= estimate["mean"] <= estimate["high"] <= 1.0
    assert report["run_id"] == outcome.run_id and report["identity"]["model"] == engine.model_name
    assert all(t["p_value"] is None or 0.0 <= t["p_value"] <= 1.0 for t in report["paired_tests"])
    assert report["cost"]["prompt_tokens (base)"]["mean"] > 100
    explained = report["explanations"]
    assert explained["explanations"] == 4 and 0.0 <= explained["template_fallback"] <= 1.0
    assert explained["final_grounded"] == 1.0  # the validator's safety net
    md = (out / "report.md").read_text()
    assert "## Protocol" in md and "MRR is over the top-100 list" in md


def test_eval_with_a_scenario_adapter_adds_the_lora_methods(tmp_path, settings, engine, tiny_adapter) -> None:
    """Method 6: the scenario's LoRA adapter, served by the same engine next to the base model."""
    spec, _ = tiny_adapter
    real = settings.resolved_home()
    home = tmp_path / "home"
    home.mkdir()
    for name in ("datasets", "models", "wheels", "chroma"):
        (home / name).symlink_to(real / name)
    scenario = home / "scenarios" / "movies-lora" / "scenario.json"
    scenario.parent.mkdir(parents=True)
    scenario.write_text(json.dumps({"name": "movies-lora", "dataset": "ml-100k", "domain": "movie",
                                    "adapter": {"name": spec.name, "path": spec.path}}))
    config = EvalConfig(scenario="movies-lora", users=2, position_bias_users=0, explain_users=1, explain_k=1, bootstrap=100)
    outcome = run_eval(settings.model_copy(update={"home": home}), config, tmp_path / "out", engine=engine, progress=False)
    methods = outcome.report["methods"]
    assert {"llmrec", "llm-only", "llmrec-lora", "llm-only-lora"} <= set(methods)
    assert outcome.report["identity"]["adapter"]["sha256"] and outcome.report["explanations"]["method"] == "llmrec-lora"
    assert (tmp_path / "out" / "rankings-llm-only-lora.jsonl").is_file()
