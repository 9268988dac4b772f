"""One message → `Constraints`: llmrec's rules first, the LLM's structured output second, checked against both.

The LLM never plans and its text is never parsed. It fills a small JSON schema (`extraction_schema`:
genre enums from the catalog, a decade enum, at most two short titles each way), decoded under
vLLM's grammar so that nothing else can come out; the result is validated with pydantic and against
the catalog. An invalid answer is retried once with more tokens, then the turn falls back to the rules.

What the LLM may add to the rules' reading is only what the message itself supports:
- a genre, when the message names it or a synonym, or a near spelling ('comdy'): `supported_genre`;
- a decade, only when the rules read the same range from the message (so it confirms, never invents);
- a title, when it appears in the message as written, starting with a capital (a 135M model otherwise
  copies ordinary words into the title slots); like or dislike then follows the rules' negation scope.
Everything else it proposes is dropped and counted (`UnderstandStats.dropped`).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llmrec.agents.constraints import Constraints, negated, read_rules, supported_genre, supported_years
from llmrec.domains import Domain, default_domain
from llmrec.text import normal

SYSTEM_TEMPLATE = ("You read a request for {plural} and fill in JSON. Put only what the request says: genres wanted, genres not "
                   "wanted, the decade ('any' if none), titles the user liked and titles the user does not want.")
"""The system prompt; its few-shot examples are the domain's (`Domain.shots`, from `llmrec/domains/<name>.json`)."""


class Extraction(BaseModel):
    """What the LLM fills (and nothing else)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    genres: tuple[str, ...] = Field(max_length=3)
    not_genres: tuple[str, ...] = Field(max_length=3)
    decade: str
    liked: tuple[str, ...] = Field(max_length=2)
    disliked: tuple[str, ...] = Field(max_length=2)


class UnderstandConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    use_llm: bool = Field(default=True, description="False: the rules alone (no LLM call).")
    max_tokens: int = Field(default=64, ge=16, le=256, description="Compact JSON of the schema fits in about 50 tokens.")
    retry_max_tokens: int = Field(default=128, ge=16, le=512)
    title_chars: int = Field(default=40, ge=8, le=80)


class TurnReading(BaseModel):
    """One message's reading, kept in the session state for inspection."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: Constraints
    llm: Extraction | None = None
    llm_status: Literal["off", "valid", "retried", "fallback", "unavailable"] = "off"
    added: tuple[str, ...] = Field(default=(), description="What the LLM added to the rules' reading, e.g. 'genre:Comedy'.")
    dropped: tuple[str, ...] = Field(default=(), description="What the LLM proposed that the message does not support.")
    merged: Constraints
    seconds: float = 0.0


class UnderstandStats(BaseModel):
    """Counts over every message read by one `Understander` (for the eval and the report)."""

    calls: int = 0
    valid_first: int = 0
    invalid_outputs: int = 0
    retried: int = 0
    fallbacks: int = 0
    unavailable: int = 0
    added: int = 0
    dropped: int = 0
    llm_seconds: float = 0.0

    def invalid_rate(self) -> float:
        """Invalid structured outputs per LLM call (a retried call that failed twice counts twice)."""
        attempts = self.calls + self.retried
        return self.invalid_outputs / attempts if attempts else 0.0


def decades(years: Iterable[int | None]) -> list[str]:
    return sorted({f"{y // 10 * 10}s" for y in years if y})


def extraction_schema(vocabulary: Iterable[str], decade_names: Iterable[str], title_chars: int = 40) -> dict:
    """The JSON schema the LLM's output is decoded under: enums from the catalog, small maxima."""
    genres = {"enum": sorted(g for g in vocabulary if g != "unknown")}
    titles = {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": title_chars}, "maxItems": 2}
    properties = {"genres": {"type": "array", "items": genres, "maxItems": 3},
                  "not_genres": {"type": "array", "items": genres, "maxItems": 3},
                  "decade": {"enum": ["any", *decade_names]}, "liked": titles, "disliked": titles}
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


class Understander:
    """`model` is a LangChain chat model that honours vLLM's `extra_body.structured_outputs` (or None: rules only);
    `is_title` tells the rules which spans are catalog titles; `domain` gives the rules their words (the scenario's
    `load_domain(scenario.domain)`; without one, `default_domain()`)."""

    def __init__(self, model: Any, vocabulary: Iterable[str], decade_names: Iterable[str], config: UnderstandConfig | None = None,
                 is_title: Callable[[str], bool] | None = None, domain: Domain | None = None):
        self.model = model
        self.domain = domain or default_domain()
        self.is_title = is_title
        self.config = config or UnderstandConfig()
        self.vocabulary = sorted(set(vocabulary))
        self.decades = list(decade_names)
        self.schema = extraction_schema(self.vocabulary, self.decades, self.config.title_chars)
        self.stats = UnderstandStats()

    @property
    def system(self) -> str:
        return SYSTEM_TEMPLATE.format(plural=self.domain.plural)

    def messages(self, message: str) -> list[Any]:
        from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

        turns: list[Any] = [SystemMessage(self.system)]
        for shot in self.domain.shots:
            turns += [HumanMessage(shot.message), AIMessage(json.dumps(shot.answer, separators=(",", ":")))]
        return [*turns, HumanMessage(" ".join(message.split())[:500])]

    def read(self, message: str) -> TurnReading:
        rules = read_rules(message, self.vocabulary, self.is_title, self.domain)
        if self.model is None or not self.config.use_llm:
            return TurnReading(rules=rules, merged=rules)
        started = time.perf_counter()
        extraction, status = self._ask(message)
        seconds = time.perf_counter() - started
        self.stats.llm_seconds += seconds
        merged, added, dropped = merge(rules, extraction, message, self.vocabulary, self.domain) if extraction else (rules, [], [])
        self.stats.added += len(added)
        self.stats.dropped += len(dropped)
        return TurnReading(rules=rules, llm=extraction, llm_status=status, added=tuple(added), dropped=tuple(dropped),
                           merged=merged, seconds=round(seconds, 3))

    def _ask(self, message: str) -> tuple[Extraction | None, Literal["valid", "retried", "fallback", "unavailable"]]:
        from llmrec.agents.chat_models import compact_json_grammar

        self.stats.calls += 1
        structured = {"grammar": compact_json_grammar(self.schema)}
        for attempt, max_tokens in enumerate((self.config.max_tokens, self.config.retry_max_tokens)):
            if attempt:
                self.stats.retried += 1
            try:
                answer = self.model.invoke(self.messages(message), max_tokens=max_tokens, temperature=0.0,
                                           extra_body={"structured_outputs": structured})
            except Exception:  # noqa: BLE001 - LLMUnavailable, or a server/client failure of any kind: the rules answer alone
                self.stats.unavailable += 1
                return None, "unavailable"
            extraction = self.validate(str(answer.content))
            if extraction is not None:
                if not attempt:
                    self.stats.valid_first += 1
                return extraction, "retried" if attempt else "valid"
            self.stats.invalid_outputs += 1
        self.stats.fallbacks += 1
        return None, "fallback"

    def validate(self, text: str) -> Extraction | None:
        """Pydantic validation plus the catalog: a genre or decade outside it makes the output invalid."""
        try:
            extraction = Extraction.model_validate_json(text)
        except ValidationError:
            return None
        known = set(self.vocabulary)
        if not set(extraction.genres) <= known or not set(extraction.not_genres) <= known:
            return None
        if extraction.decade != "any" and extraction.decade not in self.decades:
            return None
        return extraction


def _in_message(title: str, message: str) -> int | None:
    """Where `title` appears in the message as written (case-insensitive words, a capital first letter); else None."""
    words = normal(title).split()
    if not words or len("".join(words)) < 3:
        return None
    pattern = r"(?<!\w)" + r"\W+".join(re.escape(w) for w in words) + r"(?!\w)"
    m = re.search(pattern, re.sub(r"[^\x00-\x7f]", " ", message), re.IGNORECASE)
    return m.start() if m and message[m.start()].isupper() else None


def merge(rules: Constraints, llm: Extraction, message: str, vocabulary: list[str],
          domain: Domain | None = None) -> tuple[Constraints, list[str], list[str]]:
    """The rules' reading plus what the LLM proposed and the message supports (see the module docstring)."""
    added: list[str] = []
    dropped: list[str] = []
    genres, excluded = list(rules.genres), list(rules.exclude_genres)
    for genre, bucket, _other in [*((g, genres, excluded) for g in llm.genres), *((g, excluded, genres) for g in llm.not_genres)]:
        if genre in genres or genre in excluded:
            continue  # the rules read it already, and their negation scope decides which side
        if supported_genre(genre, message, vocabulary, domain):
            bucket.append(genre)
            added.append(f"genre:{genre}" if bucket is genres else f"not-genre:{genre}")
        else:
            dropped.append(f"genre:{genre}")
    if llm.decade != "any":
        low = int(llm.decade[:4])
        if not supported_years(low, low + 9, message, domain):
            dropped.append(f"decade:{llm.decade}")
    liked, disliked = list(rules.liked_titles), list(rules.excluded_titles)
    known = {normal(t) for t in liked + disliked + list(rules.mentions)}
    for title in [*llm.liked, *llm.disliked]:
        if normal(title) in known:
            continue
        where = _in_message(title, message)
        if where is None:
            dropped.append(f"title:{title}")
            continue
        (disliked if negated(message, where) else liked).append(title)
        known.add(normal(title))
        added.append(f"title:{title}")
    merged = rules.model_copy(update=dict(genres=tuple(genres), exclude_genres=tuple(excluded), liked_titles=tuple(liked),
                                          excluded_titles=tuple(disliked))).validated(vocabulary)
    return merged, added, dropped
