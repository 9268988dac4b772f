// The chat page of `llmrec serve`: plain JS, no build step, no external URL.
//
// Replies, item titles, explanations and notes are untrusted text: every one of them reaches the page through
// `textContent` or a text node (the `el` helper below), never through innerHTML, and the page's CSP allows no inline
// script. The streamed reply comes from `POST /v1/chat/stream` read with fetch and a stream reader, since EventSource
// can neither POST nor send the Authorization header.
"use strict";

(() => {
  const STORE = { key: "llmrec.apiKey", user: "llmrec.userId", session: "llmrec.sessionId" };
  const SOURCE_LABELS = { llm: "LLM", "llm-retry": "LLM (retry)", template: "template", evidence: "from the data" };

  // --- DOM helpers: strings become text nodes, so nothing passed here is ever parsed as HTML ---------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "text") node.textContent = String(value);
      else if (name === "class") node.className = value;
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  // --- Server-sent events over fetch -------------------------------------------------------------------------------------
  /** Splits a text/event-stream into {event, data} records (the WHATWG rules that matter here: CRLF, CR or LF line ends,
   *  `event:` and `data:` fields with one optional space after the colon, several data lines joined by "\n", comment
   *  lines starting with ":", a record ending at a blank line, an unfinished record at the end dropped). */
  class SSEParser {
    constructor(onEvent) {
      this.onEvent = onEvent;
      this.buffer = "";
      this.reset();
    }
    reset() {
      this.event = "";
      this.data = [];
    }
    push(chunk) {
      this.buffer += chunk;
      const ends = /\r\n|\r|\n/g;
      let start = 0;
      for (let m = ends.exec(this.buffer); m; m = ends.exec(this.buffer)) {
        if (m[0] === "\r" && ends.lastIndex === this.buffer.length) break; // maybe the first half of "\r\n"
        this.line(this.buffer.slice(start, m.index));
        start = ends.lastIndex;
      }
      this.buffer = this.buffer.slice(start);
    }
    line(line) {
      if (line === "") {
        if (this.data.length) this.onEvent({ event: this.event || "message", data: this.data.join("\n") });
        this.reset();
        return;
      }
      if (line.startsWith(":")) return;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") this.event = value;
      else if (field === "data") this.data.push(value);
    }
    end() {
      // A held "\r" ended its line after all. As EventSource does, a record the stream did not finish with a blank line
      // is dropped, never half-dispatched.
      if (this.buffer.endsWith("\r")) this.line(this.buffer.slice(0, -1));
      this.buffer = "";
      this.reset();
    }
  }

  async function readEvents(response, onEvent) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder("utf-8");
    const parser = new SSEParser(onEvent);
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      parser.push(decoder.decode(value, { stream: true }));
    }
    parser.push(decoder.decode());
    parser.end();
  }

  // --- Rendering (all untrusted text through text nodes) ---------------------------------------------------------------
  function fmt(value, digits) {
    return typeof value === "number" && Number.isFinite(value) ? value.toFixed(digits) : "–";
  }

  function attributesOf(item) {
    // Item.attributes is a list of [name, value] pairs (author, publisher for books).
    const pairs = Array.isArray(item.attributes) ? item.attributes : [];
    return pairs.filter((p) => Array.isArray(p) && p.length === 2).map(([name, value]) => [String(name), String(value)]);
  }

  /** The checkable reason under a card. A `Recommendation` (`/v1/recommend`) carries an `explanation` object whose
   *  `source` says who wrote it: the LLM (checked against the catalog and the history) or the template. A chat item
   *  carries `why`, the evidence filled in from the data (co-watch figures, shared genres). */
  function renderExplanation(rec) {
    const exp = rec.explanation;
    if (!exp && !rec.why) return null;
    const source = exp ? String(exp.source) : "evidence";
    const kind = source === "llm" || source === "llm-retry" ? "llm" : "template";
    const box = el("div", { class: `why why-${kind}`, "data-source": source },
      el("span", { class: `badge badge-${kind}`, title: kind === "llm"
        ? "Written by the LLM, then checked against the catalog and the user's history"
        : "Filled in from the data: co-watch figures, shared genres", text: SOURCE_LABELS[source] || source }),
      el("p", { class: "why-text", text: exp ? exp.text : rec.why }));
    const cited = exp && Array.isArray(exp.cited_item_ids) ? exp.cited_item_ids : [];
    const problems = exp && Array.isArray(exp.problems) ? exp.problems : [];
    if (cited.length || problems.length) {
      const details = el("details", { class: "why-check" }, el("summary", { text: "check" }));
      if (cited.length) details.append(el("p", {}, "Cites items: ", cited.join(", ")));
      if (problems.length) {
        details.append(el("p", { text: "Earlier attempts rejected by the grounding check:" }),
          el("ul", {}, problems.map((p) => el("li", { text: p }))));
      }
      box.append(details);
    }
    return box;
  }

  /** One recommendation card. `feedback(rec, event, card)` is called by its like/dislike buttons; without it the
   *  buttons are disabled. */
  function renderRecommendation(rec, feedback) {
    const item = rec.item || {};
    const title = el("h3", { class: "title" }, el("span", { class: "rank", text: `#${rec.rank}` }), " ",
      el("span", { class: "title-text", text: item.title }));
    if (item.year) title.append(" ", el("span", { class: "year", text: `(${item.year})` }));
    const card = el("li", { class: "card", "data-item-id": item.item_id }, title);
    const attrs = attributesOf(item);
    const author = attrs.find(([name]) => name === "author");
    if (author) card.append(el("p", { class: "author" }, "by ", el("span", { text: author[1] })));
    const others = attrs.filter(([name]) => name !== "author");
    if (others.length) card.append(el("p", { class: "attrs" }, others.map(([n, v]) => `${n}: ${v}`).join(" · ")));
    const genres = Array.isArray(item.genres) ? item.genres : [];
    if (genres.length) card.append(el("ul", { class: "genres", "aria-label": "genres" }, genres.map((g) => el("li", { text: g }))));
    const meta = [`score ${fmt(rec.score, 3)}`];
    if (typeof rec.llm_logprob === "number") meta.push(`LLM log-p ${fmt(rec.llm_logprob, 2)}`);
    if (typeof rec.retriever_rank === "number") meta.push(`retriever #${rec.retriever_rank + 1}`);
    card.append(el("p", { class: "meta" }, meta.join(" · ")));
    const why = renderExplanation(rec);
    if (why) card.append(why);

    const status = el("p", { class: "feedback-status", role: "status" });
    const like = el("button", { type: "button", class: "like", "aria-pressed": "false", text: "Like" });
    const dislike = el("button", { type: "button", class: "dislike", "aria-pressed": "false", text: "Dislike" });
    for (const [button, event] of [[like, "like"], [dislike, "dislike"]]) {
      const label = `${event === "like" ? "Like" : "Dislike"} ${item.title || "this item"}`;
      button.setAttribute("aria-label", label);
      if (feedback) button.addEventListener("click", () => feedback(rec, event, card));
      else button.disabled = true;
    }
    card.append(el("div", { class: "actions" }, like, dislike), status);
    return card;
  }

  /** The notes under an answer: degraded (with its reason), cold start, and the service's notes. */
  function renderNotes(resp) {
    const box = el("div", { class: "notes" });
    if (resp.degraded) {
      box.append(el("p", { class: "note note-degraded", role: "note" }, el("strong", { text: "Degraded answer: " }),
        resp.degraded_reason ? String(resp.degraded_reason) : "the LLM did not rank this list; it is in the retriever's order."));
    }
    if (resp.cold_start) {
      box.append(el("p", { class: "note note-cold", role: "note" }, el("strong", { text: "Cold start: " }),
        "no history to go on, so these are popular items."));
    }
    const notes = (Array.isArray(resp.notes) ? resp.notes : []).filter((n) => n !== resp.degraded_reason);
    if (notes.length) box.append(el("ul", { class: "note-list", "aria-label": "notes" }, notes.map((n) => el("li", { text: n }))));
    return box.childNodes.length ? box : null;
  }

  function renderError(error) {
    const e = (error && error.error) || error || {};
    const head = e.status ? `Error ${e.status}${e.type ? ` (${e.type})` : ""}: ` : "Error: ";
    return el("p", { class: "note note-error", role: "alert" }, el("strong", { text: head }), String(e.message || "unknown error"));
  }

  // --- State ------------------------------------------------------------------------------------------------------------
  const $ = (id) => document.getElementById(id);

  function apiKey() {
    return localStorage.getItem(STORE.key) || "";
  }

  function newSessionId() {
    if (crypto.randomUUID) return crypto.randomUUID();
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function sessionId() {
    let id = sessionStorage.getItem(STORE.session);
    if (!id) {
      id = newSessionId();
      sessionStorage.setItem(STORE.session, id);
    }
    return id;
  }

  function showKeyState() {
    const saved = Boolean(apiKey());
    $("key-entry").hidden = saved;
    $("key-saved").hidden = !saved;
  }

  function setStatus(text) {
    $("status").textContent = text || "";
  }

  async function errorOf(response) {
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null;
    }
    const error = (body && body.error) || { status: response.status, type: response.statusText, message: `HTTP ${response.status}` };
    const retry = response.headers.get("Retry-After");
    if (retry) error.message = `${error.message} (try again in ${retry} s)`;
    if (response.status === 401) error.message = `${error.message.replace(/\.$/, "")}. Forget the key and enter it again.`;
    return { error };
  }

  function authHeaders() {
    return { "Content-Type": "application/json", Authorization: `Bearer ${apiKey()}` };
  }

  // --- Feedback -----------------------------------------------------------------------------------------------------------
  /** Feedback as `userId`: a dataset user, or `session:<id>`, the user of this page's own conversation. */
  function feedbackFor(userId) {
    const who = userId.startsWith("session:") ? "in this conversation" : `by user ${userId}`;
    return async (rec, event, card) => {
      const status = card.querySelector(".feedback-status");
      const buttons = card.querySelectorAll(".actions button");
      buttons.forEach((b) => { b.disabled = true; });
      status.textContent = "Saving…";
      status.className = "feedback-status";
      try {
        const response = await fetch("/v1/feedback", {
          method: "POST", headers: authHeaders(),
          body: JSON.stringify({ user_id: userId, item_id: rec.item.item_id, event }),
        });
        if (response.status !== 201) {
          const { error } = await errorOf(response);
          status.textContent = `Not saved: ${error.message}`;
          status.className = "feedback-status failed";
          return;
        }
        const saved = await response.json();
        for (const b of buttons) b.setAttribute("aria-pressed", String(b.classList.contains(event)));
        status.textContent = `Saved: ${event === "like" ? "liked" : "disliked"} ${who}` +
          (saved && saved.id !== undefined ? ` (event ${saved.id})` : "");
        status.className = "feedback-status saved";
        card.dataset.feedback = event;
      } catch (exc) {
        status.textContent = `Not saved: ${exc.message}`;
        status.className = "feedback-status failed";
      } finally {
        buttons.forEach((b) => { b.disabled = false; });
      }
    };
  }

  // --- One turn -------------------------------------------------------------------------------------------------------------
  function addTurn(role, text) {
    const body = el("div", { class: "bubble" }, el("p", { class: "text", text: text || "" }));
    const turn = el("li", { class: `turn ${role}` }, el("span", { class: "who", text: role === "user" ? "You" : "llmrec" }), body);
    $("hint")?.remove();
    $("log").append(turn);
    turn.scrollIntoView({ block: "end" });
    return body;
  }

  /** Once the cards show the items, the reply's own numbered list (the chat's one reply format: what is looked for,
   *  questions, notes, then "1. Title (year) [genres]" lines with their evidence) folds away under "The reply as text";
   *  its notes are shown by `renderNotes` already. */
  function foldReply(body, resp) {
    const text = body.querySelector(".text");
    const lines = resp.reply.split("\n");
    const first = lines.findIndex((line) => /^\d+\. /.test(line));
    if (first <= 0) return;
    const noted = new Set((Array.isArray(resp.notes) ? resp.notes : []).map((n) => `note: ${n}`));
    text.textContent = lines.slice(0, first).filter((line) => !noted.has(line)).join("\n");
    body.append(el("details", { class: "reply-full" }, el("summary", { text: "The reply as text" }),
      el("pre", { text: resp.reply })));
  }

  function showRecommendations(body, recs, userId) {
    body.querySelector(".cards")?.remove();
    if (!recs.length) return;
    const feedback = userId ? feedbackFor(userId) : null;
    body.append(el("ol", { class: "cards", "aria-label": "recommendations" }, recs.map((r) => renderRecommendation(r, feedback))));
  }

  async function send(message) {
    const userId = $("user-id").value.trim();
    const session = sessionId();
    const feedbackUser = userId || `session:${session}`; // the service knows a conversation's own user by its session
    const body = addTurn("assistant", "");
    const text = body.querySelector(".text");
    body.classList.add("pending");
    let finished = false;
    const handle = ({ event, data }) => {
      let payload;
      try {
        payload = JSON.parse(data);
      } catch (_) {
        return;
      }
      if (event === "token") text.textContent += String(payload.text ?? "");
      else if (event === "recommendations") showRecommendations(body, payload.recommendations || [], feedbackUser);
      else if (event === "done") {
        finished = true;
        if (typeof payload.reply === "string") text.textContent = payload.reply;
        if (!body.querySelector(".cards")) showRecommendations(body, payload.recommendations || [], feedbackUser);
        if (body.querySelector(".cards")) foldReply(body, payload);
        const notes = renderNotes(payload);
        if (notes) text.after(notes); // under the reply, above the cards: a degraded answer is said before it is shown
      } else if (event === "error") {
        finished = true;
        body.append(renderError(payload));
      }
    };
    try {
      const response = await fetch("/v1/chat/stream", {
        method: "POST",
        headers: { ...authHeaders(), Accept: "text/event-stream" },
        body: JSON.stringify({ session_id: session, user_id: userId || null, message }),
      });
      if (!response.ok) {
        body.append(renderError(await errorOf(response)));
        return;
      }
      await readEvents(response, handle);
      if (!finished) body.append(renderError({ message: "the answer stopped before it was complete" }));
    } catch (exc) {
      body.append(renderError({ message: exc.message }));
    } finally {
      body.classList.remove("pending");
      body.closest(".turn").scrollIntoView({ block: "end" });
    }
  }

  // --- Wiring -----------------------------------------------------------------------------------------------------------------
  function init() {
    showKeyState();
    $("user-id").value = localStorage.getItem(STORE.user) || "";

    $("settings").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const input = $("api-key");
      const key = input.value.trim();
      input.value = ""; // the key is never shown again
      if (!key) {
        setStatus("Enter an API key first.");
        return;
      }
      localStorage.setItem(STORE.key, key);
      sessionStorage.removeItem(STORE.session); // a conversation belongs to the key that started it
      showKeyState();
      setStatus("API key saved in this browser.");
      $("message").focus();
    });
    $("forget-key").addEventListener("click", () => {
      localStorage.removeItem(STORE.key);
      showKeyState();
      setStatus("API key forgotten.");
      $("api-key").focus();
    });
    $("user-id").addEventListener("change", () => {
      localStorage.setItem(STORE.user, $("user-id").value.trim());
      // A conversation belongs to one user: another user id starts a new one.
      sessionStorage.removeItem(STORE.session);
      setStatus("New user id: a new conversation starts with the next message.");
    });
    $("new-session").addEventListener("click", () => {
      sessionStorage.removeItem(STORE.session);
      $("log").replaceChildren();
      setStatus("New conversation.");
      $("message").focus();
    });

    const composer = $("composer");
    const box = $("message");
    let busy = false;
    composer.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const message = box.value.trim();
      if (!message || busy) return;
      if (!apiKey()) {
        setStatus("Enter and save your API key first.");
        $("api-key").focus();
        return;
      }
      busy = true;
      $("send").disabled = true;
      box.value = "";
      setStatus("");
      addTurn("user", message);
      try {
        await send(message);
      } finally {
        busy = false;
        $("send").disabled = false;
        box.focus();
      }
    });
    box.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        composer.requestSubmit();
      }
    });
  }

  // For the browser test: the renderers and the parser, to feed crafted (hostile) data through the page's own code.
  window.llmrec = Object.freeze({ renderRecommendation, renderNotes, renderError, SSEParser });

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
