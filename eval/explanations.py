"""Quality of the explanations the pipeline's explainer writes for the top of a ranking.

Each explanation is llmrec's filled-in evidence (co-watch figures, shared genres) plus one short generated
reason, checked with the `GroundingValidator`; a rejected reason is dropped (retried first if the explainer's
`retries` > 0) and the evidence alone ships (`source="template"`). So the final texts are grounded by
construction, and the informative numbers are how often the LLM's own reasons were rejected, and for what:

- grounding: a rejected attempt cited an unwatched title or no history item;
- attribute faithfulness: a rejected attempt stated a genre or year the items do not have;
- the final texts are validated again, as a check of the safety net;
- claims (`agents.claims`): how often the generated part of a shipped explanation (not llmrec's filled-in
  evidence) still states something outside the catalog and the user's history (a plot, a cast, a title the
  user never watched, a wrong genre or year), per explanation and per claim, by kind; and the same for every
  attempt the model made, rejected ones included;
- "like X" claims: how many shipped texts say the item is like a watched title, and the share of those claims the
  co-watch figures support (`CoWatch.close`; it should be 1);
- information: the share of shipped generated reasons, and of all attempts, that add a word the reader does not
  already have from the evidence, the item's genres, title and year (`explain.explainer.new_words`).
"""

from __future__ import annotations

import itertools
import re
import statistics
import time
from collections.abc import Mapping, Sequence

from pydantic import BaseModel
from tqdm.auto import tqdm

from llmrec.errors import LLMUnavailable
from llmrec.eval.methods import Case
from llmrec.explain.claims import KINDS, ClaimChecker
from llmrec.explain.evidence import like_claims
from llmrec.explain.explainer import Explained, LLMExplainer, new_words, safe_label
from llmrec.schemas import Explanation, Item

GROUNDING = {"unwatched-title", "no-history-citation"}
ATTRIBUTES = {"wrong-genre", "wrong-year"}


class ClaimRates(BaseModel):
    with_generated: int
    """Shipped explanations with a generated part (the rest are llmrec's evidence alone)."""
    generated_outside: float
    """Share of those whose generated part states something outside the catalog and the user's history."""
    claims: int
    claims_outside: float
    """Share of the claims found in shipped generated parts that are outside."""
    by_kind: dict[str, dict[str, int]]
    """Per kind (title, genre, year, plot, people): claims found and claims outside, in shipped generated parts."""
    attempts: int
    attempts_outside: float
    """Share of all the model's attempts, rejected ones included, that state something outside."""
    examples: list[dict]


class SupportRates(BaseModel):
    like_claims: int
    """"Like X" claims (X a watched title) in the shipped texts, evidence and generated parts alike."""
    like_supported: float
    """Share of those claims whose co-watch figures pass the support threshold (`CoWatch.close`); 1 when there are none."""
    examples: list[dict]
    """Unsupported claims: the item, the title it was said to be like, and the text."""


class InformationRates(BaseModel):
    with_generated: int
    generated_informative: float
    """Share of shipped generated reasons with at least one word that the evidence, the item's genres, title and year
    do not already give (`new_words`); the explainer ships no other, so it should be 1."""
    attempts: int
    attempts_informative: float
    """The same over every attempt the model made, rejected ones included: what the model itself adds."""
    examples: list[dict]
    """Attempts that add nothing beyond the evidence."""


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
    claims: ClaimRates | None = None
    """Claims in the generated parts, checked against the catalog and the history (None when nothing was generated)."""
    support: SupportRates | None = None
    information: InformationRates | None = None
    """None when the model wrote nothing (every explanation is the evidence alone)."""


def support_rates(explainer: LLMExplainer, rows: Sequence[tuple[Item, Sequence[Item], Explanation]]) -> SupportRates:
    """"Like X" claims over (item, history, shipped explanation) rows, each checked against the explainer's co-watch figures."""
    claims = supported = 0
    examples = []
    for item, history, exp in rows:
        for anchor in like_claims(exp.text, history, safe_label):
            claims += 1
            ok = explainer.cowatch.close(item.item_id, anchor.item_id)
            supported += ok
            if not ok and len(examples) < 8:
                examples.append({"item": item.label(), "like": anchor.label(), "text": exp.text})
    return SupportRates(like_claims=claims, like_supported=supported / claims if claims else 1.0, examples=examples)


def information_rates(explainer: LLMExplainer, rows: Sequence[tuple[Item, Explained]]) -> InformationRates | None:
    """Shares of shipped generated reasons and of all attempts that add words beyond the evidence; None if nothing was generated."""
    shipped = informative = attempts = informative_attempts = 0
    examples = []
    for item, part in rows:
        for words in part.attempts:
            attempts += 1
            adds = bool(new_words(words, part.evidence, item, explainer.domain))
            informative_attempts += adds
            if not adds and words and len(examples) < 8:
                examples.append({"item": item.label(), "evidence": part.evidence, "generated": words})
        if part.generated:
            shipped += 1
            informative += bool(new_words(part.generated, part.evidence, item, explainer.domain))
    if not shipped and not attempts:
        return None
    return InformationRates(with_generated=shipped, generated_informative=informative / shipped if shipped else 0.0,
                            attempts=attempts, attempts_informative=informative_attempts / attempts if attempts else 0.0,
                            examples=examples)


def claim_rates(checker: ClaimChecker, rows: Sequence[tuple[Item, Sequence[Item], Sequence[Item], Explained]]) -> ClaimRates | None:
    """Claim rates over (item, history, history items the evidence cites, explained) rows; None if none has a generated part."""
    by_kind = {k: {"found": 0, "outside": 0} for k in KINDS}
    shipped = outside_texts = outside_claims = attempts = outside_attempts = 0
    examples = []
    for item, history, cited, explained in rows:
        for words in explained.attempts:
            attempts += 1
            outside_attempts += bool(checker.check(words, item, history, cited).outside)
        if not explained.generated:
            continue
        check = checker.check(explained.generated, item, history, cited)
        shipped += 1
        outside_texts += bool(check.outside)
        outside_claims += len(check.outside)
        for claim in check.claims:
            by_kind[claim.kind]["found"] += 1
            by_kind[claim.kind]["outside"] += claim.outside
        if check.outside and len(examples) < 8:
            examples.append({"item": item.label(), "generated": explained.generated,
                             "outside": [f"{c.kind}: {c.text}" for c in check.outside]})
    if not shipped and not attempts:
        return None
    found = sum(k["found"] for k in by_kind.values())
    return ClaimRates(with_generated=shipped, generated_outside=outside_texts / shipped if shipped else 0.0, claims=found,
                      claims_outside=outside_claims / found if found else 0.0, by_kind=by_kind, attempts=attempts,
                      attempts_outside=outside_attempts / attempts if attempts else 0.0, examples=examples)


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
    parts: list[Explained] = []
    seconds: list[float] = []
    for case in tqdm(cases, desc="explanations", unit="user", disable=not progress):
        history = [catalog[i] for i in case.history.item_ids]
        items = [catalog[i] for i in rankings[case.user_id][:k]]
        start = time.perf_counter()
        try:
            explained = explainer.explain_parts(history, items)
        except LLMUnavailable as exc:
            explained = [Explained(e, e.text, "") for e in explainer.fallback(history, items, "llm-unavailable")]
            print(f"explanations: the LLM failed for user {case.user_id} ({exc}); templates used", flush=True)
        seconds.append(round(time.perf_counter() - start, 3))
        produced.extend((case, item, e.explanation) for item, e in zip(items, explained))
        parts.extend(explained)
    if not produced:
        raise ValueError("no explanations to measure")
    n = len(produced)
    problems: dict[str, int] = {}
    final_grounded = final_faithful = 0
    failures = []
    for (case, item, exp), part in zip(produced, parts):
        for p in exp.problems:
            problems[p] = problems.get(p, 0) + 1
        _, found = explainer.validate(exp.text, [catalog[i] for i in case.history.item_ids], item, part.evidence)
        final_grounded += not (set(found) & GROUNDING)
        final_faithful += not (set(found) & ATTRIBUTES)
        if found:
            failures.append({"user_id": case.user_id, "item_id": item.item_id, "source": exp.source, "text": exp.text,
                             "problems": list(found)})
    texts = [e.text for _, _, e in produced]
    rows = []
    for (case, item, _), part in zip(produced, parts):
        history = [catalog[i] for i in case.history.item_ids]
        cited = [catalog[i] for i in explainer.validate(part.evidence, history, item, part.evidence)[0]]
        rows.append((item, history, cited, part))
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
        final_failures=failures, claims=claim_rates(ClaimChecker(catalog.values(), explainer.validator), rows),
        support=support_rates(explainer, [(item, history, e.explanation) for (item, history, _, e) in rows]),
        information=information_rates(explainer, [(item, e) for (item, _, _, e) in rows]),
    )
