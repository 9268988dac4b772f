"""The real in-process vLLM engine with SmolLM2 on CPU, and a LoRA adapter trained with PEFT."""

import json
import math

import pytest

from llmrec.adapters.scenario import AdapterSpec
from llmrec.errors import AdapterMismatch, LLMUnavailable

pytestmark = pytest.mark.llm
LABELS = list("ABCDEFGHIJKLMNOPQRST")


def rank_prompt(engine, n=20):
    lines = "\n".join(f"{label}. Movie number {i} (199{i % 10})" for i, label in enumerate(LABELS[:n]))
    return engine.chat_prompt("You are a movie recommender.", f"The user watched Toy Story.\nCandidates:\n{lines}\n"
                              "Which candidate will the user watch next? Answer with its letter only.", "Answer:")


def test_labels_are_single_tokens(engine):
    ids = engine.label_token_ids(LABELS)
    assert len(set(ids)) == 20
    assert [engine.tokenizer.decode([i]) for i in ids] == [" " + label for label in LABELS]


def test_scores_are_label_logprobs_renormalised_over_the_labels(engine, model_dir):
    """vLLM's numbers must equal a log-softmax over the label logits of a plain transformers forward pass."""
    import torch
    from transformers import AutoModelForCausalLM

    prompt = rank_prompt(engine)
    ids = engine.label_token_ids(LABELS)
    [scores] = engine.score_next_token([prompt], ids)
    assert sum(math.exp(s) for s in scores) == pytest.approx(1.0, abs=1e-3)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tokens = engine.tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(tokens).logits[0, -1, ids]
    expected = torch.log_softmax(logits, -1).tolist()
    assert scores == pytest.approx(expected, abs=0.05)


def test_one_batch_scores_many_prompts(engine):
    prompts = [rank_prompt(engine, n=5), rank_prompt(engine, n=5).replace("Toy Story", "Heat")]
    rows = engine.score_next_token(prompts, engine.label_token_ids(LABELS[:5]))
    assert len(rows) == 2 and all(len(r) == 5 for r in rows)
    assert rows[0] != rows[1]


def test_generate_returns_text(engine):
    [text] = engine.generate([engine.chat_prompt("Be brief.", "Name a colour.")], max_tokens=8)
    assert isinstance(text, str) and text.strip()


def test_adapter_changes_the_scores(engine, tiny_adapter):
    adapter, manifest = tiny_adapter
    config = json.loads((__import__("pathlib").Path(adapter.path) / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == manifest["base_model"]
    prompt = rank_prompt(engine)
    ids = engine.label_token_ids(LABELS)
    [base] = engine.score_next_token([prompt], ids)
    [tuned] = engine.score_next_token([prompt], ids, adapter)
    assert max(abs(a - b) for a, b in zip(base, tuned)) > 1e-3
    [again] = engine.score_next_token([prompt], ids)  # the base model is untouched afterwards
    assert again == pytest.approx(base, abs=1e-4)


def test_adapter_for_another_base_model_is_refused(engine, tiny_adapter, tmp_path):
    adapter, _ = tiny_adapter
    config = json.loads((__import__("pathlib").Path(adapter.path) / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "Qwen/Qwen2.5-0.5B-Instruct"
    (tmp_path / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(AdapterMismatch, match="Qwen2.5-0.5B-Instruct"):
        engine.score_next_token([rank_prompt(engine)], engine.label_token_ids(LABELS), AdapterSpec(name="other", path=str(tmp_path)))


def test_not_a_peft_folder_is_refused(engine, tmp_path):
    with pytest.raises(AdapterMismatch, match="adapter_config.json"):
        engine.score_next_token([rank_prompt(engine)], engine.label_token_ids(LABELS), AdapterSpec(name="none", path=str(tmp_path)))


def test_timeout_is_reported_as_llm_unavailable(engine):
    original = engine.config
    engine.config = original.model_copy(update={"timeout_s": 0.001})
    try:
        with pytest.raises(LLMUnavailable, match="longer than"):
            engine.score_next_token([rank_prompt(engine)] * 8, engine.label_token_ids(LABELS))
    finally:
        engine.config = original
