"""Live profiles from feedback, with no retraining: one SQLite row per event, in WAL mode.

`record` returns only after the row is committed, so an acknowledged event survives a crash.
What the events mean for recommendations:
- `like` and `watch` join the user's history at once (`additions`), after the dataset's own history;
- `dislike` is never recommended again (`disliked`), and retrieval steers away from items like it;
- the latest event for a (user, item) pair wins: a like after a dislike lifts the ban.
`profile` summarises a user from the same store and the dataset's history: top genres, recent items, dislikes.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from llmrec.errors import LLMRecError, StoreError, UnknownItem
from llmrec.schemas import Item

Event = Literal["like", "watch", "dislike"]
_SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user TEXT NOT NULL,
    item TEXT NOT NULL,
    event TEXT NOT NULL CHECK (event IN ('like', 'watch', 'dislike')),
    ts REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_user ON feedback (user, id);
"""


@contextmanager
def sqlite_errors(path: Path | str) -> Iterator[None]:
    """SQLite's errors as one `StoreError` line that names the file and what to do (exit 11), never a traceback."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise StoreError(f"{path} is locked by another writer past the timeout ({exc}); try again, or raise "
                             "LLMREC_CHAT_STORE_TIMEOUT_S") from None
        raise StoreError(f"{path}: SQLite failed ({exc})") from None
    except sqlite3.DatabaseError as exc:  # "file is not a database", "database disk image is malformed"
        raise StoreError(f"{path} is not a readable SQLite database ({exc}); move it aside to start afresh") from None


class FeedbackEvent(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: int = Field(description="The row id, given only once the row is committed.")
    user: str
    item: str
    event: Event
    ts: float


class GenreCount(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    genre: str
    count: int = Field(description="History items with this genre.")


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    user: str
    history_size: int
    top_genres: tuple[GenreCount, ...] = Field(description="Genres over the history, the most frequent first.")
    recent: tuple[str, ...] = Field(description="Labels of the most recent history items, newest first.")
    dislikes: tuple[str, ...] = Field(description="Labels of disliked items.")
    likes_here: int = Field(description="Likes and watches recorded through feedback.")


class _Pending:
    """An event waiting for its commit: the row id once committed, or the error that rolled it back."""

    __slots__ = ("error", "row", "values")

    def __init__(self, values: tuple[str, str, str, float]):
        self.values = values
        self.row: int | None = None
        self.error: BaseException | None = None


class FeedbackStore:
    """One SQLite file; safe to share between threads (one connection, one lock). SQLite failures (a corrupt file,
    a lock held past `timeout_s`) are `StoreError`s."""

    def __init__(self, path: Path, catalog: Mapping[str, Item], timeout_s: float = 5.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.catalog = catalog
        self._lock = threading.Lock()
        self._waiting = threading.Condition()  # guards the queue of events waiting for a commit
        self._queue: list[_Pending] = []
        self._committing = False
        with sqlite_errors(self.path):
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=timeout_s)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # a committed row is on disk (WAL fsynced) before `record` returns
            self._db.executescript(_SCHEMA)

    def pragma(self, name: str) -> str | int:
        """A pragma in force on the store's connection (`journal_mode`, `synchronous`: 2 is FULL)."""
        with self._lock, sqlite_errors(self.path):
            return self._db.execute(f"PRAGMA {name}").fetchone()[0]

    def journal_mode(self) -> str:
        return str(self.pragma("journal_mode"))

    def record(self, user: str, item: str, event: Event) -> FeedbackEvent:
        """Store one event and acknowledge it (its row id) after the commit; an unknown item is refused (exit 3).

        Group commit: events recorded at the same time from several threads share one transaction (one WAL fsync).
        The first caller to find no commit under way commits every event waiting then, its own included; the others
        wait for that commit (or lead the next one). Each caller still returns only once its own row is committed, and
        a failed commit fails every caller in it: nothing is acknowledged that was rolled back."""
        if item not in self.catalog:
            raise UnknownItem(f"unknown item id {item!r}: feedback is only taken for catalog items")
        if event not in ("like", "watch", "dislike"):
            raise LLMRecError(f"unknown feedback event {event!r}: like, watch or dislike")
        mine = _Pending((user, item, event, time.time()))
        with self._waiting:
            self._queue.append(mine)
            while mine.row is None and mine.error is None and self._committing:
                self._waiting.wait()
            if mine.row is None and mine.error is None:  # no commit under way, and mine is not done: lead the next one
                batch, self._queue, self._committing = self._queue, [], True
            else:
                batch = []
        if batch:
            self._commit(batch)
        if mine.error is not None:
            raise mine.error
        user, item, event, ts = mine.values
        return FeedbackEvent(id=mine.row, user=user, item=item, event=event, ts=ts)

    def _commit(self, batch: list[_Pending]) -> None:
        """One transaction for `batch`; then every waiting caller is woken (their rows, or the error)."""
        try:
            with self._lock, sqlite_errors(self.path):
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    rows = [self._db.execute("INSERT INTO feedback (user, item, event, ts) VALUES (?, ?, ?, ?)", p.values).lastrowid
                            for p in batch]
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            for pending, row in zip(batch, rows, strict=True):
                pending.row = int(row)
        except BaseException as error:  # noqa: BLE001 - every caller in the batch gets it, the leader re-raises it too
            for pending in batch:
                pending.error = error
        finally:
            with self._waiting:
                self._committing = False
                self._waiting.notify_all()

    def events(self, user: str) -> list[FeedbackEvent]:
        with self._lock, sqlite_errors(self.path):
            rows = self._db.execute("SELECT id, user, item, event, ts FROM feedback WHERE user = ? ORDER BY id", (user,)).fetchall()
        return [FeedbackEvent(id=r[0], user=r[1], item=r[2], event=r[3], ts=r[4]) for r in rows]

    def _latest(self, user: str) -> dict[str, str]:
        """Each item's latest event for this user, in the order of those latest events."""
        latest: dict[str, str] = {}
        for e in self.events(user):
            latest.pop(e.item, None)
            latest[e.item] = e.event
        return latest

    def additions(self, user: str) -> list[str]:
        """Liked or watched items whose latest event is not a dislike, oldest first: they extend the history."""
        return [i for i, e in self._latest(user).items() if e in ("like", "watch")]

    def disliked(self, user: str) -> list[str]:
        return [i for i, e in self._latest(user).items() if e == "dislike"]

    def history(self, user: str, base: Sequence[str]) -> tuple[str, ...]:
        """The dataset's history, then what feedback added, without repeats and without disliked items."""
        banned = set(self.disliked(user))
        return tuple(i for i in dict.fromkeys([*base, *self.additions(user)]) if i not in banned)

    def profile(self, user: str, base: Sequence[str], recent: int = 5, genres: int = 3) -> Profile:
        history = self.history(user, base)
        counts = Counter(g for i in history for g in self.catalog[i].genres if g != "unknown")
        return Profile(user=user, history_size=len(history),
                       top_genres=tuple(GenreCount(genre=g, count=n) for g, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:genres]),
                       recent=tuple(self.catalog[i].label() for i in reversed(history[-recent:])),
                       dislikes=tuple(self.catalog[i].label() for i in self.disliked(user)),
                       likes_here=len(self.additions(user)))

    def close(self) -> None:
        with self._lock:
            self._db.close()
