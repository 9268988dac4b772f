"""Fixtures of the agents tests: a second real adapter, so a server and an engine can be shown to hold two."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def second_adapter(tmp_path_factory, settings, model_dir):
    """Another real PEFT LoRA adapter on the same ML-100K ranking prompts as `tiny_adapter`, with another seed and a
    larger learning rate, so its weights (and scores) differ from that one's."""
    from llmrec.adapters.fit import ranking_examples
    from llmrec.adapters.scenario import AdapterSpec
    from llmrec.adapters.train import LoraTrainConfig, train_lora

    examples, model = ranking_examples(settings, "movies", 8)
    out = tmp_path_factory.mktemp("adapter-b") / "movies-tiny-b"
    config = LoraTrainConfig(steps=4, batch_size=2, learning_rate=1e-2, rank=8, seed=7)
    manifest = train_lora(model, examples, out, config, progress=False)
    return AdapterSpec(name="movies-tiny-b", path=str(out)), manifest
