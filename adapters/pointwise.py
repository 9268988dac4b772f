"""Training and validating the `pointwise` objective (TALLRec-style): "will the user enjoy this one? Yes/No".

Training data, from the training part of the leave-one-out split only: a position p of a user's
training prefix gives the prefix items[:p] as history and
- one positive: items[p], the item the user really took next (label Yes);
- `negatives` hard negatives (label No), drawn uniformly from the retriever's first 20 candidates over
  that prefix (fitted on training histories only) among the items the user never took in training.
With the default `negatives=1` the classes are balanced (one Yes per No, no loss weights). Each example
is a `RankingExample` with labels (Yes, No) and target 0 or 1, so `adapters.train.train_lora` trains
it as is, with `objective="pointwise"` in its run key and manifest.

Validation (after training, on seeded validation users; test targets are never touched):
- AUC of the Yes-score, the target (scored even where the retriever missed it) against the retriever's
  other candidates, pooled over users as TALLRec does (`valid_auc`); also among the users whose target
  is among the candidates only (`valid_auc_in_candidates`);
- NDCG@10 on the retriever's candidates: the LLM alone, the retriever's order, fused at each weight of
  the grid, the chosen weight, and that choice cross-fitted on two halves (`valid_ndcg10_fused_heldout`).
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from llmrec.adapters.fit import OBJECTIVE_GRIDS, best_weight, choose_weight, fit_weight_halves
from llmrec.adapters.loop import LoraTrainConfig, RankingExample, train_lora
from llmrec.assets import atomic_write_text
from llmrec.data.catalog import Dataset
from llmrec.data.split import LeaveOneOutSplit
from llmrec.errors import LLMRecError
from llmrec.objectives import POINTWISE as OBJECTIVE
from llmrec.objectives import TrainRequest
from llmrec.prompts.builders import ANSWERS, PointwisePromptBuilder, PointwisePromptConfig
from llmrec.protocols import AdapterRef, LLMEngine, LLMScores, Retriever
from llmrec.ranking.pointwise import PointwiseRanker
from llmrec.scenario import AdapterSpec, FusionFit, FusionSpec, load_scenario, save_scenario, user_scenario_path
from llmrec.schemas import Candidate, UserHistory
from llmrec.settings import Settings

POINTWISE_GRID = OBJECTIVE_GRIDS[OBJECTIVE]
"""Finer than WEIGHT_GRID at the low end: log P(Yes) spreads less between candidates than label logprobs."""


def auc(positives: Sequence[float], negatives: Sequence[float]) -> float:
    """P(a positive scores above a negative), ties counting one half (Mann-Whitney U / (n_pos * n_neg))."""
    import numpy as np
    from scipy.stats import rankdata

    if not len(positives) or not len(negatives):
        raise LLMRecError(f"AUC needs positives and negatives, got {len(positives)} and {len(negatives)}")
    scores = np.asarray([*positives, *negatives], dtype=float)
    if np.isnan(scores).any():
        raise LLMRecError("AUC: a score is NaN")
    ranks = rankdata(scores)  # ties get their mean rank; -inf ranks lowest
    n_pos, n_neg = len(positives), len(negatives)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@dataclass
class Context:
    """What both training and validation read: the data, the split, a retriever fitted on training prefixes, prompts."""

    settings: Settings
    dataset: Dataset
    split: LeaveOneOutSplit
    retriever: Retriever
    model: str
    formatter: object
    """`agents.engines.TokenizerFormatter` of `model`: prompts without an engine."""
    prompts: PointwisePromptBuilder

    @classmethod
    def load(cls, settings: Settings, scenario_name: str, progress: bool = True) -> Context:
        from llmrec.data.datasets import load_dataset
        from llmrec.engines.models import resolve_model
        from llmrec.engines.vllm import TokenizerFormatter
        from llmrec.pipeline import build_index
        from llmrec.retrieval.retrievers import HybridRetriever

        home = settings.resolved_home()
        scenario = load_scenario(scenario_name, home)
        dataset = load_dataset(scenario.dataset, home)
        split = LeaveOneOutSplit.from_dataset(dataset)
        retriever = HybridRetriever(index=build_index(settings, dataset, progress=progress)).fit(split.train_histories())
        prompts = PointwisePromptBuilder(PointwisePromptConfig(domain=scenario.domain, max_history_items=settings.max_history_items,
                                                               token_budget=settings.max_model_len - 16))
        model = resolve_model(settings.model, home)
        return cls(settings, dataset, split, retriever, model, TokenizerFormatter(model), prompts)


def pointwise_examples(context: Context, n: int, negatives: int = 1, progress: bool = True) -> list[RankingExample]:
    """About `n` Yes/No examples: n // (1 + negatives) positions, each one Yes and `negatives` No (see the module doc)."""
    if negatives < 1:
        raise LLMRecError("pointwise training needs at least one negative per positive")
    split, items, formatter = context.split, context.dataset.items, context.formatter
    yes_no = tuple(formatter.label_token_ids(ANSWERS))
    rng = random.Random(context.settings.seed)
    positions = [(u, p) for u, seq in split.train.items() for p in range(max(1, len(seq) - 20), len(seq))]
    rng.shuffle(positions)
    examples: list[RankingExample] = []
    for user, p in tqdm(positions[: max(1, n // (1 + negatives))], desc="pointwise training prompts", disable=not progress):
        positive, chosen = position_items(context, user, p, negatives, rng)
        if not chosen:  # the retriever found nothing the user did not take: a lone Yes would unbalance the classes
            continue
        prefix = split.train[user][:p]
        prompts = context.prompts.build_many(formatter, [items[i] for i in prefix], [items[i] for i in (positive, *chosen)])
        examples.extend(RankingExample(prompt.text, yes_no, 0 if k == 0 else 1) for k, prompt in enumerate(prompts))
    return examples


def position_items(context: Context, user: str, p: int, negatives: int, rng: random.Random) -> tuple[str, list[str]]:
    """(the Yes item, the No items) of position `p` of `user`'s training sequence: items[p], and up to `negatives`
    drawn from the retriever's first `candidates` items over items[:p] among those the user never took in training
    (a later item of the user's own is no negative)."""
    seq = context.split.train[user]
    own, k = set(seq), context.settings.candidates
    pool = [c.item_id for c in context.retriever.retrieve(UserHistory(user_id=user, item_ids=seq[:p]), 3 * k) if c.item_id not in own][:k]
    return seq[p], rng.sample(pool, min(negatives, len(pool)))


def validate(context: Context, engine: LLMEngine, adapter: AdapterRef | None, users: int, batch: int = 2,
             progress: bool = True) -> dict:
    """Yes-scores of seeded validation users' candidates (and their target): AUC, NDCG@10 alone / fused (see the module doc)."""
    from llmrec.data.sampling import sample

    settings, split, items = context.settings, context.split, context.dataset.items
    ranker = PointwiseRanker(engine, items, context.prompts, adapter=adapter)
    chosen = sample(split.valid_users(), users, settings.seed)
    runs, positives, negatives, inside = {}, [], [], []
    started = time.perf_counter()
    for start in tqdm(range(0, len(chosen), batch), desc=f"pointwise validation ({'adapter' if adapter else 'zero-shot'})",
                      unit="batch", disable=not progress):
        group, requests, counts = chosen[start : start + batch], [], []
        for user in group:
            history = split.valid_history(user)
            candidates = context.retriever.retrieve(history, settings.candidates)
            extra = [] if split.valid[user] in {c.item_id for c in candidates} else \
                [Candidate(item_id=split.valid[user], retriever_rank=len(candidates), retriever_score=0.0)]
            requests.append(([items[i] for i in history.item_ids], candidates + extra))
            counts.append(len(candidates))
        for user, (_, scored), n, scores in zip(group, requests, counts, ranker.score_many(requests)):
            target = split.valid[user]
            ids = [c.item_id for c in scored]
            position = ids.index(target)
            positives.append(scores.logprobs[position])
            others = [s for i, s in enumerate(scores.logprobs[:n]) if i != position]
            negatives.extend(others)
            if position < n:
                inside.append((scores.logprobs[position], others))
            kept = scored[:n]
            runs[user] = ([c.item_id for c in kept], LLMScores(scores.logprobs[:n], 0, 0, 0), [c.retriever_rank for c in kept], target)
    seconds = time.perf_counter() - started
    fit = fit_weight_halves(runs, settings.seed, POINTWISE_GRID)  # chosen on one half of the users, gated on the other
    weight = fit.weight
    grid = {_key(w): round(v, 5) for w, v in fit.table.items()}
    return {
        "valid_users": len(runs), "valid_seconds": round(seconds, 1), "valid_targets_in_candidates": len(inside),
        "valid_auc": round(auc(positives, negatives), 4),
        "valid_auc_in_candidates": round(auc([p for p, _ in inside], [x for _, o in inside for x in o]), 4) if inside else None,
        "valid_ndcg10_alone": grid["0.0"], "valid_ndcg10_retriever_order": grid["inf"], "valid_ndcg10_fused": grid[_key(weight)],
        "valid_ndcg10_fused_heldout": _cross_fitted(list(runs.values())),
        "fusion": {"weight": None if math.isinf(weight) else weight, "grid": grid, "users": len(runs), "candidates": settings.candidates,
                   **fit.record()},
    }


def _cross_fitted(runs: list) -> float | None:
    """NDCG@10 fused with the weight chosen on the other half (halves by position in the seeded sample); None under 2 users."""
    halves = (runs[0::2], runs[1::2])
    if not all(halves):
        return None
    total = 0.0
    for fit, held in (halves, halves[::-1]):
        weight = best_weight(choose_weight(fit, POINTWISE_GRID))
        total += choose_weight(held, (weight,))[weight] * len(held)
    return round(total / len(runs), 5)


def _key(weight: float) -> str:
    return "inf" if math.isinf(weight) else str(weight)


def train_pointwise_adapter(settings: Settings, scenario_name: str, config: LoraTrainConfig, examples: int = 2000,
                            resume: bool = False, fit_users: int = 300, negatives: int = 1, engine: LLMEngine | None = None,
                            progress: bool = True) -> tuple[Path, dict]:
    """Train the scenario's pointwise LoRA, then validate it and fit its fusion weight on `fit_users` validation users
    (0: neither, and the weight stays unfitted: the retriever's order until `llmrec fit-fusion`). The scenario
    changes only when all that is done.

    The adapter goes to `<home>/scenarios/<scenario>/adapter-pointwise`. `engine` (default: a new in-process
    one with one LoRA slot) scores the validation users.
    """
    from llmrec.assets import folder_hash
    from llmrec.manifest import base_model_sha256
    from llmrec.pipeline import make_engine

    home = settings.resolved_home()
    scenario = load_scenario(scenario_name, home)
    context = Context.load(settings, scenario_name, progress)
    data = pointwise_examples(context, examples, negatives, progress)
    out = user_scenario_path(home, scenario_name).parent / f"adapter-{OBJECTIVE}"
    mean_tokens = sum(context.formatter.count_tokens(ex.prompt) for ex in data) / len(data)
    manifest = train_lora(context.model, data, out, config, resume=resume, progress=progress, objective=OBJECTIVE,
                          manifest_extra={"scenario": scenario_name, "dataset": scenario.dataset,
                                          "base_model_sha256": base_model_sha256(context.model),
                                          "split_fingerprint": context.split.fingerprint(), "prompt_template": context.prompts.config.template,
                                          "negatives_per_positive": negatives, "mean_prompt_tokens": round(mean_tokens, 1)})
    if manifest.get("cached") and ("fusion" in manifest or not fit_users):
        return out, manifest
    manifest.pop("cached", None)  # a finished run that was never validated (validation failed or stopped) is validated now
    if not manifest["complete"]:
        return out, manifest
    name = f"{scenario_name}-{OBJECTIVE}"
    scenario.adapter = AdapterSpec(name=name, path=str(out))
    scenario.fusion = FusionSpec()  # the old weight was fitted without this adapter: the retriever's order until fitted
    save_scenario(scenario, home)
    _write_manifest(out, manifest)  # the throughput, before a long validation
    if fit_users:
        engine = engine or make_engine(settings, adapters=1)
        manifest.update(validate(context, engine, scenario.adapter, fit_users, progress=progress))
        _write_manifest(out, manifest)
        fusion = manifest["fusion"]
        scenario.fusion = FusionSpec(weight=fusion["weight"], fitted_on=FusionFit(
            split=f"{scenario.dataset} leave-one-out, validation targets", users=fusion["users"], grid=fusion["grid"],
            model=engine.model_name, adapter=name, adapter_sha256=folder_hash(out), permutations=settings.permutations,
            **{k: fusion.get(k) for k in ("best_weight", "p_value", "alpha", "selection_users", "gate_users", "user_split", "gate_grid")}))
        save_scenario(scenario, home)
    return out, manifest


def _write_manifest(out: Path, manifest: dict) -> None:
    """Replace the adapter's manifest in place (atomically); the weights are unchanged."""
    atomic_write_text(out / "manifest.json", json.dumps({k: v for k, v in manifest.items() if k != "cached"}, indent=2) + "\n")


def train(settings: Settings, request: TrainRequest) -> int:
    """`llmrec adapters train --objective pointwise`: train, validate, store; one summary line on stderr.

    Torch trains on one thread unless `config.threads` says otherwise: on a shared 2-core machine, two threads
    trained at 17 tokens/s against 151 on one (bf16, batch 8, 282-token prompts, other jobs running).
    """
    from llmrec.adapters.listwise import lora_config

    config = lora_config(settings, request)
    config = config if config.threads else config.model_copy(update={"threads": 1})
    path, manifest = train_pointwise_adapter(settings, request.scenario, config, examples=request.examples, resume=request.resume,
                                             fit_users=request.fit_users)
    if manifest.get("cached"):
        print(f"{path} already holds a pointwise adapter trained with this base model, data and config; nothing to do", file=sys.stderr)
    elif not manifest["complete"]:
        print(f"time budget reached at step {manifest['steps_done']} of {config.steps} (last loss {manifest['loss_last10']:.3f}, "
              f"{manifest['train_tokens_per_s']} training tokens/s, {manifest['autocast']}); checkpoint kept, {path} unchanged: "
              "run again with --resume to continue", file=sys.stderr)
    elif "fusion" not in manifest:
        print(f"pointwise adapter saved to {path} ({manifest['wall_time_s']} s, {manifest['autocast']}, {manifest['train_tokens_per_s']} "
              f"training tokens/s, last loss {manifest['loss_last10']:.3f}); not validated (--fit-users 0): run "
              f"`llmrec fit-fusion --scenario {request.scenario}` to fit its fusion weight", file=sys.stderr)
    else:
        w = manifest["fusion"]["weight"]
        print(f"pointwise adapter saved to {path} ({manifest['wall_time_s']} s, {manifest['autocast']}, {manifest['train_tokens_per_s']} "
              f"training tokens/s, last loss {manifest['loss_last10']:.3f}); validation ({manifest['valid_users']} users): AUC "
              f"{manifest['valid_auc']:.4f}, NDCG@10 alone {manifest['valid_ndcg10_alone']:.4f}, retriever order "
              f"{manifest['valid_ndcg10_retriever_order']:.4f}, fused {manifest['valid_ndcg10_fused']:.4f} at w = "
              f"{'inf (retriever order)' if w is None else f'{w:g}'} (w chosen on the other half: {manifest['valid_ndcg10_fused_heldout']}); "
              f"scenario {request.scenario} now uses it", file=sys.stderr)
    return 0
