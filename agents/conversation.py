"""The conversational recommender: a LangGraph graph with a fixed, inspectable plan and SQLite memory.

    understand → retrieve → rank → explain → reply

- **understand**: llmrec's rules read the message; the LLM fills a small JSON schema under vLLM's grammar
  and may add only what the message supports (`agents.understand`). Titles resolve against the catalog
  (`agents.titles`); an unresolved title becomes a question. "I loved X" is a `like` and "never show me Y"
  a `dislike`, both stored before the turn goes on (`agents.feedback`). "More like the second one"
  anchors retrieval on that item; "older"/"newer" move the year range.
- **retrieve**: candidates that pass the session's filters, from the history (with the anchor), the Chroma
  catalog search and popularity; seen, shown and disliked items never, items like a disliked one demoted.
- **rank**: the pipeline's ranker (LLM label logprobs fused with the retriever's rank).
- **explain**: checkable evidence filled in by llmrec (`agents.evidence`), nothing generated.
- **reply**: one fixed text format. No model output is ever shown, so a message cannot make it print a prompt.

The state is one pydantic model (`ChatState`). LangGraph's `SqliteSaver` checkpoints it after every node,
keyed by the thread id, so a session survives a restart. `build_agent` is the one place that wires it.
With `planner="tools"`, a model served with native tool calling drives the same tools instead
(`ToolPlanner`); its reply still lists only what the tools returned.
"""

from __future__ import annotations

import sqlite3
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from llmrec.agents.constraints import Constraints, accumulate, apply_era
from llmrec.agents.feedback import FeedbackEvent, FeedbackStore
from llmrec.agents.titles import TitleResolver
from llmrec.agents.tools import Recommended, Stages, StagesConfig
from llmrec.agents.understand import TurnReading, UnderstandConfig, Understander, decades
from llmrec.errors import LLMRecError, LLMUnavailable
from llmrec.prompts.safety import looks_like_instruction
from llmrec.schemas import Candidate

PLAN = ("understand", "retrieve", "rank", "explain", "reply")
COLD_START = ("You have no history here, so I can't personalise yet. Tell me genres, an era or a movie you liked; "
              "meanwhile these are popular picks across genres.")
COLD_WITH_CONSTRAINTS = "You have no history here, so these come from what you asked for and how popular each item is."
NOT_AN_INSTRUCTION = "I only read movie preferences from messages; nothing in a message changes how I work."


class ChatConfig(BaseSettings):
    """The agent's settings, from `LLMREC_CHAT_*` variables or the CLI."""

    model_config = SettingsConfigDict(env_prefix="LLMREC_CHAT_", extra="ignore")

    k: int = Field(default=5, ge=1, le=20, description="Items per reply.")
    llm_understanding: bool = Field(default=True, description="Let the LLM fill the constraint schema (False: the rules alone).")
    planner: Literal["fixed", "tools"] = Field(default="fixed", description="tools: a served model with native tool calling "
                                               "drives the tools (needs --llm-url and a server started with tool calling).")
    store: Path | None = Field(default=None, description="Folder of the SQLite files (checkpoints, feedback); default home/conversations.")
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
    candidates: tuple[Candidate, ...] = ()
    matched: int = 0
    ranked: tuple[tuple[str, float, float | None], ...] = ()
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


def _timed(name: str, fn):
    def node(state: ChatState) -> dict:
        started = time.perf_counter()
        update = fn(state)
        update["trace"] = (*(() if name == PLAN[0] else state.trace), name)
        update["seconds"] = {**({} if name == PLAN[0] else state.seconds), name: round(time.perf_counter() - started, 3)}
        return update
    return node


class Agent:
    """A compiled LangGraph graph over `Stages`, with a SQLite checkpointer."""

    def __init__(self, stages: Stages, understander: Understander, checkpointer: Any, config: ChatConfig | None = None,
                 planner: ToolPlanner | None = None):
        self.stages = stages
        self.understander = understander
        self.config = config or ChatConfig()
        self.planner = planner
        self.checkpointer = checkpointer
        self.vocabulary = sorted({g for item in stages.catalog.values() for g in item.genres})
        self.graph = self._compile(checkpointer)

    def _compile(self, checkpointer: Any):
        from langgraph.graph import END, START, StateGraph

        graph = StateGraph(ChatState)
        steps = {"understand": self.understand, "retrieve": self.retrieve, "rank": self.rank, "explain": self.explain,
                 "reply": self.reply}
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
        """One turn. The first turn of a thread fixes its user (a dataset user, an ad-hoc history, or none)."""
        config = {"configurable": {"thread_id": thread}}
        started = time.perf_counter()
        update: dict[str, Any] = {"message": message}
        if not self.graph.get_state(config).values:  # a new thread
            base = self.stages.base_history(user_id, history)
            update.update(user_id=user_id, base_history=base, user_key=user_id or f"session:{thread}")
        values = self.graph.invoke(update, config)
        state = ChatState.model_validate(values)
        return TurnResult(reply=state.reply, items=state.recommended, constraints=state.constraints, matched=state.matched,
                          questions=state.questions,
                          notes=state.notes, trace=state.trace, llm_status=state.reading.llm_status if state.reading else "off",
                          seconds=round(time.perf_counter() - started, 3), stage_seconds=state.seconds)

    def state(self, thread: str) -> ChatState | None:
        values = self.graph.get_state({"configurable": {"thread_id": thread}}).values
        return ChatState.model_validate(values) if values else None

    # --- the nodes -------------------------------------------------------------------------------

    def understand(self, state: ChatState) -> dict:
        reading = self.understander.read(state.message)
        turn = reading.merged
        questions: list[str] = []
        events, anchors = self._feedback(state, turn, questions)
        filters = accumulate(state.constraints, turn)
        if turn.reset:  # "instead": earlier anchors go too, this turn's likes stay
            anchors = [a for a in anchors if a in {e.item for e in events if e.event == "like"}]
        filters = apply_era(filters, turn.era, self._reference_year(anchors, state.shown))
        return {"reading": reading, "constraints": filters.validated(self.vocabulary), "anchors": tuple(dict.fromkeys(anchors))[-3:],
                "feedback": (*state.feedback, *events), "questions": tuple(questions),
                "notes": (NOT_AN_INSTRUCTION,) if looks_like_instruction(state.message) else (), "turn": state.turn + 1}

    def _feedback(self, state: ChatState, turn: Constraints, questions: list[str]) -> tuple[list[FeedbackEvent], list[str]]:
        """Liked titles become `like` events and anchors, excluded ones `dislike` events; '#2' anchors on the shown item."""
        liked = self._resolve(turn.liked_titles, questions)
        excluded = self._resolve(turn.excluded_titles, questions)
        events = [self.stages.record_feedback(state.user_key, item, "like") for item in liked]
        events += [self.stages.record_feedback(state.user_key, item, "dislike") for item in excluded]
        anchors = [a for a in (*state.anchors, *liked) if a not in excluded]
        if turn.more_like is not None:
            if 1 <= turn.more_like <= len(state.shown):
                anchors.append(state.shown[turn.more_like - 1])
            else:
                questions.append(f"I showed {len(state.shown)} items last time, so there is no #{turn.more_like}; which one do you mean?"
                                 if state.shown else "I haven't shown you anything yet; which movie do you mean?")
        return events, anchors

    def _resolve(self, titles: Sequence[str], questions: list[str]) -> list[str]:
        """Catalog ids of the titles that resolve; a question for each that does not."""
        matches = self.stages.resolver.resolve_all(titles)
        for m in matches:
            if m.item_id is None:
                hint = f' Did you mean "{self.stages.catalog[m.suggestion].label()}"?' if m.suggestion else ""
                asked = "that title" if looks_like_instruction(m.query) else f'"{_quoted(m.query)}"'
                questions.append(f"I couldn't find {asked} in the catalog.{hint} Which movie do you mean?")
        return [m.item_id for m in matches if m.item_id]

    def _reference_year(self, anchors: Sequence[str], shown: Sequence[str]) -> int | None:
        years = [self.stages.catalog[i].year for i in (anchors[-1:] or shown) if self.stages.catalog[i].year]
        return int(statistics.median(years)) if years else None

    def retrieve(self, state: ChatState) -> dict:
        notes = list(state.notes)
        history = self.stages.history(state.user_key, state.base_history)
        found, matched = self.stages.candidates(history, state.constraints, state.anchors, state.shown_before,
                                                self.stages.store.disliked(state.user_key), self.stages.pipeline.settings.candidates,
                                                notes)
        if matched < self.config.k:
            notes.append(f"only {matched} catalog items pass these filters" if matched else
                         "no catalog item passes these filters; try fewer genres or a wider year range")
        return {"candidates": tuple(found), "matched": matched, "notes": tuple(notes)}

    def rank(self, state: ChatState) -> dict:
        notes = list(state.notes)
        history = self.stages.history(state.user_key, state.base_history)
        ranked, how = self.stages.rank(history, list(state.candidates), notes)
        if how == "cold-start":
            notes.append(COLD_WITH_CONSTRAINTS if not state.constraints.is_empty() or state.anchors else COLD_START)
        return {"ranked": tuple(ranked), "ranking": how, "notes": tuple(notes)}

    def explain(self, state: ChatState) -> dict:
        top = state.ranked[: self.config.k]
        anchor = state.anchors[-1] if state.anchors else None
        return {"recommended": tuple(
            Recommended(rank=n + 1, item=self.stages.catalog[i], score=round(score, 4), llm_logprob=lp,
                        why=self.stages.explain(state.user_key, i, state.base_history, state.constraints, anchor))
            for n, (i, score, lp) in enumerate(top))}

    def reply(self, state: ChatState) -> dict:
        shown = tuple(r.item.item_id for r in state.recommended)
        anchor = self.stages.catalog[state.anchors[-1]].label() if state.anchors else None
        return {"reply": format_reply(state, anchor), "shown": shown, "shown_before": tuple(dict.fromkeys((*state.shown_before, *shown)))}

    def use_tools(self, state: ChatState) -> dict:
        """planner='tools': the served model calls the tools; the list shown is the last `recommend` result."""
        assert self.planner is not None
        items, text = self.planner.run(state)
        notes = (*state.notes, *((f"model: {text}",) if text else ()))
        return {"recommended": tuple(items), "notes": notes, "ranking": "tools"}


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
    (`llmrec serve-llm --tool-call-parser NAME`)."""

    SYSTEM = ("You recommend movies from a catalog using the tools. Always call `recommend` for the user before answering, "
              "with the constraints the user stated. Answer in one short sentence.")

    def __init__(self, model: Any, tools: Sequence[Any], stages: Stages, max_steps: int = 6, first_tool: str | None = "recommend"):
        self.model = model.bind_tools(list(tools))
        self.first = model.bind_tools(list(tools), tool_choice=first_tool) if first_tool else self.model
        self.tools = {t.name: t for t in tools}
        self.stages = stages
        self.max_steps = max_steps

    def run(self, state: ChatState) -> tuple[list[Recommended], str]:
        from langchain_core.messages import HumanMessage, SystemMessage, ToolMessage

        user = state.user_id or state.user_key
        messages: list[Any] = [SystemMessage(self.SYSTEM), HumanMessage(f"user: {user}\nmessage: {state.message}")]
        last: dict | None = None
        for step in range(self.max_steps):
            try:
                answer = (self.first if step == 0 else self.model).invoke(messages)
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


def checkpointer(path: Path) -> Any:
    """LangGraph's SQLite checkpointer on `path` (WAL), allowed to load llmrec's state types back."""
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
    from langgraph.checkpoint.sqlite import SqliteSaver

    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    allowed = [("llmrec.agents.constraints", "Constraints"), ("llmrec.agents.feedback", "FeedbackEvent"),
               ("llmrec.agents.understand", "TurnReading"), ("llmrec.agents.understand", "Extraction"),
               ("llmrec.agents.tools", "Recommended"), ("llmrec.schemas", "Candidate"), ("llmrec.schemas", "Item")]
    return SqliteSaver(conn, serde=JsonPlusSerializer(allowed_msgpack_modules=allowed))


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


def build_agent(settings: Any, scenario: str = "movies", *, pipeline: Any = None, config: ChatConfig | None = None,
                model: Any = None, train_histories: Mapping[str, Sequence[str]] | None = None, progress: bool = True) -> Agent:
    """The one place the conversational agent is wired: pipeline stages, feedback store, title resolver, the
    LLM for understanding (and for tool calling), the SQLite checkpointer. `train_histories` (the eval) restricts
    what the retriever, popularity and co-watch figures are fitted on; a given `pipeline` must be fitted on the same."""
    from llmrec.pipeline import build_pipeline

    config = config or ChatConfig()
    pipeline = pipeline or build_pipeline(settings, scenario, train_histories=train_histories, progress=progress)
    folder = config.store or settings.resolved_home() / "conversations"
    items = list(pipeline.dataset.items.values())
    index = next((m.index for m in getattr(pipeline.retriever, "members", []) if hasattr(m, "index")), None)
    store = FeedbackStore(folder / f"feedback-{pipeline.dataset.name}.sqlite", pipeline.dataset.items)
    resolver = TitleResolver(items, pipeline.dataset.popularity(), index)
    stages = Stages(pipeline, store, resolver, index, StagesConfig(), train_histories)
    model = model if model is not None else chat_model(settings, pipeline)
    understander = Understander(model, {g for i in items for g in i.genres}, decades(i.year for i in items),
                                UnderstandConfig(use_llm=config.llm_understanding), is_title=resolver.is_title)
    planner = None
    if config.planner == "tools":
        if not settings.llm_url:
            raise LLMRecError("the 'tools' planner needs a served model with tool calling: give --llm-url")
        from llmrec.agents.tools import langchain_tools

        planner = ToolPlanner(model, langchain_tools(stages), stages, config.max_tool_steps)
    return Agent(stages, understander, checkpointer(folder / f"checkpoints-{pipeline.dataset.name}.sqlite"), config, planner)
