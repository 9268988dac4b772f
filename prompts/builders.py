"""Turn items into prompts. Templates hold the words; this module holds the rules.

Item text is untrusted: every title passes through `safety.sanitize` (control tokens, answer-shaped
text and imperative phrases are stripped, or the title is withheld), then `clean_for_prompt`, which
keeps it on one line, strips quote characters the explanation format relies on, and caps it.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources

import jinja2
from pydantic import BaseModel, Field

from llmrec.errors import LLMRecError
from llmrec.prompts.safety import looks_like_instruction, sanitize, withheld
from llmrec.protocols import LLMEngine
from llmrec.schemas import Item

LABELS = tuple(string.ascii_uppercase)
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")


def clean_for_prompt(text: str, limit: int = 120) -> str:
    """One line, no double quotes or backticks, at most `limit` characters."""
    text = _CONTROL.sub(" ", text).replace('"', "'").replace("`", "'")
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def safe_title(item: Item) -> str:
    """The sanitised, cleaned title; a neutral reference when nothing but an instruction is left of it."""
    clean = sanitize(item.title)
    return withheld(item.item_id) if clean.withhold else clean_for_prompt(clean.text)


def describe(item: Item, with_genres: bool = True) -> str:
    """'Title (1995) [Comedy, Drama]' for the ranking prompt."""
    text = safe_title(item)
    if item.year:
        text += f" ({item.year})"
    if with_genres and item.genres:
        text += " [" + ", ".join(clean_for_prompt(g, 30) for g in item.genres if not looks_like_instruction(g)) + "]"
    return text


def facts(item: Item) -> str:
    """'1995; Comedy, Drama' for the explanation prompt: only attributes the validator can check."""
    parts = [str(item.year)] if item.year else []
    if item.genres:
        parts.append(", ".join(clean_for_prompt(g, 30) for g in item.genres if not looks_like_instruction(g)))
    return "; ".join(parts) or "no details"


@cache
def _template(name: str) -> jinja2.Template:
    try:
        source = resources.files("llmrec.prompts").joinpath("templates", f"{name}.j2").read_text("utf-8")
    except FileNotFoundError:
        raise LLMRecError(f"unknown prompt template {name!r}") from None
    env = jinja2.Environment(autoescape=False, keep_trailing_newline=False, undefined=jinja2.StrictUndefined)
    return env.from_string(source)


def render_blocks(name: str, **variables: object) -> tuple[str, str, str]:
    """(system, user, assistant prefix) of template `name`."""
    template = _template(name)
    context = template.new_context(variables)
    return tuple("".join(template.blocks[block](context)).strip(" \n") for block in ("system", "user", "assistant"))  # type: ignore[return-value]


class RankPromptConfig(BaseModel):
    template: str = Field(default="rank_v1", description="Template file name under prompts/templates, versioned.")
    domain: str = Field(default="movie", description="Noun for the items, e.g. 'movie', 'book'.")
    max_history_items: int = Field(default=10, ge=1)
    with_genres: bool = True
    token_budget: int = Field(default=1900, description="Prompt tokens allowed; older history is dropped to fit.")


@dataclass(frozen=True)
class RankPrompt:
    text: str
    labels: tuple[str, ...]
    item_ids: tuple[str, ...]
    """Candidate item ids in prompt order: labels[i] names item_ids[i]."""
    history_used: int
    history_dropped: int


class RankPromptBuilder:
    """Lists the recent history and the lettered candidates; the answer is one label token."""

    def __init__(self, config: RankPromptConfig | None = None):
        self.config = config or RankPromptConfig()

    def build(self, engine: LLMEngine, history: Sequence[Item], candidates: Sequence[Item]) -> RankPrompt:
        if len(candidates) > len(LABELS):
            raise LLMRecError(f"at most {len(LABELS)} candidates fit the label set, got {len(candidates)}")
        labels = LABELS[: len(candidates)]
        listed = [(label, describe(item, self.config.with_genres)) for label, item in zip(labels, candidates)]
        recent = list(history[-self.config.max_history_items :])
        dropped = len(history) - len(recent)
        while True:
            system, user, prefix = render_blocks(
                self.config.template, domain=self.config.domain,
                history=[describe(item, self.config.with_genres) for item in recent], candidates=listed,
            )
            text = engine.chat_prompt(system, user, prefix)
            if engine.count_tokens(text) <= self.config.token_budget or len(recent) <= 1:
                break
            recent.pop(0)
            dropped += 1
        if engine.count_tokens(text) > self.config.token_budget:
            raise LLMRecError(
                f"the ranking prompt needs {engine.count_tokens(text)} tokens even with one history item; "
                f"the budget is {self.config.token_budget}: use fewer candidates or a model with a longer context"
            )
        return RankPrompt(text, labels, tuple(item.item_id for item in candidates), len(recent), dropped)


class ExplainPromptConfig(BaseModel):
    template: str = Field(default="explain_v1")
    domain: str = "movie"
    related_items: int = Field(default=3, ge=1, le=8, description="History items shown as grounding evidence.")


class ExplainPromptBuilder:
    """Shows the history items most related to the recommendation and pre-fills the citation of the closest."""

    def __init__(self, config: ExplainPromptConfig | None = None):
        self.config = config or ExplainPromptConfig()

    def related(self, history: Sequence[Item], target: Item) -> list[Item]:
        """History items sharing the most genres with the target, most recent first among ties."""
        genres = set(target.genres)
        order = sorted(range(len(history)), key=lambda i: (-len(genres & set(history[i].genres)), -i))
        seen: set[str] = set()
        chosen = []
        for i in order:
            if history[i].item_id not in seen and history[i].item_id != target.item_id:
                chosen.append(history[i])
                seen.add(history[i].item_id)
            if len(chosen) == self.config.related_items:
                break
        return chosen

    def build(self, engine: LLMEngine, history: Sequence[Item], target: Item) -> tuple[str, str, list[Item]]:
        """(prompt text, assistant prefix, the related history items shown); the first is the pre-filled anchor."""
        related = self.related(history, target)
        if not related:
            raise LLMRecError("an explanation needs at least one history item")
        system, user, prefix = render_blocks(
            self.config.template, domain=self.config.domain,
            history=[{"title": safe_title(i), "facts": facts(i)} for i in related],
            target={"title": safe_title(target), "facts": facts(target)},
            anchor={"title": safe_title(related[0]), "year": related[0].year},
        )
        return engine.chat_prompt(system, user, prefix), prefix, related
