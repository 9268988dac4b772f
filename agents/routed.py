"""A chat over every scenario: a session that names none is routed when it starts, then stays bound to that scenario.

`RoutedChat.say(session, message, user_id=None, history=None)` answers like `Agent.say`, for the CLI's `llmrec chat`
without `--scenario` and for the service's chat endpoint alike. A new session is routed by `pipeline.routing.Router`:
- by its history (the catalog that holds every item) or its user (the dataset that holds the id), when given;
- else by its first message (MiniLM similarity to each scenario's description, with a margin over the runner-up).
The turn that routes it names the scenario and why on its reply's first line. When no single scenario fits but each
of a few would (an ambiguous or unmatched text, ids in several catalogs: `NoRoute.askable`), the reply is a question
naming them ("Do you mean movies (MovieLens-100K, all movies) or books (Book-Crossing …)?"); the next message picks
one (its name, its domain's word, its dataset's name, or its number) and the first message is then answered there.
A history or user that no scenario can serve raises the `NoRoute` (exit 3): that request has to change.

One agent per scenario is built on first use and shared by every session bound to it, all on one LLM engine. Which
scenario each session is bound to (or which question it was asked) is kept in SQLite beside the chat's other stores,
so a session continued in a new process stays where it started.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from llmrec.agents.constraints import Constraints
from llmrec.agents.conversation import Agent, ChatConfig, TurnResult, build_agent, check_planner
from llmrec.agents.feedback import sqlite_errors
from llmrec.errors import NoRoute, UnknownScenario
from llmrec.pipeline.routing import Route, Router, RouterConfig
from llmrec.schemas import ChatTurn
from llmrec.text import fold

_ORDINALS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5}
_CLI_ADVICE = re.compile(r";? ?name the scenario with --scenario$")


class _Bindings:
    """session → the scenario it is bound to, or the question it was asked (the options, its first turn)."""

    def __init__(self, path: Path, timeout_s: float):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with sqlite_errors(path):
            self.conn = sqlite3.connect(path, check_same_thread=False, timeout=timeout_s)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            self.conn.execute("CREATE TABLE IF NOT EXISTS routes (session TEXT PRIMARY KEY, scenario TEXT, reason TEXT, "
                              "options TEXT, message TEXT, user_id TEXT, history TEXT, ts REAL)")
        self.lock = threading.Lock()

    def get(self, session: str) -> dict[str, Any] | None:
        with self.lock, sqlite_errors(self.path):
            row = self.conn.execute("SELECT scenario, reason, options, message, user_id, history FROM routes WHERE session = ?",
                                    (session,)).fetchone()
        if row is None:
            return None
        scenario, reason, options, message, user_id, history = row
        return {"scenario": scenario, "reason": reason or "", "options": tuple(json.loads(options or "[]")),
                "message": message or "", "user_id": user_id, "history": None if history is None else tuple(json.loads(history))}

    def put(self, session: str, scenario: str | None, reason: str = "", options: Sequence[str] = (), message: str = "",
            user_id: str | None = None, history: Sequence[str] | None = None) -> None:
        with self.lock, sqlite_errors(self.path), self.conn:
            self.conn.execute("INSERT OR REPLACE INTO routes VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                              (session, scenario, reason, json.dumps(list(options)), message, user_id,
                               None if history is None else json.dumps(list(history)), time.time()))


class RoutedChat:
    """Chat sessions over every scenario in the home (or `scenarios`), each bound to one scenario when it starts.

    `engine`: the LLM engine every scenario's pipeline shares (default: the first pipeline built makes one).
    `build`: scenario name → its `Agent` (default: `build_agent` on a pipeline over the shared engine), for a service
    that wires its own. `answers`: the similarity rule for an answer that names no option. Safe to call from several
    threads: turns of one session run one at a time, and an agent being built holds up only the turns that need it."""

    def __init__(self, settings: Any, *, config: ChatConfig | None = None, scenarios: Sequence[str] | None = None,
                 engine: Any = None, router: Router | None = None, build: Callable[[str], Agent] | None = None,
                 answers: RouterConfig | None = None, progress: bool = False):
        self.settings = settings
        self.config = config or ChatConfig()
        check_planner(self.config, settings)  # here, not when the first agent is built: a session that asks "which scenario?" builds none
        self.router = router or Router(settings, scenarios)
        self.answers = answers or RouterConfig(margin=0.10, min_similarity=0.30)
        """How clearly an answer to "which do you mean?" must be like one option's description when it names none
        ("a novel, I think"): stricter than a first message's routing, since "hmm" is no choice."""
        self.engine = engine
        self.progress = progress
        self._build = build or self._build_agent
        self._agents: dict[str, Agent] = {}
        self._building = threading.Lock()
        self._sessions: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        folder = self.config.store or settings.resolved_home() / "conversations"
        self.bindings = _Bindings(folder / "routes.sqlite", self.config.store_timeout_s)

    # --- the conversation ------------------------------------------------------------------------

    def say(self, session: str, message: str, user_id: str | None = None, history: Sequence[str] | None = None) -> TurnResult:
        """One turn: the bound scenario's agent answers; a new session is routed first (see the module's docstring)."""
        turn = ChatTurn(session=session, message=message, user_id=user_id, history=None if history is None else tuple(history))
        started = time.perf_counter()
        with self._lock(turn.session):
            bound = self.bindings.get(turn.session)
            if bound is not None and bound["scenario"]:
                return self.agent(bound["scenario"]).say(turn.session, turn.message, turn.user_id, turn.history)
            if bound is not None:  # the person was asked which scenario they mean: this message answers
                picked = self.pick(turn.message, bound["options"])
                if picked is None:
                    return self._ask(turn, bound["options"], "I couldn't tell which one from your answer", started, bound)
                first = {"user_id": turn.user_id or bound["user_id"], "history": turn.history or bound["history"]}
                route = Route(picked, f"routed to {picked}: you chose it (of {', '.join(bound['options'])})")
                return self._start(turn.session, route, bound["message"], **first)
            try:
                route = self.route(turn.message, turn.user_id, turn.history)
            except NoRoute as refused:
                if not refused.askable:
                    raise
                return self._ask(turn, self._close(refused.options), str(refused), started)
            return self._start(turn.session, route, turn.message, turn.user_id, turn.history)

    def route(self, message: str = "", user_id: str | None = None, history: Sequence[str] | None = None) -> Route:
        """The scenario for a new session: by its history, else its user, else its message (`NoRoute` when none fits)."""
        if history:
            return self.router.for_history(history)
        if user_id is not None:
            return self.router.for_user(user_id)
        return self.router.for_text(message)

    def bind(self, session: str, scenario: str) -> None:
        """Bind `session` to `scenario` named by the caller (`--scenario`); a session bound elsewhere is refused."""
        with self._lock(session):
            bound = self.bindings.get(session)
            if bound is not None and bound["scenario"] and bound["scenario"] != scenario:
                raise UnknownScenario(f"session {session!r} belongs to scenario {bound['scenario']!r}; continue it without "
                                      f"--scenario or with --scenario {bound['scenario']}, or start another session")
            if bound is None or not bound["scenario"]:
                self.bindings.put(session, scenario, "named by the caller")

    def scenario(self, session: str) -> str | None:
        """The scenario `session` is bound to; None for a new session or one that was asked which scenario it means."""
        bound = self.bindings.get(session)
        return bound["scenario"] if bound else None

    def agent(self, scenario: str) -> Agent:
        """The scenario's agent, built on first use (one at a time, so two sessions never build the same one twice)."""
        if (built := self._agents.get(scenario)) is not None:
            return built
        with self._building:
            if scenario not in self._agents:
                self._agents[scenario] = self._build(scenario)
                if self.engine is None:
                    self.engine = self._agents[scenario].stages.pipeline.engine
            return self._agents[scenario]

    def pick(self, answer: str, options: Sequence[str]) -> str | None:
        """The option an answer names: a scenario's own name first, then its domain's words or its dataset's name, then
        its number ("2", "the second"), then the answer's similarity to the options' descriptions; None if still unclear."""
        text = fold(answer).lower()
        named = [o for o in options if _says(text, o)]
        if len(named) == 1:
            return named[0]
        worded = [o for o in options if any(_says(text, w) for w in self._words(o))]
        if len(worded) == 1:
            return worded[0]
        numbers = {int(n) for n in re.findall(r"\b\d\b", text)} | {v for k, v in _ORDINALS.items() if _says(text, k)}
        if numbers:
            n = numbers.pop() if len(numbers) == 1 else 0
            return options[n - 1] if 1 <= n <= len(options) else None
        try:
            return Router(self.settings, options, self.answers, embedder=self.router.embedder()).for_text(answer).scenario
        except NoRoute:
            return None

    # --- helpers ---------------------------------------------------------------------------------

    def _start(self, session: str, route: Route, message: str, user_id: str | None, history: Sequence[str] | None) -> TurnResult:
        agent = self.agent(route.scenario)
        result = agent.say(session, message, user_id, history)  # before binding: a bad user or item leaves no binding
        self.bindings.put(session, route.scenario, route.reason)
        line = route.reason[:1].upper() + route.reason[1:]
        return result.model_copy(update={"reply": f"{line}\n{result.reply}", "routed": route.reason})

    def _ask(self, turn: ChatTurn, options: Sequence[str], why: str, started: float, bound: dict | None = None) -> TurnResult:
        """A question naming the options; the session remembers them, and its first message, user and history."""
        first = bound or {"message": turn.message, "user_id": turn.user_id, "history": turn.history}
        self.bindings.put(turn.session, None, "", options, first["message"], first["user_id"], first["history"])
        named = [self.router.describe(o) for o in options]
        question = f"Do you mean {', '.join(named[:-1])} or {named[-1]}? Answer with its name." if len(named) > 1 else (
            f"Do you mean {named[0]}? Answer with its name.")
        note = _CLI_ADVICE.sub("", why)
        return TurnResult(reply=f"? {question}\nnote: {note}", items=(), constraints=Constraints(), matched=0,
                          questions=(question,), notes=(note,), trace=("route",), llm_status="off",
                          seconds=round(time.perf_counter() - started, 3))

    def _close(self, options: Sequence[tuple[str, float]]) -> tuple[str, ...]:
        """The options worth asking about, best first: those within the router's margin of the best when that leaves
        several (movies and movies-1m for "a funny movie", not books far behind), else the best three."""
        best = max((score for _, score in options), default=0.0)
        near = tuple(name for name, score in options if score >= best - self.router.config.margin)
        return near if len(near) > 1 else tuple(name for name, _ in options[:3])

    def _words(self, scenario: str) -> set[str]:
        """The words that name a scenario's domain in an answer: its noun, plural and item words ("film"), and its
        dataset's name; not the generic domain's ("item", "thing")."""
        from llmrec.domains import GENERIC, load_domain
        from llmrec.scenario import load_scenario

        found = load_scenario(scenario, self.router.home)
        domain = load_domain(found.domain)
        words = {domain.noun, domain.plural, found.domain, *domain.item_words, Path(found.dataset).name}
        return words - {GENERIC.noun, GENERIC.plural, *GENERIC.item_words, ""}

    def _build_agent(self, scenario: str) -> Agent:
        from llmrec.pipeline import build_pipeline

        pipeline = build_pipeline(self.settings, scenario, engine=self.engine, progress=self.progress)
        return build_agent(self.settings, pipeline=pipeline, config=self.config)

    def _lock(self, session: str) -> threading.Lock:
        with self._guard:
            return self._sessions.setdefault(session, threading.Lock())


def _says(text: str, word: str) -> bool:
    """Whether `text` (folded, lowercase) holds `word` as a whole word ('movies' is not in 'movies-1m')."""
    return bool(re.search(rf"(?<![\w-]){re.escape(fold(word).lower())}(?![\w-])", text))


__all__ = ["RoutedChat"]
