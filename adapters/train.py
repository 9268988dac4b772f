"""PEFT LoRA training for the ranking task: cross-entropy on the correct label at the answer position.

Training uses the same prompt builder as inference, and the loss is taken over the label tokens
only, which is what the ranker reads (vLLM renormalises the logprobs over the allowed labels).
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, Field
from tqdm.auto import tqdm


class LoraTrainConfig(BaseModel):
    rank: int = Field(default=8, ge=1, le=64)
    alpha: int = 16
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    learning_rate: float = 2e-4
    steps: int = Field(default=100, ge=1)
    batch_size: int = Field(default=8, ge=1)
    seed: int = 0
    dtype: str = "float32"
    threads: int | None = None


@dataclass(frozen=True)
class RankingExample:
    prompt: str
    labels: tuple[int, ...]
    """Token ids of the labels shown in the prompt, in order."""
    target: int
    """Index into `labels` of the item the user really chose next."""


def train_lora(base_model: str, examples: list[RankingExample], out_dir: Path, config: LoraTrainConfig,
               manifest_extra: dict | None = None, progress: bool = True) -> dict:
    """Train, save a PEFT folder (adapter_config.json names `base_model`) plus manifest.json; return the manifest."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not examples:
        raise ValueError("no training examples")
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=getattr(torch, config.dtype))
    model = get_peft_model(model, LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=0.0,
                                             target_modules=config.target_modules, task_type="CAUSAL_LM"))
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    order: list[int] = []
    losses: list[float] = []
    started = time.perf_counter()
    bar = tqdm(range(config.steps), desc="LoRA steps", disable=not progress)
    for _ in bar:
        if len(order) < config.batch_size:
            fresh = list(range(len(examples)))
            rng.shuffle(fresh)
            order.extend(fresh)
        batch = [examples[order.pop()] for _ in range(config.batch_size)]
        encoded = [tokenizer(ex.prompt, add_special_tokens=False)["input_ids"] for ex in batch]
        width = max(map(len, encoded))
        ids = torch.tensor([[pad] * (width - len(e)) + e for e in encoded])
        mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded])
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=1).logits[:, -1, :]
        label_logits = torch.stack([logits[i, list(ex.labels)] for i, ex in enumerate(batch)])
        targets = torch.tensor([ex.target for ex in batch])
        loss = torch.nn.functional.cross_entropy(label_logits, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{sum(losses[-10:]) / len(losses[-10:]):.3f}")
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    manifest = {
        "base_model": base_model,
        "train_config": config.model_dump(),
        "examples": len(examples),
        "wall_time_s": round(time.perf_counter() - started, 1),
        "loss_first": losses[0],
        "loss_last10": sum(losses[-10:]) / len(losses[-10:]),
        **(manifest_extra or {}),
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
