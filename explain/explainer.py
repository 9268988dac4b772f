"""Explanations = evidence filled in by llmrec + one short reason written by the LLM, checked by the grounding validator.

For each recommended item:
- the evidence (`explain.evidence`): shared genres and the co-occurrence figures behind it, in the domain's words
  ("of the 508 people who watched Fargo (1996), 97 also watched it; both are Crime"; "... who read ..." for books),
  from the catalog and the training histories; nothing in it is generated, so nothing in it can be invented;
- one reason of a few words, generated after a pre-filled `You may like "X" because`. All items of a list go
  to the engine in one batch, and their prompts share the user's history as a prefix (vLLM's prefix cache).
  The evidence and the reason are validated together, and the reason's claims are checked against the catalog
  and the history (`explain.claims`: no plot, cast or title outside the history); a rejected reason is dropped (or retried,
  when `retries` > 0), and the evidence alone is shipped, marked `source="template"`.
  A reason is shipped only if it adds something the evidence does not already say (`new_words`: "because it is a
  comedy" after "both are Comedy" does not), and says the item is "like" a watched title only where the co-watch
  figures support it (`CoWatch.close`). The domain (`llmrec.domains`: the prompt's noun, e.g. "book") gives the
  evidence's verb and the words that say nothing ("a great read").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel, Field

from llmrec.domains import Domain, default_domain, load_domain
from llmrec.explain.claims import ClaimChecker
from llmrec.explain.evidence import CoWatch, evidence, like_claims, mask_figures
from llmrec.explain.grounding import GroundingValidator
from llmrec.prompts import ExplainPromptBuilder
from llmrec.prompts.builders import safe_title
from llmrec.protocols import AdapterRef, LLMEngine
from llmrec.schemas import Explanation, Item
from llmrec.text import normal, title_forms

_CLAUSE = re.compile(r"[,;:]| (?:and|but|or|who|which|that|with|while|where|because)\b")
STOP = ("\n", ".", "!", "?")
"""Generation stops at the first sentence end: a reason is one short clause, and a batch is as slow as its longest."""


class LLMExplainerConfig(BaseModel):
    max_tokens: int = Field(default=12, ge=4, le=256, description="A short reason; one cut off is kept up to its last clause boundary.")
    retries: int = Field(default=0, ge=0, le=3, description="Sampled retries of rejected reasons; 0 keeps it to one batch.")
    retry_temperature: float = 0.8


def safe_label(item: Item) -> str:
    """The sanitised title with its year, as the evidence names a history item."""
    return f"{safe_title(item)} ({item.year})" if item.year else safe_title(item)


def _finish(prefix: str, continuation: str) -> str:
    """Prefix plus the continuation up to its first sentence end outside quotes, on one line."""
    text = continuation.split("\n")[0]
    quoted = prefix.count('"') % 2 == 1
    for i, char in enumerate(text):
        if char == '"':
            quoted = not quoted
        elif char in ".!?" and not quoted and (i + 1 == len(text) or text[i + 1] == " "):
            text = text[: i + 1]
            break
    return (prefix.strip() + text).strip()


_STOP = frozenset("""a an the and or but nor of to in on at by for from with as into than then so too very also just
it it's its this that these those there here is are was were be been being has have had do does did s not no
you your yours you've you'll you'd i me my we our they them their he him his she her who which what whom
may might will would can could should must if because since both another other others more most much many
some any such same similar like likes liked liking love loves loved enjoy enjoys enjoyed enjoying watch watches about
watched watching see seen fan fans movie movies film films one ones kind type sort genre genres style story
great good fun nice well best better favorite favourite popular classic classics interesting entertaining example examples
enjoyable amazing excellent perfect wonderful really quite lot lots way thing things something""".split())
"""Words that carry no information about an item: function words and empty praise ("a great film you will enjoy")."""


def _genre_words(domain: Domain) -> dict[str, frozenset[str]]:
    """Word -> the genres it names or paraphrases in `domain`: a genre's own words and synonyms ("animated") map to
    every genre, so that none counts as news (it repeats the item's genres, or the validator rejects it as wrong); a
    mood word ("funny", "detective") maps to its genre, and is news only about an item without that genre."""
    table: dict[str, set[str]] = {}
    every = set(domain.synonyms) | set(domain.moods)
    for source, names in ((domain.synonyms, True), (domain.moods, False)):
        for genre, phrases in source.items():
            for phrase in (genre, *phrases) if names else phrases:
                for word in normal(phrase).split():
                    table.setdefault(word, set()).update(every if names else {genre})
    return {w: frozenset(g) for w, g in table.items()}


def _stem(word: str) -> str:
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def new_words(generated: str, evidence: str, item: Item, domain: Domain | None = None) -> tuple[str, ...]:
    """The content words of a generated reason that the reader does not already have: not in the evidence, nor the
    item's title or year, nor a genre word (`domain`'s genres and synonyms: "animated"), nor a mood word for one of the
    item's genres ("funny" for a Comedy), after lower-casing, folding accents and plurals, and not function words or
    empty praise (`_STOP`: "a great movie"), nor the domain's own words for an item and for consuming one ("a book you
    will read"). An empty answer means the reason adds nothing beyond the evidence."""
    domain = domain or default_domain()
    genres = _genre_words(domain)
    shown = " ".join([evidence, *item.genres, str(item.year or ""), *title_forms(item.title)])
    own = normal(" ".join([domain.noun, domain.plural, domain.consume, domain.consumed, *domain.item_words])).split()
    known = {_stem(w) for w in normal(shown).split()} | {_stem(w) for w in (*_STOP, *own)}
    return tuple(sorted({_stem(w) for w in normal(generated).split()
                         if w not in _STOP and _stem(w) not in known and not genres.get(w, frozenset()) & set(item.genres)}))


@dataclass(frozen=True)
class Explained:
    """An explanation with its parts: what llmrec filled in, and what the model wrote."""

    explanation: Explanation
    evidence: str
    generated: str
    """The model's words in the shipped text (after the pre-filled prefix); empty when only the evidence ships."""
    attempts: tuple[str, ...] = ()
    """The model's words of every attempt for this item (up to its first sentence end), rejected ones included."""


class LLMExplainer:
    def __init__(self, engine: LLMEngine, prompts: ExplainPromptBuilder, validator: GroundingValidator,
                 config: LLMExplainerConfig | None = None, adapter: AdapterRef | None = None, cowatch: CoWatch | None = None,
                 claims: ClaimChecker | None = None):
        """`claims`: when given, a reason that states something outside the catalog and the history (a plot, a cast,
        a title not in the history: `explain.claims`) is rejected like an ungrounded one, so only checkable words ship."""
        self.claims = claims
        self.engine = engine
        self.prompts = prompts
        self.validator = validator
        self.config = config or LLMExplainerConfig()
        self.adapter = adapter
        self.cowatch = cowatch if cowatch is not None else CoWatch({})
        self.domain = load_domain(prompts.config.domain)
        """The evidence's verb, and the words for each genre, so that a reason that only paraphrases the item's genres is
        not shipped."""

    def evidence(self, history: Sequence[Item], item: Item) -> tuple[str, tuple[str, ...]]:
        """(the filled-in evidence, the history items it cites): co-watch figures, or else the most related watched item."""
        anchor, best = None, self.cowatch.best_anchor(item.item_id, [h.item_id for h in history])
        if best is None:
            related = self.prompts.related(history, item)
            anchor = related[0] if related else None
        text = evidence(item, history, self.cowatch, anchor=anchor, label=safe_label, domain=self.domain)
        named = (best[0],) if best else (anchor.item_id,) if anchor and safe_label(anchor) in text else ()
        return text, self.validate(text, history, item, text)[0] or named

    def validate(self, text: str, history: Sequence[Item], item: Item, facts: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The grounding validator's (cited ids, problems) for `text`, which starts with the filled-in evidence `facts`.

        The evidence's counts are masked first, so that none reads as a numeric title ("of the 187 people"
        is not the movie "187").
        """
        return self.validator.check(mask_figures(facts) + text[len(facts):] if text.startswith(facts) else text, history, item)

    def explain(self, history: Sequence[Item], items: Sequence[Item]) -> list[Explanation]:
        return [e.explanation for e in self.explain_parts(history, items)]

    def explain_parts(self, history: Sequence[Item], items: Sequence[Item]) -> list[Explained]:
        facts = [self.evidence(history, item) for item in items]
        built = self.prompts.build_reasons(self.engine, history, [(item, text) for item, (text, _) in zip(items, facts)])
        done: dict[int, Explained] = {}
        problems: dict[int, list[str]] = {i: [] for i in range(len(items))}
        attempts: dict[int, list[str]] = {i: [] for i in range(len(items))}
        pending = list(range(len(items)))
        for attempt in range(1 + self.config.retries):
            if not pending:
                break
            temperature = 0.0 if attempt == 0 else self.config.retry_temperature
            outputs = self.engine.generate([built[i][0] for i in pending], self.config.max_tokens, self.adapter,
                                           temperature=temperature, stop=list(STOP))
            still = []
            for i, continuation in zip(pending, outputs):
                found, explained = self._check(history, items[i], facts[i][0], built[i][1], continuation)
                attempts[i].append(explained.generated)
                if found:
                    problems[i].extend(found)
                    still.append(i)
                else:
                    done[i] = Explained(explained.explanation.model_copy(update={
                        "source": "llm" if attempt == 0 else "llm-retry", "problems": tuple(dict.fromkeys(problems[i]))}),
                        explained.evidence, explained.generated)
            pending = still
        for i in pending:
            done[i] = Explained(Explanation(item_id=items[i].item_id, text=facts[i][0], source="template",
                                            cited_item_ids=facts[i][1], problems=tuple(dict.fromkeys(problems[i]))),
                                facts[i][0], "")
        return [Explained(d.explanation, d.evidence, d.generated, tuple(attempts[i])) for i, d in sorted(done.items())]

    def _check(self, history: Sequence[Item], item: Item, facts: str, prefix: str,
               continuation: str) -> tuple[tuple[str, ...], Explained]:
        """(problems, the explanation) for one generated continuation; no problems means it may ship."""
        reason = _finish(prefix, continuation)
        generated = reason[len(prefix.strip()):].strip()
        unfinished = generated.count('"') % 2 == 1  # stopped inside a quoted title
        if reason[-1:] not in (".", "!", "?") and self.engine.count_tokens(continuation) >= self.config.max_tokens:
            cut = max((m.start() for m in _CLAUSE.finditer(generated)), default=0)  # cut off by max_tokens:
            head = generated[:cut].rstrip(" ,;:")  # keep it up to its last clause boundary
            unfinished = unfinished or len(head.split()) < 3
            reason, generated = (reason[: len(reason) - len(generated)] + head, head) if head else (reason, generated)
        if reason[-1:] not in (".", "!", "?"):
            reason += "."  # vLLM leaves the stop string out
        text = f"{facts} {reason}"
        cited, found = self.validate(text, history, item, facts)
        if self.claims is not None and generated and not found:
            named = [h for h in history if h.item_id in cited]
            found = tuple(dict.fromkeys(f"outside-{c.kind}" for c in self.claims.check(generated, item, history, named).outside))
        if len(generated.split()) < 2:
            found = (*found, "no-reason")  # the model stopped right after the pre-filled words
        elif unfinished:
            found = (*found, "unfinished")
        elif not found and not new_words(generated, facts, item, self.domain):
            found = ("no-new-information",)  # it repeats the evidence, the item's genres or its title
        if any(not self.cowatch.close(item.item_id, h.item_id) for h in like_claims(generated, history, safe_label)):
            found = (*found, "unsupported-like")
        return found, Explained(Explanation(item_id=item.item_id, text=text, source="llm", cited_item_ids=cited), facts, generated)

    def fallback(self, history: Sequence[Item], items: Sequence[Item], reason: str) -> list[Explanation]:
        """The evidence alone for every item, used when the LLM is unavailable."""
        out = []
        for item in items:
            text, cited = self.evidence(history, item)
            out.append(Explanation(item_id=item.item_id, text=text, source="template", cited_item_ids=cited, problems=(reason,)))
        return out
