"""Shared fixtures. The LLM fixtures use the real vLLM CPU engine and the real SmolLM2 folder.

The cache is LLMREC_HOME (as `make test` bootstraps it); nothing is downloaded from a hub.
"""

from __future__ import annotations

import os
import random

import pytest

os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)


@pytest.fixture(scope="session")
def settings():
    from llmrec.settings import Settings

    return Settings()


@pytest.fixture(scope="session")
def home(settings):
    return settings.resolved_home()


@pytest.fixture(scope="session")
def model_dir(home):
    from llmrec.engines.models import ensure_smollm2

    return str(ensure_smollm2(home))


@pytest.fixture(scope="session")
def engine(settings, model_dir):
    """One LoRA-enabled in-process engine for the whole session (loading costs ~20 s)."""
    from llmrec.engines.models import pick_dtype
    from llmrec.engines.vllm import EngineConfig, InProcessVLLM

    engine = InProcessVLLM(EngineConfig(model=model_dir, dtype=pick_dtype(), max_adapters=1, timeout_s=300))
    engine.llm  # noqa: B018 - load now, so test timings are honest
    return engine


LLM_SCENARIO = "movies-llm"
"""ML-100K with a hand-set fusion weight, so the LLM really ranks: the built-in `movies` ships the retriever's order
(its weight never passed the gate), and a pipeline on it never asks the LLM to rank."""


@pytest.fixture(scope="session")
def llm_settings(tmp_path_factory, settings):
    """Settings on a home that shares the real cache (data, models, index) and adds the `movies-llm` scenario."""
    import json

    real = settings.resolved_home()
    home = tmp_path_factory.mktemp("llm-home")
    for name in ("datasets", "models", "wheels", "chroma", "item-vectors"):
        (real / name).mkdir(parents=True, exist_ok=True)
        (home / name).symlink_to(real / name)
    folder = home / "scenarios" / LLM_SCENARIO
    folder.mkdir(parents=True)
    (folder / "scenario.json").write_text(json.dumps({"name": LLM_SCENARIO, "dataset": "ml-100k", "domain": "movie",
                                                      "fusion": {"weight": 0.25}}))
    return settings.model_copy(update={"home": home})


@pytest.fixture(scope="session")
def pipeline(llm_settings, engine):
    """The real pipeline with the LLM ranking (w = .25, set by hand), on the session's engine."""
    from llmrec.pipeline import build_pipeline

    return build_pipeline(llm_settings, LLM_SCENARIO, engine=engine, progress=False)


@pytest.fixture(scope="session")
def tiny_adapter(tmp_path_factory, settings, model_dir):
    """A real PEFT LoRA adapter, trained for a few steps on real ML-100K ranking prompts."""
    from llmrec.adapters.listwise import ranking_examples
    from llmrec.adapters.loop import LoraTrainConfig, train_lora
    from llmrec.scenario import AdapterSpec

    examples, model = ranking_examples(settings, "movies", 8)
    out = tmp_path_factory.mktemp("adapter") / "movies-tiny"
    config = LoraTrainConfig(steps=4, batch_size=2, learning_rate=3e-3, rank=8)
    manifest = train_lora(model, examples, out, config, progress=False)
    return AdapterSpec(name="movies-tiny", path=str(out)), manifest


@pytest.fixture
def eval_home(tmp_path, settings):
    """A fresh home sharing the real cache's data, models and index (read-mostly), with its own scenarios and eval cache."""
    real = settings.resolved_home()
    home = tmp_path / "home"
    home.mkdir()
    for name in ("datasets", "models", "wheels", "chroma"):
        (home / name).symlink_to(real / name)
    return home


@pytest.fixture(scope="session")
def second_adapter(tmp_path_factory, settings, model_dir):
    """Another real PEFT LoRA adapter on the same ML-100K ranking prompts as `tiny_adapter`, with another seed and a
    larger learning rate, so its weights (and scores) differ from that one's."""
    from llmrec.adapters.listwise import ranking_examples
    from llmrec.adapters.loop import LoraTrainConfig, train_lora
    from llmrec.scenario import AdapterSpec

    examples, model = ranking_examples(settings, "movies", 8)
    out = tmp_path_factory.mktemp("adapter-b") / "movies-tiny-b"
    config = LoraTrainConfig(steps=4, batch_size=2, learning_rate=1e-2, rank=8, seed=7)
    manifest = train_lora(model, examples, out, config, progress=False)
    return AdapterSpec(name="movies-tiny-b", path=str(out)), manifest


@pytest.fixture(scope="module")
def scripted_pipeline(settings):
    """The real ML-100K pipeline (real Chroma, real retrievers) with a scripted engine, one per test module."""
    from llmrec.pipeline import build_pipeline
    from llmrec.testing import ScriptedEngine

    return build_pipeline(settings, "movies", engine=ScriptedEngine(), progress=False)
