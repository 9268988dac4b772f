"""Fitting what a scenario stores: the LLM/retriever fusion weight, and the LoRA adapter.

Both learn only from the training part of the leave-one-out split (the adapter) or the
validation targets (the weight); test targets are never touched here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from llmrec.assets import atomic_write_text, folder_hash
from llmrec.data.split import LeaveOneOutSplit
from llmrec.eval.metrics import ndcg_at
from llmrec.protocols import LLMScores
from llmrec.ranking.fusion import fuse
from llmrec.scenario import AdapterSpec, FusionFit, FusionSpec, Scenario, load_scenario
from llmrec.settings import Settings

WEIGHT_GRID = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, math.inf)
OBJECTIVE_GRIDS = {
    "embedding": (0.0, 0.125, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0, 8.0, math.inf),
    "pointwise": (0.0, 0.0625, 0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, math.inf),
}
"""Finer than WEIGHT_GRID below 2 where the ranker's scores spread less than label logprobs (the two-tower's log-softmax,
log P(Yes)); every other objective uses WEIGHT_GRID. `llmrec fit-fusion` refits on the adapter's own grid."""

Run = tuple[Sequence[str], LLMScores, Sequence[int], str]
"""One validation user: (candidate ids, the ranker's scores, their retriever ranks, the target)."""

USER_SPLIT_RULE = ("validation users by sha256('<seed>:<user id>') mod 2: 0 selects (the towers' epoch, the encoder "
                   "LoRA's state, the weight grid's best), 1 gates (the chosen weight against the retriever's order)")


@dataclass(frozen=True)
class ValidationHalves:
    """The validation users split once, by a seeded hash of their ids (`USER_SPLIT_RULE`): whatever is selected on
    `selection` is tested on `gate`, users the selection never saw. The same user falls in the same half in every
    objective, every sample size and every run with this seed."""

    selection: list[str]
    gate: list[str]
    seed: int

    def record(self) -> dict:
        return {"selection_users": len(self.selection), "gate_users": len(self.gate), "user_split": f"{USER_SPLIT_RULE}; seed {self.seed}"}


def validation_halves(users: Sequence[str], seed: int) -> ValidationHalves:
    """`users` (in their order) into the selection and gate halves; see `ValidationHalves`."""
    from llmrec.data.split import user_bucket

    selection = [u for u in users if user_bucket(u, seed, 2) == 0]
    chosen = set(selection)
    return ValidationHalves(selection, [u for u in users if u not in chosen], seed)


GATE_ALPHA = 0.05
"""The best weight ships only if its gain over the retriever's order is significant at this level on the fitting users."""


def _per_user(runs: Sequence[tuple[Sequence[str], LLMScores, Sequence[int], str]], weight: float, k: int = 10) -> list[float]:
    out = []
    for ids, scores, ranks, target in runs:
        fused = fuse(scores.logprobs, ranks, weight)
        out.append(ndcg_at([ids[i] for i in sorted(range(len(ids)), key=lambda i: (-fused[i], ranks[i]))], target, k))
    return out


def choose_weight(runs: Sequence[tuple[Sequence[str], LLMScores, Sequence[int], str]], grid=WEIGHT_GRID, k: int = 10) -> dict[float, float]:
    """Mean NDCG@k per weight over (candidate ids, scores, retriever ranks, target) runs."""
    return {weight: sum(_per_user(runs, weight, k)) / max(len(runs), 1) for weight in grid}


def best_weight(table: dict[float, float]) -> float:
    """Highest metric; on a tie, the larger weight (closer to the retriever's order) wins."""
    return max(table, key=lambda w: (round(table[w], 6), w))


@dataclass(frozen=True)
class WeightFit:
    weight: float
    """What ships: `best`, or inf (the retriever's order) when the gate does not confirm `best`'s gain."""
    best: float
    table: dict[float, float]
    """Mean NDCG@k per weight on the users `best` was chosen on (the selection half, with `halves`)."""
    p_value: float | None
    """One-sided paired t-test of `best`'s per-user NDCG over the retriever order's: on the gate half, untouched by the
    choice (with `halves`), else on the choosing users, Bonferroni-corrected for the grid's finite weights; None when
    `best` is inf or no gate user is left."""
    halves: ValidationHalves | None = None
    gate_table: dict[float, float] | None = None
    """Mean NDCG@k on the gate half at `best` and at inf."""

    def record(self) -> dict:
        """The fields a FusionFit stores about the gate."""
        out = {"best_weight": None if math.isinf(self.best) else self.best, "p_value": self.p_value, "alpha": GATE_ALPHA}
        if self.halves is not None:
            out.update(self.halves.record())
            out["gate_grid"] = {_key(w): round(v, 5) for w, v in (self.gate_table or {}).items()}
        return out


def _key(weight: float) -> str:
    return "inf" if math.isinf(weight) else str(weight)


def fit_weight(runs: Sequence[Run], grid=WEIGHT_GRID, k: int = 10, alpha: float = GATE_ALPHA,
               gate_runs: Sequence[Run] | None = None, halves: ValidationHalves | None = None) -> WeightFit:
    """The grid's best weight on `runs`, kept only if it beats the retriever's order significantly on `gate_runs`
    (other users; `fit_weight_halves` makes them). Without `gate_runs` the test is on `runs` themselves, Bonferroni-corrected
    for the grid (biased low: whatever else was chosen on those users is not corrected for).

    Measured on ML-100K: weights chosen on the 943 validation targets gained 4-6% there (even cross-fitted) and lost
    3-7% on the test targets, so a gain within a validation draw's noise is not evidence. Without a significant one
    the list stays in the retriever's order, and the LLM cannot make it worse. The embedding adapter's w = .75 had
    p = .037 uncorrected on validation (11 weights: .41 corrected) and lost on test.
    """
    from scipy.stats import ttest_rel

    table = choose_weight(runs, grid, k)
    best = best_weight(table)
    tested = runs if gate_runs is None else gate_runs
    gate_table = None if gate_runs is None else {w: sum(_per_user(gate_runs, w, k)) / max(len(gate_runs), 1) for w in {best, math.inf}}
    if math.isinf(best):
        return WeightFit(best, best, table, None, halves, gate_table)
    if not tested:
        return WeightFit(math.inf, best, table, None, halves, gate_table)
    gain = np.array(_per_user(tested, best, k)) - np.array(_per_user(tested, math.inf, k))
    p = float(ttest_rel(gain, np.zeros_like(gain), alternative="greater").pvalue) if np.any(gain) else 1.0
    tries = 1 if gate_runs is not None else sum(1 for w in grid if not math.isinf(w))
    p = 1.0 if math.isnan(p) else min(1.0, p * tries)
    return WeightFit(best if p < alpha else math.inf, best, table, round(p, 5), halves, gate_table)


def fit_weight_halves(runs: dict[str, Run], seed: int, grid=WEIGHT_GRID, k: int = 10, alpha: float = GATE_ALPHA) -> WeightFit:
    """`fit_weight` with the weight chosen on the selection half of these users and gated on the other half
    (`validation_halves`): every objective's fusion weight goes through here."""
    halves = validation_halves(list(runs), seed)
    return fit_weight([runs[u] for u in halves.selection], grid, k, alpha, [runs[u] for u in halves.gate], halves)


SHORT_HISTORY_ITEMS = 3
"""The embedding objective's default: histories of at most this many items get a fusion weight of their own."""


def validation_runs(ranker, catalog, split: LeaveOneOutSplit, users: Sequence[str], candidates: int, retriever,
                    first_items: int | None = None, seed: int = 0, batch: int = 16, desc: str = "fusion fit (validation users)",
                    progress: bool = True) -> dict[str, Run]:
    """Each user's run on their validation target, in `users`' order: the training prefix as history, or with
    `first_items` its first N items (the short-history weight). A short history is retrieved by a copy of `retriever`
    fitted without the user's later items (`eval.methods.held_out_retrievers`), as a real short-history user's would be."""
    from llmrec.eval.methods import held_out_retrievers
    from llmrec.schemas import UserHistory

    users = list(users)
    groups = held_out_retrievers(retriever, split, users, first_items, seed) if first_items else [(users, retriever)]
    runs: dict[str, Run] = {}
    with tqdm(total=len(users), desc=desc + (f", first {first_items} items" if first_items else ""), unit="user", disable=not progress) as bar:
        for group, fitted in groups:
            for start in range(0, len(group), batch):
                chunk, requests = group[start : start + batch], []
                for user in chunk:
                    history = UserHistory(user_id=user, item_ids=split.train[user][:first_items]) if first_items else split.valid_history(user)
                    requests.append(([catalog[i] for i in history.item_ids], fitted.retrieve(history, candidates)))
                for user, (_, cands), scores in zip(chunk, requests, ranker.score_many(requests)):
                    runs[user] = ([c.item_id for c in cands], scores, [c.retriever_rank for c in cands], split.valid[user])
                bar.update(len(chunk))
    return {user: runs[user] for user in users}


def fit_fusion_weight(settings: Settings, scenario_name: str, users: int = 300, batch: int = 16,
                      engine=None) -> tuple[Scenario, dict[str, float]]:
    """The scenario's fusion weight on `users` seeded validation users, on its objective's grid (`OBJECTIVE_GRIDS`),
    chosen on their selection half and gated on the other (`fit_weight_halves`). A scenario with a short-history
    weight (every embedding adapter has one) gets it refitted the same way, with its own `max_items`."""
    from llmrec.data.datasets import load_dataset
    from llmrec.data.sampling import sample
    from llmrec.manifest import objective_of
    from llmrec.objectives import DEFAULT, EMBEDDING
    from llmrec.pipeline import build_pipeline
    from llmrec.scenario import ShortHistoryFusion

    home = settings.resolved_home()
    scenario = load_scenario(scenario_name, home)
    split = LeaveOneOutSplit.from_dataset(load_dataset(scenario.dataset, home))
    pipeline = build_pipeline(settings, scenario_name, train_histories=split.train_histories(), engine=engine)
    objective = objective_of(scenario.adapter) if scenario.adapter else DEFAULT
    weights = OBJECTIVE_GRIDS.get(objective, WEIGHT_GRID)
    chosen = sample(split.valid_users(), users, settings.seed)
    catalog = pipeline.dataset.items

    def fit(first_items: int | None = None) -> tuple[WeightFit, dict[str, float], FusionFit]:
        runs = validation_runs(pipeline.ranker, catalog, split, chosen, settings.candidates, pipeline.retriever, first_items,
                               settings.seed, batch)
        fitted = fit_weight_halves(runs, settings.seed, weights)
        grid = {_key(w): round(v, 5) for w, v in fitted.table.items()}
        where = f"{scenario.dataset} leave-one-out, validation targets" + (
            f", each user's first {first_items} training items as history" if first_items else "")
        record = FusionFit(split=where, users=len(runs), grid=grid, **fitted.record(), model=pipeline.engine.model_name,
                           adapter=scenario.adapter.name if scenario.adapter else None,
                           adapter_sha256=folder_hash(Path(scenario.adapter.path)) if scenario.adapter else None,
                           permutations=settings.permutations)
        return fitted, grid, record

    main, grid, record = fit()
    old_short = scenario.fusion.short_history
    short_items = old_short.max_items if old_short else (SHORT_HISTORY_ITEMS if objective == EMBEDDING else 0)
    fusion = FusionSpec(weight=None if math.isinf(main.weight) else main.weight, fitted_on=record)
    if short_items:
        short, _, short_record = fit(short_items)
        fusion.short_history = ShortHistoryFusion(max_items=short_items, weight=None if math.isinf(short.weight) else short.weight,
                                                  fitted_on=short_record)
    scenario.fusion = fusion
    return scenario, grid


def adopt(settings: Settings, scenario: Scenario, out: Path, manifest: dict, fit_users: int, engine=None) -> dict:
    """Make the finished LoRA adapter in `out` the scenario's, then fit its fusion weight on `fit_users` validation
    users (0: leave it unfitted, so it keeps the retriever's order until `llmrec fit-fusion`); the grid and the
    validation NDCG@10 fused, alone and in retriever order join the manifest."""
    from llmrec.scenario import save_scenario

    home = settings.resolved_home()
    scenario.adapter = AdapterSpec(name=scenario.name, path=str(out))
    scenario.fusion = FusionSpec()  # the old weight was fitted without this adapter
    save_scenario(scenario, home)
    if not fit_users:
        return manifest
    scenario, grid = fit_fusion_weight(settings, scenario.name, users=fit_users, engine=engine)
    fit = scenario.fusion.fitted_on
    manifest = {**manifest, "fusion": {"weight": scenario.fusion.weight, "grid": grid, "users": fit.users if fit else 0,
                                       "best_weight": fit.best_weight if fit else None, "p_value": fit.p_value if fit else None,
                                       **(fit.model_dump(include={"selection_users", "gate_users", "user_split", "gate_grid"}) if fit else {})},
                "valid_ndcg10_fused": grid["inf" if scenario.fusion.weight is None else str(scenario.fusion.weight)],
                "valid_ndcg10_alone": grid["0.0"], "valid_ndcg10_retriever_order": grid["inf"]}
    _rewrite_manifest(out, manifest)
    if fit is not None:  # the fit recorded the folder's hash before its grid joined the manifest
        scenario.fusion = scenario.fusion.model_copy(update={"fitted_on": fit.model_copy(update={"adapter_sha256": folder_hash(out)})})
    save_scenario(scenario, home)
    return manifest


def _rewrite_manifest(out: Path, manifest: dict) -> None:
    """Add the fit to the manifest in place (atomically); the adapter weights are unchanged."""
    import json

    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=2, default=str) + "\n")
