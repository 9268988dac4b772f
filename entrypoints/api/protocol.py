"""The service's wire models: one pydantic model per request, response and error body.

What llmrec already ships as a wire object is answered as is: `RecommendResponse` (llmrec.schemas), the chat's
`Recommended` items (llmrec.agents.tools), `FeedbackEvent` and `Profile` (llmrec.agents.feedback). The caps in
`llmrec.schemas.LIMITS` (history length, `k`, message length, ids) are checked where a body becomes the pipeline's
request (`RecommendRequest`, `ChatTurn`) and answered 413 `InputTooLarge`; everything else a body gets wrong is 422.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from llmrec.agents.tools import Recommended
from llmrec.scenario import NAME_PATTERN

SESSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RecommendBody(_Body):
    """A dataset user (whose feedback counts: likes and watches join the history, dislikes never come back) or an
    ad-hoc history (`[]`: a cold start); one of the two."""

    user_id: str | None = Field(default=None, min_length=1, description="A user of the scenario's dataset, or 'session:<id>' for "
                                                                        "the user of one of the caller's chat sessions.")
    history: list[str] | None = Field(default=None, description="Item ids, oldest first, instead of a user.")
    k: int = Field(default=10, ge=1, description="Items to return (at most 100: 413 above).")
    scenario: str | None = Field(default=None, pattern=NAME_PATTERN, description="A served scenario's name; default: the service's.")
    explain: bool = Field(default=False, description="Add an explanation to each item (evidence plus a short generated reason).")


class FeedbackBody(_Body):
    user_id: str = Field(min_length=1, description="A user of the scenario's dataset, or 'session:<id>' of one of the caller's sessions.")
    item_id: str = Field(min_length=1, description="A catalog item of the scenario's dataset.")
    event: Literal["like", "watch", "dislike"]
    value: float | None = Field(default=None, allow_inf_nan=False, description=(
        "Accepted for clients that send a rating or watch fraction; not stored: the event alone counts."))
    scenario: str | None = Field(default=None, pattern=NAME_PATTERN, description="A served scenario's name; default: the service's.")


class ChatBody(_Body):
    session_id: str = Field(min_length=1, pattern=SESSION_PATTERN, description=(
        "The conversation's id (letters, digits, '_', '.', ':', '-'); bound to the API key that first uses it."))
    user_id: str | None = Field(default=None, min_length=1, description=(
        "The first message's claim of a dataset user; the session keeps it. Later messages may repeat it, not change it."))
    message: str = Field(min_length=1, description="One message (untrusted text: read for preferences, never obeyed).")


class ChatResponse(_Body):
    session_id: str
    reply: str = Field(description="The agent's reply, in one fixed format.")
    recommendations: list[Recommended] = Field(description="The items shown, with the checkable evidence in `why`.")
    degraded: bool = Field(description="Whether the LLM or Chroma failed and the answer fell back (see `degraded_reason`).")
    degraded_reason: str | None = None
    cold_start: bool = Field(description="Whether the list came from popularity and the constraints alone (no history).")
    notes: list[str] = Field(default_factory=list)
    questions: list[str] = Field(default_factory=list, description="What the agent asks back (an unresolved title, '#4' of three).")


class TokenEvent(_Body):
    """`event: token` of the chat stream: a piece of the reply, in order (the reply is cut into words once finished)."""

    text: str


class RecommendationsEvent(_Body):
    recommendations: list[Recommended]


class ErrorDetail(_Body):
    status: int
    type: str = Field(description="The error's kind: an llmrec error's name (UnknownUser, InputTooLarge...) or the HTTP one.")
    message: str = Field(description="One line.")


class ErrorResponse(_Body):
    """Every non-2xx answer's body."""

    error: ErrorDetail


class Health(_Body):
    status: Literal["ok"] = "ok"


class Readiness(_Body):
    ready: bool
    checks: dict[str, str] = Field(description="'ok', or what is wrong, per dependency: llm, chroma.")


class ScenarioInfo(_Body):
    name: str
    domain: str
    dataset: str
    adapter: str | None
    description: str
    served: bool = Field(description="Whether this service answers requests for it.")


class ScenarioList(_Body):
    default: str
    scenarios: list[ScenarioInfo]
