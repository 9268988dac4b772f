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


def safe_attribute(value: str, limit: int = 60) -> str | None:
    """An attribute's value (an author's name), sanitised and cleaned like a title; None when it reads as an instruction."""
    clean = sanitize(value)
    return None if clean.withhold or not clean.text else clean_for_prompt(clean.text, limit)


def author(item: Item) -> str | None:
    """The item's author as prompts write it (`safe_attribute`), or None. Of the attributes only the author reaches
    the ranking and explanation prompts: it is short, and the claim checker can check it (`explain.claims`)."""
    raw = item.attribute("author")
    return safe_attribute(raw) if raw else None


def describe(item: Item, with_genres: bool = True) -> str:
    """'Title (1995) [Comedy, Drama]' for the ranking prompt; a book's 'Title (2001) by Author' (with the genres)."""
    text = safe_title(item)
    if item.year:
        text += f" ({item.year})"
    if with_genres and (name := author(item)):
        text += f" by {name}"
    if with_genres and item.genres:
        text += " [" + ", ".join(clean_for_prompt(g, 30) for g in item.genres if not looks_like_instruction(g)) + "]"
    return text


def facts(item: Item) -> str:
    """'1995; Comedy, Drama' (a book's '2001; by Author') for the explanation prompt: only attributes the validator
    and the claim checker can check."""
    parts = [str(item.year)] if item.year else []
    if item.genres:
        parts.append(", ".join(clean_for_prompt(g, 30) for g in item.genres if not looks_like_instruction(g)))
    if name := author(item):
        parts.append(f"by {name}")
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
    reason_template: str = Field(default="explain_v2", description="Template of `build_reasons` (history first, item last).")
    shared_history: int = Field(default=12, ge=1, le=50, description="At most this many recent history items in `build_reasons`.")
    min_shared_history: int = Field(default=4, ge=1, le=50, description="At least this many (when the history has them).")
    prefix_block: int = Field(default=128, ge=1, description="KV-cache block size (vLLM 0.32 on CPU: 128). Only whole blocks "
                              "of a shared prefix are reused, so `build_reasons` shows the number of history items whose "
                              "prefix ends nearest after a block boundary.")


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

    def build_reason(self, engine: LLMEngine, history: Sequence[Item], target: Item, evidence: str) -> tuple[str, str]:
        """(prompt text, assistant prefix) of one item; see `build_reasons`."""
        return self.build_reasons(engine, history, [(target, evidence)])[0]

    def build_reasons(self, engine: LLMEngine, history: Sequence[Item], targets: Sequence[tuple[Item, str]]) -> list[tuple[str, str]]:
        """(prompt text, assistant prefix) per (item, llmrec's filled-in evidence), each asking for one short reason.

        The system text and the user's most recent history come first and are the same for every item of the
        list, so a batch of these prompts shares that prefix (vLLM's prefix cache computes it once); the item and
        its evidence come last. Between `min_shared_history` and `shared_history` items, the count shown is the
        one whose shared prefix leaves the fewest tokens past a whole `prefix_block`, the part every prompt recomputes.
        """
        if not history:
            raise LLMRecError("an explanation needs at least one history item")
        counts = range(min(self.config.shared_history, len(history)), min(self.config.min_shared_history, len(history)) - 1, -1)
        shown = min(counts, key=lambda n: self._shared_tokens(engine, history[-n:]) % self.config.prefix_block) if len(counts) > 1 \
            else min(self.config.shared_history, len(history))
        return [self._reason(engine, history[-shown:], target, evidence) for target, evidence in targets]

    def _reason(self, engine: LLMEngine, recent: Sequence[Item], target: Item, evidence: str) -> tuple[str, str]:
        system, user, prefix = render_blocks(
            self.config.reason_template, domain=self.config.domain,
            history=[{"title": safe_title(i), "facts": facts(i)} for i in recent],
            target={"title": safe_title(target), "facts": facts(target)}, evidence=clean_for_prompt(evidence, 400),
        )
        return engine.chat_prompt(system, user, prefix), prefix

    def _shared_tokens(self, engine: LLMEngine, recent: Sequence[Item]) -> int:
        """Tokens of the prompt before the item: what every prompt of the list shares."""
        text = self._reason(engine, recent, recent[-1], "")[0]
        return engine.count_tokens(text[: text.rindex(f"Recommended {self.config.domain}:")])


ANSWERS = ("Yes", "No")
"""The pointwise answer labels; the score is log P(Yes) renormalised over the two."""


class PointwisePromptConfig(BaseModel):
    template: str = Field(default="pointwise_v1", description="Template file name under prompts/templates, versioned.")
    domain: str = Field(default="movie", description="Noun for the items, e.g. 'movie', 'book'.")
    max_history_items: int = Field(default=10, ge=1)
    with_genres: bool = True
    token_budget: int = Field(default=1900, description="Prompt tokens allowed; older history is dropped to fit.")


@dataclass(frozen=True)
class PointwisePrompt:
    text: str
    item_id: str
    history_used: int
    history_dropped: int


class PointwisePromptBuilder:
    """One prompt per candidate: the recent history, then the candidate, then "Will the user enjoy it?".

    The history is cut the same way for every candidate of a request (to fit the longest one), so
    the prompts of one user are identical up to the candidate line and share their prefix in vLLM's cache.
    """

    def __init__(self, config: PointwisePromptConfig | None = None):
        self.config = config or PointwisePromptConfig()

    def _render(self, engine: LLMEngine, history: list[str], candidate: str) -> str:
        system, user, prefix = render_blocks(self.config.template, domain=self.config.domain, history=history, candidate=candidate)
        return engine.chat_prompt(system, user, prefix)

    def build_many(self, engine: LLMEngine, history: Sequence[Item], candidates: Sequence[Item]) -> list[PointwisePrompt]:
        if not candidates:
            return []
        described = [describe(item, self.config.with_genres) for item in candidates]
        recent = [describe(item, self.config.with_genres) for item in history[-self.config.max_history_items :]]
        dropped = len(history) - len(recent)
        while True:
            texts = [self._render(engine, recent, c) for c in described]
            longest = max(engine.count_tokens(t) for t in texts)
            if longest <= self.config.token_budget or len(recent) <= 1:
                break
            recent.pop(0)
            dropped += 1
        if longest > self.config.token_budget:
            raise LLMRecError(f"the pointwise prompt needs {longest} tokens even with one history item; "
                              f"the budget is {self.config.token_budget}: use a model with a longer context")
        return [PointwisePrompt(t, item.item_id, len(recent), dropped) for t, item in zip(texts, candidates)]

    def build(self, engine: LLMEngine, history: Sequence[Item], candidate: Item) -> PointwisePrompt:
        return self.build_many(engine, history, [candidate])[0]


_TRAILING_ARTICLE = re.compile(r"^(?P<head>[^(]*?), (?P<article>The|A|An|Les|Le|La|L'|Un|Une|Il|Das|Der|Die|El)(?P<rest>( \(.*)?)$")


def natural_title(text: str) -> str:
    """'Usual Suspects, The (1995)' -> 'The Usual Suspects (1995)': MovieLens moves a title's article to the end
    of its main part (before any parenthesised alternate title or year)."""
    match = _TRAILING_ARTICLE.match(text)
    if not match:
        return text
    article = match["article"]
    return f"{article}{'' if article.endswith(chr(39)) else ' '}{match['head']}{match['rest']}"


class SequencePromptConfig(BaseModel):
    template: str = Field(default="sequence_v1", description="Template file name under prompts/templates, versioned.")
    domain: str = Field(default="movie", description="Noun for the items, e.g. 'movie', 'book'.")
    max_history_items: int = Field(default=19, ge=0, description="History lines before the candidate (a training window of 20 holds 19).")
    token_budget: int = Field(default=1900, description="Prompt tokens allowed, candidate line included; older history is dropped to fit.")
    natural_titles: bool = Field(default=True, description="'Usual Suspects, The' written 'The Usual Suspects', as text says it.")


@dataclass(frozen=True)
class SequencePrompt:
    """The `sequence` objective's text, in pieces: the chat header, then one line per history item."""

    header: str
    """Chat template up to the assistant turn; the item lines follow it directly."""
    lines: tuple[str, ...]
    """'Title (Year)\\n' per history item, oldest first."""
    history_used: int
    history_dropped: int


class SequencePromptBuilder:
    """The history as item lines after a fixed header; a candidate is scored as the next line.

    `line(item)` is the one way an item is written, in training windows and in ranking alike. A line
    ends with a newline, so a title's score includes ending there (a title that is the prefix of a
    longer one is not given the longer one's credit).
    """

    def __init__(self, config: SequencePromptConfig | None = None):
        self.config = config or SequencePromptConfig()

    def line(self, item: Item) -> str:
        text = describe(item, with_genres=False)
        return (natural_title(text) if self.config.natural_titles else text) + "\n"

    def header(self, engine: LLMEngine) -> str:
        system, user, prefix = render_blocks(self.config.template, domain=self.config.domain)
        return engine.chat_prompt(system, user, prefix)

    def build(self, engine: LLMEngine, history: Sequence[Item], longest_candidate: int = 32) -> SequencePrompt:
        """History lines that fit the budget, leaving `longest_candidate` tokens for the candidate line."""
        header = self.header(engine)
        recent = list(history[-self.config.max_history_items :]) if self.config.max_history_items else []
        lines = [self.line(item) for item in recent]
        budget = self.config.token_budget - longest_candidate - engine.count_tokens(header)
        if budget < 0:
            raise LLMRecError(f"the sequence prompt's header alone exceeds the token budget {self.config.token_budget}")
        costs = [engine.count_tokens(line) for line in lines]
        while lines and sum(costs) > budget:
            lines.pop(0)
            costs.pop(0)
        return SequencePrompt(header, tuple(lines), len(lines), len(history) - len(lines))
