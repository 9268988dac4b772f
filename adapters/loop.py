"""PEFT LoRA training for the ranking task: cross-entropy on the correct label at the answer position.

Training uses the same prompt builder as inference, and the loss is taken over the label tokens
only, which is what the ranker reads (vLLM renormalises the logprobs over the allowed labels).

A run that users can trust with hours of CPU:
- a step budget and/or a wall-clock budget (`minutes`), whichever ends first;
- bf16 autocast where the CPU has bf16 instructions (`dtype="auto"`, as the engine picks), fp32 otherwise;
- checkpoints every `checkpoint_every` steps, and on Ctrl-C, in `<out>.partial/`; `resume=True`
  continues from there, and refuses a checkpoint made with another config or other data;
- the finished adapter replaces `<out>` only at the very end (staged, then renamed), so a failed or
  interrupted run never touches the adapter that was there;
- a run whose key (base model, data fingerprint, objective, config) matches the manifest already in
  `<out>` is not repeated.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, Field
from tqdm.auto import tqdm

from llmrec.assets import unique_sibling_dir
from llmrec.engines.models import trains_on_config_threads
from llmrec.errors import LLMRecError, TrainingConflict, TrainingInterrupted
from llmrec.objectives import LISTWISE as OBJECTIVE
from llmrec.scenario import Scenario

BUDGET_FIELDS = {"steps", "minutes", "checkpoint_every", "threads"}
"""Fields that may change between an interrupted run and its resume: they bound the run, not what it learns."""


class LoraTrainConfig(BaseModel):
    rank: int = Field(default=8, ge=1, le=16, description="LoRA rank; at most the engines' max_lora_rank (16), or the adapter is refused.")
    alpha: int = 16
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    learning_rate: float = 2e-4
    steps: int = Field(default=100, ge=1, description="Optimizer steps in all, counting the ones before a resume.")
    minutes: float | None = Field(default=None, gt=0, description="Wall-clock budget of this invocation; stops early, resumable.")
    batch_size: int = Field(default=8, ge=1)
    seed: int = 0
    dtype: str = Field(default="auto", description="auto: bf16 autocast where the CPU has bf16 instructions, else fp32.")
    checkpoint_every: int = Field(default=25, ge=1)
    threads: int | None = None
    top_layers: int | None = Field(default=None, ge=1, description=(
        "LoRA on the last N transformer blocks only (None: all). Backward then stops below them, which is most "
        "of the CPU time of a step."))

    def learning_key(self) -> dict:
        """What a resume must share with the checkpoint it continues."""
        return self.model_dump(exclude=BUDGET_FIELDS)


@dataclass(frozen=True)
class RankingExample:
    prompt: str
    labels: tuple[int, ...]
    """Token ids of the labels shown in the prompt, in order."""
    target: int
    """Index into `labels` of the item the user really chose next."""


def data_fingerprint(examples: list[RankingExample]) -> str:
    digest = hashlib.sha256()
    for ex in examples:
        digest.update(json.dumps([ex.prompt, list(ex.labels), ex.target]).encode())
    return digest.hexdigest()[:16]


def run_key(base_model: str, fingerprint: str, config: LoraTrainConfig, objective: str = OBJECTIVE) -> str:
    payload = {"base": base_model, "data": fingerprint, "objective": objective, "config": config.model_dump()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _autocast_dtype(config: LoraTrainConfig):
    import torch

    from llmrec.engines.models import pick_dtype

    name = pick_dtype(config.dtype)
    return None if name == "float32" else getattr(torch, name)


class _Checkpoint:
    """`<out>.partial/checkpoint`: adapter weights, optimizer and RNG state, step and losses."""

    def __init__(self, out_dir: Path):
        self.root = out_dir.with_name(out_dir.name + ".partial")
        self.folder = self.root / "checkpoint"

    def exists(self) -> bool:
        return (self.folder / "state.pt").is_file()

    def save(self, model, optimizer, state: dict) -> None:
        import torch

        self.root.mkdir(parents=True, exist_ok=True)
        tmp = unique_sibling_dir(self.folder, ".tmp")
        model.save_pretrained(tmp)
        torch.save({"optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state(), **state}, tmp / "state.pt")
        shutil.rmtree(self.folder, ignore_errors=True)
        tmp.rename(self.folder)

    def load(self) -> dict:
        import torch

        return torch.load(self.folder / "state.pt", map_location="cpu", weights_only=False)


@trains_on_config_threads  # config.threads for this call only
def train_lora(base_model: str, examples: list[RankingExample], out_dir: Path, config: LoraTrainConfig,
               manifest_extra: dict | None = None, progress: bool = True, resume: bool = False,
               on_step: Callable[[int], None] | None = None, objective: str = OBJECTIVE, fingerprint: str | None = None,
               step_fn: Callable | None = None) -> dict:
    """Train, then put a PEFT folder (adapter_config.json names `base_model`) plus manifest.json at `out_dir`.

    `objective` names what the label cross-entropy teaches (`listwise`: the candidate's letter; `pointwise`:
    Yes/No for one candidate); it goes into the run key and the manifest, which the ranker follows.

    Returns the manifest. `manifest["complete"]` is False when the time budget ended the run first: the
    checkpoint stays in `<out>.partial` for a resume, and `out_dir` is not touched. `on_step(step)` is
    called after each step (tests use it to interrupt a run). Other objectives bring their own examples with
    their `fingerprint` and `step_fn(model, tokenizer, optimizer, batch, pad, autocast, device) -> (loss, tokens)`
    (`adapters.sequence`); the loop, budgets, checkpoints and publishing are this one. The model trains on a
    GPU where torch sees one, else on the CPU.
    """
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not examples:
        raise LLMRecError("no training examples")
    fingerprint = fingerprint or data_fingerprint(examples)
    step_fn = step_fn or label_step
    key = run_key(base_model, fingerprint, config, objective)
    done = _finished_manifest(out_dir)
    if not resume and done.get("run_key") == key:
        return {**done, "cached": True}
    checkpoint = _Checkpoint(out_dir)
    state = _resume_state(checkpoint, config, fingerprint, base_model, objective) if resume else None
    if not resume:
        shutil.rmtree(checkpoint.root, ignore_errors=True)
    torch.manual_seed(config.seed)
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
    if state is not None:
        model = PeftModel.from_pretrained(model, str(checkpoint.folder), is_trainable=True)
    else:
        blocks = model.config.num_hidden_layers
        layers = list(range(blocks - min(config.top_layers, blocks), blocks)) if config.top_layers else None
        model = get_peft_model(model, LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=0.0, layers_to_transform=layers,
                                                 target_modules=config.target_modules, task_type="CAUSAL_LM"))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate)
    step, losses, order, seconds_before, tokens = 0, [], [], 0.0, 0
    rng = random.Random(config.seed)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        rng.setstate(state["python_rng"])
        step, losses, order, seconds_before = state["step"], state["losses"], state["order"], state["seconds"]
        tokens = state.get("tokens", 0)
    autocast = _autocast_dtype(config)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    started = time.perf_counter()
    deadline = started + config.minutes * 60 if config.minutes else None

    def snapshot() -> None:
        checkpoint.save(model, optimizer, {"step": step, "losses": losses, "order": order, "python_rng": rng.getstate(),
                                           "seconds": seconds_before + time.perf_counter() - started, "fingerprint": fingerprint,
                                           "learning_key": config.learning_key(), "base_model": base_model, "objective": objective,
                                           "tokens": tokens})

    bar = tqdm(total=config.steps, initial=step, desc=f"LoRA steps ({objective})", disable=not progress)
    try:
        while step < config.steps and (deadline is None or time.perf_counter() < deadline):
            if len(order) < config.batch_size:
                fresh = list(range(len(examples)))
                rng.shuffle(fresh)
                order.extend(fresh)
            batch = [examples[order.pop()] for _ in range(config.batch_size)]
            loss, seen = step_fn(model, tokenizer, optimizer, batch, pad, autocast, device)
            losses.append(loss)
            tokens += seen
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{sum(losses[-10:]) / len(losses[-10:]):.3f}")
            if step % config.checkpoint_every == 0:
                snapshot()
            if on_step:
                on_step(step)
    except KeyboardInterrupt:
        snapshot()
        raise TrainingInterrupted(f"training interrupted at step {step} of {config.steps}; checkpoint saved in {checkpoint.root}; "
                                  f"{out_dir} was not changed. Run again with --resume to continue") from None
    finally:
        bar.close()
    seconds = round(seconds_before + time.perf_counter() - started, 1)
    manifest = {
        "objective": objective, "base_model": base_model, "run_key": key, "data_fingerprint": fingerprint,
        "train_config": config.model_dump(), "examples": len(examples), "steps_done": step, "complete": step >= config.steps,
        "autocast": str(autocast).removeprefix("torch.") if autocast else "float32", "device": device, "wall_time_s": seconds,
        "train_tokens": tokens, "train_tokens_per_s": round(tokens / seconds, 1) if seconds else None,
        "loss_curve": [round(x, 4) for x in losses], "loss_first": losses[0] if losses else None,
        "loss_last10": sum(losses[-10:]) / len(losses[-10:]) if losses else None, **(manifest_extra or {}),
    }
    if step < config.steps:
        snapshot()
        return manifest
    _publish(model, manifest, out_dir, checkpoint)
    return manifest


def label_step(model, tokenizer, optimizer, batch: list[RankingExample], pad: int, autocast, device: str = "cpu") -> tuple[float, int]:
    """Label cross-entropy at the answer position (left-padded batch); (loss, prompt tokens)."""
    import torch

    encoded = [tokenizer(ex.prompt, add_special_tokens=False)["input_ids"] for ex in batch]
    width = max(map(len, encoded))
    ids = torch.tensor([[pad] * (width - len(e)) + e for e in encoded], device=device)
    mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded], device=device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.autocast(device, dtype=autocast, enabled=autocast is not None):
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=1).logits[:, -1, :]
    label_logits = torch.stack([logits[i, list(ex.labels)] for i, ex in enumerate(batch)]).float()
    loss = torch.nn.functional.cross_entropy(label_logits, torch.tensor([ex.target for ex in batch], device=device))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return float(loss.item()), sum(map(len, encoded))


def _finished_manifest(out_dir: Path) -> dict:
    try:
        return json.loads((out_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}


def _resume_state(checkpoint: _Checkpoint, config: LoraTrainConfig, fingerprint: str, base_model: str,
                  objective: str = OBJECTIVE) -> dict:
    if not checkpoint.exists():
        raise TrainingConflict(f"--resume: no checkpoint in {checkpoint.root}; start without --resume")
    state = checkpoint.load()
    changed = sorted(k for k, v in config.learning_key().items() if state["learning_key"].get(k) != v)
    if changed:
        raise TrainingConflict(f"--resume: the checkpoint in {checkpoint.root} was made with another config "
                               f"({', '.join(changed)} differ); resume with the same settings, or start again without --resume")
    if state.get("objective", OBJECTIVE) != objective:
        raise TrainingConflict(f"--resume: the checkpoint in {checkpoint.root} was made for the {state.get('objective', OBJECTIVE)!r} "
                               f"objective, not {objective!r}; start again without --resume")
    if state["fingerprint"] != fingerprint or state["base_model"] != base_model:
        raise TrainingConflict(f"--resume: the checkpoint in {checkpoint.root} was made on other training data or another "
                               "base model; start again without --resume")
    return state


def _publish(model, manifest: dict, out_dir: Path, checkpoint: _Checkpoint) -> None:
    """Write the final adapter next to `out_dir`, then swap it in; the old one is removed only after."""
    checkpoint.root.mkdir(parents=True, exist_ok=True)
    staged = unique_sibling_dir(checkpoint.root / "final")
    model.save_pretrained(staged)
    (staged / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    swap_in(staged, out_dir)
    shutil.rmtree(checkpoint.root, ignore_errors=True)


def swap_in(staged: Path, target: Path) -> None:
    """Replace `target` by the finished folder `staged`; the old folder is removed only once the new one is in place."""
    old = unique_sibling_dir(target, ".old")  # empty: renaming `target` onto it replaces it
    if target.exists():
        target.rename(old)
    staged.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def publish_scenario(staged: Path, scenario: Scenario, target: Path) -> None:
    """Write `scenario` as staged/scenario.json beside the adapter staged there, then swap the folder in
    as `target` (a user scenario's folder): a reader sees the old scenario or the whole new one, never half of it."""
    (staged / "scenario.json").write_text(json.dumps(scenario.model_dump(mode="json"), indent=2) + "\n")
    target.parent.mkdir(parents=True, exist_ok=True)
    swap_in(staged, target)
