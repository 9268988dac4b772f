"""`llmrec eval --conversational`: the agent against a rule-based simulated user holding a held-out target.

The protocol follows the simulators of iEvaLM and RecAI's InteRecAgent, with rules instead of an LLM:
- each sampled test user's target is their leave-one-out test item; the agent sees the test history
  (training prefix plus the validation item) as an ad-hoc history, and its retriever, popularity and
  co-watch figures are fitted on the training split only;
- turn 1: the user asks for one of the target's genres (the rarest one in the catalog);
- after each reply: the target in the list is a hit at that turn (the user accepts); otherwise the user
  rejects the list with one reason taken from the catalog, the first that applies:
  the era ("from the 1990s", when a shown item is from another decade), another of the target's genres
  ("something Crime"), or a genre most shown items have and the target lacks ("not Romance");
  with none left, "something else";
- at most `turns` turns (5); a miss counts as turns + 1 in the mean turns to a hit.
The simulator speaks in words llmrec's rules read (genre names, decades): what is measured is the
plan (filters, retrieval, ranking, not showing an item twice), not language understanding.

The non-conversational pipeline runs in the same process on the same users and histories:
`recommend` from the history alone, HR@k for k = items per reply and k = items shown over all turns.
"""

from __future__ import annotations

import json
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from llmrec.agents.constraints import Constraints
from llmrec.data.split import LeaveOneOutSplit
from llmrec.eval.stats import bootstrap_ci
from llmrec.schemas import Item, RecommendRequest


class ConversationalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    scenario: str = "movies"
    users: int = Field(default=200, ge=1, description="Seeded sample of test users.")
    seed: int = 0
    turns: int = Field(default=5, ge=1, le=10)
    k: int = Field(default=5, ge=1, le=20, description="Items per reply.")
    llm_understanding: bool = False
    bootstrap: int = Field(default=1000, ge=100)


class SimulatedUser:
    """Holds a target; opens with one of its genres, accepts it when shown, rejects anything else with a reason."""

    def __init__(self, target: Item, genre_counts: Counter):
        self.target = target
        self.genres = sorted((g for g in target.genres if g != "unknown"), key=lambda g: (genre_counts[g], g))
        self.said: set[str] = set()

    def opening(self) -> str:
        if not self.genres:
            return "something good"
        self.said.add(self.genres[0])
        return f"I'm in the mood for {self.genres[0]}"

    def respond(self, shown: Sequence[Item], applied: Constraints) -> str | None:
        """None when the target is among `shown` (accepted); otherwise a rejection with one reason."""
        if any(item.item_id == self.target.item_id for item in shown):
            return None
        year = self.target.year
        decade = year // 10 * 10 if year else None
        if decade and any(i.year is None or i.year // 10 * 10 != decade for i in shown) and applied.year_from != decade:
            return f"No, those aren't it. Something from the {decade}s"
        unsaid = [g for g in self.genres if g not in self.said and g not in applied.genres]
        if unsaid:
            self.said.add(unsaid[0])
            return f"No, I'd like something {unsaid[0]}"
        extra = Counter(g for i in shown for g in i.genres if g not in self.target.genres and g not in applied.exclude_genres)
        common = [g for g, n in extra.most_common() if n * 2 >= len(shown)]
        if common:
            return f"No, not {common[0]}"
        return "No, something else"


class Outcome(BaseModel):
    user: str
    target: str
    hit_turn: int | None
    turns: int
    seconds_per_turn: float
    stage_seconds: dict[str, float] = Field(default_factory=dict, description="Mean seconds per turn in each node of the plan.")
    baseline_rank: int | None = Field(description="1-based position of the target in the pipeline's list; None if absent.")


def _sample(users: Sequence[str], n: int, seed: int) -> list[str]:
    if n >= len(users):
        return list(users)
    chosen = set(random.Random(seed).sample(list(users), n))
    return [u for u in users if u in chosen]


def run_conversational(settings, config: ConversationalConfig, out: Path | None = None, *, engine=None, store: Path | None = None,
                       progress: Callable[[int, int, Outcome], None] | None = None) -> dict:
    """Simulate `config.users` conversations and the one-shot pipeline on the same users; returns the report."""
    from llmrec.agents.conversation import ChatConfig, build_agent
    from llmrec.data.datasets import load_dataset
    from llmrec.pipeline import build_pipeline
    from llmrec.scenario import load_scenario

    home = settings.resolved_home()
    split = LeaveOneOutSplit.from_dataset(load_dataset(load_scenario(config.scenario, home).dataset, home))
    pipeline = build_pipeline(settings, config.scenario, train_histories=split.train_histories(), engine=engine, progress=False)
    folder = store or (out or settings.resolved_home() / "eval-conversational") / "sessions"
    agent = build_agent(settings, config.scenario, pipeline=pipeline, train_histories=split.train_histories(),
                        config=ChatConfig(store=folder, k=config.k, llm_understanding=config.llm_understanding))
    catalog = pipeline.dataset.items
    genre_counts = Counter(g for item in catalog.values() for g in item.genres)
    users = _sample(split.test_users(), config.users, config.seed)
    run = f"{config.seed}-{time.time_ns()}"
    outcomes: list[Outcome] = []
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "conversational-users.jsonl").write_text("")
    for n, user in enumerate(users):
        outcome = _converse(agent, pipeline, split, user, catalog, genre_counts, config, f"{run}-{user}")
        outcomes.append(outcome)
        if out is not None:  # one line per user as it finishes, so a run cut short still leaves its data
            with (out / "conversational-users.jsonl").open("a") as f:
                f.write(outcome.model_dump_json() + "\n")
        if progress:
            progress(n + 1, len(users), outcome)
    report = summarise(outcomes, config, agent.understander.stats.model_dump())
    if out is not None:
        (out / "conversational.json").write_text(json.dumps({**report, "users": [o.model_dump() for o in outcomes]}, indent=2))
        (out / "conversational.md").write_text(markdown(report))
    return report


def _converse(agent, pipeline, split, user, catalog, genre_counts, config, thread) -> Outcome:
    history = split.test_history(user).item_ids
    target = catalog[split.test[user]]
    simulated = SimulatedUser(target, genre_counts)
    message: str | None = simulated.opening()
    seconds: list[float] = []
    stages: Counter = Counter()
    hit = None
    for turn in range(1, config.turns + 1):
        result = agent.say(thread, message, history=history)
        seconds.append(result.seconds)
        stages.update(result.stage_seconds)
        message = simulated.respond([r.item for r in result.items], result.constraints)
        if message is None:
            hit = turn
            break
    baseline = pipeline.recommend(RecommendRequest(history=history, k=config.k * config.turns))
    ranked = [r.item.item_id for r in baseline.recommendations]
    return Outcome(user=user, target=target.item_id, hit_turn=hit, turns=len(seconds), seconds_per_turn=statistics.fmean(seconds),
                   stage_seconds={k: round(v / len(seconds), 3) for k, v in stages.items()},
                   baseline_rank=ranked.index(target.item_id) + 1 if target.item_id in ranked else None)


def summarise(outcomes: Sequence[Outcome], config: ConversationalConfig, understanding: dict) -> dict:
    def ci(values) -> dict:
        return bootstrap_ci(values, config.bootstrap, config.seed).model_dump()

    misses = config.turns + 1
    hits = {f"Hit@{t} turns": ci([float(o.hit_turn is not None and o.hit_turn <= t) for o in outcomes]) for t in range(1, config.turns + 1)}
    shown = config.k * config.turns
    baseline = {f"HR@{config.k}": ci([float(o.baseline_rank is not None and o.baseline_rank <= config.k) for o in outcomes]),
                f"HR@{shown}": ci([float(o.baseline_rank is not None and o.baseline_rank <= shown) for o in outcomes])}
    attempts = understanding["calls"] + understanding["retried"]
    return {
        "config": config.model_dump(), "users": len(outcomes),
        "conversational": {**hits, f"mean turns to a hit (miss = {misses})": ci([float(o.hit_turn or misses) for o in outcomes]),
                           "seconds per turn": ci([o.seconds_per_turn for o in outcomes]),
                           **{f"seconds per turn in {stage}": ci([o.stage_seconds.get(stage, 0.0) for o in outcomes])
                              for stage in dict.fromkeys(s for o in outcomes for s in o.stage_seconds)}},
        "pipeline, history alone": baseline,
        "structured output": {**understanding, "invalid_rate": understanding["invalid_outputs"] / attempts if attempts else 0.0,
                              "fallback_rate": understanding["fallbacks"] / understanding["calls"] if understanding["calls"] else 0.0},
    }


def _cell(e: dict) -> str:
    return f"{e['mean']:.3f} [{e['low']:.3f}, {e['high']:.3f}]"


def markdown(report: dict) -> str:
    lines = [f"# Conversational evaluation ({report['users']} users, simulated)", "", "| measure | mean [95% CI] |", "|---|---|"]
    lines += [f"| {name} | {_cell(e)} |" for name, e in report["conversational"].items()]
    lines += [f"| pipeline, history alone: {name} | {_cell(e)} |" for name, e in report["pipeline, history alone"].items()]
    s = report["structured output"]
    lines += ["", f"Structured output: {s['calls']} LLM calls, {s['invalid_outputs']} invalid outputs (rate {s['invalid_rate']:.3f}), "
                  f"{s['retried']} retries, {s['fallbacks']} fallbacks to the rules, {s['unavailable']} unavailable; "
                  f"the LLM added {s['added']} grounded values and proposed {s['dropped']} the messages did not support."]
    return "\n".join(lines) + "\n"

