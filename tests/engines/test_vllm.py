"""The real in-process vLLM engine with SmolLM2 on CPU, a LoRA adapter trained with PEFT, and the adapter checks."""

import json
import math
import shutil
from pathlib import Path

import pytest

from llmrec.errors import AdapterMismatch, LLMUnavailable
from llmrec.manifest import base_model_sha256, check_adapter, display_name
from llmrec.scenario import AdapterSpec
from llmrec.testing import logprob_tolerance

llm = pytest.mark.llm
LABELS = list("ABCDEFGHIJKLMNOPQRST")


def rank_prompt(engine, n=20):
    lines = "\n".join(f"{label}. Movie number {i} (199{i % 10})" for i, label in enumerate(LABELS[:n]))
    return engine.chat_prompt("You are a movie recommender.", f"The user watched Toy Story.\nCandidates:\n{lines}\n"
                              "Which candidate will the user watch next? Answer with its letter only.", "Answer:")


@llm
def test_labels_are_single_tokens(engine):
    ids = engine.label_token_ids(LABELS)
    assert len(set(ids)) == 20
    assert [engine.tokenizer.decode([i]) for i in ids] == [" " + label for label in LABELS]




@llm
def test_scores_are_label_logprobs_renormalised_over_the_labels(engine, model_dir):
    """vLLM's numbers must equal a log-softmax over the label logits of a plain fp32 transformers forward pass.

    The engine runs in the dtype `auto` picks: on a CPU with avx512_bf16/amx_bf16 this is the test of the
    bf16 path, on other CPUs of the fp32 one; the tolerance follows the dtype (`llmrec.testing.LOGPROB_TOLERANCE`).
    """
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
    tolerance = logprob_tolerance(engine.config.dtype)
    assert scores == pytest.approx(expected, abs=tolerance)
    # Far above the tolerance, the order must agree exactly: labels the reference separates by more than
    # twice the tolerance keep their order in the engine.
    gap = 2 * tolerance
    for a in range(len(ids)):
        for b in range(len(ids)):
            if expected[a] > expected[b] + gap:
                assert scores[a] > scores[b], (LABELS[a], LABELS[b])


@llm
def test_one_batch_scores_many_prompts(engine):
    prompts = [rank_prompt(engine, n=5), rank_prompt(engine, n=5).replace("Toy Story", "Heat")]
    rows = engine.score_next_token(prompts, engine.label_token_ids(LABELS[:5]))
    assert len(rows) == 2 and all(len(r) == 5 for r in rows)
    assert rows[0] != rows[1]


@llm
def test_generate_returns_text(engine):
    [text] = engine.generate([engine.chat_prompt("Be brief.", "Name a colour.")], max_tokens=8)
    assert isinstance(text, str) and text.strip()


@llm
def test_adapter_changes_the_scores(engine, tiny_adapter):
    adapter, manifest = tiny_adapter
    config = json.loads((__import__("pathlib").Path(adapter.path) / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == manifest["base_model"]
    prompt = rank_prompt(engine)
    ids = engine.label_token_ids(LABELS)
    engine.score_next_token([prompt], ids)  # cache the prefix first: in bf16 a cache hit changes the numbers a little
    [base] = engine.score_next_token([prompt], ids)
    [tuned] = engine.score_next_token([prompt], ids, adapter)
    assert max(abs(a - b) for a, b in zip(base, tuned)) > 1e-3
    [again] = engine.score_next_token([prompt], ids)  # the base model is untouched afterwards
    assert again == pytest.approx(base, abs=logprob_tolerance(engine.config.dtype, "batch"))


@llm
def test_adapter_for_another_base_model_is_refused(engine, tiny_adapter, tmp_path):
    adapter, _ = tiny_adapter
    config = json.loads((__import__("pathlib").Path(adapter.path) / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "Qwen/Qwen2.5-0.5B-Instruct"
    (tmp_path / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(AdapterMismatch, match="Qwen2.5-0.5B-Instruct"):
        engine.score_next_token([rank_prompt(engine)], engine.label_token_ids(LABELS), AdapterSpec(name="other", path=str(tmp_path)))


@llm
def test_not_a_peft_folder_is_refused(engine, tmp_path):
    with pytest.raises(AdapterMismatch, match="adapter_config.json"):
        engine.score_next_token([rank_prompt(engine)], engine.label_token_ids(LABELS), AdapterSpec(name="none", path=str(tmp_path)))


@llm
def test_timeout_is_reported_as_llm_unavailable(engine):
    original = engine.config
    engine.config = original.model_copy(update={"timeout_s": 0.001})
    try:
        with pytest.raises(LLMUnavailable, match="longer than"):
            engine.score_next_token([rank_prompt(engine)] * 8, engine.label_token_ids(LABELS))
    finally:
        engine.config = original
        assert engine.wait_idle(300)  # the abandoned call ends on its own; later tests get the engine back


@llm
def test_the_engine_leaves_no_process_wide_settings_behind(engine):
    """The KV cache size is this engine's own setting, not an environment variable that the first engine's value
    fixes for every later one; dynamo stays on for the rest of the process; only vLLM's sampler helper is eager."""
    import os

    import torch._dynamo
    from vllm.v1.sample import sampler

    [scores] = engine.score_next_token([rank_prompt(engine, n=5)], engine.label_token_ids(LABELS[:5]))
    assert sum(math.exp(s) for s in scores) == pytest.approx(1.0, abs=1e-3)
    assert engine.llm.llm_engine.vllm_config.cache_config.kv_cache_memory_bytes == engine.config.kv_cache_gb * 2**30
    assert "VLLM_CPU_KVCACHE_SPACE" not in os.environ and "VLLM_ENABLE_V1_MULTIPROCESSING" not in os.environ
    assert torch._dynamo.config.disable is False
    assert not hasattr(sampler.batched_count_greater_than, "_torchdynamo_orig_callable")  # the plain function


# --- adapter checks: what check_adapter accepts (folders with only the files it reads) ----------------------

def peft_folder(path: Path, base: str, r=8, manifest: dict | None = None) -> AdapterSpec:
    path.mkdir(parents=True, exist_ok=True)
    (path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": r, "base_model_name_or_path": base}))
    if manifest is not None:
        (path / "manifest.json").write_text(json.dumps(manifest))
    return AdapterSpec(name="movies", path=str(path))


def test_the_base_model_is_compared_in_full_not_by_basename(model_dir, tmp_path):
    check_adapter(peft_folder(tmp_path / "same", model_dir), model_dir)
    check_adapter(peft_folder(tmp_path / "spelled", f"{model_dir}/../{Path(model_dir).name}/"), model_dir)  # same folder
    for other in ("someone-else/SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct",
                  str(tmp_path / "elsewhere" / "SmolLM2-135M-Instruct")):
        with pytest.raises(AdapterMismatch, match="was built for base model") as caught:
            check_adapter(peft_folder(tmp_path / "other", other), model_dir)
        assert caught.value.exit_code == 6
    check_adapter(peft_folder(tmp_path / "hub", "org/Model-1B"), "org/Model-1B")  # hub ids: exactly as written


def test_a_moved_home_is_accepted_by_the_base_weights_fingerprint(model_dir, tmp_path):
    """An adapter llmrec trained under an old home records the base folder's weights; the same weights pass."""
    old = "/old/home/models/SmolLM2-135M-Instruct"
    check_adapter(peft_folder(tmp_path / "moved", old, manifest={"base_model_sha256": base_model_sha256(model_dir)}), model_dir)
    with pytest.raises(AdapterMismatch, match="weights differ"):
        check_adapter(peft_folder(tmp_path / "wrong", old, manifest={"base_model_sha256": "0" * 64}), model_dir)
    with pytest.raises(AdapterMismatch, match="was built for base model"):  # trained elsewhere: no fingerprint, no pass
        check_adapter(peft_folder(tmp_path / "foreign", old), model_dir)


def test_rank_above_max_lora_rank_is_refused(model_dir, tmp_path):
    check_adapter(peft_folder(tmp_path / "r16", model_dir, r=16), model_dir, max_rank=16)
    with pytest.raises(AdapterMismatch, match="LoRA rank 64, above the engine's max_lora_rank 16"):
        check_adapter(peft_folder(tmp_path / "r64", model_dir, r=64), model_dir, max_rank=16)
    config = json.loads((tmp_path / "r16" / "adapter_config.json").read_text())
    (tmp_path / "r16" / "adapter_config.json").write_text(json.dumps({**config, "rank_pattern": {"q_proj": 32}}))
    with pytest.raises(AdapterMismatch, match="LoRA rank 32"):
        check_adapter(AdapterSpec(name="movies", path=str(tmp_path / "r16")), model_dir, max_rank=16)


def test_a_hub_id_keeps_its_owner_in_the_models_name(model_dir):
    assert display_name(model_dir) == "SmolLM2-135M-Instruct"
    assert display_name("someone-else/SmolLM2-135M-Instruct") == "someone-else/SmolLM2-135M-Instruct"


# --- adapter checks in the real engine ----------------------------------------------------------------------

def variant(adapter: AdapterSpec, folder: Path, config=None, scale_lora_b=None) -> AdapterSpec:
    """A copy of `adapter` under the same name in another folder, with its config or its lora_B tensors changed."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(adapter.path, folder)
    if config:
        path = folder / "adapter_config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **config}))
    if scale_lora_b is not None:
        weights = load_file(folder / "adapter_model.safetensors")
        save_file({k: v * scale_lora_b if "lora_B" in k else v for k, v in weights.items()}, folder / "adapter_model.safetensors")
    return AdapterSpec(name=adapter.name, path=str(folder))


@llm
def test_same_name_in_another_folder_is_checked_and_served_its_own_weights(engine, tiny_adapter, tmp_path):
    adapter, _ = tiny_adapter
    prompt, ids = rank_prompt(engine), engine.label_token_ids(LABELS)
    tolerance = logprob_tolerance(engine.config.dtype, "batch")

    def warm(which=None):
        """The second scoring: in bf16 a prefix-cache hit changes the numbers (by up to .16 here), and the prefix cache
        is per adapter, so each value is taken with its own prefix cached, like for like."""
        engine.score_next_token([prompt], ids, which)
        return engine.score_next_token([prompt], ids, which)[0]

    engine.release_adapters()
    try:
        base = warm()
        tuned = warm(adapter)
        zeroed = variant(adapter, tmp_path / "zeroed", scale_lora_b=0.0)  # LoRA delta B·A = 0: must score as the base
        with pytest.raises(AdapterMismatch, match="needs a LoRA slot") as caught:  # one slot (max_adapters=1), taken
            engine.score_next_token([prompt], ids, zeroed)
        assert caught.value.exit_code == 6
        engine.release_adapters()
        own = warm(zeroed)
        assert own == pytest.approx(base, abs=tolerance) and max(abs(a - b) for a, b in zip(own, tuned)) > 1e-3
        engine.release_adapters()
        foreign = variant(adapter, tmp_path / "foreign", config={"base_model_name_or_path": "someone-else/SmolLM2-135M-Instruct"})
        with pytest.raises(AdapterMismatch, match="someone-else/SmolLM2-135M-Instruct"):
            engine.score_next_token([prompt], ids, foreign)
        wide = variant(adapter, tmp_path / "wide", config={"r": 64})
        with pytest.raises(AdapterMismatch, match="LoRA rank 64, above the engine's max_lora_rank 16"):
            engine.score_next_token([prompt], ids, wide)
        again = warm(adapter)  # the refused ones took no slot
        assert again == pytest.approx(tuned, abs=tolerance)
    finally:
        engine.release_adapters()
