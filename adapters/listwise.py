"""The `listwise` objective's trainer: LoRA on ranking prompts (lettered candidates, the target's label as the answer)."""

from __future__ import annotations

import random
import sys
from pathlib import Path

from tqdm.auto import tqdm

from llmrec.adapters.fit import adopt
from llmrec.adapters.loop import LoraTrainConfig, RankingExample, train_lora
from llmrec.data.split import LeaveOneOutSplit
from llmrec.manifest import base_model_sha256
from llmrec.objectives import TrainRequest
from llmrec.scenario import load_scenario, user_scenario_path
from llmrec.settings import Settings


def lora_config(settings: Settings, request: TrainRequest) -> LoraTrainConfig:
    """The LoRA loop's config for every LoRA objective: the request's values over this objective's defaults."""
    return LoraTrainConfig(steps=100 if request.steps is None else request.steps, minutes=request.minutes,
                           batch_size=request.batch_size or 8, learning_rate=request.learning_rate or 2e-4,
                           dtype=settings.dtype, seed=settings.seed)


def ranking_examples(settings: Settings, scenario_name: str, n: int) -> tuple[list[RankingExample], str]:
    """Training prompts from the training split: history prefix → the next training item among the candidates.

    The true item replaces a random candidate when the retriever missed it, so its label position
    carries no signal. The retriever must not have seen the example's target (the user's item at position p, in their
    own training prefix): each group of users gets one fitted on the other users' training prefixes only
    (`eval.methods.held_out_retrievers`).
    """
    from llmrec.data.datasets import load_dataset
    from llmrec.engines.models import resolve_model
    from llmrec.engines.vllm import TokenizerFormatter
    from llmrec.eval.methods import held_out_retrievers
    from llmrec.pipeline import build_index
    from llmrec.prompts import RankPromptBuilder, RankPromptConfig
    from llmrec.prompts.builders import LABELS
    from llmrec.retrieval.retrievers import HybridRetriever
    from llmrec.schemas import UserHistory

    home = settings.resolved_home()
    scenario = load_scenario(scenario_name, home)
    dataset = load_dataset(scenario.dataset, home)
    split = LeaveOneOutSplit.from_dataset(dataset)
    retriever = HybridRetriever(index=build_index(settings, dataset))
    model = resolve_model(settings.model, home)
    formatter = TokenizerFormatter(model)
    builder = RankPromptBuilder(RankPromptConfig(domain=scenario.domain, max_history_items=settings.max_history_items,
                                                 token_budget=settings.max_model_len - 16))
    rng = random.Random(settings.seed)
    positions = [(u, p) for u, items in split.train.items() for p in range(max(1, len(items) - 20), len(items)) if p >= 1]
    rng.shuffle(positions)
    examples, chosen = [], positions[:n]
    label_ids = formatter.label_token_ids(LABELS[: settings.candidates])
    retrieved: dict[tuple[str, int], list[str]] = {}
    for group, fitted in held_out_retrievers(retriever, split, sorted({u for u, _ in chosen}), keep=None, seed=settings.seed):
        group = set(group)
        for user, p in tqdm([pos for pos in chosen if pos[0] in group], desc="training candidates (users held out)", leave=False):
            history = UserHistory(user_id=user, item_ids=split.train[user][:p])
            retrieved[user, p] = [c.item_id for c in fitted.retrieve(history, settings.candidates)]
    for user, p in tqdm(chosen, desc="training prompts"):
        items = split.train[user]
        prefix, target = items[:p], items[p]
        candidates = retrieved[user, p]
        if target not in candidates:
            candidates[rng.randrange(len(candidates))] = target
        prompt = builder.build(formatter, [dataset.items[i] for i in prefix], [dataset.items[i] for i in candidates])
        examples.append(RankingExample(prompt.text, tuple(label_ids[: len(candidates)]), candidates.index(target)))
    return examples, model


def train_scenario_adapter(settings: Settings, scenario_name: str, config: LoraTrainConfig, examples: int = 2000,
                           resume: bool = False, fit_users: int = 300, engine=None) -> tuple[Path, dict]:
    """Train the scenario's listwise adapter, then fit its fusion weight on `fit_users` validation users (0: leave it
    unfitted, so the adapter's ranking keeps the retriever's order until `llmrec fit-fusion`). The scenario file
    changes only when the run completes; the weight's grid goes into the adapter's manifest."""
    from llmrec.data.datasets import load_dataset

    home = settings.resolved_home()
    scenario = load_scenario(scenario_name, home)
    data, model = ranking_examples(settings, scenario_name, examples)
    split_fingerprint = LeaveOneOutSplit.from_dataset(load_dataset(scenario.dataset, home)).fingerprint()
    out = user_scenario_path(home, scenario_name).parent / "adapter"
    manifest = train_lora(model, data, out, config, resume=resume,
                          manifest_extra={"scenario": scenario_name, "dataset": scenario.dataset, "split_fingerprint": split_fingerprint,
                                          "base_model_sha256": base_model_sha256(model)})
    if not manifest["complete"] or manifest.get("cached"):
        return out, manifest
    return out, adopt(settings, scenario, out, manifest, fit_users, engine)


def train(settings: Settings, request: TrainRequest) -> int:
    """`llmrec adapters train --objective listwise`: train, fit the fusion weight, store; one summary line on stderr."""
    config = lora_config(settings, request)
    path, manifest = train_scenario_adapter(settings, request.scenario, config, examples=request.examples, resume=request.resume,
                                            fit_users=request.fit_users)
    if manifest.get("cached"):
        print(f"{path} already holds an adapter trained with this base model, data and config; nothing to do", file=sys.stderr)
    elif not manifest["complete"]:
        print(f"time budget reached at step {manifest['steps_done']} of {config.steps} (last loss {manifest['loss_last10']:.3f}); "
              f"checkpoint kept, {path} unchanged: run again with --resume to continue", file=sys.stderr)
    else:
        fusion = manifest.get("fusion")
        fitted = (f"fusion weight fitted on {fusion['users']} validation users: w = {fusion['weight'] if fusion['weight'] is not None else 'inf'} "
                  f"(validation NDCG@10 fused {manifest['valid_ndcg10_fused']:.4f}, alone {manifest['valid_ndcg10_alone']:.4f}, "
                  f"retriever order {manifest['valid_ndcg10_retriever_order']:.4f})" if fusion else
                  f"fusion weight not fitted (--fit-users 0): run `llmrec fit-fusion --scenario {request.scenario}`")
        print(f"adapter saved to {path} ({manifest['wall_time_s']} s, {manifest['autocast']}, last loss {manifest['loss_last10']:.3f}); "
              + fitted, file=sys.stderr)
    return 0
