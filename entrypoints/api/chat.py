"""The chat behind `/v1/chat` and `/v1/chat/stream`: the LangGraph agent (`Agent.say`), sessions bound to API keys.

A session id belongs to the API key that first uses it (`SessionOwners`, a SQLite file beside the chat's own, so the
binding survives a restart); another key gets 404, as for a session that does not exist. The first message of a
session may name a dataset user (the caller's claim); the agent keeps that user for the session, and a later message
naming another user is refused (400). The agent does not stream tokens: it answers a turn whole, and the stream
sends that reply in pieces, a word each, then the items, then the whole answer.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.concurrency import run_in_threadpool

from llmrec.agents.conversation import Agent
from llmrec.agents.feedback import sqlite_errors
from llmrec.entrypoints.api.errors import ApiError, describe
from llmrec.entrypoints.api.protocol import ChatBody, ChatResponse, RecommendationsEvent, TokenEvent
from llmrec.errors import UnknownUser
from llmrec.pipeline.recommend import degradation
from llmrec.schemas import ChatTurn

log = logging.getLogger("llmrec.api")
_SCHEMA = "CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, owner TEXT NOT NULL, created REAL NOT NULL)"


class SessionOwners:
    """Session id → the id of the API key that owns it. WAL with synchronous=FULL, like the chat's own stores: a
    claim is on disk before the turn runs, so a restart never hands a session to another key."""

    def __init__(self, path: Path, timeout_s: float = 5.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with sqlite_errors(self.path):
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=timeout_s)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(_SCHEMA)

    def owner(self, session: str) -> str | None:
        with self._lock, sqlite_errors(self.path):
            row = self._db.execute("SELECT owner FROM sessions WHERE id = ?", (session,)).fetchone()
        return row[0] if row else None

    def claim(self, session: str, key_id: str) -> bool:
        """Bind an unowned session to `key_id`; True when the session is (now) `key_id`'s."""
        with self._lock, sqlite_errors(self.path):
            self._db.execute("INSERT OR IGNORE INTO sessions (id, owner, created) VALUES (?, ?, ?)", (session, key_id, time.time()))
            row = self._db.execute("SELECT owner FROM sessions WHERE id = ?", (session,)).fetchone()
        return bool(row) and row[0] == key_id

    def close(self) -> None:
        with self._lock:
            self._db.close()


def words(text: str) -> list[str]:
    """`text` in pieces of one word with the whitespace before it; joined, they are `text` again."""
    return re.findall(r"\s*\S+|\s+$", text)


class ServingChat:
    def __init__(self, agent: Agent, owners: SessionOwners):
        self.agent = agent
        self.owners = owners

    def prepare(self, body: ChatBody, key_id: str) -> ChatTurn:
        """Check a turn before any work: the caps (413), the session's owner (404), its user (404 unknown, 400 changed)."""
        turn = ChatTurn(session=body.session_id, message=body.message, user_id=body.user_id)
        owner = self.owners.owner(turn.session)
        if owner is not None and owner != key_id:
            raise ApiError(404, f"unknown session {turn.session!r}", kind="UnknownSession")
        if turn.user_id is not None and turn.user_id.startswith("session:"):
            raise UnknownUser(f"unknown user {turn.user_id!r}: a chat names a dataset user, or none")
        state = self.agent.state(turn.session)
        if state is None:
            self.agent.stages.base_history(turn.user_id)  # an unknown user: 404, before the session is claimed
        elif turn.user_id is not None and turn.user_id != state.user_id:
            raise ApiError(400, f"session {turn.session!r} belongs to another user; start a new session for this one",
                           kind="SessionUserMismatch")
        if not self.owners.claim(turn.session, key_id):
            raise ApiError(404, f"unknown session {turn.session!r}", kind="UnknownSession")
        return turn

    def turn(self, turn: ChatTurn) -> ChatResponse:
        result = self.agent.say(turn.session, turn.message, user_id=turn.user_id)
        state = self.agent.state(turn.session)
        reasons = [n for n in result.notes if degradation([n])]
        return ChatResponse(session_id=turn.session, reply=result.reply, recommendations=list(result.items), degraded=bool(reasons),
                            degraded_reason=reasons[0] if reasons else None,
                            cold_start=state is not None and state.ranking == "cold-start",
                            notes=list(result.notes), questions=list(result.questions))

    def __call__(self, body: ChatBody, key_id: str) -> ChatResponse:
        return self.turn(self.prepare(body, key_id))

    async def stream(self, turn: ChatTurn, observe=None) -> AsyncIterator[dict]:
        """Server-sent events for a prepared turn: `token` events (the reply a word at a time), `recommendations`, then
        `done` with the whole `ChatResponse`; or one `error` event with the error model."""
        try:
            response = await run_in_threadpool(self.turn, turn)
        except Exception as exc:  # noqa: BLE001 - the stream has begun: the error goes as an event, in the error model
            yield {"event": "error", "data": describe(exc).model_dump_json()}
            return
        if observe is not None:
            observe(response)
        for piece in words(response.reply):
            yield {"event": "token", "data": TokenEvent(text=piece).model_dump_json()}
        yield {"event": "recommendations", "data": RecommendationsEvent(recommendations=response.recommendations).model_dump_json()}
        yield {"event": "done", "data": response.model_dump_json()}

