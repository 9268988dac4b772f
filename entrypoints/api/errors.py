"""One error model for every non-2xx answer, and the one table from llmrec's typed errors to HTTP statuses.

`{"error": {"status": 404, "type": "UnknownUser", "message": "one line"}}`. FastAPI's own answers (422 validation,
404 and 405 routing) are rewritten into it; an exception nobody expected is a 500 in the same shape and one log line,
never a traceback on the wire.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llmrec import errors
from llmrec.entrypoints.api.protocol import ErrorDetail, ErrorResponse

log = logging.getLogger("llmrec.api")

STATUS: dict[type[errors.LLMRecError], int] = {
    errors.UnknownUser: 404,
    errors.UnknownItem: 404,
    errors.UnknownScenario: 404,
    errors.EmptyHistory: 400,
    errors.InputTooLarge: 413,
    errors.LLMUnavailable: 503,
    errors.ChromaUnavailable: 503,
    errors.StoreError: 503,
    errors.AdapterMismatch: 503,
    errors.DatasetError: 503,
    errors.AssetError: 503,
}
"""llmrec error → status; any other LLMRecError is a 400. The 503s are the service's state, not the request's: a
dependency down, a store locked past its timeout, data or an adapter the service was started with."""

HTTP_TYPES = {400: "BadRequest", 401: "Unauthorized", 404: "NotFound", 405: "MethodNotAllowed", 413: "PayloadTooLarge",
              422: "ValidationError", 429: "RateLimited", 500: "InternalError", 503: "Unavailable"}


class ApiError(StarletteHTTPException):
    """An HTTP error the service raises itself (auth, rate limit, body size, sessions), with its error type."""

    def __init__(self, status: int, message: str, kind: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(status_code=status, detail=message, headers=headers)
        self.kind = kind or HTTP_TYPES.get(status, "Error")


def one_line(text: object, limit: int = 500) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def status_of(exc: errors.LLMRecError) -> int:
    return next((code for kind, code in STATUS.items() if isinstance(exc, kind)), 400)


def error_body(status: int, kind: str, message: object) -> ErrorResponse:
    return ErrorResponse(error=ErrorDetail(status=status, type=kind, message=one_line(message)))


def describe(exc: BaseException) -> ErrorResponse:
    """The error model for any exception (an unexpected one is logged here, with its traceback in the server's log)."""
    if isinstance(exc, ApiError):
        return error_body(exc.status_code, exc.kind, exc.detail)
    if isinstance(exc, errors.LLMRecError):
        return error_body(status_of(exc), type(exc).__name__, exc)
    if isinstance(exc, StarletteHTTPException):
        return error_body(exc.status_code, HTTP_TYPES.get(exc.status_code, "Error"), exc.detail)
    log.error("unexpected %s: %s", type(exc).__name__, one_line(exc), exc_info=exc)
    return error_body(500, "InternalError", "the service failed unexpectedly; the error is in its log")


def respond(body: ErrorResponse, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body.model_dump(), status_code=body.error.status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for e in exc.errors()[:5]:
        where = ".".join(str(p) for p in e.get("loc", ()))
        parts.append(f"{where}: {e.get('msg', 'invalid')}" if where else str(e.get("msg", "invalid")))
    more = len(exc.errors()) - 5
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def install(app: FastAPI) -> None:
    """Route every error through the one model."""

    @app.exception_handler(errors.LLMRecError)
    async def llmrec_error(request: Request, exc: errors.LLMRecError) -> JSONResponse:
        status = status_of(exc)
        if status == 503:
            log.warning("%s %s: %s: %s", request.method, request.url.path, type(exc).__name__, one_line(exc))
        return respond(describe(exc), headers={"Retry-After": "1"} if isinstance(exc, errors.StoreError) else None)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return respond(describe(exc), headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return respond(error_body(422, "ValidationError", _validation_message(exc)))


class Guard:
    """The outermost layer under Starlette's own: an exception that escaped every handler becomes a 500 in the error
    model (when no answer has started yet) and one log line."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:  # noqa: BLE001 - the last line of defence: one error model, one log line
            body = describe(exc)
            if body.error.status != 500:
                log.error("unhandled %s: %s", type(exc).__name__, one_line(exc))
            if not started:
                await respond(body)(scope, receive, send)
