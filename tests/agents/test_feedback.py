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
    assert profile.top_genres[:2] == (("Action", 2), ("Comedy", 2))
    assert profile.recent == ("Get Shorty (1995)", "GoldenEye (1995)", "Toy Story (1995)")
    assert profile.dislikes == ("Four Rooms (1995)",)
