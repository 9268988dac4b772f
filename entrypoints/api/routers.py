"""The routes, thin: each reads its serving object from `app.state`, runs it in the thread pool, and answers.

Every route documents its error statuses with the one error model (`ErrorResponse`), so the OpenAPI page and any
client generated from it know them.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from llmrec.agents.feedback import FeedbackEvent, Profile
from llmrec.entrypoints.api.auth import Caller, reader, writer
from llmrec.entrypoints.api.protocol import (
    ChatBody,
    ChatResponse,
    ErrorResponse,
    FeedbackBody,
    Health,
    Readiness,
    RecommendBody,
    ScenarioList,
)
from llmrec.pipeline.recommend import degradation
from llmrec.scenario import NAME_PATTERN
from llmrec.schemas import RecommendResponse


def _errors(*codes: int) -> dict:
    text = {400: "Bad request", 401: "Missing or invalid API key", 404: "Unknown user, item, scenario or session",
            413: "Body or a field over its cap", 422: "Invalid body or parameters", 429: "Rate limit reached (see Retry-After)",
            503: "A dependency is down or a store is locked"}
    return {code: {"model": ErrorResponse, "description": text[code]} for code in codes}


READ = _errors(400, 401, 404, 413, 422, 429, 503)
WRITE = READ
v1 = APIRouter(prefix="/v1")
ops = APIRouter()


@v1.post("/recommend", response_model=RecommendResponse, responses=READ, tags=["recommend"])
async def recommend(body: RecommendBody, request: Request, caller: Annotated[Caller, Depends(reader)]) -> RecommendResponse:
    """Ranked, explained items for a user (their feedback counts) or an ad-hoc history: the CLI's `--json` document."""
    state = request.app.state
    response, degraded = await run_in_threadpool(state.recommend, body, caller.key_id)
    state.metrics.count_degraded("/v1/recommend", degraded)
    return response


@v1.post("/feedback", response_model=FeedbackEvent, status_code=201, responses=WRITE, tags=["feedback"])
async def feedback(body: FeedbackBody, request: Request, caller: Annotated[Caller, Depends(writer)]) -> FeedbackEvent:
    """Store one like, watch or dislike; answered (201, with the row's id) only once it is committed."""
    state = request.app.state
    event = await run_in_threadpool(state.feedback, body, caller.key_id)
    state.metrics.feedback.labels(event.event).inc()
    return event


@v1.post("/chat", response_model=ChatResponse, responses=WRITE, tags=["chat"])
async def chat(body: ChatBody, request: Request, caller: Annotated[Caller, Depends(writer)]) -> ChatResponse:
    """One chat turn: the reply, the items shown, and whether the answer fell back."""
    state = request.app.state
    response = await run_in_threadpool(state.chat, body, caller.key_id)
    _count_chat(state, response)
    return response


@v1.post("/chat/stream", responses={200: {"content": {"text/event-stream": {}},
                                          "description": "Events: token (data {text}), recommendations, done (the ChatResponse); "
                                                         "or one error event (the error model)."}, **WRITE}, tags=["chat"])
async def chat_stream(body: ChatBody, request: Request, caller: Annotated[Caller, Depends(writer)]) -> EventSourceResponse:
    """The same turn as server-sent events (checked first: a bad request gets its status, not a stream)."""
    state = request.app.state
    turn = await run_in_threadpool(state.chat.prepare, body, caller.key_id)
    return EventSourceResponse(state.chat.stream(turn, observe=lambda r: _count_chat(state, r)), ping=15)


def _count_chat(state, response: ChatResponse) -> None:
    state.metrics.count_degraded("/v1/chat", degradation(response.notes))


@v1.get("/users/{user_id}/profile", response_model=Profile, responses=READ, tags=["users"])
async def profile(user_id: str, request: Request, caller: Annotated[Caller, Depends(reader)],
                  scenario: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None) -> Profile:
    """A user's top genres, recent items and dislikes, from the dataset and their feedback."""
    return await run_in_threadpool(request.app.state.profile, user_id, scenario, caller.key_id)


@v1.get("/scenarios", response_model=ScenarioList, responses=_errors(401, 429), tags=["scenarios"])
async def scenarios(request: Request, caller: Annotated[Caller, Depends(reader)]) -> ScenarioList:
    """Every scenario on disk (built-in and the home's), and which this service answers for."""
    return await run_in_threadpool(request.app.state.scenarios.listing)


@ops.get("/healthz", response_model=Health, tags=["ops"])
async def healthz() -> Health:
    """The process answers."""
    return Health()


@ops.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness, "description": "Not ready: the checks name what"}},
         tags=["ops"])
async def readyz(request: Request) -> JSONResponse:
    """Whether the LLM and Chroma answer now (503 naming each that does not; answers still come, degraded)."""
    checks = await run_in_threadpool(request.app.state.readiness.checks)
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(Readiness(ready=ready, checks=checks).model_dump(), status_code=200 if ready else 503)


@ops.get("/metrics", response_class=PlainTextResponse, tags=["ops"])
async def metrics(request: Request) -> Response:
    """Prometheus text format."""
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
