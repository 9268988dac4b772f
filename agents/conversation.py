"""The conversational recommender: a LangGraph graph with a fixed, inspectable plan and SQLite memory.

    understand → recommend → explain → reply

- **understand**: llmrec's rules read the message; the LLM fills a small JSON schema under vLLM's grammar
  and may add only what the message supports (`agents.understand`). Titles resolve against the catalog
  (`agents.titles`); an unresolved title becomes a question. "I loved X" is a `like` and "never show me Y"
  a `dislike`, both stored before the turn goes on (`agents.feedback`). A title only mentioned ("something
  like Heat", `Is "Fargo" any good?`, "my kids loved Toy Story") and "more like the second one" anchor
  retrieval on that item, newest last, with nothing stored; "older"/"newer" move the year range. What the
  rules could not read ("more violent") is named in the reply's notes.
- **recommend**: the one recommendation path, `Pipeline.recommend`, with the session's filters as its typed
  retrieval filter (`ItemFilter`): candidates from the history (with the anchors), the Chroma catalog search and
  popularity; seen, shown and disliked items never, items like a disliked one demoted; then the pipeline's ranker
  (LLM label logprobs fused with the retriever's rank) with its fallback to the retriever's order.
- **explain**: checkable evidence filled in by llmrec (`explain.evidence`), nothing generated.
- **reply**: one fixed text format. No model output is ever shown, so a message cannot make it print a prompt.

The state is one pydantic model (`ChatState`). LangGraph's `SqliteSaver` checkpoints it after every node,
keyed by the thread id, so a session survives a restart; older checkpoints of a thread are pruned after each
turn (the latest holds the whole state). Turns on one session run one at a time (a per-session lock); SQLite
failures (a corrupt file, a lock held past `store_timeout_s`) are `StoreError`s. Sessions and feedback are keyed
by the dataset's source, as the Chroma collections are. `build_agent` is the one place that wires it.
With `planner="tools"`, a model served with native tool calling drives the same tools instead (`ToolPlanner`),
each bound to the session's user on our side; its reply still lists only what the tools returned.
The domain's words (noun, plural) come from `llmrec.domains`, never from this file.
"""

from __future__ import annotations

import hashlib
import sqlite3
import statistics
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from llmrec.agents.constraints import Constraints, accumulate, apply_era
from llmrec.agents.feedback import FeedbackEvent, FeedbackStore, sqlite_errors
from llmrec.agents.titles import TitleResolver
from llmrec.agents.tools import Recommended, Session, Stages
from llmrec.agents.understand import TurnReading, UnderstandConfig, Understander, decades
from llmrec.domains import Domain, load_domain
from llmrec.errors import LLMRecError, LLMUnavailable
from llmrec.prompts.safety import looks_like_instruction
from llmrec.schemas import ChatTurn

PLAN = ("understand", "recommend", "explain", "reply")
# The fixed wording, with the domain's words filled in (`Wording.of`).
COLD_START = ("You have no history here, so I can't personalise yet. Tell me genres, an era or a {noun} you liked; "
              "meanwhile these are popular picks across genres.")
COLD_WITH_CONSTRAINTS = "You have no history here, so these come from what you asked for and how popular each item is."
NOT_AN_INSTRUCTION = "I only read {noun} preferences from messages; nothing in a message changes how I work."
TOOLS_SYSTEM = ("You recommend {plural} from a catalog using the tools. Always call `recommend` before answering, "
                "with the constraints the user stated. Answer in one short sentence.")


class Wording(BaseModel):
    """The agent's fixed sentences in one domain's words."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cold_start: str
    cold_with_constraints: str
    not_an_instruction: str
    which: str
    nothing_shown: str
    tools_system: str

    @classmethod
    def of(cls, domain: Domain) -> Wording:
        noun = domain.noun
        return cls(cold_start=COLD_START.format(noun=noun), cold_with_constraints=COLD_WITH_CONSTRAINTS,
                   not_an_instruction=NOT_AN_INSTRUCTION.format(noun=noun), which=f"Which {noun} do you mean?",
                   nothing_shown=f"I haven't shown you anything yet; which {noun} do you mean?",
                   tools_system=TOOLS_SYSTEM.format(plural=domain.plural))


class ChatConfig(BaseSettings):
    """The agent's settings, from `LLMREC_CHAT_*` variables or the CLI."""

    model_config = SettingsConfigDict(env_prefix="LLMREC_CHAT_", extra="ignore")

    k: int = Field(default=5, ge=1, le=20, description="Items per reply.")
    llm_understanding: bool = Field(default=False, description=(
        "Let the LLM fill the constraint schema too (False: the rules alone). Off by default: on 60 simulated users it cost "
        "1.55 of 1.88 s per turn and added no grounded value in 143 calls (it proposed 76 the messages did not support), "
        "and the rules read 40 of 40 held-out phrasings (tests/agents/test_phrasings.py)."))
    planner: Literal["fixed", "tools"] = Field(default="fixed", description="tools: a served model with native tool calling "
                                               "drives the tools (needs --llm-url and a server started with tool calling).")
    store: Path | None = Field(default=None, description="Folder of the SQLite files (checkpoints, feedback); default home/conversations.")
    store_timeout_s: float = Field(default=5.0, gt=0, le=600, description="How long a write waits for another's SQLite lock "
                                   "before the turn fails with StoreError.")
    max_tool_steps: int = Field(default=6, ge=1, le=20)


class ChatState(BaseModel):
    """Everything a session remembers, checkpointed after every node."""

    user_id: str | None = None
    base_history: tuple[str, ...] = ()
    user_key: str = ""
    message: str = ""
    turn: int = 0
    constraints: Constraints = Field(default_factory=Constraints, description="The session's accumulated filters.")
    anchors: tuple[str, ...] = Field(default=(), description="Items retrieval is anchored on ('more like #2', 'I loved X').")
    shown: tuple[str, ...] = Field(default=(), description="The list shown last, in order.")
    shown_before: tuple[str, ...] = Field(default=(), description="Everything shown in this session (not shown again).")
    feedback: tuple[FeedbackEvent, ...] = Field(default=(), description="Acknowledged feedback events of this session.")
    reading: TurnReading | None = None
    questions: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    matched: int = 0
    ranking: str = ""
    recommended: tuple[Recommended, ...] = ()
    reply: str = ""
    trace: tuple[str, ...] = Field(default=(), description="The nodes this turn ran through, in order.")
    seconds: dict[str, float] = Field(default_factory=dict)


class TurnResult(BaseModel):
    """What `Agent.say` returns: the reply and the parts it was made of."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reply: str
    items: tuple[Recommended, ...]
    constraints: Constraints
    matched: int = Field(description="Catalog items that passed the filters this turn.")
    questions: tuple[str, ...]
    notes: tuple[str, ...]
    trace: tuple[str, ...]
    llm_status: str
    seconds: float
    stage_seconds: dict[str, float] = Field(default_factory=dict, description="Seconds per node of the plan.")
    scenario: str | None = Field(default=None, description="The scenario that answered; None while the chat asks which one "
                                 "the person means (`agents.routed`).")
    routed: str = Field(default="", description="Why this scenario, on the turn that routed the session to it (`agents.routed`).")


def _timed(name: str, fn):
    def node(state: ChatState) -> dict:
        started = time.perf_counter()
        update = fn(state)
        update["trace"] = (*(() if name == PLAN[0] else state.trace), name)
        update["seconds"] = {**({} if name == PLAN[0] else state.seconds), **update.get("seconds", {}),
                             name: round(time.perf_counter() - started, 3)}
        return update
    return node


class Agent:
    """A compiled LangGraph graph over `Stages`, with a SQLite checkpointer. `say` may be called from several threads:
    turns of one session run one at a time, turns of different sessions side by side."""

    def __init__(self, stages: Stages, understander: Understander, checkpointer: Any, config: ChatConfig | None = None,
                 planner: ToolPlanner | None = None, domain: Domain | None = None):
        self.stages = stages
        self.understander = understander
        self.config = config or ChatConfig()
        self.planner = planner
        self.checkpointer = checkpointer
        self.words = Wording.of(domain or stages.domain)
        self.vocabulary = sorted({g for item in stages.catalog.values() for g in item.genres})
        self.graph = self._compile(checkpointer)
        self._sessions: dict[str, threading.Lock] = {}
        self._sessions_guard = threading.Lock()

    def _compile(self, checkpointer: Any):
        from langgraph.graph import END, START, StateGraph

        graph = StateGraph(ChatState)
        steps = {"understand": self.understand, "recommend": self.recommend, "explain": self.explain, "reply": self.reply}
        if self.planner is not None:
            steps = {"understand": self.understand, "tools": self.use_tools, "reply": self.reply}
        for name, fn in steps.items():
            graph.add_node(name, _timed(name, fn))
        names = list(steps)
        graph.add_edge(START, names[0])
        for a, b in zip(names, names[1:]):
            graph.add_edge(a, b)
        graph.add_edge(names[-1], END)
        return graph.compile(checkpointer=checkpointer)

    # --- the conversation ------------------------------------------------------------------------

    def say(self, thread: str, message: str, user_id: str | None = None, history: Sequence[str] | None = None) -> TurnResult:
        """One turn. The first turn of a thread fixes its user (a dataset user, an ad-hoc history, or none).
        The input is checked against `llmrec.schemas.LIMITS` first (`InputTooLarge`, exit 2)."""
        turn = ChatTurn(session=thread, message=message, user_id=user_id, history=None if history is None else tuple(history))
        config = {"configurable": {"thread_id": turn.session}}
        started = time.perf_counter()
        with self._session_lock(turn.session), sqlite_errors(self.checkpointer_path):
            update: dict[str, Any] = {"message": turn.message}
            if not self.graph.get_state(config).values:  # a new thread
                base = self.stages.base_history(turn.user_id, turn.history)
                update.update(user_id=turn.user_id, base_history=base, user_key=turn.user_id or f"session:{turn.session}")
            values = self.graph.invoke(update, config)
            prune_checkpoints(self.checkpointer, turn.session)
        state = ChatState.model_validate(values)
        return TurnResult(reply=state.reply, items=state.recommended, constraints=state.constraints, matched=state.matched,
                          questions=state.questions,
                          notes=state.notes, trace=state.trace, llm_status=state.reading.llm_status if state.reading else "off",
                          seconds=round(time.perf_counter() - started, 3), stage_seconds=state.seconds,
                          scenario=self.stages.pipeline.scenario.name)

    def state(self, thread: str) -> ChatState | None:
        with sqlite_errors(self.checkpointer_path):
            values = self.graph.get_state({"configurable": {"thread_id": thread}}).values
        return ChatState.model_validate(values) if values else None

    @property
    def checkpointer_path(self) -> str:
        return getattr(self.checkpointer, "path", "the session store")

    def _session_lock(self, thread: str) -> threading.Lock:
        with self._sessions_guard:
            return self._sessions.setdefault(thread, threading.Lock())

    # --- the nodes -------------------------------------------------------------------------------

    def understand(self, state: ChatState) -> dict:
        reading = self.understander.read(state.message)
        turn = reading.merged
        questions: list[str] = []
        events, anchors, fresh = self._feedback(state, turn, questions)
        filters = accumulate(state.constraints, turn)
        if turn.reset:  # "instead": earlier anchors go too, this turn's (likes, mentions, '#2') stay
            anchors = [a for a in anchors if a in fresh]
        filters = apply_era(filters, turn.era, self._reference_year(anchors, state.shown))
        notes = [self.words.not_an_instruction] if looks_like_instruction(state.message) else []
        unread = [_quoted(u) for u in turn.unread if not looks_like_instruction(u)] if not notes else []
        if unread:
            notes.append(f"I couldn't read: {'; '.join(unread)}")
        return {"reading": reading, "constraints": filters.validated(self.vocabulary), "anchors": newest_last(anchors)[-3:],
                "feedback": (*state.feedback, *events), "questions": tuple(questions), "notes": tuple(notes), "turn": state.turn + 1}

    def _feedback(self, state: ChatState, turn: Constraints, questions: list[str]) -> tuple[list[FeedbackEvent], list[str], set[str]]:
        """Liked titles become `like` events and anchors, excluded ones `dislike` events; mentioned titles ('something
        like Heat', 'Is "Fargo" any good?') and '#2' become anchors with no event stored. Returns the events, the
        anchors (newest last) and this turn's own anchors."""
        liked = self._resolve(turn.liked_titles, questions)
        excluded = self._resolve(turn.excluded_titles, questions)
        mentioned = [i for i in self._resolve(turn.mentions, questions) if i not in liked]
        events = [self.stages.record_feedback(state.user_key, item, "like") for item in liked]
        events += [self.stages.record_feedback(state.user_key, item, "dislike") for item in excluded]
        fresh = [*liked, *mentioned]
        if turn.more_like is not None:
            if 1 <= turn.more_like <= len(state.shown):
                fresh.append(state.shown[turn.more_like - 1])
            else:
                questions.append(f"I showed {len(state.shown)} items last time, so there is no #{turn.more_like}; which one do you mean?"
                                 if state.shown else self.words.nothing_shown)
        anchors = [a for a in (*state.anchors, *fresh) if a not in excluded]
        return events, anchors, set(fresh) - set(excluded)

    def _resolve(self, titles: Sequence[str], questions: list[str]) -> list[str]:
        """Catalog ids of the titles that resolve; a question for each that does not."""
        matches = self.stages.resolver.resolve_all(titles)
        for m in matches:
            if m.item_id is None:
                hint = f' Did you mean "{self.stages.catalog[m.suggestion].label()}"?' if m.suggestion else ""
                asked = "that title" if looks_like_instruction(m.query) else f'"{_quoted(m.query)}"'
                questions.append(f"I couldn't find {asked} in the catalog.{hint} {self.words.which}")
        return [m.item_id for m in matches if m.item_id]

    def _reference_year(self, anchors: Sequence[str], shown: Sequence[str]) -> int | None:
        years = [self.stages.catalog[i].year for i in (anchors[-1:] or shown) if self.stages.catalog[i].year]
        return int(statistics.median(years)) if years else None

    def recommend(self, state: ChatState) -> dict:
        """`Pipeline.recommend` (through `Stages.recommend`) under the session's filters, anchors and shown items."""
        out = self.stages.recommend(state.user_key, state.base_history, state.constraints, self.config.k, state.anchors,
                                    state.shown_before, explain=False)
        notes = [*state.notes, *out.notes]
        if out.ranking == "cold-start":
            notes.append(self.words.cold_with_constraints if not state.constraints.is_empty() or state.anchors else self.words.cold_start)
        return {"recommended": out.items, "matched": out.matched, "ranking": out.ranking, "notes": tuple(notes),
                "seconds": {f"recommend:{stage}": s for stage, s in out.seconds.items()}}

    def explain(self, state: ChatState) -> dict:
        anchor = state.anchors[-1] if state.anchors else None
        return {"recommended": tuple(
            r.model_copy(update={"why": self.stages.explain(state.user_key, r.item.item_id, state.base_history, state.constraints, anchor)})
            for r in state.recommended)}

    def reply(self, state: ChatState) -> dict:
        shown = tuple(r.item.item_id for r in state.recommended)
        anchor = self.stages.catalog[state.anchors[-1]].label() if state.anchors else None
        return {"reply": format_reply(state, anchor), "shown": shown, "shown_before": tuple(dict.fromkeys((*state.shown_before, *shown)))}

    def use_tools(self, state: ChatState) -> dict:
        """planner='tools': the served model calls the tools; the list shown is the last `recommend` result."""
        assert self.planner is not None
        session = Session(user_key=state.user_key, base_history=state.base_history, filters=state.constraints,
                          anchors=state.anchors, shown_before=state.shown_before)
        items, text = self.planner.run(state, session)
        notes = (*state.notes, *((f"model: {text}",) if text else ()))
        return {"recommended": tuple(items), "notes": notes, "ranking": "tools"}


def newest_last(items: Sequence[str]) -> tuple[str, ...]:
    """Each item once, at its last position: an item asked for again becomes the newest (`dict.fromkeys` keeps the first)."""
    return tuple(reversed(dict.fromkeys(reversed(items))))


def _quoted(text: str) -> str:
    return " ".join(text.replace('"', "'").split())[:80]


def format_reply(state: ChatState, anchor: str | None = None) -> str:
    """The one reply format: what is applied, questions, notes, then the numbered list with its evidence.
    `anchor` is the label of the item retrieval is anchored on."""
    lines: list[str] = []
    applied = state.constraints.describe()
    looking = [p for p in (applied, f"close to {anchor}" if anchor else "") if p]
    lines.append(f"Looking for: {' · '.join(looking) if looking else 'anything you might like'}")
    lines += [f"? {q}" for q in state.questions]
    lines += [f"note: {n}" for n in state.notes]
    for r in state.recommended:
        genres = ", ".join(r.item.genres) or "no genre listed"
        lines.append(f"{r.rank}. {r.item.label()} [{genres}]")
        lines.append(f"   why: {r.why}")
    if not state.recommended:
        lines.append("(nothing to show)")
    return "\n".join(lines)


class ToolPlanner:
    """A chat model with native tool calling (e.g. `ChatOpenAI(base_url=...)` against a vLLM server started with
    `--enable-auto-tool-choice`) runs the tools for a turn. Tool arguments are validated by the tools' pydantic
    schemas; an invalid call gets the error back as the tool's answer. The list shown comes from the last
    `recommend` result, so it holds only catalog items.

    The first step names `first_tool` as the request's `tool_choice` (vLLM decodes the call under that tool's JSON
    schema, so even SmolLM2-135M makes a well-formed call); later steps leave the choice to the model. None leaves
    every step to the model. vLLM 0.32 refuses any `tool_choice` unless the server has a tool parser
    (`llmrec serve-llm --tool-call-parser NAME`).

    Every tool is built for the turn's `Session` (`langchain_tools(stages, session)`): the user, the history, the
    filters and the shown items are ours, and no tool takes a user, so the model can neither name nor reach another
    user, whatever the message says."""

    def __init__(self, model: Any, stages: Stages, max_steps: int = 6, first_tool: str | None = "recommend",
                 system: str | None = None):
        self.base_model = model
        self.first_tool = first_tool
        self.stages = stages
        self.max_steps = max_steps
        self.system = system or Wording.of(stages.domain).tools_system
        self.tools: dict[str, Any] = {}

    def run(self, state: ChatState, session: Session) -> tuple[list[Recommended], str]:
        from langchain_core.messages import HumanMessage, SystemMessage, ToolMessage

        from llmrec.agents.tools import langchain_tools

        tools = langchain_tools(self.stages, session)
        self.tools = {t.name: t for t in tools}
        model = self.base_model.bind_tools(tools)
        first = self.base_model.bind_tools(tools, tool_choice=self.first_tool) if self.first_tool else model
        messages: list[Any] = [SystemMessage(self.system), HumanMessage(state.message)]
        last: dict | None = None
        for step in range(self.max_steps):
            try:
                answer = (first if step == 0 else model).invoke(messages)
            except Exception as exc:  # noqa: BLE001 - openai/langchain raise many types; one clear line
                raise LLMUnavailable(f"the served model's tool calling failed ({type(exc).__name__}: {' '.join(str(exc).split())[:300]}); "
                                     "start the server with `llmrec serve-llm --tool-call-parser NAME`") from exc
            messages.append(answer)
            if not answer.tool_calls:
                break
            for call in answer.tool_calls:
                result, last = self._call(call, last)
                messages.append(ToolMessage(content=str(result)[:4000], tool_call_id=call["id"]))
        items = [Recommended(rank=n + 1, item=self.stages.catalog[c["item_id"]], score=0.0, why=c.get("why", ""))
                 for n, c in enumerate((last or {}).get("items", [])) if c.get("item_id") in self.stages.catalog]
        text = messages[-1].content if isinstance(messages[-1].content, str) and not getattr(messages[-1], "tool_calls", None) else ""
        return items, "" if looks_like_instruction(text) else " ".join(text.split())[:300]

    def _call(self, call: dict, last: dict | None) -> tuple[Any, dict | None]:
        tool = self.tools.get(call["name"])
        if tool is None:
            return f"error: no tool named {call['name']!r}", last
        try:
            result = tool.invoke(call["args"])
        except Exception as exc:  # noqa: BLE001 - a bad call is answered, not raised: the model may correct it
            return f"error: {type(exc).__name__}: {exc}"[:500], last
        return result, result if call["name"] == "recommend" else last


# --- wiring ----------------------------------------------------------------------------------------


def checkpointer(path: Path, timeout_s: float = 5.0) -> Any:
    """LangGraph's SQLite checkpointer on `path`, allowed to load llmrec's state types back.

    WAL with `synchronous=FULL`: each checkpoint's commit is on disk (the WAL fsynced) before the node after it runs,
    so a turn whose reply was given survives a power loss, not only a crash of the process. NORMAL would be safe
    from corruption in WAL mode but may lose the last commits on power loss; the fsync costs ~ms against a turn of
    ~1 s. The feedback store makes the same choice. A corrupt file or a lock held past `timeout_s` is a `StoreError`."""
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
    from langgraph.checkpoint.sqlite import SqliteSaver

    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite_errors(path):
        conn = sqlite3.connect(path, check_same_thread=False, timeout=timeout_s)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        allowed = [("llmrec.agents.constraints", "Constraints"), ("llmrec.agents.feedback", "FeedbackEvent"),
                   ("llmrec.agents.understand", "TurnReading"), ("llmrec.agents.understand", "Extraction"),
                   ("llmrec.agents.tools", "Recommended"), ("llmrec.schemas", "Candidate"), ("llmrec.schemas", "Item")]
        saver = SqliteSaver(conn, serde=JsonPlusSerializer(allowed_msgpack_modules=allowed))
        saver.setup()
    saver.path = str(path)  # named in StoreError messages
    return saver


def prune_checkpoints(saver: Any, thread: str) -> int:
    """Delete every checkpoint of `thread` but the latest of each namespace, with their pending writes; returns the
    rows deleted. Safe here: `SqliteSaver` stores each checkpoint's channel values whole (no delta channels in
    `ChatState`), so the latest alone restores the session."""
    if not hasattr(saver, "conn"):
        return 0
    keep = ("SELECT checkpoint_ns, MAX(checkpoint_id) FROM checkpoints WHERE thread_id = ? GROUP BY checkpoint_ns")
    with saver.lock, saver.conn:  # one transaction
        writes = saver.conn.execute(f"DELETE FROM writes WHERE thread_id = ? AND (checkpoint_ns, checkpoint_id) NOT IN ({keep})",
                                    (thread, thread)).rowcount
        rows = saver.conn.execute(f"DELETE FROM checkpoints WHERE thread_id = ? AND (checkpoint_ns, checkpoint_id) NOT IN ({keep})",
                                  (thread, thread)).rowcount
    return writes + rows


def store_name(dataset: Any) -> str:
    """The file-name key of a dataset's sessions and feedback: its source, as for its Chroma collection. A built-in's
    source is its name (the files keep their names); a folder's is its resolved path, so two folders called `data`,
    or a folder called `ml-100k`, never share feedback or sessions."""
    if dataset.source == dataset.name:
        return dataset.name
    return f"{dataset.name}-{hashlib.sha256(dataset.source.encode()).hexdigest()[:12]}"


def chat_model(settings: Any, pipeline: Any) -> Any:
    """The LLM as a LangChain chat model: `ChatOpenAI` against `llmrec serve-llm` when `llm_url` is set (the scenario's
    adapter as the model name), else a wrapper over the pipeline's in-process engine."""
    if settings.llm_url:
        from langchain_openai import ChatOpenAI

        adapter = pipeline.scenario.adapter
        return ChatOpenAI(base_url=settings.llm_url, model=adapter.name if adapter else pipeline.engine.model_name, api_key="EMPTY",
                          max_retries=0, timeout=settings.llm_timeout_s, temperature=0.0,
                          max_tokens=128)  # a turn's answer is one short sentence; unbounded, a CPU server may run to the context limit
    from llmrec.agents.chat_models import EngineChatModel

    return EngineChatModel(engine=pipeline.engine)


def check_planner(config: ChatConfig, settings: Any) -> None:
    """The 'tools' planner needs a served model with native tool calling (`--llm-url`): refused before any chat starts."""
    if config.planner == "tools" and not settings.llm_url:
        raise LLMRecError("the 'tools' planner needs a served model with tool calling: give --llm-url")


def build_agent(settings: Any, scenario: str | None = None, *, pipeline: Any = None, config: ChatConfig | None = None,
                model: Any = None, train_histories: Mapping[str, Sequence[str]] | None = None, progress: bool = True,
                domain: Domain | None = None) -> Agent:
    """The one place the conversational agent is wired: pipeline stages, feedback store, title resolver, the
    LLM for understanding (and for tool calling), the SQLite checkpointer. `train_histories` (the eval) restricts
    what the retriever, popularity and co-watch figures are fitted on; a given `pipeline` must be fitted on the same."""
    from llmrec.pipeline import build_pipeline

    config = config or ChatConfig()
    if pipeline is None:  # no scenario: build_pipeline's default
        named = {"scenario_name": scenario} if scenario else {}
        pipeline = build_pipeline(settings, **named, train_histories=train_histories, progress=progress)
    folder = config.store or settings.resolved_home() / "conversations"
    items = list(pipeline.dataset.items.values())
    domain = domain or load_domain(pipeline.scenario.domain)
    key = store_name(pipeline.dataset)
    store = FeedbackStore(folder / f"feedback-{key}.sqlite", pipeline.dataset.items, timeout_s=config.store_timeout_s)
    resolver = TitleResolver(items, pipeline.dataset.popularity(), pipeline.index)
    stages = Stages(pipeline, store, resolver, train_histories, domain)
    model = model if model is not None else chat_model(settings, pipeline)
    understander = Understander(model, {g for i in items for g in i.genres}, decades(i.year for i in items),
                                UnderstandConfig(use_llm=config.llm_understanding), is_title=resolver.is_title, domain=domain)
    check_planner(config, settings)
    planner = ToolPlanner(model, stages, config.max_tool_steps) if config.planner == "tools" else None
    return Agent(stages, understander, checkpointer(folder / f"checkpoints-{key}.sqlite", config.store_timeout_s), config, planner, domain)
