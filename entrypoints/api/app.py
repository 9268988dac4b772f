"""The llmrec service: `create_app(settings, service)` builds the FastAPI app; `llmrec serve` runs it on uvicorn.

Laid out like vLLM's OpenAI server: thin routes (`routers`), wire models (`protocol`), the logic (`serving`, `chat`),
and the state they share on `app.state`, built once in the lifespan: for each served scenario the one pipeline
(`build_pipeline`, its engine behind the batching queue) and the chat agent over it (`build_agent`, so the chat
and the API share the engine and the feedback store). A test may hand in its own pipeline and agent.

The service starts whatever its dependencies do: an LLM server or a Chroma server that does not answer makes
`/readyz` answer 503 naming it, and answers fall back (the retriever's order, co-occurrence and popularity) until
it comes back; nothing needs a restart.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llmrec.entrypoints.api import errors
from llmrec.entrypoints.api.auth import Auth
from llmrec.entrypoints.api.chat import ServingChat, SessionOwners
from llmrec.entrypoints.api.errors import ApiError, error_body, respond
from llmrec.entrypoints.api.metrics import Metrics, RequestMetrics
from llmrec.entrypoints.api.routers import ops, v1
from llmrec.entrypoints.api.serving import (
    Scenarios,
    Served,
    ServingFeedback,
    ServingProfile,
    ServingReadiness,
    ServingRecommend,
    Users,
)
from llmrec.entrypoints.api.settings import ServiceSettings
from llmrec.errors import LLMUnavailable
from llmrec.settings import Settings

log = logging.getLogger("llmrec.api")
STATIC = Path(__file__).resolve().parent / "static"


class BodyLimit:
    """413 for a body over `limit` bytes: at once from its Content-Length, or while it streams in (chunked)."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or ()).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            message = f"the body is over {self.limit} bytes" if length.isdigit() else "bad Content-Length"
            await respond(error_body(413 if length.isdigit() else 400, "PayloadTooLarge" if length.isdigit() else "BadRequest",
                                     message))(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise ApiError(413, f"the body is over {self.limit} bytes", kind="PayloadTooLarge")
            return message

        await self.app(scope, counted, send)


def build_scenario(settings: Settings, service: ServiceSettings, name: str, engine: Any = None) -> Served:
    """One served scenario: its pipeline (on `engine`, else a new engine behind the batching queue) and the chat agent
    over it. A Chroma server that does not answer is not fatal here (`chroma_optional`), nor is an LLM server."""
    from llmrec.agents.conversation import ChatConfig, build_agent
    from llmrec.pipeline import build_pipeline

    pipeline = build_pipeline(settings, name, engine=engine, progress=False, batching=service.batch_config(), chroma_optional=True)
    return Served(pipeline, build_agent(settings, pipeline=pipeline, config=ChatConfig(), model=_chat_model(settings, pipeline)))


def _build(settings: Settings, service: ServiceSettings, pipeline: Any, agent: Any) -> dict[str, Served]:
    """Every served scenario, sharing one engine: the given pipeline's and agent's, the others built here."""
    from llmrec.agents.conversation import ChatConfig, build_agent

    served: dict[str, Served] = {}
    engine = pipeline.engine if pipeline is not None else None
    for name in service.served_scenarios():
        if pipeline is not None and name == pipeline.scenario.name:
            own = agent if agent is not None and agent.stages.pipeline is pipeline else build_agent(
                settings, pipeline=pipeline, config=ChatConfig(), model=_chat_model(settings, pipeline))
            served[name] = Served(pipeline, own)
        else:
            served[name] = build_scenario(settings, service, name, engine)
        engine = engine or served[name].pipeline.engine
    return served


def _chat_model(settings: Settings, pipeline: Any) -> Any:
    """The agent's LLM for reading messages (off by default): in process, the engine behind the batching queue, whose
    structured generation needs the engine itself."""
    from llmrec.agents.conversation import chat_model

    inner = getattr(pipeline.engine, "engine", None)
    if settings.llm_url or inner is None:
        return chat_model(settings, pipeline)
    from llmrec.agents.chat_models import EngineChatModel

    return EngineChatModel(engine=inner)


def _load_engine(engine: Any) -> str | None:
    """Load the in-process engine now, so the first request does not wait for it; the error, if it fails."""
    try:
        engine.count_tokens("")
    except LLMUnavailable as exc:
        log.error("the LLM could not be loaded (%s); answers keep the retriever's order", exc)
        return str(exc)
    return None


def create_app(settings: Settings, service: ServiceSettings | None = None, *, pipeline: Any = None, agent: Any = None) -> FastAPI:
    """The service. `pipeline` and `agent` (tests) replace what the lifespan would build for their scenario; the
    default scenario is then the pipeline's."""
    service = service or ServiceSettings()
    if pipeline is not None and service.scenario != pipeline.scenario.name:
        service = service.model_copy(update={"scenario": pipeline.scenario.name})
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        served = await run_in_threadpool(_build, settings, service, pipeline, agent)
        default = served[service.scenario]
        engine = default.pipeline.engine
        batching = hasattr(engine, "queue_depth")
        observer = getattr(engine, "observer", None)
        if batching:  # this app's metrics see the batches (until it stops: a test may share one engine between apps)
            engine.observer = metrics.observe_batch
            metrics.watch_queue(engine.queue_depth)
        readiness = ServingReadiness(settings, engine, service.readiness_timeout_s)
        readiness.load_error = await run_in_threadpool(_load_engine, engine)
        folder = Path(default.agent.checkpointer_path).parent
        owners = SessionOwners(folder / "api-sessions.sqlite", default.agent.config.store_timeout_s)
        scenarios, users = Scenarios(served, service.scenario, settings.resolved_home()), Users(owners)
        state = app.state
        state.scenarios, state.readiness, state.metrics, state.auth = scenarios, readiness, metrics, Auth(service)
        state.recommend, state.feedback = ServingRecommend(scenarios, users), ServingFeedback(scenarios, users)
        state.profile, state.chat = ServingProfile(scenarios, users), ServingChat(default.agent, owners)
        if not service.api_keys:
            log.warning("no API keys (LLMREC_API_KEYS): feedback and the chat answer 401 until some are set")
        try:
            yield
        finally:
            owners.close()
            if batching:
                engine.observer = observer
            if pipeline is None and hasattr(engine, "close"):
                engine.close()

    app = FastAPI(title="llmrec", version="1", lifespan=lifespan, description=(
        "An open LLM as the recommender: recommendations with checkable explanations, a chat, durable feedback. "
        "Writes and the chat need `Authorization: Bearer <key>`; errors are `{\"error\": {status, type, message}}`."))
    errors.install(app)
    app.include_router(v1)
    app.include_router(ops)
    if STATIC.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False, response_model=None)
    async def index() -> FileResponse | JSONResponse:
        page = STATIC / "index.html"
        if not page.is_file():
            return respond(error_body(404, "NotFound", "the chat page is not installed (entrypoints/api/static/index.html)"))
        return FileResponse(page)

    # The last added is the outermost: errors no handler took (a 500), then the request metrics (which count that 500
    # and every other answer), then the body cap.
    app.add_middleware(BodyLimit, limit=service.max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=metrics)
    app.add_middleware(errors.Guard)
    return app
