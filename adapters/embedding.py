"""Training the `embedding` objective: two linear towers over frozen LLM item vectors (the Trainable side).

Every next-item position of every training prefix is one example: the last `history_items` items
before it make the user vector, and a full softmax over the catalog scores the true next item.
Only `split.train` is read for training; the epoch is chosen on validation NDCG@10 (full ranking
over unseen items), and the fusion weight on the validation targets among the retriever's
candidates. Test targets are never touched here. `agents/encoder.py` serves what this writes.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from llmrec.adapters.encoder_lora import LORA_FOLDER, EncoderLoraConfig, train_encoder_lora
from llmrec.adapters.fit import OBJECTIVE_GRIDS, SHORT_HISTORY_ITEMS, WeightFit, fit_weight_halves, validation_halves, validation_runs
from llmrec.adapters.loop import swap_in
from llmrec.adapters.towers_data import Examples, next_item_examples, validation_ndcg
from llmrec.assets import unique_sibling_dir
from llmrec.data.split import LeaveOneOutSplit
from llmrec.engines.encoder import ITEM_TEXT_VERSION, ItemEncoderConfig, ItemVectors
from llmrec.engines.models import trains_on_config_threads
from llmrec.errors import DatasetError
from llmrec.manifest import model_identity
from llmrec.objectives import EMBEDDING as OBJECTIVE
from llmrec.objectives import TrainRequest
from llmrec.protocols import Retriever
from llmrec.ranking.embedding import TENSORS, WEIGHTS_FILE, EmbeddingRanker, TwoTower, TwoTowerConfig
from llmrec.schemas import Item
from llmrec.settings import Settings

EMBEDDING_GRID = OBJECTIVE_GRIDS[OBJECTIVE]
"""Finer than WEIGHT_GRID below 2: the two-tower's log-softmax is on a different scale than label logprobs."""


class EmbeddingTrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_inf_nan="strings")

    tower: TwoTowerConfig = Field(default_factory=TwoTowerConfig)
    encoder: ItemEncoderConfig = Field(default_factory=ItemEncoderConfig)
    epochs: int = Field(default=8, ge=1, description="Passes over the training positions (fewer if a budget ends first).")
    seeds: int = Field(default=5, ge=1, description="Towers trained from seeds seed.. and averaged (one wider tower, `join`).")
    batch_size: int = Field(default=512, ge=1)
    learning_rate: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.01, ge=0)
    patience: int = Field(default=3, ge=1, description="Epochs without a better validation NDCG@10 before stopping.")
    max_steps: int | None = Field(default=None, ge=1, description="Optimizer steps budget (None: no limit).")
    max_minutes: float | None = Field(default=None, gt=0, description="Wall-time budget for the training loop.")
    seed: int = 0
    threads: int | None = Field(default=1, ge=1, description=(
        "torch threads; None: torch's default. One by default: the matmuls are small, and on a shared 2-core machine "
        "two threads spun in OpenMP barriers (5 seeds took 100 CPU-s on one thread, over 15 CPU-min on two, unfinished)."))
    fusion_grid: tuple[float, ...] = EMBEDDING_GRID
    candidates: int = Field(default=20, ge=2, description="Retriever candidates the fusion weight is fitted on.")
    short_history_items: int = Field(default=SHORT_HISTORY_ITEMS, ge=0, description=(
        "Histories of at most this many items get a fusion weight of their own, fitted and gated on validation targets "
        "with each user's first N training items as history (0: one weight for all)."))
    encoder_lora: EncoderLoraConfig | None = Field(default=None, description=(
        "Stage 2: LoRA on the item encoder's blocks below the pooled layer, trained with the towers (None: frozen encoder)."))


def standardisation(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return matrix.mean(0).astype(np.float32), (matrix.std(0) + 1e-6).astype(np.float32)


class TrainableTowers:
    """The torch side of `TwoTower`: the same tensors, trainable."""

    def __init__(self, vectors: np.ndarray, config: TwoTowerConfig, seed: int, init: TwoTower | None = None):
        """`init`: start from another adapter's maps (transfer); the standardisation is always this catalog's own."""
        import torch

        torch.manual_seed(seed)
        self.center, self.scale = standardisation(vectors)
        self.x = torch.from_numpy((vectors - self.center) / self.scale)
        if init is not None:
            if init.tensors["user_weight"].shape[0] != vectors.shape[1]:
                raise DatasetError(f"the starting adapter's towers take {init.tensors['user_weight'].shape[0]}-wide item vectors; "
                                   f"these are {vectors.shape[1]}-wide (another base model or layer)")
            config = init.config
        width = config.dim if init is None else init.tensors["user_weight"].shape[1]
        self.user = torch.nn.Linear(vectors.shape[1], width)
        self.item = torch.nn.Linear(vectors.shape[1], width)
        if init is not None:
            with torch.no_grad():
                for layer, side in ((self.user, "user"), (self.item, "item")):
                    layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(init.tensors[f"{side}_weight"].T)))
                    layer.bias.copy_(torch.from_numpy(np.ascontiguousarray(init.tensors[f"{side}_bias"])))
        self.config = config

    def parameters(self):
        return [*self.user.parameters(), *self.item.parameters()]

    def logits(self, history, weights):
        pooled = (self.x[history.clamp(min=0)] * weights.unsqueeze(-1)).sum(1)
        return self.user(pooled) @ self.item(self.x).T

    def export(self) -> TwoTower:
        tensors = {"center": self.center, "scale": self.scale,
                   "user_weight": self.user.weight.detach().T.contiguous().numpy().copy(), "user_bias": self.user.bias.detach().numpy().copy(),
                   "item_weight": self.item.weight.detach().T.contiguous().numpy().copy(), "item_bias": self.item.bias.detach().numpy().copy()}
        return TwoTower({k: tensors[k] for k in TENSORS}, self.config)


@dataclass
class TrainResult:
    tower: TwoTower
    manifest: dict


@trains_on_config_threads  # config.threads for this call only
def train_towers(vectors: ItemVectors, split: LeaveOneOutSplit, config: EmbeddingTrainConfig, progress: bool = True,
                 users: Sequence[str] | None = None, init: TwoTower | None = None) -> TrainResult:
    """`config.seeds` towers (seeds seed, seed+1, ...), each with its best validation epoch, joined into one (`join`).

    `users`: learn from these users alone (a few-shot run): their training prefixes give the examples, and their
    validation targets the selection half that picks each seed's epoch. `init`: start every seed from this tower (transfer)."""
    chosen = set(users) if users is not None else None
    histories = split.train if chosen is None else {u: items for u, items in split.train.items() if u in chosen}
    data = next_item_examples(histories, vectors.index(), config.tower)
    if not len(data.target):
        raise DatasetError("no next-item training examples: every user's training prefix is shorter than 2 items")
    selecting = validation_halves([u for u in split.valid_users() if chosen is None or u in chosen], config.seed).selection
    budget = _Budget(config)
    runs = []
    for seed in range(config.seed, config.seed + config.seeds):
        runs.append(_train_one(vectors, split, config, data, seed, budget, progress, selecting, init))
        if budget.spent():
            break
    tower = join([run.pop("tower") for run in runs])
    ndcg = validation_ndcg(tower, vectors, split, users=selecting) if len(runs) > 1 else runs[0]["valid_ndcg10"]
    manifest = {"examples": len(data.target), "steps": budget.steps, "wall_time_s": round(time.perf_counter() - budget.started, 1),
                "seeds": runs, "valid_ndcg10_alone_full_ranking": round(ndcg, 5), "valid_users_selecting": len(selecting)}
    return TrainResult(tower, manifest)


def _train_one(vectors: ItemVectors, split: LeaveOneOutSplit, config: EmbeddingTrainConfig, data: Examples, seed: int,
               budget: _Budget, progress: bool, selecting: Sequence[str], init: TwoTower | None = None) -> dict:
    """AdamW on a full-catalog softmax; the epoch with the best validation NDCG@10 on the selection half of the
    validation users (`selecting`) is kept (patience ends it early): the gate half stays unseen by this choice.
    With no selection users (a tiny few-shot run), the last epoch is kept."""
    import torch

    towers = TrainableTowers(vectors.matrix, config.tower, seed, init)
    optimizer = torch.optim.AdamW(towers.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(seed)
    hist, weights, target = (torch.from_numpy(a) for a in (data.history, data.weights, data.target))
    curve, best, stop = [], (-1.0, None, 0), None  # best: (valid NDCG@10, tower, epoch)
    for epoch in range(1, config.epochs + 1):
        order = torch.randperm(len(target), generator=generator)
        total, seen = 0.0, 0
        bar = tqdm(range(0, len(order), config.batch_size), desc=f"seed {seed}, epoch {epoch}/{config.epochs}", unit="batch",
                   disable=not progress)
        for start in bar:
            idx = order[start : start + config.batch_size]
            loss = torch.nn.functional.cross_entropy(towers.logits(hist[idx], weights[idx]), target[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, seen = total + loss.item() * len(idx), seen + len(idx)
            bar.set_postfix(loss=f"{total / seen:.3f}")
            stop = budget.step()
            if stop:
                break
        tower = towers.export()
        ndcg = validation_ndcg(tower, vectors, split, users=selecting)
        curve.append({"epoch": epoch, "examples": seen, "train_loss": round(total / seen, 4), "valid_ndcg10": round(ndcg, 5),
                      "seconds": round(time.perf_counter() - budget.started, 1)})
        if ndcg > best[0] or not selecting:
            best = (ndcg, tower, epoch)
        if stop or (selecting and epoch - best[2] >= config.patience):
            stop = stop or f"no better validation NDCG@10 for {config.patience} epoch(s)"
            break
    return {"seed": seed, "best_epoch": best[2], "valid_ndcg10": round(best[0], 5), "stopped": stop or "all epochs done",
            "curve": curve, "tower": best[1]}


def join(towers: Sequence[TwoTower]) -> TwoTower:
    """One tower whose score is the mean of the towers' scores: user maps side by side (scaled 1/K), item maps side by side.

    The towers share the standardisation (same item vectors), and <[u1..uK]/K, [v1..vK]> = mean_k <uk, vk>.
    """
    if len(towers) == 1:
        return towers[0]
    k = len(towers)
    side = lambda name, scale: np.concatenate([t.tensors[name] * scale for t in towers], axis=-1).astype(np.float32)  # noqa: E731
    tensors = {"center": towers[0].tensors["center"], "scale": towers[0].tensors["scale"],
               "user_weight": side("user_weight", 1 / k), "user_bias": side("user_bias", 1 / k),
               "item_weight": side("item_weight", 1.0), "item_bias": side("item_bias", 1.0)}
    config = towers[0].config.model_copy(update={"dim": towers[0].config.dim * k})
    return TwoTower({name: tensors[name] for name in TENSORS}, config)


class _Budget:
    """Optimizer steps and wall time, shared by all seeds of a run."""

    def __init__(self, config: EmbeddingTrainConfig):
        self.config, self.steps, self.started = config, 0, time.perf_counter()

    def step(self) -> str | None:
        self.steps += 1
        return self.spent()

    def spent(self) -> str | None:
        if self.config.max_steps is not None and self.steps >= self.config.max_steps:
            return f"step budget ({self.config.max_steps}) spent"
        if self.config.max_minutes is not None and time.perf_counter() - self.started >= self.config.max_minutes * 60:
            return f"time budget ({self.config.max_minutes:g} min) spent"
        return None


def fit_fusion(ranker: EmbeddingRanker, catalog: dict[str, Item], split: LeaveOneOutSplit, retriever: Retriever,
               config: EmbeddingTrainConfig, progress: bool = True, first_items: int | None = None) -> tuple[WeightFit, dict[str, float], int]:
    """The fusion weight on validation targets among the retriever's candidates, chosen on the selection half of the
    validation users and gated on the other (`fit_weight_halves`); `first_items`: with each user's first N training
    items as the history instead (the short-history weight; retrieved without the user's later items)."""
    runs = validation_runs(ranker, catalog, split, split.valid_users(), config.candidates, retriever, first_items, config.seed,
                           progress=progress)
    fit = fit_weight_halves(runs, config.seed, config.fusion_grid)
    grid = {("inf" if math.isinf(w) else str(w)): round(v, 5) for w, v in fit.table.items()}
    return fit, grid, len(runs)


def save_adapter(out: Path, tower: TwoTower, manifest: dict, save_lora=None) -> Path:
    """Write to a sibling folder, then swap it in: a failed or interrupted run never replaces the old adapter.

    `save_lora(folder)` writes stage 2's encoder LoRA (a PEFT folder) into `encoder-lora/`."""
    from safetensors.numpy import save_file

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = unique_sibling_dir(out)
    try:
        if save_lora is not None:
            save_lora(tmp / LORA_FOLDER)
        save_file({k: np.ascontiguousarray(v) for k, v in tower.tensors.items()}, str(tmp / WEIGHTS_FILE))
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
        swap_in(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already when swapped in
    return out


def build_manifest(model: str, config: EmbeddingTrainConfig, split: LeaveOneOutSplit, result: TrainResult, **extra) -> dict:
    return {"objective": OBJECTIVE, "base_model": model_identity(model), "item_text": ITEM_TEXT_VERSION,
            "data_fingerprint": split.fingerprint(), "split_fingerprint": split.fingerprint(), "config": json.loads(config.model_dump_json()), **result.manifest, **extra}


def train_embedding_adapter(settings, scenario_name: str, config: EmbeddingTrainConfig, progress: bool = True,
                            resume: bool = False) -> tuple[Path, dict]:
    """Item vectors (cached) → towers → (encoder LoRA) → fusion weight on validation → adapter folder + scenario file.

    With an encoder LoRA, `<adapter>.resume/` holds the stage-1 towers and stage 2's checkpoint until the adapter is
    published; `resume` continues from them. A time budget that ends stage 2 returns `manifest["complete"] = False`
    and changes nothing else."""
    from llmrec.assets import folder_hash
    from llmrec.data.datasets import load_dataset
    from llmrec.engines.encoder import item_vectors
    from llmrec.engines.models import resolve_model
    from llmrec.manifest import display_name
    from llmrec.pipeline import build_index
    from llmrec.retrieval.retrievers import HybridRetriever
    from llmrec.scenario import (
        AdapterSpec,
        FusionFit,
        FusionSpec,
        ShortHistoryFusion,
        load_scenario,
        save_scenario,
        user_scenario_path,
    )

    home = settings.resolved_home()
    scenario = load_scenario(scenario_name, home)
    dataset = load_dataset(scenario.dataset, home)
    split = LeaveOneOutSplit.from_dataset(dataset)
    model = resolve_model(settings.model, home)
    began = time.perf_counter()
    vectors = item_vectors(model, list(dataset.items.values()), home, config.encoder, progress)
    vector_s = time.perf_counter() - began
    out = user_scenario_path(home, scenario_name).parent / f"adapter-{OBJECTIVE}"
    resume_dir = out.with_name(out.name + ".resume")
    if not resume:
        shutil.rmtree(resume_dir, ignore_errors=True)
    result = _stage_one(vectors, split, config, model, resume_dir if config.encoder_lora else None, resume, progress)
    tower, save_lora, stage_two = result.tower, None, {}
    if config.encoder_lora is not None:
        two = train_encoder_lora(model, list(dataset.items.values()), vectors, tower, split, config.encoder, config.encoder_lora, progress,
                                 checkpoint=resume_dir / "encoder-lora.pt", resume=resume)
        stage_two = {"encoder_lora": two.manifest}
        if not two.manifest["complete"]:
            return resume_dir, {"complete": False, **stage_two}
        if two.save is not None:
            stage_two["valid_ndcg10_alone_full_ranking"] = two.manifest["valid_ndcg10_kept"]
            tower, save_lora, vectors = two.tower, two.save, ItemVectors(vectors.ids, two.matrix)
    retriever = HybridRetriever(index=build_index(settings, dataset, progress=progress)).fit(split.train_histories())
    ranker = EmbeddingRanker(tower, vectors)
    fit, grid, users = fit_fusion(ranker, dataset.items, split, retriever, config, progress)
    fusion = {"weight": None if math.isinf(fit.weight) else fit.weight, "grid": grid, "users": users, "candidates": config.candidates,
              **fit.record()}
    short = None
    if config.short_history_items:
        short_fit, short_grid, _ = fit_fusion(ranker, dataset.items, split, retriever, config, progress, config.short_history_items)
        short = (short_fit, short_grid)
        fusion["short_history"] = {"max_items": config.short_history_items, "weight": None if math.isinf(short_fit.weight) else short_fit.weight,
                                   "grid": short_grid, **short_fit.record()}
    manifest = build_manifest(model, config, split, result, scenario=scenario_name, dataset=scenario.dataset,
                              item_vectors_s=round(vector_s, 1), fusion=fusion, valid_ndcg10_on_candidates_alone=grid["0.0"],
                              valid_ndcg10_fused=grid[_key(fit.weight)], valid_ndcg10_best_weight=grid[_key(fit.best)],
                              valid_ndcg10_retriever_order=grid["inf"], **stage_two)
    out = save_adapter(out, tower, manifest, save_lora)
    shutil.rmtree(resume_dir, ignore_errors=True)
    name = f"{scenario_name}-{OBJECTIVE}"
    scenario.adapter = AdapterSpec(name=name, path=str(out))
    common = {"users": users, "model": display_name(model), "adapter": name, "adapter_sha256": folder_hash(out),
              "permutations": settings.permutations}
    scenario.fusion = FusionSpec(weight=fusion["weight"], fitted_on=FusionFit(
        split=f"{scenario.dataset} leave-one-out, validation targets", grid=grid, **common, **fit.record()))
    if short is not None:
        scenario.fusion.short_history = ShortHistoryFusion(
            max_items=config.short_history_items, weight=fusion["short_history"]["weight"], fitted_on=FusionFit(
                split=f"{scenario.dataset} leave-one-out, validation targets, each user's first {config.short_history_items} "
                      "training items as history", grid=short[1], **common, **short[0].record()))
    save_scenario(scenario, home)
    return out, manifest


def _stage_one(vectors: ItemVectors, split: LeaveOneOutSplit, config: EmbeddingTrainConfig, model: str, folder: Path | None,
               resume: bool, progress: bool) -> TrainResult:
    """The towers; with `folder`, kept there for a resume (and read back from there by one)."""
    import hashlib

    from safetensors.numpy import load_file, save_file

    from llmrec.errors import TrainingConflict

    key = hashlib.sha256(json.dumps([config.model_dump(mode="json", exclude={"encoder_lora", "max_minutes", "threads"}), split.fingerprint(),
                                     model_identity(model)["path"]]).encode()).hexdigest()
    if resume and folder is not None:
        try:
            saved = json.loads((folder / "stage1.json").read_text())
            tensors = load_file(str(folder / "stage1.safetensors"))
        except (OSError, ValueError):
            raise TrainingConflict(f"--resume: no stage-1 towers in {folder}; start without --resume") from None
        if saved.get("key") != key:
            raise TrainingConflict(f"--resume: the towers in {folder} were trained with another config or other data; "
                                   "resume with the same settings, or start again without --resume")
        return TrainResult(TwoTower(tensors, TwoTowerConfig.model_validate(saved["tower"])), saved["manifest"])
    result = train_towers(vectors, split, config, progress)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: np.ascontiguousarray(v) for k, v in result.tower.tensors.items()}, str(folder / "stage1.safetensors"))
        (folder / "stage1.json").write_text(json.dumps({"key": key, "tower": result.tower.config.model_dump(), "manifest": result.manifest}))
    return result


def _key(weight: float) -> str:
    return "inf" if math.isinf(weight) else str(weight)


def train(settings: Settings, request: TrainRequest) -> int:
    """`llmrec adapters train --objective embedding`: towers (and an optional encoder LoRA), fusion fit, store; summary on stderr."""
    from llmrec.engines.models import pick_dtype

    if request.resume and not request.encoder_lora_steps:
        print("llmrec: note: towers alone train in minutes and keep no checkpoint; --resume applies to --encoder-lora-steps "
              "and is ignored", file=sys.stderr)
    options = {"batch_size": request.batch_size, "learning_rate": request.learning_rate, "max_steps": request.steps, "max_minutes": request.minutes}
    encoder = ItemEncoderConfig(dtype=pick_dtype(settings.dtype), **({"layer": request.layer} if request.layer is not None else {}))
    lora = None
    if request.encoder_lora_steps:
        lora = EncoderLoraConfig(steps=request.encoder_lora_steps, blocks=request.encoder_lora_blocks, max_minutes=request.minutes, seed=settings.seed)
    config = EmbeddingTrainConfig(epochs=request.epochs, seeds=request.seeds, seed=settings.seed, encoder=encoder, candidates=settings.candidates,
                                  encoder_lora=lora, **{k: v for k, v in options.items() if v is not None})
    path, manifest = train_embedding_adapter(settings, request.scenario, config, resume=request.resume and lora is not None)
    if not manifest.get("complete", True):
        two = manifest["encoder_lora"]
        print(f"time budget reached at encoder-LoRA step {two['steps_done']} of {lora.steps} (validation NDCG@10 kept so far "
              f"{two['valid_ndcg10_kept']:.4f}); checkpoint kept in {path}, the adapter unchanged: run again with --resume to "
              "continue", file=sys.stderr)
        return 0
    fusion = manifest["fusion"]
    w = "inf (retriever order)" if fusion["weight"] is None else f"{fusion['weight']:g}"
    seeds = manifest["seeds"]
    print(f"embedding adapter saved to {path} ({manifest['wall_time_s']} s training, {len(seeds)} seed(s), best epochs "
          f"{[s['best_epoch'] for s in seeds]}, last: {seeds[-1]['stopped']}); validation NDCG@10: alone (full ranking) {manifest['valid_ndcg10_alone_full_ranking']:.4f}, "
          f"on the candidates alone {manifest['valid_ndcg10_on_candidates_alone']:.4f}, retriever order "
          f"{manifest['valid_ndcg10_retriever_order']:.4f}, fused {manifest['valid_ndcg10_fused']:.4f} at w = {w}; "
          f"scenario {request.scenario} now uses it", file=sys.stderr)
    if lora is not None:
        two = manifest["encoder_lora"]
        print(f"encoder LoRA ({two['trainable_parameters']} parameters on blocks {two['blocks']}, {two['steps_done']} steps, "
              f"{two['seconds_per_step']} s/step, {two['dtype']}): validation NDCG@10 alone {two['valid_ndcg10_stage1']:.4f} -> "
              f"{two['valid_ndcg10_kept']:.4f} at step {two['best_step']}; "
              + ("kept" if two["kept"] else "not kept: no step beat the frozen encoder"), file=sys.stderr)
    return 0
