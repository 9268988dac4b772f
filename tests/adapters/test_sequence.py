"""The `sequence` objective's training: windows of real ML-100K titles, the loss on item lines only, real PEFT
steps, the CLI on a small real scenario, and the pipeline ranking with the adapter on the real engine."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from llmrec.adapters.sequence import (
    IGNORE,
    SequenceExample,
    SequenceTrainConfig,
    collate,
    encode_window,
    sequence_examples,
    train_sequence_lora,
    windows,
)

USERS = 40


def test_windows_are_cut_from_the_end_and_hold_every_item_once():
    assert windows({"u": list("abcdefghij")}, 4) == [tuple("ghij"), tuple("cdef"), tuple("ab")]
    assert windows({"u": list("abcde"), "v": ["x"]}, 4) == [tuple("bcde")]  # a lone leftover item teaches nothing


def test_the_header_is_masked_and_every_item_token_is_a_target():
    ex = encode_window([1, 2, 3], [[4, 5], [6]])
    assert ex.input_ids == (1, 2, 3, 4, 5, 6) and ex.labels == (IGNORE, IGNORE, IGNORE, 4, 5, 6)
    ids, labels, mask = collate([ex, SequenceExample((7, 8), (IGNORE, 8))], pad=0)
    assert ids.tolist() == [[1, 2, 3, 4, 5, 6], [7, 8, 0, 0, 0, 0]]
    assert labels.tolist()[1] == [IGNORE, 8, IGNORE, IGNORE, IGNORE, IGNORE] and mask.tolist()[1] == [1, 1, 0, 0, 0, 0]


@pytest.fixture(scope="module")
def examples(settings):
    """Every 20-title window of ML-100K's training prefixes, tokenized as the trainer does."""
    return sequence_examples(settings, "movies", 20)


@pytest.mark.slow
def test_real_windows_hold_the_users_titles_with_the_loss_on_them_only(examples, settings, home):
    from transformers import AutoTokenizer

    from llmrec.data.datasets import load_dataset
    from llmrec.data.split import LeaveOneOutSplit
    from llmrec.engines.vllm import TokenizerFormatter
    from llmrec.prompts.builders import SequencePromptBuilder

    data, model, prompt = examples
    dataset = load_dataset("ml-100k", home)
    split = LeaveOneOutSplit.from_dataset(dataset)
    chunks = windows(split.train, 20)
    assert len(data) == len(chunks) > 4000 and prompt.max_history_items == 19
    builder = SequencePromptBuilder(prompt)
    tokenizer = AutoTokenizer.from_pretrained(model)
    header = tokenizer(builder.header(TokenizerFormatter(model)), add_special_tokens=False)["input_ids"]
    for ex, chunk in zip(data[:50], chunks[:50]):
        assert ex.input_ids[: len(header)] == tuple(header) and set(ex.labels[: len(header)]) == {IGNORE}
        body = ex.labels[len(header) :]
        assert IGNORE not in body and body == ex.input_ids[len(header) :]
        assert tokenizer.decode(body) == "".join(builder.line(dataset.items[i]) for i in chunk)
    # every training item is a target once, but the lone first items of prefixes of 21, 41, ... items
    assert sum(map(len, chunks)) == sum(len(v) for v in split.train.values()) - sum(len(v) % 20 == 1 for v in split.train.values())


@pytest.mark.slow
def test_the_models_loss_counts_the_item_tokens_only(examples):
    import torch
    from transformers import AutoModelForCausalLM

    data, model_dir, _ = examples
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    short = sorted(data, key=lambda ex: len(ex.input_ids))
    ids, labels, mask = collate([short[0], short[500]], pad=0)  # short windows of two lengths: padding too
    assert not mask.all()
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    logprobs = torch.log_softmax(logits[:, :-1].float(), -1)
    targets = labels[:, 1:]
    kept = targets != IGNORE
    manual = -logprobs[kept].gather(-1, targets[kept].unsqueeze(-1)).mean()
    assert loss.item() == pytest.approx(manual.item(), rel=1e-4)
    every = torch.where(mask[:, 1:].bool(), ids[:, 1:], IGNORE)  # the header as a target too: another loss
    assert -logprobs[every != IGNORE].gather(-1, every[every != IGNORE].unsqueeze(-1)).mean().item() != pytest.approx(loss.item(), rel=1e-2)


@pytest.mark.slow
def test_real_peft_steps_on_real_windows_write_a_sequence_adapter(examples, tmp_path):
    from llmrec.engines.models import pick_dtype

    data, model, _ = examples
    out = tmp_path / "adapter"
    config = SequenceTrainConfig(steps=4, batch_size=2, learning_rate=3e-3, top_layers=4, checkpoint_every=100)
    manifest = train_sequence_lora(model, data[:2], out, config, progress=False)  # the same two windows each step
    assert manifest["objective"] == "sequence" and manifest["complete"] and manifest["steps_done"] == 4
    assert manifest["autocast"] == pick_dtype() and manifest["train_tokens"] == 4 * sum(len(ex.input_ids) for ex in data[:2])
    assert manifest["train_tokens_per_s"] > 0
    curve = manifest["loss_curve"]
    assert all(math.isfinite(x) for x in curve) and curve[-1] < curve[0]
    adapter_config = json.loads((out / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == model and adapter_config["layers_to_transform"] == [26, 27, 28, 29]
    assert json.loads((out / "manifest.json").read_text())["run_key"] == manifest["run_key"]
    assert train_sequence_lora(model, data[:2], out, config, progress=False).get("cached")  # the same run is not repeated


@pytest.fixture(scope="module")
def tiny_home(tmp_path_factory, home):
    """A home with scenario `tiny`: the first USERS users' ML-100K interactions and the items they saw."""
    from llmrec.testing import tiny_home as build

    return build(tmp_path_factory.mktemp("sequence-home"), home, USERS)


@pytest.mark.llm
def test_cli_trains_a_sequence_adapter_and_the_pipeline_ranks_with_its_likelihoods(tiny_home, model_dir, engine):
    from llmrec.entrypoints.cli import main
    from llmrec.manifest import objective_of
    from llmrec.pipeline import build_pipeline
    from llmrec.prompts.builders import SequencePromptBuilder
    from llmrec.ranking.sequence import LikelihoodRanker
    from llmrec.scenario import load_scenario
    from llmrec.schemas import RecommendRequest
    from llmrec.settings import Settings

    assert main(["adapters", "train", "--objective", "sequence", "--steps", "2", "--batch-size", "1", "--learning-rate", "3e-3",
                 "--fit-users", "0", "--home", str(tiny_home), "--model", model_dir, "--scenario", "tiny"]) == 0
    scenario = load_scenario("tiny", tiny_home)
    manifest = json.loads((Path(scenario.adapter.path) / "manifest.json").read_text())
    assert objective_of(scenario.adapter) == "sequence" and manifest["window"] == 20
    assert manifest["prompt"] == {"template": "sequence_v1", "max_history_items": 19}
    # --fit-users 0 left the weight unfitted (the retriever's order, so the LLM would not rank): set one by hand
    from llmrec.scenario import FusionSpec, save_scenario

    save_scenario(scenario.model_copy(update={"fusion": FusionSpec(weight=1.0)}), tiny_home)
    engine.release_adapters()  # the session engine has one LoRA slot
    try:
        pipeline = build_pipeline(Settings(home=tiny_home, model=model_dir), "tiny", engine=engine, progress=False)
        assert isinstance(pipeline.ranker, LikelihoodRanker) and pipeline.ranker.adapter == scenario.adapter
        assert pipeline.ranker.prompts.config.max_history_items == 19
        user = pipeline.dataset.users()[0]
        response = pipeline.recommend(RecommendRequest(user_id=user, k=20))
        assert not response.degraded and len(response.recommendations) == 20
        assert all(math.isfinite(r.llm_logprob) for r in response.recommendations)
        # the adapter's likelihoods are its own: the same request scored by the base model differs
        history = pipeline.items(pipeline.dataset.history(user).item_ids)
        candidates = pipeline.retrieve(pipeline.dataset.history(user), [])
        base = LikelihoodRanker(engine, pipeline.dataset.items, SequencePromptBuilder(pipeline.ranker.prompts.config))
        [tuned_scores] = pipeline.ranker.score_many([(history, candidates)])
        [base_scores] = base.score_many([(history, candidates)])
        assert max(abs(a - b) for a, b in zip(tuned_scores.logprobs, base_scores.logprobs)) > 0.05
    finally:
        engine.release_adapters()


@pytest.mark.llm
def test_training_then_fits_the_fusion_weight_and_records_it(tiny_home, model_dir, engine):
    from llmrec.adapters.sequence import train_scenario_sequence_adapter
    from llmrec.assets import folder_hash
    from llmrec.scenario import load_scenario
    from llmrec.settings import Settings

    engine.release_adapters()
    try:
        out, manifest = train_scenario_sequence_adapter(Settings(home=tiny_home, model=model_dir), "tiny",
                                                        SequenceTrainConfig(steps=1, batch_size=1), fit_users=4, engine=engine)
    finally:
        engine.release_adapters()
    assert manifest["complete"] and manifest["fusion"]["users"] == 4
    assert set(manifest["fusion"]["grid"]) == {"0.0", "0.25", "0.5", "1.0", "2.0", "4.0", "8.0", "inf"}
    assert manifest["valid_ndcg10_alone"] == manifest["fusion"]["grid"]["0.0"]
    assert json.loads((out / "manifest.json").read_text())["fusion"] == manifest["fusion"]
    fit = load_scenario("tiny", tiny_home).fusion.fitted_on
    assert fit.users == 4 and fit.adapter == "tiny" and fit.adapter_sha256 == folder_hash(out)
