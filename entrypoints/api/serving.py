"""The service's logic behind the thin routes: recommend, feedback, profile, scenarios, readiness.

Each served scenario is a `Served` pair built once at start: the one `Pipeline` and the chat `Agent` over it (the
agent's `Stages` hold the scenario dataset's `FeedbackStore`, the same SQLite file the CLI's chat writes). A user's
feedback counts in every answer for that user the way it does in the chat: likes and watches join the history,
dislikes never come back (`Stages.history`, `Stages.item_filter`). All of it is blocking work (the LLM, SQLite), so
the routes run these methods in a thread pool, never on the event loop.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from llmrec.agents.conversation import Agent
from llmrec.agents.feedback import FeedbackEvent, Profile
from llmrec.entrypoints.api.chat import SessionOwners
from llmrec.entrypoints.api.protocol import FeedbackBody, RecommendBody, ScenarioInfo, ScenarioList
from llmrec.errors import LLMRecError, UnknownScenario, UnknownUser
from llmrec.pipeline import Pipeline
from llmrec.pipeline.recommend import degradation
from llmrec.scenario import check_name, load_scenario, scenario_names
from llmrec.schemas import LIMITS, RecommendRequest, RecommendResponse, check_size
from llmrec.settings import Settings

log = logging.getLogger("llmrec.api")
SESSION_USER = "session:"


@dataclass
class Served:
    pipeline: Pipeline
    agent: Agent


class Scenarios:
    """The scenarios this service answers for, by name; a request names one (or gets the default)."""

    def __init__(self, served: dict[str, Served], default: str, home: Path):
        self.served = served
        self.default = default
        self.home = home

    def get(self, name: str | None = None) -> Served:
        name = self.default if name is None else check_name(name)
        if name in self.served:
            return self.served[name]
        served = ", ".join(self.served)
        if name in scenario_names(self.home):
            raise UnknownScenario(f"scenario {name!r} is not served here (served: {served}; start the service with it in "
                                  "LLMREC_SCENARIOS)")
        raise UnknownScenario(f"unknown scenario {name!r} (served: {served})")

    def listing(self) -> ScenarioList:
        infos = []
        for name in scenario_names(self.home):
            try:
                s = load_scenario(name, self.home)
            except LLMRecError as exc:  # a malformed file is named, not fatal
                log.warning("scenario %s: %s", name, exc)
                continue
            # A dataset folder is named by its last part only: server paths stay on the server.
            dataset = Path(s.dataset).name if ("/" in s.dataset or "\\" in s.dataset) else s.dataset
            infos.append(ScenarioInfo(name=s.name, domain=s.domain, dataset=dataset, adapter=s.adapter.name if s.adapter else None,
                                      description=s.description, served=name in self.served))
        return ScenarioList(default=self.default, scenarios=infos)


class Users:
    """Who a `user_id` in a request is: a dataset user, or `session:<id>`, the user of one of the caller's own chat
    sessions (an ad-hoc or cold-start chat user). Another key's session is an unknown user (404)."""

    def __init__(self, owners: SessionOwners):
        self.owners = owners

    def base_history(self, served: Served, user_id: str, key_id: str | None) -> tuple[str, ...]:
        check_size("the user id", user_id, LIMITS.id_chars, "characters")
        if user_id.startswith(SESSION_USER):
            session = user_id[len(SESSION_USER):]
            state = served.agent.state(session) if key_id is not None and self.owners.owner(session) == key_id else None
            if state is None or state.user_key != user_id:
                raise UnknownUser(f"unknown user {user_id!r}")
            return state.base_history
        return served.agent.stages.base_history(user_id)


class ServingRecommend:
    def __init__(self, scenarios: Scenarios, users: Users):
        self.scenarios = scenarios
        self.users = users

    def __call__(self, body: RecommendBody, key_id: str | None) -> tuple[RecommendResponse, tuple[str, ...]]:
        """The pipeline's answer (the CLI's `--json` document) and the kinds of degradation it reports."""
        served = self.scenarios.get(body.scenario)
        stages, name = served.agent.stages, served.pipeline.scenario.name
        if body.user_id is not None and body.history is not None:
            raise LLMRecError("give a user_id or a history, not both")
        if body.user_id is None:
            history = None if body.history is None else tuple(body.history)  # neither: EmptyHistory (400); [] is a cold start
            request = RecommendRequest(history=history, k=body.k, scenario=name, explain=body.explain)
            response = served.pipeline.recommend(request)
        else:
            base = self.users.base_history(served, body.user_id, key_id)
            RecommendRequest(user_id=body.user_id, k=body.k, scenario=name)  # the caps (413), before any work
            disliked = stages.store.disliked(body.user_id)
            where = stages.item_filter(body.user_id) if disliked else None
            request = RecommendRequest(history=stages.history(body.user_id, base), k=body.k, scenario=name, explain=body.explain,
                                       filter=where)
            response = served.pipeline.recommend(request).model_copy(update={"user_id": body.user_id})
        kinds = degradation(response.notes)
        if response.degraded and "llm" not in kinds:
            kinds = ("llm", *kinds)
        return response, kinds


class ServingFeedback:
    def __init__(self, scenarios: Scenarios, users: Users):
        self.scenarios = scenarios
        self.users = users

    def __call__(self, body: FeedbackBody, key_id: str | None) -> FeedbackEvent:
        """Commit one event; the answer is only made once the row is on disk (WAL, synchronous=FULL)."""
        served = self.scenarios.get(body.scenario)
        check_size("the item id", body.item_id, LIMITS.id_chars, "characters")
        self.users.base_history(served, body.user_id, key_id)
        return served.agent.stages.record_feedback(body.user_id, body.item_id, body.event)


class ServingProfile:
    def __init__(self, scenarios: Scenarios, users: Users):
        self.scenarios = scenarios
        self.users = users

    def __call__(self, user_id: str, scenario: str | None, key_id: str | None) -> Profile:
        served = self.scenarios.get(scenario)
        base = self.users.base_history(served, user_id, key_id)
        return served.agent.stages.get_profile(user_id, base)


class ServingReadiness:
    """Whether the LLM and Chroma answer now: the in-process engine is loaded and takes calls, a vLLM server lists
    the served model, a Chroma server answers its heartbeat (the embedded Chroma opened when the pipeline was built)."""

    def __init__(self, settings: Settings, engine: Any, timeout_s: float):
        self.settings = settings
        self.engine = engine
        self.timeout_s = timeout_s
        self.load_error: str | None = None

    def checks(self) -> dict[str, str]:
        return {"llm": self._llm(), "chroma": self._chroma()}

    def _llm(self) -> str:
        from llmrec.engines.vllm import InProcessVLLM, ServerVLLM

        engine = self.engine
        while hasattr(engine, "engine") and not isinstance(engine, (InProcessVLLM, ServerVLLM)):
            engine = engine.engine  # a batching queue in front
        if isinstance(engine, ServerVLLM):
            try:
                reply = httpx.get(f"{engine.url}/models", timeout=self.timeout_s)
                reply.raise_for_status()
                served = {m.get("id") for m in reply.json().get("data", [])}
            except (httpx.HTTPError, ValueError, AttributeError) as exc:
                return f"unreachable: {engine.url}: {' '.join(str(exc).split())[:200] or type(exc).__name__}"
            return "ok" if engine.model_name in served else f"the server at {engine.url} does not serve {engine.model_name}"
        if isinstance(engine, InProcessVLLM):
            if "llm" not in engine.__dict__:
                return f"not loaded: {self.load_error}" if self.load_error else "not loaded"
            return "ok" if engine.wait_idle(0) else "busy: a call that passed its time limit is still running"
        return "ok"

    def _chroma(self) -> str:
        url = self.settings.chroma_url
        if url is None:
            return "ok"
        try:
            httpx.get(f"{url.rstrip('/')}/api/v2/heartbeat", timeout=self.timeout_s).raise_for_status()
        except httpx.HTTPError as exc:
            return f"unreachable: {url}: {' '.join(str(exc).split())[:200] or type(exc).__name__}"
        return "ok"
