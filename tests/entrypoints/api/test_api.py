"""The service over the real parts: the in-process vLLM engine behind the batching queue, the real ML-100K pipeline
with the LLM ranking, the real chat agent and its SQLite stores. One app per module (`client`)."""

import json
import logging
import sqlite3
import threading

import pytest

from llmrec.schemas import RecommendRequest, RecommendResponse
from tests.entrypoints.api.conftest import KEYS, bearer, make_client

pytestmark = pytest.mark.llm
ALPHA, BETA = (bearer(k) for k in KEYS)


def ids(response) -> list[str]:
    return [r["item"]["item_id"] for r in response.json()["recommendations"]]


def assert_error(response, status: int, kind: str | None = None) -> dict:
    """The one error model, with this status (and type), one line, no traceback."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"status", "type", "message"}, body
    assert body["error"]["status"] == status and "\n" not in body["error"]["message"] and "Traceback" not in response.text
    if kind is not None:
        assert body["error"]["type"] == kind, body
    return body["error"]


def test_recommend_is_the_cli_document_and_feedback_changes_the_next_answer(client, served):
    pipeline, agent = served
    first = client.post("/v1/recommend", json={"user_id": "13", "k": 5})
    assert first.status_code == 200, first.text
    doc = RecommendResponse.model_validate(first.json())
    direct = pipeline.recommend(RecommendRequest(user_id="13", k=5, scenario=pipeline.scenario.name))
    assert doc.ranking == direct.ranking == "llm-fused" and doc.user_id == "13" and not doc.degraded
    assert doc.history_used == direct.history_used and doc.model == direct.model
    assert {r.item.item_id for r in doc.recommendations} == {r.item.item_id for r in direct.recommendations}
    top, liked = ids(first)[0], ids(first)[2]
    disliked = client.post("/v1/feedback", json={"user_id": "13", "item_id": top, "event": "dislike"}, headers=ALPHA)
    assert disliked.status_code == 201, disliked.text
    event = disliked.json()
    assert event["user"] == "13" and event["item"] == top and event["event"] == "dislike" and event["id"] >= 1 and event["ts"] > 0
    assert client.post("/v1/feedback", json={"user_id": "13", "item_id": liked, "event": "like", "value": 4.5},
                       headers=BETA).status_code == 201
    # Acknowledged means committed: another connection to the store's file sees both rows now.
    with sqlite3.connect(agent.stages.store.path) as db:
        rows = db.execute("SELECT item, event FROM feedback WHERE user = '13' ORDER BY id").fetchall()
    assert rows == [(top, "dislike"), (liked, "like")]
    second = client.post("/v1/recommend", json={"user_id": "13", "k": 5})
    assert second.status_code == 200 and top not in ids(second) and liked not in ids(second)  # disliked never, liked now seen
    later = second.json()
    assert later["history_used"] + later["history_dropped"] == doc.history_used + doc.history_dropped + 1  # the like joined the history
    profile = client.get("/v1/users/13/profile").json()
    assert profile["likes_here"] == 1 and len(profile["dislikes"]) == 1


def test_a_chat_session_reaches_recommendations_and_streams_the_same_turn(client):
    body = {"session_id": "api-chat-1", "user_id": "196", "message": "something funny from the nineties"}
    turn = client.post("/v1/chat", json=body, headers=ALPHA)
    assert turn.status_code == 200, turn.text
    data = turn.json()
    assert data["session_id"] == "api-chat-1" and len(data["recommendations"]) == 5 and not data["degraded"] and not data["cold_start"]
    for rec in data["recommendations"]:
        assert "Comedy" in rec["item"]["genres"] and 1990 <= rec["item"]["year"] <= 1999 and rec["why"]
        assert rec["item"]["title"] in data["reply"]
    streamed = client.post("/v1/chat/stream", json={"session_id": "api-chat-1", "message": "more like #2"}, headers=ALPHA)
    assert streamed.status_code == 200 and streamed.headers["content-type"].startswith("text/event-stream")
    events = [(e["event"], json.loads(e["data"])) for e in sse(streamed.text)]
    kinds = [k for k, _ in events]
    assert kinds[-2:] == ["recommendations", "done"] and set(kinds[:-2]) == {"token"} and len(kinds) > 3
    done = events[-1][1]
    assert "".join(d["text"] for k, d in events if k == "token") == done["reply"]
    assert events[-2][1]["recommendations"] == done["recommendations"] and len(done["recommendations"]) == 5
    shown = {r["item"]["item_id"] for r in data["recommendations"]}
    assert not shown & {r["item"]["item_id"] for r in done["recommendations"]}  # a session never shows an item twice


def sse(text: str) -> list[dict]:
    """The events of a text/event-stream body (event and data lines)."""
    out = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line and not line.startswith(":"))
        if "event" in fields:
            out.append(fields)
    return out


def test_a_session_is_bound_to_its_key_and_to_its_user(client):
    body = {"session_id": "api-owned", "user_id": "196", "message": "a thriller"}
    assert client.post("/v1/chat", json=body, headers=ALPHA).status_code == 200
    assert_error(client.post("/v1/chat", json={**body, "message": "more"}, headers=BETA), 404, "UnknownSession")
    assert_error(client.post("/v1/chat/stream", json={**body, "message": "more"}, headers=BETA), 404, "UnknownSession")
    assert_error(client.post("/v1/chat", json={**body, "user_id": "200"}, headers=ALPHA), 400, "SessionUserMismatch")
    assert client.post("/v1/chat", json={"session_id": "api-owned", "message": "older ones"}, headers=ALPHA).status_code == 200
    # A cold-start session's user is 'session:<id>', its owner's alone: feedback and recommendations for it, no one else's.
    cold = client.post("/v1/chat", json={"session_id": "api-cold", "message": "a comedy"}, headers=BETA).json()
    assert cold["cold_start"] and cold["recommendations"]
    item = cold["recommendations"][0]["item"]["item_id"]
    feedback = {"user_id": "session:api-cold", "item_id": item, "event": "like"}
    assert_error(client.post("/v1/feedback", json=feedback, headers=ALPHA), 404, "UnknownUser")
    assert client.post("/v1/feedback", json=feedback, headers=BETA).status_code == 201
    assert_error(client.post("/v1/recommend", json={"user_id": "session:api-cold"}), 404, "UnknownUser")  # anonymous
    mine = client.post("/v1/recommend", json={"user_id": "session:api-cold", "k": 3}, headers=BETA)
    assert mine.status_code == 200 and mine.json()["history_used"] == 1 and item not in ids(mine)


BIG = "x" * 60_000


@pytest.mark.parametrize(("method", "path", "body", "headers", "status", "kind"), [
    ("post", "/v1/recommend", {"user_id": "no-such-user"}, {}, 404, "UnknownUser"),
    ("post", "/v1/recommend", {"history": ["1", "no-such-item"]}, {}, 404, "UnknownItem"),
    ("post", "/v1/recommend", b"{not json", {}, 422, "ValidationError"),
    ("post", "/v1/recommend", {"user_id": "196", "k": 101}, {}, 413, "InputTooLarge"),
    ("post", "/v1/recommend", {"user_id": "196", "k": 0}, {}, 422, "ValidationError"),
    ("post", "/v1/recommend", {"user_id": "196", "k": "ten"}, {}, 422, "ValidationError"),
    ("post", "/v1/recommend", {"user_id": "196", "history": ["1"]}, {}, 400, "LLMRecError"),
    ("post", "/v1/recommend", {}, {}, 400, "EmptyHistory"),
    ("post", "/v1/recommend", {"history": ["1"] * 5001}, {}, 413, "InputTooLarge"),
    ("post", "/v1/recommend", {"user_id": "u" * 129}, {}, 413, "InputTooLarge"),
    ("post", "/v1/recommend", {"user_id": "196", "surprise": 1}, {}, 422, "ValidationError"),
    ("post", "/v1/recommend", {"history": ["1"], "scenario": "../etc"}, {}, 422, "ValidationError"),
    ("post", "/v1/recommend", {"history": ["1"], "scenario": "books"}, {}, 404, "UnknownScenario"),
    ("post", "/v1/recommend", {"history": ["1"], "note": BIG}, {}, 413, "PayloadTooLarge"),
    ("post", "/v1/recommend", {"user_id": "196"}, {"Authorization": "Bearer wrong"}, 401, "Unauthorized"),
    ("post", "/v1/feedback", {"user_id": "196", "item_id": "1", "event": "like"}, {}, 401, "Unauthorized"),
    ("post", "/v1/feedback", {"user_id": "196", "item_id": "1", "event": "like"}, {"Authorization": "Bearer wrong"}, 401, "Unauthorized"),
    ("post", "/v1/feedback", {"user_id": "196", "item_id": "1", "event": "like"}, {"Authorization": "Basic a2V5"}, 401, "Unauthorized"),
    ("post", "/v1/feedback", {"user_id": "196", "item_id": "99999", "event": "like"}, ALPHA, 404, "UnknownItem"),
    ("post", "/v1/feedback", {"user_id": "nobody", "item_id": "1", "event": "like"}, ALPHA, 404, "UnknownUser"),
    ("post", "/v1/feedback", {"user_id": "196", "item_id": "1", "event": "love"}, ALPHA, 422, "ValidationError"),
    ("post", "/v1/feedback", {"user_id": "196", "item_id": "1", "event": "like", "value": "NaN"}, ALPHA, 422, "ValidationError"),
    ("post", "/v1/chat", {"session_id": "s-big", "message": "m" * 2001}, ALPHA, 413, "InputTooLarge"),
    ("post", "/v1/chat", {"session_id": "../x", "message": "hi"}, ALPHA, 422, "ValidationError"),
    ("post", "/v1/chat", {"session_id": "s-nouser", "user_id": "nobody", "message": "hi"}, ALPHA, 404, "UnknownUser"),
    ("post", "/v1/chat", {"session_id": "s-steal", "user_id": "session:api-cold", "message": "hi"}, ALPHA, 404, "UnknownUser"),
    ("post", "/v1/chat", {"session_id": "s-nokey", "message": "hi"}, {}, 401, "Unauthorized"),
    ("post", "/v1/chat/stream", {"session_id": "s-nokey", "message": "hi"}, {}, 401, "Unauthorized"),
    ("get", "/v1/users/no-such-user/profile", None, {}, 404, "UnknownUser"),
    ("get", "/v1/users/196/profile?scenario=Bad/Name", None, {}, 422, "ValidationError"),
    ("get", "/v1/nothing-here", None, {}, 404, "NotFound"),
    ("get", "/v1/recommend", None, {}, 405, "MethodNotAllowed"),
])
def test_every_bad_request_gets_its_status_and_the_error_model(client, method, path, body, headers, status, kind):
    if isinstance(body, bytes):
        response = client.request(method, path, content=body, headers={"content-type": "application/json", **headers})
    else:
        response = client.request(method, path, json=body, headers=headers)
    error = assert_error(response, status, kind)
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert "wrong" not in error["message"] and "a2V5" not in error["message"]  # a presented key is never echoed


def test_a_chunked_body_over_the_limit_is_refused_while_it_streams(client):
    def chunks():
        for _ in range(60):
            yield b" " * 1000

    assert_error(client.post("/v1/recommend", content=chunks(), headers={"content-type": "application/json"}), 413, "PayloadTooLarge")


def test_the_rate_limit_answers_429_with_retry_after_per_key(llm_settings, served):
    with make_client(llm_settings, served, rate_limit_per_minute=3) as limited:
        for _ in range(3):
            assert limited.get("/v1/scenarios", headers=ALPHA).status_code == 200
        refused = limited.get("/v1/scenarios", headers=ALPHA)
        assert_error(refused, 429, "RateLimited")
        assert int(refused.headers["retry-after"]) >= 1
        assert limited.get("/v1/scenarios", headers=BETA).status_code == 200  # another key has its own bucket
        assert limited.get("/healthz").status_code == 200  # health is never limited


def test_keys_never_reach_the_logs_and_a_bug_is_a_500_in_the_error_model(client, caplog):
    caplog.set_level(logging.DEBUG)
    client.post("/v1/feedback", json={"user_id": "196", "item_id": "1", "event": "watch"}, headers=ALPHA)
    client.post("/v1/feedback", json={"user_id": "196", "item_id": "1", "event": "watch"}, headers=bearer("key-stolen-5e8a"))
    client.post("/v1/chat", json={"session_id": "api-logs", "message": "a western"}, headers=BETA)
    original = client.app.state.profile

    def broken(*args):
        raise RuntimeError("a bug")

    client.app.state.profile = broken
    try:
        error = assert_error(client.get("/v1/users/196/profile", headers=ALPHA), 500, "InternalError")
    finally:
        client.app.state.profile = original
    assert "a bug" not in error["message"]  # the details go to the log, not the wire
    assert "unexpected RuntimeError: a bug" in caplog.text
    text = caplog.text + client.get("/metrics").text
    for key in (*KEYS, "key-stolen-5e8a"):
        assert key not in text


def test_concurrent_recommendations_are_batched_into_the_engine(client):
    def batch_stats() -> tuple[float, float]:
        lines = dict(line.rsplit(" ", 1) for line in client.get("/metrics").text.splitlines() if line.startswith("llmrec_engine_batch_calls_"))
        return float(lines.get('llmrec_engine_batch_calls_count{kind="score"}', 0)), float(lines.get('llmrec_engine_batch_calls_sum{kind="score"}', 0))

    before = batch_stats()
    barrier, out = threading.Barrier(6), {}

    def one(user: str) -> None:
        barrier.wait()
        out[user] = client.post("/v1/recommend", json={"user_id": user, "k": 5})

    threads = [threading.Thread(target=one, args=(str(u),)) for u in range(300, 306)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert all(r.status_code == 200 and r.json()["ranking"] == "llm-fused" for r in out.values())
    after = batch_stats()
    engine_calls, merged_calls = after[0] - before[0], after[1] - before[1]
    assert merged_calls == 6 and engine_calls < 6, (engine_calls, merged_calls)


def test_health_readiness_metrics_scenarios_and_the_openapi_page(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"ready": True, "checks": {"llm": "ok", "chroma": "ok"}}
    listing = client.get("/v1/scenarios").json()
    assert listing["default"] == "movies-llm" and {"movies", "movies-llm"} <= {s["name"] for s in listing["scenarios"]}
    assert [s["name"] for s in listing["scenarios"] if s["served"]] == ["movies-llm"]
    assert not any("/" in s["dataset"] for s in listing["scenarios"])
    metrics = client.get("/metrics").text
    assert 'llmrec_http_requests_total{method="GET",route="/v1/scenarios",status="200"}' in metrics
    assert "llmrec_http_request_seconds_bucket" in metrics and "llmrec_engine_queue_depth" in metrics
    assert 'llmrec_feedback_events_total{event="dislike"}' in metrics
    schema = client.get("/openapi.json").json()
    assert {"/v1/recommend", "/v1/feedback", "/v1/chat", "/v1/chat/stream", "/v1/users/{user_id}/profile", "/v1/scenarios",
            "/healthz", "/readyz", "/metrics"} <= set(schema["paths"])
    assert "413" in schema["paths"]["/v1/recommend"]["post"]["responses"]
    assert client.get("/docs").status_code == 200
    from llmrec.entrypoints.api.app import STATIC

    page = client.get("/")
    if (STATIC / "index.html").is_file():  # the chat page (written beside this service)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    else:
        assert_error(page, 404, "NotFound")
