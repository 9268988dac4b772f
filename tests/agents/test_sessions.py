"""Session state, concurrency and durability of the chat agent, with the real catalog, Chroma index and SQLite files.

The LLM is ScriptedEngine and understanding is the rules alone: these test llmrec's own session logic (anchors,
the per-session lock, checkpoint pruning, SQLite errors and pragmas, input caps, store keys), not the model.
"""

import sqlite3
import threading
import time

import pytest

from llmrec.errors import InputTooLarge, StoreError


def make_agent(settings, pipeline, store, **options):
    from llmrec.agents.conversation import ChatConfig, build_agent

    return build_agent(settings, pipeline=pipeline, config=ChatConfig(store=store, llm_understanding=False, **options))


@pytest.fixture
def agent(settings, scripted_pipeline, tmp_path):
    return make_agent(settings, scripted_pipeline, tmp_path)


def item_id(pipeline, label):
    return next(i for i, item in pipeline.dataset.items.items() if item.label() == label)


def test_asking_again_for_an_anchor_makes_it_the_newest(agent, scripted_pipeline):
    from llmrec.agents.conversation import newest_last

    assert newest_last(["a", "b", "a"]) == ("b", "a")
    fargo, heat = item_id(scripted_pipeline, "Fargo (1996)"), item_id(scripted_pipeline, "Heat (1995)")
    agent.say("anchors", "I loved Fargo", user_id="196")
    agent.say("anchors", "I loved Heat", user_id="196")
    assert agent.state("anchors").anchors[-1] == heat
    result = agent.say("anchors", "I loved Fargo")
    assert agent.state("anchors").anchors == (heat, fargo)  # dict.fromkeys kept Fargo first, so Heat stayed the reference
    assert "close to Fargo (1996)" in result.reply


def test_concurrent_turns_on_one_session_run_one_at_a_time(agent, monkeypatch):
    """Three threads say something on one session at once; each turn's recommend step is slowed, so without the
    per-session lock two turns read the same state and one is lost (turn 2 after 3 calls, items shown twice)."""
    slow = agent.stages.recommend

    def recommend(*args, **kwargs):
        time.sleep(0.3)
        return slow(*args, **kwargs)

    monkeypatch.setattr(agent.stages, "recommend", recommend)
    agent.say("race", "something funny", user_id="196")
    results, errors = [], []

    def turn():
        try:
            results.append(agent.say("race", "something funny"))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=turn) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and len(results) == 3
    state = agent.state("race")
    assert state.turn == 4
    shown = [r.item.item_id for result in results for r in result.items]
    assert len(shown) == len(set(shown)) == 15 and len(state.shown_before) == 20


def test_old_checkpoints_are_pruned_and_the_session_continues(agent):
    for message in ("something funny", "from the 90s", "but not a romance"):
        agent.say("pruned", message, user_id="196")
    conn = agent.checkpointer.conn
    assert conn.execute("SELECT COUNT(*) FROM checkpoints WHERE thread_id = 'pruned'").fetchone()[0] == 1
    kept = conn.execute("SELECT checkpoint_id FROM checkpoints WHERE thread_id = 'pruned'").fetchone()[0]
    assert conn.execute("SELECT COUNT(*) FROM writes WHERE thread_id = 'pruned' AND checkpoint_id != ?", (kept,)).fetchone()[0] == 0
    state = agent.state("pruned")
    assert state.turn == 3 and state.constraints.exclude_genres == ("Romance",) and len(state.shown_before) == 15
    after = agent.say("pruned", "from the 80s")
    assert agent.state("pruned").turn == 4 and after.constraints.exclude_genres == ("Romance",)
    assert not set(state.shown_before) & {r.item.item_id for r in after.items}


def test_both_databases_run_with_the_pragmas_we_claim(agent):
    """Read on the very connections in use (synchronous is per connection): WAL and synchronous=FULL (2) on each."""
    conn = agent.checkpointer.conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    store = agent.stages.store
    assert store.pragma("journal_mode") == "wal" and store.pragma("synchronous") == 2


@pytest.mark.parametrize("name", ["checkpoints", "feedback"])
def test_a_corrupt_database_file_is_a_store_error(settings, scripted_pipeline, tmp_path, name):
    from llmrec.agents.conversation import store_name

    (tmp_path / f"{name}-{store_name(scripted_pipeline.dataset)}.sqlite").write_bytes(b"not a database, " * 512)
    with pytest.raises(StoreError, match="not a readable SQLite database") as err:
        make_agent(settings, scripted_pipeline, tmp_path)
    assert err.value.exit_code == 11 and name in str(err.value)


def test_a_lock_held_past_the_timeout_is_a_store_error(settings, scripted_pipeline, tmp_path):
    from llmrec.agents.conversation import store_name

    agent = make_agent(settings, scripted_pipeline, tmp_path, store_timeout_s=0.2)
    agent.say("locked", "something funny", user_id="196")
    holder = sqlite3.connect(tmp_path / f"checkpoints-{store_name(scripted_pipeline.dataset)}.sqlite", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreError, match="locked"):
            agent.say("locked", "from the 90s")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert agent.say("locked", "from the 90s").items  # the lock gone, the session goes on


def test_inputs_over_their_caps_are_one_clear_error(agent):
    from llmrec.schemas import LIMITS, RecommendRequest

    with pytest.raises(InputTooLarge, match="the message is too long: 2001 characters, the limit is 2000") as err:
        agent.say("caps", "a" * (LIMITS.message_chars + 1), user_id="196")
    assert err.value.exit_code == 2
    with pytest.raises(InputTooLarge, match="the history is too long"):
        agent.say("caps", "hello", history=["1"] * (LIMITS.history_items + 1))
    with pytest.raises(InputTooLarge, match="k is too large"):
        RecommendRequest(user_id="196", k=LIMITS.k + 1)
    with pytest.raises(InputTooLarge, match="the session id is too long"):
        agent.say("s" * (LIMITS.id_chars + 1), "hello")
    assert agent.state("caps") is None  # nothing was stored


def _folder(root, rows):
    root.mkdir(parents=True)
    (root / "data.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n" + "".join(f"{u}\t{i}\t{t}\n" for t, (u, i) in enumerate(rows)))
    (root / "data.item").write_text("item_id:token\ttitle:token_seq\n" + "".join(f"{i}\tItem {i}\n" for i in sorted({i for _, i in rows})))
    return root


def test_feedback_and_sessions_are_keyed_by_the_datasets_source(tmp_path, scripted_pipeline):
    """Two user folders both called `data` are two datasets: their stores never share a file (nor feedback)."""
    from llmrec.agents.conversation import store_name
    from llmrec.agents.feedback import FeedbackStore
    from llmrec.data.catalog import Dataset

    a = Dataset.from_folder(_folder(tmp_path / "a" / "data", [("u1", "1"), ("u1", "2"), ("u2", "1")]))
    b = Dataset.from_folder(_folder(tmp_path / "b" / "data", [("u1", "7"), ("u2", "8")]))
    assert a.name == b.name == "data" and store_name(a) != store_name(b)
    assert store_name(scripted_pipeline.dataset) == "ml-100k"  # a built-in's source is its name: its files keep their names
    stores = {d.source: FeedbackStore(tmp_path / f"feedback-{store_name(d)}.sqlite", d.items) for d in (a, b)}
    stores[a.source].record("u1", "2", "like")
    assert stores[b.source].events("u1") == [] and stores[b.source].history("u1", ["7"]) == ("7",)
