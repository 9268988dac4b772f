"""Quality of the explanations the pipeline's explainer writes for the top of a ranking.

The explainer pre-fills the citation of one watched title and checks every sentence with the
`GroundingValidator`; a rejected sentence is retried once, then replaced by a template. So the
final texts are grounded by construction, and the informative numbers are how often the LLM's own
attempts were rejected, and for what:

- grounding: a rejected attempt cited an unwatched title or no history item;
- attribute faithfulness: a rejected attempt stated a genre or year the items do not have;
- the final texts are validated again, as a check of the safety net.
"""

from __future__ import annotations

import itertools
import re
import statistics
import time
from collections.abc import Mapping, Sequence

from pydantic import BaseModel
from tqdm.auto import tqdm

from llmrec.agents.explainer import LLMExplainer
from llmrec.errors import LLMUnavailable
from llmrec.eval.methods import Case
from llmrec.schemas import Explanation, Item

GROUNDING = {"unwatched-title", "no-history-citation"}
ATTRIBUTES = {"wrong-genre", "wrong-year"}


class ExplanationQuality(BaseModel):
    users: int
    explanations: int
    first_try_accepted: float
    """Share accepted on the greedy first attempt (`source == 'llm'`)."""
    retry_accepted: float
    template_fallback: float
    attempts_with_grounding_problems: float
    """Share of explanations where some rejected LLM attempt cited an unwatched title or nothing from the history."""
    attempts_with_attribute_problems: float
    """Share where some rejected attempt stated a wrong genre or year."""
    final_grounded: float
    """Share of final texts with no grounding problem when validated again (should be 1)."""
    final_attributes_faithful: float
    distinct_share: float
    mean_pairwise_jaccard: float
    mean_words: float
    seconds_per_user: list[float]
    problems: dict[str, int]
    examples: list[dict]
    final_failures: list[dict]
    """Final texts that fail the validator when checked again (the explainer should never return one)."""


def tokens(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9']+", text.lower()))


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def mean_pairwise_jaccard(texts: Sequence[str]) -> float:
    """Mean token-set Jaccard over all pairs (1 = every text says the same words); 0 for fewer than 2 texts."""
    sets = [tokens(t) for t in texts]
    pairs = list(itertools.combinations(range(len(sets)), 2))
    return statistics.fmean(jaccard(sets[i], sets[j]) for i, j in pairs) if pairs else 0.0


def measure(explainer: LLMExplainer, catalog: Mapping[str, Item], cases: Sequence[Case], rankings: Mapping[str, Sequence[str]],
            k: int, progress: bool = True) -> ExplanationQuality:
    produced: list[tuple[Case, Item, Explanation]] = []
    seconds: list[float] = []
    for case in tqdm(cases, desc="explanations", unit="user", disable=not progress):
        history = [catalog[i] for i in case.history.item_ids]
        items = [catalog[i] for i in rankings[case.user_id][:k]]
        start = time.perf_counter()
        try:
            explained = explainer.explain(history, items)
        except LLMUnavailable as exc:
            explained = explainer.fallback(history, items, "llm-unavailable")
            print(f"explanations: the LLM failed for user {case.user_id} ({exc}); templates used", flush=True)
        seconds.append(round(time.perf_counter() - start, 3))
        produced.extend((case, item, e) for item, e in zip(items, explained))
    if not produced:
        raise ValueError("no explanations to measure")
    n = len(produced)
    problems: dict[str, int] = {}
    final_grounded = final_faithful = 0
    failures = []
    for case, item, exp in produced:
        for p in exp.problems:
            problems[p] = problems.get(p, 0) + 1
        _, found = explainer.validator.check(exp.text, [catalog[i] for i in case.history.item_ids], item)
        final_grounded += not (set(found) & GROUNDING)
        final_faithful += not (set(found) & ATTRIBUTES)
        if found:
            failures.append({"user_id": case.user_id, "item_id": item.item_id, "source": exp.source, "text": exp.text,
                             "problems": list(found)})
    texts = [e.text for _, _, e in produced]
    return ExplanationQuality(
        users=len(cases), explanations=n,
        first_try_accepted=sum(e.source == "llm" for *_, e in produced) / n,
        retry_accepted=sum(e.source == "llm-retry" for *_, e in produced) / n,
        template_fallback=sum(e.source == "template" for *_, e in produced) / n,
        attempts_with_grounding_problems=sum(bool(set(e.problems) & GROUNDING) for *_, e in produced) / n,
        attempts_with_attribute_problems=sum(bool(set(e.problems) & ATTRIBUTES) for *_, e in produced) / n,
        final_grounded=final_grounded / n, final_attributes_faithful=final_faithful / n,
        distinct_share=len(set(texts)) / n, mean_pairwise_jaccard=round(mean_pairwise_jaccard(texts), 4),
        mean_words=statistics.fmean(len(t.split()) for t in texts), seconds_per_user=seconds,
        problems=dict(sorted(problems.items())),
        examples=[{"user_id": c.user_id, "item": i.label(), "source": e.source, "text": e.text} for c, i, e in produced[:8]],
        final_failures=failures,
    )
