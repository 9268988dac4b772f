"""Stage 2 of the `embedding` objective: LoRA on the item encoder (HLLM's fine-tuned item LLM, on a CPU budget).

Stage 1 (`adapters.embedding`) trains two linear towers over frozen item vectors. Here the blocks
just below the pooled layer get LoRA, and the towers keep training with them, on the same
full-catalog softmax over next-item targets:

- the hidden states entering those blocks are computed once for every item (the frozen blocks
  below never change), so a step runs only `blocks` transformer blocks, forward and backward;
- every step re-encodes the whole catalog with gradient, so the softmax's negatives are as fresh
  as its positives. (Re-encoding only the batch's targets against a stale bank of the other
  items is cheaper, but it only ever pushes positives up: validation NDCG@10 fell from .096 to
  .041 in 20 steps on ML-100K.)
- validation NDCG@10 (full ranking, alone) every `validate_every` steps; the best state is kept,
  and if no state beats stage 1 the adapter ships without an encoder LoRA.

The LoRA is saved as a PEFT folder (`encoder-lora/`, `adapter_config.json` + safetensors) on the
base model's own layer names, so `agents.encoder` applies it with `PeftModel.from_pretrained` to
compute the served item vectors. With a checkpoint file the run saves its whole state at every
validation and on Ctrl-C, and `--resume` continues it.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from llmrec.assets import atomic_save
from llmrec.engines.encoder import ItemEncoderConfig, ItemVectors, item_text, pooled_layer
from llmrec.errors import TrainingConflict, TrainingInterrupted
from llmrec.ranking.embedding import TwoTower
from llmrec.schemas import Item

LORA_FOLDER = "encoder-lora"
TARGETS = r"self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj"


class EncoderLoraConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: int = Field(default=80, ge=1, description="Optimizer steps (each re-encodes the whole catalog).")
    max_minutes: float | None = Field(default=None, gt=0, description="Wall-time budget; the best validated state is kept.")
    blocks: int = Field(default=2, ge=1, description="LoRA on this many blocks just below the pooled layer; backward stops there.")
    rank: int = Field(default=8, ge=1, le=64)
    alpha: int = 16
    learning_rate: float = Field(default=3e-4, gt=0, description="LoRA weights (3e-4 beat 1e-4 on ML-100K validation at 80 steps).")
    tower_learning_rate: float = Field(default=1e-4, ge=0, description="The stage-1 towers, trained on with the LoRA.")
    batch_size: int = Field(default=2048, ge=1, description="Next-item examples per step; the catalog encoding is shared by all.")
    validate_every: int = Field(default=20, ge=1)
    keep: Literal["best", "last"] = Field(default="best", description=(
        "best: the validated state with the highest validation NDCG@10 (none if stage 1 stays best); last: the final state."))
    seed: int = 0


@dataclass
class StageTwo:
    tower: TwoTower
    matrix: np.ndarray
    manifest: dict
    save: object | None
    """Callable(folder) writing the best LoRA as a PEFT folder; None when stage 1 stayed the best."""


class _Window:
    """The LoRA'd blocks below the pooled layer over cached inputs: item row → pooled vector."""

    def __init__(self, model: str, texts: Sequence[str], encoder: ItemEncoderConfig, config: EncoderLoraConfig, progress: bool):
        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModel, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "right"
        # The frozen blocks in the item vectors' own dtype, so stage 2 starts from exactly stage 1's vectors and serving
        # (agents.encoder, PEFT unmerged) computes what training validated; PEFT keeps the LoRA weights in fp32.
        self.dtype = getattr(torch, encoder.dtype)
        base = AutoModel.from_pretrained(model, dtype=self.dtype).eval()
        blocks = base.config.num_hidden_layers
        top = pooled_layer(encoder.layer, blocks)
        if top < 1 or top > blocks:
            raise ValueError(f"encoder LoRA needs a block output as the pooled layer (got hidden_states[{top}] of {blocks} blocks)")
        start = max(0, top - config.blocks)
        self.cache, self.pool = [], []
        with torch.inference_mode():
            for s in tqdm(range(0, len(texts), 64), desc="encoder LoRA: cache block inputs", unit="batch", disable=not progress):
                batch = tokenizer(list(texts[s : s + 64]), padding=True, truncation=True, max_length=encoder.max_tokens,
                                  return_tensors="pt", return_special_tokens_mask=True)
                special = batch.pop("special_tokens_mask")
                states = base(**batch, output_hidden_states=True).hidden_states[start]
                for i, keep in enumerate(batch["attention_mask"].bool()):
                    self.cache.append(states[i][keep].clone())
                    self.pool.append((1 - special[i])[keep].float())
        sub = copy.deepcopy(base.config)
        sub.num_hidden_layers = top - start
        if getattr(sub, "layer_types", None):
            sub.layer_types = sub.layer_types[start:top]
        window = type(base)(sub)
        window.layers = torch.nn.ModuleList(base.layers[start:top])  # shared: the LoRA injected below lands in both
        window.norm = torch.nn.Identity()
        window.embed_tokens = None
        layers = "|".join(str(i) for i in range(start, top))
        self.peft = get_peft_model(base, LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=0.0,
                                                    target_modules=rf"layers\.({layers})\.({TARGETS})"))
        self.window, self.layers = window, list(range(start, top))
        self.order = sorted(range(len(self.cache)), key=lambda r: len(self.cache[r]))

    def parameters(self):
        return [p for p in self.peft.parameters() if p.requires_grad]

    def encode(self, rows: Sequence[int]):
        import torch

        width = max(len(self.cache[r]) for r in rows)
        hidden = torch.zeros(len(rows), width, self.cache[0].shape[-1], dtype=self.dtype)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        pool = torch.zeros(len(rows), width)
        for j, r in enumerate(rows):
            n = len(self.cache[r])
            hidden[j, :n], mask[j, :n], pool[j, :n] = self.cache[r], 1, self.pool[r]
        out = self.window(inputs_embeds=hidden, attention_mask=mask, use_cache=False).last_hidden_state.float()
        return (out * pool.unsqueeze(-1)).sum(1) / pool.sum(1, keepdim=True).clamp(min=1)

    def encode_all(self, chunk: int = 128):
        """Every item's vector, in catalog order (with gradient unless under no_grad)."""
        import torch

        parts = [self.encode(self.order[s : s + chunk]) for s in range(0, len(self.order), chunk)]
        inverse = torch.empty(len(self.order), dtype=torch.long)
        inverse[torch.tensor(self.order)] = torch.arange(len(self.order))
        return torch.cat(parts)[inverse]


BUDGET_FIELDS = {"steps", "max_minutes", "validate_every"}
"""May change between an interrupted run and its resume: they bound the run, not what it learns."""


def train_encoder_lora(model: str, items: Sequence[Item], vectors: ItemVectors, tower: TwoTower, split, encoder: ItemEncoderConfig,
                       config: EncoderLoraConfig, progress: bool = True, on_validated=None, checkpoint: Path | None = None,
                       resume: bool = False) -> StageTwo:
    """LoRA on the item encoder plus the towers, from stage 1's towers; the best validated state is returned.

    `on_validated(step, tower, matrix)`, if given, sees the state that would be kept were the run to end there.
    With `checkpoint` (a file), the whole state is saved there at every validation and on Ctrl-C, and `resume`
    continues from it (refused, exit 10, if it was made with another config, other data or other stage-1 towers).
    A time budget (`max_minutes`) then ends the run with `manifest["complete"] = False` and the checkpoint kept.
    """
    import torch

    from llmrec.adapters.fit import validation_halves
    from llmrec.adapters.towers_data import next_item_examples, validation_ndcg

    torch.manual_seed(config.seed)
    assert tuple(item.item_id for item in items) == vectors.ids, "items must be in the vectors' order"
    key = _learning_key(config, encoder, tower, split)
    saved = _load_checkpoint(checkpoint, key) if resume else None
    window = _Window(model, [item_text(item) for item in items], encoder, config, progress)
    tensors = {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in tower.tensors.items()}
    center, scale = tensors["center"], tensors["scale"]
    towers = {k: torch.nn.Parameter(tensors[k].clone()) for k in ("user_weight", "user_bias", "item_weight", "item_bias")}
    optimizer = torch.optim.AdamW([{"params": window.parameters(), "lr": config.learning_rate},
                                   {"params": list(towers.values()), "lr": config.tower_learning_rate}], weight_decay=0.0)
    data = next_item_examples(split.train, vectors.index(), tower.config)
    history, weights, target = (torch.from_numpy(a) for a in (data.history, data.weights, data.target))
    generator = torch.Generator().manual_seed(config.seed)

    def export() -> TwoTower:
        out = dict(tower.tensors)
        out.update({k: v.detach().numpy().copy() for k, v in towers.items()})
        return TwoTower(out, tower.config)

    def validate() -> tuple[float, np.ndarray]:
        with torch.no_grad():
            matrix = window.encode_all().numpy()
        return validation_ndcg(export(), ItemVectors(vectors.ids, matrix), split, users=selecting), matrix

    selecting = validation_halves(split.valid_users(), config.seed).selection  # the gate half stays unseen by this choice
    if saved is None:
        stage1 = validation_ndcg(tower, vectors, split, users=selecting)
        order = torch.randperm(len(target), generator=generator)
        run = {"step": 0, "at": 0, "losses": [], "seconds": 0.0, "stage1": stage1,
               "curve": [{"step": 0, "valid_ndcg10": round(stage1, 5), "seconds": 0.0}],
               "best": {"ndcg": stage1, "step": 0, "lora": None, "tower": None, "matrix": None}}
    else:
        run, order = saved["run"], saved["order"]
        window.peft.load_state_dict(saved["lora"], strict=False)
        with torch.no_grad():
            for k, v in saved["towers"].items():
                towers[k].copy_(v)
        optimizer.load_state_dict(saved["optimizer"])
        generator.set_state(saved["generator"])
    best = run["best"]
    started = time.perf_counter() - run["seconds"]
    deadline = time.perf_counter() + config.max_minutes * 60 if config.max_minutes else None

    def snapshot() -> None:
        if checkpoint is None:
            return
        run["seconds"] = round(time.perf_counter() - started, 1)
        lora = {k: v.detach().clone() for k, v in window.peft.state_dict().items() if "lora_" in k}
        state = {"key": key, "run": run, "order": order, "lora": lora, "towers": {k: v.detach().clone() for k, v in towers.items()},
                 "optimizer": optimizer.state_dict(), "generator": generator.get_state()}
        atomic_save(checkpoint, lambda handle: torch.save(state, handle))

    stopped = f"step budget ({config.steps}) spent"
    bar = tqdm(range(run["step"] + 1, config.steps + 1), initial=run["step"], total=config.steps, desc="encoder LoRA steps",
               unit="step", disable=not progress)
    try:
        for step in bar:
            if run["at"] + config.batch_size > len(order):
                order, run["at"] = torch.randperm(len(target), generator=generator), 0
            idx = order[run["at"] : run["at"] + config.batch_size]
            x = (window.encode_all() - center) / scale
            pooled = (x[history[idx].clamp(min=0)] * weights[idx].unsqueeze(-1)).sum(1)
            logits = (pooled @ towers["user_weight"] + towers["user_bias"]) @ (x @ towers["item_weight"] + towers["item_bias"]).T
            loss = torch.nn.functional.cross_entropy(logits, target[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            run["at"] += config.batch_size
            run["step"] = step
            run["losses"].append(round(float(loss.item()), 4))
            bar.set_postfix(loss=f"{np.mean(run['losses'][-5:]):.3f}", best=f"{best['ndcg']:.4f}")
            out_of_time = deadline is not None and time.perf_counter() >= deadline
            if step % config.validate_every == 0 or step == config.steps or out_of_time:
                ndcg, matrix = validate()
                run["curve"].append({"step": step, "valid_ndcg10": round(ndcg, 5), "seconds": round(time.perf_counter() - started, 1)})
                if ndcg > best["ndcg"] or (config.keep == "last" and (step == config.steps or out_of_time)):
                    lora = {k: v.detach().clone() for k, v in window.peft.state_dict().items() if "lora_" in k}
                    best = run["best"] = {"ndcg": ndcg, "step": step, "lora": lora, "tower": export().tensors, "matrix": matrix}
                snapshot()
                if on_validated is not None:
                    kept = (TwoTower(best["tower"], tower.config), best["matrix"]) if best["lora"] is not None else (tower, vectors.matrix)
                    on_validated(step, *kept)
            if out_of_time:
                stopped = f"time budget ({config.max_minutes:g} min) spent at step {step}"
                break
    except KeyboardInterrupt:
        snapshot()
        where = f"; checkpoint saved in {checkpoint}: run again with --resume to continue" if checkpoint else ""
        raise TrainingInterrupted(f"encoder LoRA training interrupted at step {run['step']} of {config.steps}; the existing "
                                  f"adapter is unchanged{where}") from None
    finally:
        bar.close()
    seconds = round(time.perf_counter() - started, 1)
    losses, curve = run["losses"], run["curve"]
    manifest = {"config": config.model_dump(), "blocks": window.layers, "steps_done": run["step"], "stopped": stopped,
                "complete": run["step"] >= config.steps or checkpoint is None, "resumed": saved is not None,
                "wall_time_s": seconds, "seconds_per_step": round(seconds / max(run["step"], 1), 2), "loss_curve": losses,
                "valid_curve": curve, "valid_ndcg10_stage1": round(run["stage1"], 5), "best_step": best["step"],
                "valid_ndcg10_kept": round(best["ndcg"], 5), "valid_ndcg10_max": round(max(c["valid_ndcg10"] for c in curve), 5),
                "trainable_parameters": sum(p.numel() for p in window.parameters()),
                "dtype": encoder.dtype, "valid_users_selecting": len(selecting),
                "kept": best["lora"] is not None}
    if best["lora"] is None:
        return StageTwo(tower, vectors.matrix, manifest, None)

    def save(folder: Path, lora=best["lora"]) -> None:
        window.peft.load_state_dict(lora, strict=False)
        window.peft.save_pretrained(str(folder))

    return StageTwo(TwoTower(best["tower"], tower.config), best["matrix"], manifest, save)


def _learning_key(config: EncoderLoraConfig, encoder: ItemEncoderConfig, tower: TwoTower, split) -> str:
    import hashlib
    import json

    digest = hashlib.sha256(json.dumps([config.model_dump(exclude=BUDGET_FIELDS), encoder.model_dump(exclude={"batch_size"}),
                                        split.fingerprint()]).encode())
    for name in sorted(tower.tensors):
        digest.update(np.ascontiguousarray(tower.tensors[name]).tobytes())
    return digest.hexdigest()


def _load_checkpoint(path: Path | None, key: str) -> dict:
    import torch

    if path is None or not path.is_file():
        raise TrainingConflict(f"--resume: no encoder-LoRA checkpoint at {path}; start without --resume")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - a truncated or foreign file: one line, not a traceback
        raise TrainingConflict(f"--resume: {path} is not a readable checkpoint ({type(exc).__name__}); start without --resume") from None
    if saved.get("key") != key:
        raise TrainingConflict(f"--resume: the checkpoint at {path} was made with another config, other data or other stage-1 "
                               "towers; resume with the same settings, or start again without --resume")
    return saved
