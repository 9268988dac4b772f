"""The chat tests' agent: rules-only understanding over the scripted pipeline, a fresh store per test."""

import pytest


@pytest.fixture
def agent(settings, scripted_pipeline, tmp_path):
    from llmrec.agents.conversation import ChatConfig, build_agent

    return build_agent(settings, pipeline=scripted_pipeline, config=ChatConfig(store=tmp_path, llm_understanding=False))
