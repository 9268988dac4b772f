"""The pointwise (Yes/No) ranker: its logic with a scripted engine, then the real vLLM engine with a real trained adapter.

The adapter here is real PEFT LoRA, trained for a few steps on real ML-100K Yes/No prompts: enough to
check the serving path (finite, candidate-specific scores; the pipeline choosing this ranker), not quality.
"""

import json
import math

import pytest

from llmrec.ranking.fusion import fuse
from llmrec.ranking.pointwise import PointwiseRanker, PointwiseRankerConfig
from llmrec.schemas import Candidate, Item, RecommendRequest
from llmrec.testing import ScriptedEngine

CATALOG = {str(i): Item(item_id=str(i), title=f"Movie {i}", year=1990) for i in range(30)}
CANDS = [Candidate(item_id=str(i), retriever_rank=r, retriever_score=1.0 / (r + 1)) for r, i in enumerate([5, 7, 9, 11])]


def likes(item_id):
    """log P(Yes) = -0.1 for `item_id`'s prompt, -3 for every other candidate: a content-driven scorer."""
    return lambda prompt, n: [-0.1 if f"Candidate movie: Movie {item_id} " in prompt else -3.0, -2.0][:n]


def test_each_candidate_is_scored_by_its_own_prompt_in_one_engine_call():
    engine = ScriptedEngine(likes("9"))
    ranker = PointwiseRanker(engine, CATALOG)
    one, two = ranker.score_many([([CATALOG["1"]], CANDS), ([CATALOG["2"]], CANDS[:2])])
    assert engine.calls == [("score", 6)]
    assert one.logprobs == [-3.0, -3.0, -0.1, -3.0] and two.logprobs == [-3.0, -3.0]
    assert one.history_used == 1 and one.prompt_tokens > 4 * 10


def test_fusion_follows_the_weight():
    assert [r.item_id for r in PointwiseRanker(ScriptedEngine(likes("9")), CATALOG, config=PointwiseRankerConfig(fusion_weight=0.0))
            .rank([CATALOG["1"]], CANDS)] == ["9", "5", "7", "11"]
    ranked = PointwiseRanker(ScriptedEngine(likes("9")), CATALOG).rank([CATALOG["1"]], CANDS)  # w = inf: the retriever's order
    assert [r.item_id for r in ranked] == ["5", "7", "9", "11"] and ranked[2].llm_logprob == -0.1
    fused = PointwiseRanker(ScriptedEngine(likes("11")), CATALOG, config=PointwiseRankerConfig(fusion_weight=1.0)).rank([CATALOG["1"]], CANDS)
    assert [r.item_id for r in fused] == ["11", "5", "7", "9"]  # -0.1 - log 4 beats -3 - log 1
    assert fused[0].score == pytest.approx(-0.1 - math.log(4)) == pytest.approx(fuse([-0.1], [3], 1.0)[0])


def test_no_candidates_cost_no_llm_call():
    engine = ScriptedEngine(likes("9"))
    assert PointwiseRanker(engine, CATALOG).rank([CATALOG["1"]], []) == []
    [scores] = PointwiseRanker(engine, CATALOG).score_many([([CATALOG["1"]], [])])
    assert scores.logprobs == [] and engine.calls == []


def test_it_is_a_scoring_ranker():
    from llmrec.protocols import ScoringRanker

    assert isinstance(PointwiseRanker(ScriptedEngine(), CATALOG), ScoringRanker)


@pytest.fixture(scope="module")
def pointwise_adapter(tmp_path_factory, settings):
    """A real pointwise LoRA: 4 steps on 8 real ML-100K Yes/No prompts."""
    from llmrec.adapters.loop import LoraTrainConfig, train_lora
    from llmrec.adapters.pointwise import OBJECTIVE, Context, pointwise_examples
    from llmrec.scenario import AdapterSpec

    context = Context.load(settings, "movies", progress=False)
    examples = pointwise_examples(context, 8, progress=False)
    out = tmp_path_factory.mktemp("pointwise") / "adapter-pointwise"
    manifest = train_lora(context.model, examples, out, LoraTrainConfig(steps=4, batch_size=2, learning_rate=3e-3), progress=False,
                          objective=OBJECTIVE)
    assert manifest["objective"] == "pointwise"
    return AdapterSpec(name="movies-pointwise-tiny", path=str(out)), context


@pytest.mark.llm
def test_the_real_engine_scores_20_candidates_of_a_real_user_with_the_adapter(engine, pointwise_adapter):
    """The ranker sends each candidate's own prompt, in one batch, and reads log P(Yes) of each.

    What a prompt scores depends on how it is run only through kernel rounding, so the same batch scored
    again directly, and the first prompt scored alone, agree with the ranker's numbers within the dtype's
    batch tolerance (`llmrec.testing.BATCH_TOLERANCE`). In bf16 a batch of 20 and a batch of 1, or a
    prompt computed whole and one whose shared prefix comes from vLLM's prefix cache, run different
    kernels: measured on an amx_bf16 CPU, .016 and .035 apart.
    """
    from llmrec.prompts.builders import ANSWERS
    from llmrec.testing import RecordingEngine, logprob_tolerance

    adapter, context = pointwise_adapter
    history = context.split.valid_history("1")
    candidates = context.retriever.retrieve(history, 20)
    items = [context.dataset.items[i] for i in history.item_ids]
    recording = RecordingEngine(engine)
    labels = engine.label_token_ids(ANSWERS)
    engine.release_adapters()
    try:
        ranker = PointwiseRanker(recording, context.dataset.items, context.prompts, adapter=adapter)
        [tuned] = ranker.score_many([(items, candidates)])
        [base] = PointwiseRanker(engine, context.dataset.items, context.prompts).score_many([(items, candidates)])
        singles = [context.prompts.build(engine, items, context.dataset.items[c.item_id]).text for c in candidates]
        [sent] = recording.scored
        direct = engine.score_next_token(sent, labels, adapter)
        [yes_no] = engine.score_next_token([singles[0]], labels, adapter)
    finally:
        engine.release_adapters()
    assert sent == singles  # one batch of each candidate's own prompt, as built for it alone, in retriever order
    assert len(tuned.logprobs) == 20 and all(math.isfinite(x) and x <= 0 for x in tuned.logprobs)
    assert max(tuned.logprobs) - min(tuned.logprobs) > 1e-3  # the score depends on the candidate
    assert max(abs(a - b) for a, b in zip(tuned.logprobs, base.logprobs)) > 1e-3  # and on the adapter
    tolerance = logprob_tolerance(engine.config.dtype, "batch")
    assert tuned.logprobs == pytest.approx([row[0] for row in direct], abs=tolerance)  # log P(Yes) of the same batch
    assert math.exp(yes_no[0]) + math.exp(yes_no[1]) == pytest.approx(1.0, abs=1e-3)  # renormalised over {Yes, No}
    assert yes_no[0] == pytest.approx(tuned.logprobs[0], abs=tolerance)


@pytest.mark.llm
def test_the_pipeline_picks_the_pointwise_ranker_for_a_pointwise_manifest(tmp_path, settings, home, engine, pointwise_adapter):
    from llmrec.pipeline import build_pipeline
    from llmrec.ranking.listwise import LLMRanker

    adapter, _ = pointwise_adapter
    test_home = tmp_path / "home"
    test_home.mkdir()
    for name in ("datasets", "models", "wheels", "chroma"):
        (test_home / name).symlink_to(home / name)
    for name, path in (("pw", adapter.path), ("plain", None)):
        scenario = test_home / "scenarios" / name / "scenario.json"
        scenario.parent.mkdir(parents=True)
        scenario.write_text(json.dumps({"name": name, "dataset": "ml-100k", "domain": "movie",  # a hand-set weight: the LLM ranks
                                        "adapter": {"name": adapter.name, "path": path} if path else None, "fusion": {"weight": 1.0}}))
    local = settings.model_copy(update={"home": test_home})
    engine.release_adapters()
    try:
        pipeline = build_pipeline(local, "pw", engine=engine, progress=False)
        assert isinstance(pipeline.ranker, PointwiseRanker) and pipeline.ranker.adapter.path == adapter.path
        response = pipeline.recommend(RecommendRequest(user_id="1", k=10))
    finally:
        engine.release_adapters()
    assert response.adapter == adapter.name and len(response.recommendations) == 10
    assert all(r.llm_logprob is not None and math.isfinite(r.llm_logprob) for r in response.recommendations)
    assert len({r.llm_logprob for r in response.recommendations}) > 1
    assert isinstance(build_pipeline(local, "plain", engine=engine, progress=False).ranker, LLMRanker)  # no adapter: the verbalizer
