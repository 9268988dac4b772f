"""A LoRA adapter merged into the in-process engine's weights (`engines.merged`) scores as the engine's own LoRA path
does, and the base weights come back exactly."""

from __future__ import annotations

import pytest

from llmrec.engines.merged import MergedWeights
from llmrec.errors import AdapterMismatch
from llmrec.prompts.builders import ANSWERS
from llmrec.scenario import AdapterSpec
from llmrec.testing import ScriptedEngine

PROMPTS = [("You rate books.", f"The user liked {a} and disliked {b}. Will they like {c}? Answer Yes or No.")
           for a, b, c in (("Dune", "Emma", "Hyperion"), ("Beloved", "It", "Sula"), ("Carrie", "Ulysses", "Misery"))]


def test_merged_adapter_scores_as_the_lora_path_and_the_base_comes_back(engine, tiny_adapter) -> None:
    adapter, _ = tiny_adapter
    prompts = [engine.chat_prompt(system, user, "Answer:") for system, user in PROMPTS]
    ids = engine.label_token_ids(ANSWERS)
    base = engine.score_next_token(prompts, ids)
    lora = engine.score_next_token(prompts, ids, adapter)  # vLLM's LoRA kernels: slow on a CPU, but the reference
    engine.release_adapters()
    weights = MergedWeights(engine)
    try:
        weights.load(adapter)
        merged = engine.score_next_token(prompts, ids)
    finally:
        weights.base()
    tolerance = 1e-3 if engine.config.dtype == "float32" else 0.3  # bf16: the LoRA path adds its delta in another order
    assert [row[0] for row in merged] == pytest.approx([row[0] for row in lora], abs=tolerance)
    assert max(abs(m[0] - b[0]) for m, b in zip(merged, base)) > 1e-4  # the adapter did change the weights
    back = engine.score_next_token(prompts, ids)
    assert [row[0] for row in back] == pytest.approx([row[0] for row in base], abs=1e-6)  # base weights back


def test_a_merge_needs_the_in_process_engine_and_a_matching_adapter(engine, tmp_path) -> None:
    with pytest.raises(AdapterMismatch, match="in-process"):
        MergedWeights(ScriptedEngine())
    (tmp_path / "adapter_config.json").write_text('{"peft_type": "LORA", "base_model_name_or_path": "someone/else", "r": 8}')
    with pytest.raises(AdapterMismatch, match="was built for base model"):
        MergedWeights(engine).load(AdapterSpec(name="other", path=str(tmp_path)))
