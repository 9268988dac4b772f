"""Short explanations written by the LLM, checked by the grounding validator, with a safe fallback.

Each item gets one greedy attempt, then (if rejected) one sampled retry; what still fails is replaced
by a template sentence built only from catalog facts, and marked `source="template"`.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, Field

from llmrec.agents.grounding import GroundingValidator
from llmrec.prompts import ExplainPromptBuilder
from llmrec.prompts.builders import safe_title
from llmrec.protocols import AdapterRef, LLMEngine
from llmrec.schemas import Explanation, Item


class LLMExplainerConfig(BaseModel):
    max_tokens: int = Field(default=48, ge=8, le=256)
    retries: int = Field(default=1, ge=0, le=3)
    retry_temperature: float = 0.8


def template_explanation(history: Sequence[Item], target: Item, related: Sequence[Item]) -> str:
    """A sentence that states only catalog facts and titles from the user's history."""
    anchors = [f'"{safe_title(item)}"' for item in related[:2]] or ["what you watched"]
    shared = sorted(set(target.genres) & {g for item in related[:2] for g in item.genres})
    because = " and ".join(anchors)
    title = f'"{safe_title(target)}"' + (f" ({target.year})" if target.year else "")
    if shared:
        return f"Because you watched {because}, you may like {title}, which shares their {', '.join(shared)}."
    return f"Because you watched {because}, you may like {title}."


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


class LLMExplainer:
    def __init__(self, engine: LLMEngine, prompts: ExplainPromptBuilder, validator: GroundingValidator,
                 config: LLMExplainerConfig | None = None, adapter: AdapterRef | None = None):
        self.engine = engine
        self.prompts = prompts
        self.validator = validator
        self.config = config or LLMExplainerConfig()
        self.adapter = adapter

    def explain(self, history: Sequence[Item], items: Sequence[Item]) -> list[Explanation]:
        built = [self.prompts.build(self.engine, history, item) for item in items]
        done: dict[int, Explanation] = {}
        problems: dict[int, list[str]] = {i: [] for i in range(len(items))}
        pending = list(range(len(items)))
        for attempt in range(1 + self.config.retries):
            if not pending:
                break
            temperature = 0.0 if attempt == 0 else self.config.retry_temperature
            outputs = self.engine.generate([built[i][0] for i in pending], self.config.max_tokens, self.adapter,
                                           temperature=temperature, stop=["\n"])
            still = []
            for i, continuation in zip(pending, outputs):
                text = _finish(built[i][1], continuation)
                cited, found = self.validator.check(text, history, items[i])
                if len(text[len(built[i][1].strip()):].split()) < 2:
                    found = (*found, "no-reason")  # the model stopped right after the pre-filled words
                if found:
                    problems[i].extend(found)
                    still.append(i)
                else:
                    done[i] = Explanation(item_id=items[i].item_id, text=text, source="llm" if attempt == 0 else "llm-retry",
                                          cited_item_ids=cited, problems=tuple(dict.fromkeys(problems[i])))
            pending = still
        for i in pending:
            related = built[i][2]
            done[i] = Explanation(item_id=items[i].item_id, text=template_explanation(history, items[i], related),
                                  source="template", cited_item_ids=tuple(item.item_id for item in related[:2]),
                                  problems=tuple(dict.fromkeys(problems[i])))
        return [done[i] for i in range(len(items))]

    def fallback(self, history: Sequence[Item], items: Sequence[Item], reason: str) -> list[Explanation]:
        """Template explanations for every item, used when the LLM is unavailable."""
        out = []
        for item in items:
            related = self.prompts.related(history, item)
            out.append(Explanation(item_id=item.item_id, text=template_explanation(history, item, related), source="template",
                                   cited_item_ids=tuple(r.item_id for r in related[:2]), problems=(reason,)))
        return out
