"""After LoRA training the fusion weight is fitted at once, and an adapter trained on other data is flagged on every answer."""

import json
from pathlib import Path

import pytest

from llmrec.assets import folder_hash
from llmrec.scenario import AdapterSpec, Scenario, load_scenario, stale_data_note


def adapter_scenario(tmp_path: Path, manifest: dict | None) -> Scenario:
    folder = tmp_path / "adapter"
    folder.mkdir()
    if manifest is not None:
        (folder / "manifest.json").write_text(json.dumps(manifest))
    return Scenario(name="movies", dataset="ml-100k", domain="movie", adapter=AdapterSpec(name="movies", path=str(folder)))


def test_stale_data_note_names_both_fingerprints_and_the_fix(tmp_path) -> None:
    scenario = adapter_scenario(tmp_path, {"split_fingerprint": "a" * 64})
    note = stale_data_note(scenario, "b" * 64)
    assert note and "aaaaaaaaaaaa" in note and "bbbbbbbbbbbb" in note and "llmrec adapters train --scenario movies" in note
    assert stale_data_note(scenario, "a" * 64) is None


@pytest.mark.parametrize("manifest", [None, {}, {"objective": "listwise"}])
def test_adapters_without_a_recorded_split_are_not_judged(tmp_path, manifest) -> None:
    assert stale_data_note(adapter_scenario(tmp_path, manifest), "b" * 64) is None


@pytest.mark.llm
@pytest.mark.slow
def test_training_fits_the_fusion_weight_and_a_changed_split_is_flagged(eval_home, engine) -> None:
    from llmrec.adapters.listwise import train_scenario_adapter
    from llmrec.adapters.loop import LoraTrainConfig
    from llmrec.pipeline import build_pipeline
    from llmrec.schemas import RecommendRequest
    from llmrec.settings import Settings

    settings = Settings(home=eval_home)
    engine.release_adapters()  # the session engine has one LoRA slot; each adapter folder's content is a new one
    config = LoraTrainConfig(steps=2, batch_size=2, learning_rate=1e-3, rank=4, dtype="float32")
    out, manifest = train_scenario_adapter(settings, "movies", config, examples=8, fit_users=4, engine=engine)
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["fusion"]["users"] == 4 and set(on_disk["fusion"]["grid"]) >= {"0.0", "inf"}
    assert len(on_disk["split_fingerprint"]) == 64 and "valid_ndcg10_fused" in on_disk
    scenario = load_scenario("movies", eval_home)
    fit = scenario.fusion.fitted_on
    assert scenario.adapter.path == str(out) and fit.adapter == "movies" and fit.users == 4
    assert fit.adapter_sha256 == folder_hash(out)  # the fit applies to the folder as it is now, manifest included
    engine.release_adapters()  # the fit's slot held the folder before its manifest got the grid
    pipeline = build_pipeline(settings, "movies", engine=engine, progress=False)
    assert pipeline.data_note is None and pipeline.fusion_note is None
    # The dataset changed since training (here: the manifest says so): warned at build, in every answer.
    on_disk["split_fingerprint"] = "0" * 64
    (out / "manifest.json").write_text(json.dumps(on_disk))
    engine.release_adapters()
    pipeline = build_pipeline(settings, "movies", engine=engine, progress=False)
    assert pipeline.data_note and "trained on other data" in pipeline.data_note
    response = pipeline.recommend(RecommendRequest(user_id="196", k=5))
    assert pipeline.data_note in response.notes
    engine.release_adapters()


def test_fit_fusion_on_an_embedding_scenario_keeps_its_short_history_weight_and_grid(eval_home, monkeypatch) -> None:
    """`llmrec fit-fusion` refits an embedding scenario on the objective's finer grid, short-history weight included,
    each chosen on the selection half of the users and gated on the other."""
    import math
    from types import SimpleNamespace

    import llmrec.pipeline
    from llmrec.adapters.fit import OBJECTIVE_GRIDS, fit_fusion_weight
    from llmrec.data.datasets import load_dataset
    from llmrec.data.split import LeaveOneOutSplit
    from llmrec.protocols import LLMScores
    from llmrec.retrieval.retrievers import HybridRetriever
    from llmrec.scenario import FusionFit, FusionSpec, ShortHistoryFusion, save_scenario
    from llmrec.settings import Settings

    folder = eval_home / "scenarios" / "emb" / "adapter-embedding"
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"objective": "embedding"}))
    old = FusionFit(split="s", users=1, grid={}, model="m")
    save_scenario(Scenario(name="emb", dataset="ml-100k", adapter=AdapterSpec(name="emb-embedding", path=str(folder)),
                           fusion=FusionSpec(weight=None, fitted_on=old, short_history=ShortHistoryFusion(max_items=2, fitted_on=old))),
                  eval_home)
    dataset = load_dataset("ml-100k", eval_home)
    retriever = HybridRetriever().fit(LeaveOneOutSplit.from_dataset(dataset).train_histories())

    class Ranker:
        def score_many(self, requests):
            return [LLMScores([-float(i) for i in range(len(c))], len(h), 0, 1) for h, c in requests]

    fake = SimpleNamespace(retriever=retriever, ranker=Ranker(), dataset=dataset, engine=SimpleNamespace(model_name="m"))
    monkeypatch.setattr(llmrec.pipeline, "build_pipeline", lambda *a, **k: fake)
    scenario, grid = fit_fusion_weight(Settings(home=eval_home), "emb", users=40)
    expected = {"inf" if math.isinf(w) else str(w) for w in OBJECTIVE_GRIDS["embedding"]}
    assert set(grid) == expected and set(scenario.fusion.fitted_on.grid) == expected
    short = scenario.fusion.short_history
    assert short is not None and short.max_items == 2 and set(short.fitted_on.grid) == expected
    assert "first 2 training items" in short.fitted_on.split
    for fit in (scenario.fusion.fitted_on, short.fitted_on):
        assert fit.users == 40 and fit.selection_users + fit.gate_users == 40 and fit.user_split
