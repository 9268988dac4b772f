"""The `pointwise` objective's training side: AUC, Yes/No examples from the real ML-100K training split,
and a real PEFT run through `train_pointwise_adapter` (a few steps), validated with the real vLLM engine."""

from __future__ import annotations

import json
import math

import pytest

from llmrec.adapters.loop import LoraTrainConfig, run_key
from llmrec.adapters.pointwise import auc
from llmrec.errors import LLMRecError


def test_auc_perfect_reversed_and_ties():
    assert auc([0.9, 0.8], [0.1, 0.2, 0.3]) == 1.0
    assert auc([0.1, 0.2], [0.8, 0.9, 0.7]) == 0.0
    assert auc([0.5, 0.5], [0.5, 0.5, 0.5]) == 0.5


def test_auc_counts_pairs_and_half_ties():
    assert auc([0.8, 0.4], [0.5, 0.1]) == 0.75  # (.8,.5) (.8,.1) (.4,.1) win, (.4,.5) loses
    assert auc([0.8, 0.5], [0.5, 0.1]) == 0.875  # (.5,.5) ties: one half
    assert auc([-math.inf, 0.0], [-1.0]) == 0.5  # a score the model never gives ranks lowest


def test_auc_needs_both_classes_and_numbers():
    with pytest.raises(LLMRecError, match="positives and negatives"):
        auc([0.1], [])
    with pytest.raises(LLMRecError, match="NaN"):
        auc([float("nan")], [0.1])


def test_the_objective_is_part_of_the_run_key():
    config = LoraTrainConfig()
    assert run_key("m", "data", config) == run_key("m", "data", config, "listwise")
    assert run_key("m", "data", config, "pointwise") != run_key("m", "data", config)


@pytest.fixture(scope="module")
def context(settings):
    from llmrec.adapters.pointwise import Context

    return Context.load(settings, "movies", progress=False)


@pytest.mark.slow
def test_examples_are_balanced_yes_no_pairs_sharing_one_history(context):
    from llmrec.adapters.pointwise import pointwise_examples
    from llmrec.prompts.builders import ANSWERS

    examples = pointwise_examples(context, 20, progress=False)
    yes_no = tuple(context.formatter.label_token_ids(ANSWERS))
    assert len(examples) == 20 and {ex.labels for ex in examples} == {yes_no}
    assert [ex.target for ex in examples] == [0, 1] * 10  # one Yes, then its No, per position
    for yes, no in zip(examples[0::2], examples[1::2]):
        shared = yes.prompt[: yes.prompt.index("Candidate movie: ")]
        assert no.prompt.startswith(shared + "Candidate movie: ") and no.prompt != yes.prompt  # same history, another candidate
    three = pointwise_examples(context, 6, negatives=2, progress=False)
    assert [ex.target for ex in three] == [0, 1, 1, 0, 1, 1]
    with pytest.raises(LLMRecError, match="at least one negative"):
        pointwise_examples(context, 4, negatives=0, progress=False)


@pytest.mark.slow
def test_yes_is_the_next_item_and_no_a_retriever_candidate_the_user_never_took(context):
    import random

    from llmrec.adapters.pointwise import position_items
    from llmrec.schemas import UserHistory

    rng = random.Random(0)
    for user in ("1", "13", "405"):
        seq = context.split.train[user]
        for p in (1, len(seq) // 2, len(seq) - 1):
            positive, negatives = position_items(context, user, p, 3, rng)
            retrieved = [c.item_id for c in context.retriever.retrieve(UserHistory(user_id=user, item_ids=seq[:p]), 60)]
            pool = [i for i in retrieved if i not in seq][:20]
            assert positive == seq[p] and len(negatives) == min(3, len(pool)) == len(set(negatives)) > 0
            assert all(n in pool for n in negatives)


@pytest.mark.llm
def test_train_pointwise_adapter_end_to_end(tmp_path, settings, home, engine):
    """A real PEFT run (3 steps) on real ML-100K Yes/No prompts, validated on 2 users by the real engine."""
    from llmrec.adapters.pointwise import train_pointwise_adapter
    from llmrec.manifest import objective_of
    from llmrec.scenario import load_scenario

    test_home = tmp_path / "home"
    test_home.mkdir()
    for name in ("datasets", "models", "wheels", "chroma"):
        (test_home / name).symlink_to(home / name)
    scenario_file = test_home / "scenarios" / "pw" / "scenario.json"
    scenario_file.parent.mkdir(parents=True)
    scenario_file.write_text(json.dumps({"name": "pw", "dataset": "ml-100k", "domain": "movie"}))
    local = settings.model_copy(update={"home": test_home})
    config = LoraTrainConfig(steps=3, batch_size=2, learning_rate=3e-3)
    engine.release_adapters()
    try:
        out, manifest = train_pointwise_adapter(local, "pw", config, examples=8, fit_users=2, engine=engine, progress=False)
    finally:
        engine.release_adapters()
    written = json.loads((out / "manifest.json").read_text())
    assert written["objective"] == manifest["objective"] == "pointwise" and written["complete"] and written["steps_done"] == 3
    assert written["examples"] == 8 and written["negatives_per_positive"] == 1 and len(written["loss_curve"]) == 3
    assert written["train_tokens_per_s"] > 0 and written["autocast"] in ("bfloat16", "float32")
    assert 0.0 <= written["valid_auc"] <= 1.0 and written["valid_users"] == 2
    assert set(written["fusion"]["grid"]) >= {"0.0", "inf"} and written["valid_ndcg10_alone"] == written["fusion"]["grid"]["0.0"]
    assert (out / "adapter_config.json").is_file()
    scenario = load_scenario("pw", test_home)
    assert scenario.adapter.path == str(out) and objective_of(scenario.adapter) == "pointwise"
    fit = scenario.fusion.fitted_on
    assert fit.adapter == scenario.adapter.name and fit.users == 2 and fit.model == engine.model_name
    weight, note = scenario.fusion.weight_for(engine.model_name, scenario.adapter, settings.permutations, "pw")
    assert note is None  # the fit matches the adapter folder as written, manifest included
    again, cached = train_pointwise_adapter(local, "pw", config, examples=8, fit_users=2, engine=engine, progress=False)
    assert cached.get("cached") is True and again == out  # same base, data, objective and config: not trained twice
