"""The service's test app: `create_app` over the session's real engine (behind the batching queue), the real ML-100K
pipeline with the LLM ranking (`movies-llm`, w = .25) and the real chat agent, with a fresh store per module."""

import pytest

KEYS = ("key-alpha-1c7f", "key-beta-93d2")
"""The test keys; every test module's app accepts both."""


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def served(llm_settings, engine, tmp_path_factory):
    """(pipeline, agent) on the session's engine behind a batching queue, the agent's SQLite files in a fresh folder."""
    from llmrec.agents.conversation import ChatConfig, build_agent
    from llmrec.engines.batching import BatchConfig, BatchingEngine
    from llmrec.pipeline import build_pipeline
    from tests.conftest import LLM_SCENARIO

    batched = BatchingEngine(engine, BatchConfig(window_ms=10))
    pipeline = build_pipeline(llm_settings, LLM_SCENARIO, engine=batched, progress=False)
    agent = build_agent(llm_settings, pipeline=pipeline, config=ChatConfig(store=tmp_path_factory.mktemp("api-store"), llm_understanding=False))
    yield pipeline, agent
    batched.close()


def make_client(llm_settings, served, **service):
    """A TestClient over a new app on the shared pipeline and agent (enter it with `with`)."""
    from fastapi.testclient import TestClient

    from llmrec.entrypoints.api.app import create_app
    from llmrec.entrypoints.api.settings import ServiceSettings

    pipeline, agent = served
    options = {"api_keys": ",".join(KEYS), "rate_limit_per_minute": 0, **service}
    return TestClient(create_app(llm_settings, ServiceSettings(**options), pipeline=pipeline, agent=agent),
                      raise_server_exceptions=False)


@pytest.fixture(scope="module")
def client(llm_settings, served):
    with make_client(llm_settings, served, max_body_bytes=50_000) as c:
        yield c
