"""Prometheus metrics of one app, in a registry of its own (two apps in one process never share counters).

- `llmrec_http_requests_total{route,method,status}` and `llmrec_http_request_seconds{route}`: every request, by its
  route's template (`/v1/users/{user_id}/profile`), or `unmatched`, so no request can mint a label of its own;
- `llmrec_degraded_answers_total{route,kind}`: answers that fell back (`llm`, `chroma`, `chroma-search`);
- `llmrec_engine_queue_depth`: LLM calls waiting in the batching queue now;
- `llmrec_engine_batch_calls{kind}` and `llmrec_engine_batch_prompts{kind}`: per engine call, how many callers'
  calls were merged into it and how many prompts it carried;
- `llmrec_feedback_events_total{event}`: committed feedback events.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
SIZE_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("llmrec_http_requests", "Requests answered, by route, method and status.",
                                ["route", "method", "status"], registry=r)
        self.latency = Histogram("llmrec_http_request_seconds", "Seconds from request to the end of the answer, by route.",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.degraded = Counter("llmrec_degraded_answers", "Answers that fell back, by route and kind (llm, chroma, chroma-search).",
                                ["route", "kind"], registry=r)
        self.queue_depth = Gauge("llmrec_engine_queue_depth", "LLM calls waiting in the batching queue.", registry=r)
        self.batch_calls = Histogram("llmrec_engine_batch_calls", "Callers' calls merged into one engine call.", ["kind"],
                                     buckets=SIZE_BUCKETS, registry=r)
        self.batch_prompts = Histogram("llmrec_engine_batch_prompts", "Prompts in one engine call.", ["kind"],
                                       buckets=SIZE_BUCKETS, registry=r)
        self.feedback = Counter("llmrec_feedback_events", "Feedback events committed, by event.", ["event"], registry=r)

    def watch_queue(self, depth: Callable[[], float]) -> None:
        self.queue_depth.set_function(depth)

    def observe_batch(self, kind: str, calls: int, prompts: int) -> None:
        self.batch_calls.labels(kind).observe(calls)
        self.batch_prompts.labels(kind).observe(prompts)

    def count_degraded(self, route: str, kinds: tuple[str, ...]) -> None:
        for kind in kinds:
            self.degraded.labels(route, kind).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestMetrics:
    """ASGI middleware: counts and times every HTTP request by its route's template once the answer has gone out."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope.get("method", "") if scope.get("method") in {"GET", "POST", "HEAD", "OPTIONS"} else "other"
            self.metrics.requests.labels(route, method, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)
