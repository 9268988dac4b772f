"""The chat page `/` in a real browser: Debian's chromium driven by Playwright for Python, against the real app.

The app runs on uvicorn on a free loopback port in a thread of this process, over the real pipeline (real Chroma,
the real vLLM engine on CPU with SmolLM2, the LLM ranking: the `pipeline` fixture) and the real chat agent with its
own SQLite store. The browser is `/usr/bin/chromium` from Debian's package, never one Playwright downloads; where it is
missing these tests fail and say to run `make browser` (`make test` runs it first), unless LLMREC_SKIP_BROWSER=1 says
to skip them, which the skip's reason then says in so many words.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
KEY = "page-test-key-7c1e"
DOCS_SCREENSHOT = Path(__file__).resolve().parents[3] / "docs" / "service-page.png"
"""The screenshot in the docs, rewritten only when LLMREC_SAVE_SCREENSHOT=1 (so a plain test run leaves git clean)."""
IN_BROWSER = pytest.mark.llm  # the page is served by the app over the real engine (the `pipeline` fixture)
TURN_TIMEOUT_MS = 300_000  # one chat turn on the real engine, on 2 CPU cores shared with other work


def chromium_or_stop(path: Path = CHROMIUM, environ: dict | None = None) -> str:
    """The browser's path; a failure naming `make browser` where it is missing, or a skip that says so loudly when
    LLMREC_SKIP_BROWSER=1 opts out. Never a silent pass."""
    environ = os.environ if environ is None else environ
    if environ.get("LLMREC_SKIP_BROWSER") == "1":
        pytest.skip("LLMREC_SKIP_BROWSER=1: THE CHAT PAGE WAS NOT TESTED IN A BROWSER (unset it and run `make browser`)")
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"{path} is missing: the chat page's browser test needs Debian's chromium; run `make browser` "
                    "(or set LLMREC_SKIP_BROWSER=1 to skip this test on purpose)", pytrace=False)
    return str(path)


def test_a_missing_browser_fails_the_test_unless_skipped_on_purpose(tmp_path):
    with pytest.raises(pytest.fail.Exception, match=r"make browser"):
        chromium_or_stop(tmp_path / "chromium", environ={})
    with pytest.raises(pytest.skip.Exception, match=r"NOT TESTED IN A BROWSER"):
        chromium_or_stop(tmp_path / "chromium", environ={"LLMREC_SKIP_BROWSER": "1"})


class Server:
    """The app on uvicorn in a thread, on a loopback socket bound here (so the port is known before it starts)."""

    def __init__(self, app):
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def start(self, timeout_s: float = 300) -> Server:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the app did not start on {self.url}")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(60)
        self.sock.close()


@pytest.fixture(scope="module")
def server(request, tmp_path_factory):
    """The real app (real pipeline with the LLM ranking, real agent on its own SQLite store) with one API key. The
    browser is looked for first, so a missing one fails (or skips) before the engine loads."""
    from llmrec.agents.conversation import ChatConfig, build_agent
    from llmrec.entrypoints.api.app import create_app
    from llmrec.entrypoints.api.settings import ServiceSettings

    chromium_or_stop()
    llm_settings, pipeline = request.getfixturevalue("llm_settings"), request.getfixturevalue("pipeline")
    store = tmp_path_factory.mktemp("page-store")
    agent = build_agent(llm_settings, pipeline=pipeline, config=ChatConfig(store=store, llm_understanding=False))
    app = create_app(llm_settings, ServiceSettings(api_keys=KEY), pipeline=pipeline, agent=agent)
    running = Server(app).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Debian chromium; Playwright's `launch` gives it a fresh temporary profile (user data dir)."""
    path = chromium_or_stop()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    """A fresh browser context (its own storage) and page; an uncaught page error fails the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 1100})
    page = context.new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


def sse_events(body: str) -> list[tuple[str, dict]]:
    """(event, data) of a text/event-stream body, parsed here independently of the page's parser."""
    events = []
    for block in re.split(r"\r\n\r\n|\n\n|\r\r", body):
        name, data = "message", []
        for line in re.split(r"\r\n|\r|\n", block):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
        if data:
            events.append((name, json.loads("\n".join(data))))
    return events


TAP = """
// The test's view of the chat stream, beside the page's own: a copy of each /v1/chat/stream body (a clone of the response,
// read apart from the page's reader), and every text the assistant's reply showed, in order (each `textContent` write
// adds a new text node, which its mutation record keeps as it was then).
window.__streams = [];
window.__shown = [];
const fetched = window.fetch;
window.fetch = async (...args) => {
  const response = await fetched(...args);
  if (String(args[0]).includes("/v1/chat/stream")) {
    const copy = { body: null };
    window.__streams.push(copy);
    response.clone().text().then((body) => { copy.body = body; });
  }
  return response;
};
new MutationObserver((records) => {
  for (const r of records) {
    if (r.target.matches && r.target.matches(".turn.assistant .text")) {
      for (const node of r.addedNodes) window.__shown.push(node.textContent);
    }
  }
}).observe(document, { childList: true, subtree: true });
"""


def save_key(page, key: str = KEY) -> None:
    field = page.get_by_label("API key")
    field.fill(key)
    field.press("Enter")
    page.get_by_text("API key saved", exact=True).wait_for(state="visible")


@IN_BROWSER
def test_chat_page_streams_a_reply_shows_cards_and_a_like_is_stored(server, page, tmp_path):
    from playwright.sync_api import expect

    page.add_init_script(TAP)
    page.goto(server.url + "/")
    expect(page).to_have_title(re.compile("llmrec"))
    save_key(page)
    # The key is kept in localStorage and never shown again: its field is hidden and empty, the page holds no copy.
    assert page.evaluate("localStorage.getItem('llmrec.apiKey')") == KEY
    assert page.locator("#api-key").input_value() == "" and page.locator("#api-key").is_hidden()
    assert KEY not in page.content()
    user = page.get_by_label("User id")
    user.fill("196")
    user.press("Tab")
    message = page.get_by_label("Message")
    message.fill("something like Star Wars but funnier")
    message.press("Enter")  # keyboard submit
    cards = page.locator(".turn.assistant .card")
    expect(cards.first).to_be_visible(timeout=TURN_TIMEOUT_MS)
    expect(page.locator(".turn.assistant .bubble.pending")).to_have_count(0, timeout=TURN_TIMEOUT_MS)

    page.wait_for_function("window.__streams.length === 1 && window.__streams[0].body !== null")
    events = sse_events(page.evaluate("window.__streams[0].body"))
    names = [name for name, _ in events]
    assert names.count("token") >= 2 and names[-2:] == ["recommendations", "done"], names
    done = events[-1][1]
    streamed = "".join(data["text"] for name, data in events if name == "token")
    assert streamed == done["reply"]
    # The reply grew on the page token by token: each text it showed is a longer prefix of the next, up to the whole reply.
    shown = page.evaluate("window.__shown")
    growth = shown[:shown.index(done["reply"]) + 1]
    assert len(growth) >= 2 and all(b.startswith(a) and len(b) > len(a) for a, b in zip(growth, growth[1:])), growth[:3]
    recs = done["recommendations"]
    assert recs, "the chat turn reached no recommendations"
    # The reply as streamed, whole under "The reply as text"; above the cards only its head (what is looked for,
    # questions), since the cards show its numbered list and the notes show its notes.
    lines = done["reply"].split("\n")
    first = next(n for n, line in enumerate(lines) if re.match(r"\d+\. ", line))
    head = [line for line in lines[:first] if line not in {f"note: {n}" for n in done["notes"]}]
    assert page.locator(".turn.assistant .text").text_content() == "\n".join(head)
    assert page.locator(".turn.assistant .reply-full pre").text_content() == done["reply"]
    assert cards.count() == len(recs)
    for card, rec in zip(cards.all(), recs):
        assert card.locator(".title-text").text_content() == rec["item"]["title"]
        if rec["item"]["year"]:
            assert card.locator(".year").text_content() == f"({rec['item']['year']})"
        assert card.locator(".genres li").all_text_contents() == list(rec["item"]["genres"])
        assert card.locator(".why-text").text_content() == rec["why"]
    expect(page.locator(".note-degraded")).to_have_count(1 if done["degraded"] else 0)
    expect(page.locator(".note-cold")).to_have_count(1 if done["cold_start"] else 0)

    def profile() -> dict:
        got = httpx.get(f"{server.url}/v1/users/196/profile", headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
        assert got.status_code == 200, got.text
        return got.json()

    before = profile()
    card, item = cards.first, recs[0]["item"]
    like = card.get_by_role("button", name=re.compile(r"^Like\b"))
    like.click()
    expect(card.locator(".feedback-status.saved")).to_be_visible()
    expect(like).to_have_attribute("aria-pressed", "true")
    after = profile()  # checked through the API: the like is committed and joins user 196's history
    label = f"{item['title']} ({item['year']})" if item["year"] else item["title"]
    assert after["likes_here"] == before["likes_here"] + 1
    assert after["history_size"] == before["history_size"] + 1
    assert after["recent"][0] == label

    page.locator(".turn.user").last.evaluate("turn => turn.scrollIntoView({block: 'start'})")
    shot = DOCS_SCREENSHOT if os.environ.get("LLMREC_SAVE_SCREENSHOT") == "1" else tmp_path / "service-page.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000


@IN_BROWSER
def test_a_refused_key_is_said_on_the_page(server, page):
    from playwright.sync_api import expect

    page.goto(server.url + "/")
    save_key(page, "not-the-key")
    page.get_by_label("Message").fill("a 90s thriller")
    page.get_by_role("button", name="Send").click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("401")
    expect(alert).to_contain_text("Forget the key")
    expect(page.locator(".card")).to_have_count(0)


# --- untrusted text: shown as text, never run ------------------------------------------------------------------------------
WATCH = """
window.__pwned = [];
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) => window.__violations.push(e.violatedDirective + " " + e.sample));
"""


def hostile(tag: str) -> str:
    """Markup that runs `tag` into window.__pwned if the page ever parses it as HTML (or a CSP violation, if the CSP blocks it)."""
    return (f"<img src=x onerror=\"window.__pwned.push('{tag}')\">"
            f"<script>window.__pwned.push('{tag}-script')</script><b>{tag}</b>")


def chat_item(tag: str = "") -> dict:
    """A chat item (`Recommended`) with markup in every text field a card shows."""
    return {"rank": 1, "item": {"item_id": "50", "title": hostile(f"title{tag}"), "year": 1977, "genres": [hostile(f"genre{tag}")],
                                "flags": [], "attributes": [["author", hostile(f"author{tag}")], ["publisher", hostile(f"publisher{tag}")]]},
            "score": -0.5, "llm_logprob": -0.4, "why": hostile(f"why{tag}")}


def explained_item() -> dict:
    """A `Recommendation` of `/v1/recommend`, with markup in its explanation too."""
    rec = chat_item("-r")
    del rec["why"]
    return {**rec, "retriever_rank": 2, "explanation": {"item_id": "50", "text": hostile("explanation"), "source": "llm",
                                                        "cited_item_ids": [hostile("cited")], "problems": [hostile("problem")]}}


def assert_nothing_ran(page) -> None:
    page.wait_for_timeout(500)  # an <img src=x> fails to load, and its onerror would run, within this
    assert page.evaluate("window.__pwned") == []
    assert page.evaluate("window.__violations") == []  # with innerHTML the CSP would block the handlers, but say so here
    assert page.locator("#log img, #log script, #log b").count() == 0


def assert_card_shows_literally(card, rec: dict) -> None:
    item = rec["item"]
    assert card.locator(".title-text").text_content() == item["title"]
    assert card.locator(".genres li").all_text_contents() == item["genres"]
    assert card.locator(".author span").text_content() == item["attributes"][0][1]
    assert card.locator(".attrs").text_content() == f"publisher: {item['attributes'][1][1]}"
    why = rec["explanation"]["text"] if "explanation" in rec else rec["why"]
    assert card.locator(".why-text").text_content() == why


@IN_BROWSER
def test_hostile_item_text_renders_as_text_through_the_page_renderers(server, page):
    page.add_init_script(WATCH)
    page.goto(server.url + "/")
    recs = [chat_item(), explained_item()]
    answer = {"degraded": True, "degraded_reason": hostile("reason"), "cold_start": True, "notes": [hostile("note")]}
    page.evaluate("""([recs, answer]) => {
        const log = document.getElementById("log");
        for (const rec of recs) log.append(window.llmrec.renderRecommendation(rec, null));
        log.append(window.llmrec.renderNotes(answer));
        log.append(window.llmrec.renderError({error: {status: 500, type: "Boom", message: answer.degraded_reason}}));
        for (const d of log.querySelectorAll("details")) d.open = true;
    }""", [recs, answer])
    assert_nothing_ran(page)
    cards = page.locator("#log .card")
    for card, rec in zip(cards.all(), recs, strict=True):
        assert_card_shows_literally(card, rec)
    explained = cards.nth(1)
    assert explained.locator(".why").get_attribute("data-source") == "llm"
    assert explained.locator(".why-check").text_content().count(hostile("problem")) == 1
    assert hostile("cited") in explained.locator(".why-check").text_content()
    assert page.locator(".note-degraded").text_content() == "Degraded answer: " + hostile("reason")
    assert page.locator(".note-list li").text_content() == hostile("note")
    assert page.locator(".note-error").text_content() == "Error 500 (Boom): " + hostile("reason")


def sse(*events: tuple[str, dict]) -> str:
    return "".join(f"event: {name}\r\ndata: {json.dumps(data)}\r\n\r\n" for name, data in events)


@IN_BROWSER
def test_hostile_reply_items_and_errors_from_the_stream_render_as_text(server, page):
    """The page's whole path (fetch, stream reader, SSE parser, cards, notes, feedback) fed a crafted stream."""
    from playwright.sync_api import expect

    reply = hostile("reply") + "\n1. " + hostile("listed")  # a head, then a numbered list, as the chat's replies are
    cut = reply.index(" onerror")  # a tag split across two tokens
    rec = chat_item()
    done = {"session_id": "s", "reply": reply, "recommendations": [rec], "degraded": True, "degraded_reason": hostile("reason"),
            "cold_start": False, "notes": [hostile("note")], "questions": []}
    streams = iter([sse(("token", {"text": reply[:cut]}), ("token", {"text": reply[cut:]}),
                        ("recommendations", {"recommendations": [rec]}), ("done", done)),
                    sse(("error", {"error": {"status": 503, "type": "StoreError", "message": hostile("error")}}))])
    page.add_init_script(WATCH)
    page.route("**/v1/chat/stream", lambda route: route.fulfill(status=200, content_type="text/event-stream", body=next(streams)))
    page.route("**/v1/feedback", lambda route: route.fulfill(status=404, content_type="application/json", body=json.dumps(
        {"error": {"status": 404, "type": "UnknownItem", "message": hostile("feedback")}})))
    page.goto(server.url + "/")
    save_key(page, "any")
    box = page.get_by_label("Message")
    box.fill(hostile("message"))
    box.press("Enter")
    card = page.locator(".turn.assistant .card")
    expect(card).to_have_count(1)
    expect(page.locator(".turn.assistant .bubble.pending")).to_have_count(0)
    assert page.locator(".turn.user .text").text_content() == hostile("message")
    assert page.locator(".turn.assistant .text").text_content() == hostile("reply")
    assert page.locator(".turn.assistant .reply-full pre").text_content() == reply
    assert_card_shows_literally(card, rec)
    assert page.locator(".note-degraded").text_content() == "Degraded answer: " + hostile("reason")
    card.get_by_role("button", name=re.compile(r"^Dislike\b")).click()
    expect(card.locator(".feedback-status.failed")).to_have_text("Not saved: " + hostile("feedback"))
    box.fill("again")
    box.press("Enter")
    expect(page.get_by_role("alert")).to_have_text("Error 503 (StoreError): " + hostile("error"))
    assert_nothing_ran(page)


@IN_BROWSER
def test_the_page_sse_parser_follows_the_event_stream_rules(server, page):
    page.goto(server.url + "/")
    chunks = [": ping\r\n\r\nevent: tok", "en\r", "\ndata: {\"text\": \"a\"}\r\n\r", "\nevent: done\ndata:line1\ndata: line2\n\n",
              "data: x\r\r", "event: cut\ndata: never finished\n"]
    got = page.evaluate("""(chunks) => {
        const got = [];
        const parser = new window.llmrec.SSEParser((e) => got.push(e));
        for (const chunk of chunks) parser.push(chunk);
        parser.end();
        return got;
    }""", chunks)
    assert got == [{"event": "token", "data": '{"text": "a"}'}, {"event": "done", "data": "line1\nline2"},
                   {"event": "message", "data": "x"}]
