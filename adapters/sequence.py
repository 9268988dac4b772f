"""Training the `sequence` objective: a causal LM over users' histories written as item lines.

A training example is a window of up to `window` consecutive items of one user's training prefix (the
training part of the leave-one-out split only), written as the `sequence_v1` chat header followed by one
"Title (Year)" line per item, oldest first (`prompts.builders.SequencePromptBuilder`). The loss is on the
item lines only: the header's tokens carry the label -100, and every item of the window is a target, so
one window teaches up to `window` next-item predictions. Windows are cut from the end of each prefix, so
each training item is in exactly one window and the most recent ones make whole windows.

The ranker (`agents/likelihood.py`) scores a candidate as the next line after at most `window - 1`
history lines, the context the adapter saw in training; the manifest's `prompt` records that config.
The loop keeps `adapters.train`'s guarantees: a step or time budget, bf16 autocast where the CPU has
bf16 instructions, checkpoints and `--resume`, and the adapter swapped in only when the run completes.

Cost on ML-100K: 5,299 windows of 20 titles, 1.54M tokens an epoch (1.13M of them targets). Measured on a
shared 2-core CPU with avx512_bf16 (load 6-8), LoRA r=8 on q/k/v/o, one thread: 138 training tokens/s
with bf16 autocast over all 30 blocks, 226 on the top 8 (`top_layers=8`); fp32 64 and 102.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field

from llmrec.adapters.loop import LoraTrainConfig, train_lora
from llmrec.errors import LLMRecError
from llmrec.objectives import SEQUENCE as OBJECTIVE
from llmrec.objectives import TrainRequest
from llmrec.prompts.builders import SequencePromptBuilder, SequencePromptConfig
from llmrec.settings import Settings

IGNORE = -100
"""The label of a position without loss (the chat header, padding)."""


class SequenceTrainConfig(LoraTrainConfig):
    window: int = Field(default=20, ge=2, description="Items per training window; every one is a target.")
    threads: int | None = Field(default=1, ge=1, description=(
        "torch threads (None: torch's default). One by default: on a 2-core machine shared with other jobs, two threads "
        "spin in OpenMP barriers; measured there (bf16 autocast, all blocks, load ~8), 14 training tokens/s on two "
        "threads against 138 on one."))


@dataclass(frozen=True)
class SequenceExample:
    input_ids: tuple[int, ...]
    labels: tuple[int, ...]
    """IGNORE on the header; the token itself on item lines (the model shifts labels by one)."""


def encode_window(header: Sequence[int], lines: Sequence[Sequence[int]]) -> SequenceExample:
    """The header's ids then each item line's ids; the loss on the lines only."""
    body = tuple(t for line in lines for t in line)
    return SequenceExample(tuple(header) + body, (IGNORE,) * len(header) + body)


def windows(histories: Mapping[str, Sequence[str]], window: int) -> list[tuple[str, ...]]:
    """Consecutive windows of each history, cut from its end; a lone leftover first item teaches nothing and is dropped."""
    out = []
    for items in histories.values():
        for end in range(len(items), 1, -window):
            chunk = tuple(items[max(0, end - window) : end])
            if len(chunk) >= 2:
                out.append(chunk)
    return out


def data_fingerprint(examples: Sequence[SequenceExample]) -> str:
    digest = hashlib.sha256()
    for ex in examples:
        digest.update(json.dumps([ex.input_ids, ex.labels]).encode())
    return digest.hexdigest()[:16]


def sequence_examples(settings: Settings, scenario_name: str, window: int) -> tuple[list[SequenceExample], str, SequencePromptConfig]:
    """Every window of every training prefix, encoded with the base model's tokenizer; and the prompt config used."""
    from llmrec.data.datasets import load_dataset
    from llmrec.data.split import LeaveOneOutSplit
    from llmrec.engines.models import resolve_model
    from llmrec.engines.vllm import TokenizerFormatter
    from llmrec.scenario import load_scenario

    home = settings.resolved_home()
    scenario = load_scenario(scenario_name, home)
    dataset = load_dataset(scenario.dataset, home)
    split = LeaveOneOutSplit.from_dataset(dataset)
    model = resolve_model(settings.model, home)
    formatter = TokenizerFormatter(model)
    prompt = SequencePromptConfig(domain=scenario.domain, max_history_items=window - 1, token_budget=settings.max_model_len - 16)
    builder = SequencePromptBuilder(prompt)
    encode = formatter.tokenizer
    header = encode(builder.header(formatter), add_special_tokens=False)["input_ids"]
    lines = {i: encode(builder.line(item), add_special_tokens=False)["input_ids"] for i, item in dataset.items.items()}
    examples = [encode_window(header, [lines[i] for i in chunk]) for chunk in windows(split.train, window)]
    if not examples:
        raise LLMRecError(f"scenario {scenario_name}: no training prefix has two items, so there is no sequence to learn")
    return examples, model, prompt


def train_sequence_lora(base_model: str, examples: list[SequenceExample], out_dir: Path, config: SequenceTrainConfig,
                        manifest_extra: dict | None = None, progress: bool = True, resume: bool = False,
                        on_step: Callable[[int], None] | None = None) -> dict:
    """`adapters.train.train_lora` with the causal-LM step: a PEFT folder plus manifest.json at `out_dir`.

    `manifest["complete"]` is False when the time budget ended the run: the checkpoint stays in
    `<out>.partial` and `out_dir` is not touched. A finished run with the same key is not repeated.
    """
    if not examples:
        raise LLMRecError("no training examples")
    return train_lora(base_model, examples, out_dir, config, manifest_extra, progress, resume, on_step, objective=OBJECTIVE,
                      fingerprint=data_fingerprint(examples), step_fn=lm_step)


def lm_step(model, tokenizer, optimizer, batch: Sequence[SequenceExample], pad: int, autocast, device: str = "cpu") -> tuple[float, int]:
    """One optimizer step of next-token cross-entropy on the labelled tokens; (loss, input tokens)."""
    import torch

    ids, labels, mask = (t.to(device) for t in collate(batch, pad))
    with torch.autocast(device, dtype=autocast, enabled=autocast is not None):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return float(loss.item()), int(mask.sum())


def collate(batch: Sequence[SequenceExample], pad: int):
    """Right-padded (input ids, labels, attention mask) tensors; padding is masked and labelled IGNORE."""
    import torch

    width = max(len(ex.input_ids) for ex in batch)
    ids = torch.tensor([list(ex.input_ids) + [pad] * (width - len(ex.input_ids)) for ex in batch])
    labels = torch.tensor([list(ex.labels) + [IGNORE] * (width - len(ex.labels)) for ex in batch])
    mask = torch.tensor([[1] * len(ex.input_ids) + [0] * (width - len(ex.input_ids)) for ex in batch])
    return ids, labels, mask


def train_scenario_sequence_adapter(settings: Settings, scenario_name: str, config: SequenceTrainConfig, resume: bool = False,
                                    fit_users: int = 300, engine=None) -> tuple[Path, dict]:
    """Train the scenario's `sequence` adapter, then (with `fit_users`) fit its fusion weight on validation users.

    The scenario file changes only when the run completes; the fit's grid goes into the manifest.
    """
    from llmrec.adapters.fit import adopt
    from llmrec.data.datasets import load_dataset
    from llmrec.data.split import LeaveOneOutSplit
    from llmrec.manifest import base_model_sha256
    from llmrec.scenario import load_scenario, user_scenario_path

    home = settings.resolved_home()
    scenario = load_scenario(scenario_name, home)
    examples, model, prompt = sequence_examples(settings, scenario_name, config.window)
    split_fingerprint = LeaveOneOutSplit.from_dataset(load_dataset(scenario.dataset, home)).fingerprint()
    out = user_scenario_path(home, scenario_name).parent / "adapter"
    extra = {"scenario": scenario_name, "dataset": scenario.dataset, "split_fingerprint": split_fingerprint,
             "base_model_sha256": base_model_sha256(model), "window": config.window,
             "target_tokens": sum(sum(label != IGNORE for label in ex.labels) for ex in examples),
             "prompt": prompt.model_dump(include={"template", "max_history_items"})}
    manifest = train_sequence_lora(model, examples, out, config, manifest_extra=extra, resume=resume)
    if not manifest["complete"] or manifest.get("cached"):
        return out, manifest
    return out, adopt(settings, scenario, out, manifest, fit_users, engine)


def train(settings: Settings, request: TrainRequest) -> int:
    """`llmrec adapters train --objective sequence`: train, fit the fusion weight, store; one summary line on stderr."""
    from llmrec.adapters.listwise import lora_config

    config = lora_config(settings, request)
    sequence = SequenceTrainConfig(**config.model_dump(exclude_unset=True))  # this objective's defaults (threads, window) for the rest
    path, manifest = train_scenario_sequence_adapter(settings, request.scenario, sequence, resume=request.resume,
                                                     fit_users=request.fit_users)
    done = (f"({manifest['wall_time_s']} s, {manifest['autocast']}, {manifest['train_tokens_per_s']} training tokens/s, "
            f"last loss {manifest['loss_last10']:.3f})")
    if manifest.get("cached"):
        print(f"{path} already holds a sequence adapter trained with this base model, data and config; nothing to do", file=sys.stderr)
    elif not manifest["complete"]:
        print(f"time budget reached at step {manifest['steps_done']} of {config.steps} {done}; checkpoint kept, {path} unchanged: "
              "run again with --resume to continue", file=sys.stderr)
    elif "fusion" not in manifest:
        print(f"sequence adapter saved to {path} {done}; fusion weight not fitted (--fit-users 0): run "
              f"`llmrec fit-fusion --scenario {request.scenario}`", file=sys.stderr)
    else:
        w = manifest["fusion"]["weight"]
        print(f"sequence adapter saved to {path} {done}; validation NDCG@10 ({manifest['fusion']['users']} users): alone "
              f"{manifest['valid_ndcg10_alone']:.4f}, retriever order {manifest['valid_ndcg10_retriever_order']:.4f}, fused "
              f"{manifest['valid_ndcg10_fused']:.4f} at w = {'inf (retriever order)' if w is None else f'{w:g}'}", file=sys.stderr)
    return 0
