"""The feedback store: durable SQLite rows in WAL mode, and what likes, watches and dislikes do to a profile."""

import subprocess
import sys

import pytest

from llmrec.agents.feedback import FeedbackStore
from llmrec.errors import LLMRecError, UnknownItem
from llmrec.schemas import Item

CATALOG = {
    "1": Item(item_id="1", title="Toy Story", year=1995, genres=("Animation", "Children's", "Comedy")),
    "2": Item(item_id="2", title="GoldenEye", year=1995, genres=("Action", "Adventure", "Thriller")),
    "3": Item(item_id="3", title="Four Rooms", year=1995, genres=("Thriller",)),
    "4": Item(item_id="4", title="Get Shorty", year=1995, genres=("Action", "Comedy", "Drama")),
}


@pytest.fixture
def store(tmp_path):
    s = FeedbackStore(tmp_path / "feedback.sqlite", CATALOG)
    yield s
    s.close()


def test_wal_mode_is_on(store):
    assert store.journal_mode() == "wal"


def test_the_store_runs_wal_with_synchronous_full(store):
    """The pragmas in force on the store's own connection: each commit's WAL frames are fsynced before `record` returns."""
    assert store.pragma("journal_mode") == "wal" and store.pragma("synchronous") == 2  # 2 = FULL


def test_a_corrupt_store_file_is_one_store_error(tmp_path):
    from llmrec.errors import StoreError

    path = tmp_path / "feedback.sqlite"
    path.write_bytes(b"garbage " * 1000)
    with pytest.raises(StoreError, match="not a readable SQLite database"):
        FeedbackStore(path, CATALOG)


def test_an_event_is_committed_before_it_is_acknowledged(tmp_path):
    """A child records one event, prints the acknowledgement and is killed with SIGKILL (no close, no cleanup): the row
    is there, so `record` commits before it returns. SIGKILL leaves the OS page cache intact, so this passes even with
    `synchronous=OFF`; that the commit is also fsynced is shown by `test_the_store_runs_wal_with_synchronous_full`."""
    path = tmp_path / "feedback.sqlite"
    code = ("import os, signal\nfrom llmrec.agents.feedback import FeedbackStore\nfrom llmrec.schemas import Item\n"
            f"store = FeedbackStore(__import__('pathlib').Path({str(path)!r}), {{'2': Item(item_id='2', title='GoldenEye')}})\n"
            "event = store.record('u1', '2', 'like')\nprint(event.id, flush=True)\nos.kill(os.getpid(), signal.SIGKILL)\n")
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert child.returncode == -9 and child.stdout.strip() == "1", child.stderr[-2000:]
    reopened = FeedbackStore(path, CATALOG)
    assert [(e.id, e.user, e.item, e.event) for e in reopened.events("u1")] == [(1, "u1", "2", "like")]


def test_a_like_or_watch_joins_the_history_at_once(store):
    assert store.history("u1", ["1"]) == ("1",)
    store.record("u1", "2", "like")
    store.record("u1", "3", "watch")
    assert store.history("u1", ["1"]) == ("1", "2", "3")
    assert store.history("u2", ["1"]) == ("1",)  # per user


def test_a_dislike_leaves_the_history_and_the_latest_event_wins(store):
    store.record("u1", "2", "like")
    store.record("u1", "2", "dislike")
    assert store.disliked("u1") == ["2"] and store.history("u1", ["1", "2"]) == ("1",)
    store.record("u1", "2", "like")  # changed their mind
    assert store.disliked("u1") == [] and store.history("u1", ["1"]) == ("1", "2")


def test_unknown_items_and_events_are_refused_without_a_row(store):
    with pytest.raises(UnknownItem) as err:
        store.record("u1", "999", "like")
    assert err.value.exit_code == 3
    with pytest.raises(LLMRecError):
        store.record("u1", "1", "love")
    assert store.events("u1") == []


def test_profile_summarises_history_and_feedback(store):
    store.record("u1", "4", "like")
    store.record("u1", "3", "dislike")
    profile = store.profile("u1", ["1", "2"])
    assert profile.history_size == 3 and profile.likes_here == 1
    assert [(g.genre, g.count) for g in profile.top_genres[:2]] == [("Action", 2), ("Comedy", 2)]
    assert profile.recent == ("Get Shorty (1995)", "GoldenEye (1995)", "Toy Story (1995)")
    assert profile.dislikes == ("Four Rooms (1995)",)


class _Gate:
    """The store's connection, with its first `BEGIN` held until the test opens the gate, and its commits counted
    (or, with `fail_commit`, refused as SQLite refuses a commit on a full disk)."""

    def __init__(self, db, fail_commit=False):
        import threading

        self.db, self.fail_commit, self.commits = db, fail_commit, 0
        self.entered, self.gate = threading.Event(), threading.Event()

    def execute(self, sql, *args):
        import sqlite3

        if sql == "BEGIN IMMEDIATE" and not self.entered.is_set():
            self.entered.set()
            assert self.gate.wait(30)
        if sql == "COMMIT":
            if self.fail_commit:
                raise sqlite3.OperationalError("database or disk is full")
            self.commits += 1
        return self.db.execute(sql, *args)

    def close(self):
        self.db.close()


def _record_from_threads(store, gate, n):
    """One event from a first thread (held in its commit), then n - 1 more from other threads while it is held."""
    import threading
    import time

    results, errors = {}, {}

    def one(i):
        try:
            results[i] = store.record(f"u{i}", "2", "like")
        except Exception as error:  # noqa: BLE001 - the test looks at each caller's outcome
            errors[i] = error

    threads = [threading.Thread(target=one, args=(0,))]
    threads[0].start()
    assert gate.entered.wait(30)
    threads += [threading.Thread(target=one, args=(i,)) for i in range(1, n)]
    for t in threads[1:]:
        t.start()
    deadline = time.time() + 30
    while len(store._queue) < n - 1 and time.time() < deadline:
        time.sleep(0.01)
    gate.gate.set()
    for t in threads:
        t.join(30)
    return results, errors


def test_events_recorded_together_share_one_commit_and_each_gets_its_own_row(store):
    """Group commit: while one commit is under way, seven more events queue; they go in one more transaction, and every
    caller gets its own committed row id."""
    gate = _Gate(store._db)
    store._db = gate
    results, errors = _record_from_threads(store, gate, 8)
    assert not errors and gate.commits == 2
    assert sorted(e.id for e in results.values()) == list(range(1, 9))
    for i, event in results.items():
        assert [(e.id, e.item, e.event) for e in store.events(f"u{i}")] == [(event.id, "2", "like")]


def test_a_failed_group_commit_fails_every_caller_in_it_and_stores_none(store):
    from llmrec.errors import StoreError

    gate = _Gate(store._db, fail_commit=True)
    store._db = gate
    results, errors = _record_from_threads(store, gate, 4)
    assert not results and len(errors) == 4 and all(isinstance(e, StoreError) for e in errors.values())
    store._db = gate.db
    assert all(store.events(f"u{i}") == [] for i in range(4))
