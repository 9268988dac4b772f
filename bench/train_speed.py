"""Benchmark (run by hand): LoRA training throughput, bf16 autocast against fp32, side by side in one run.

    LLMREC_HOME=.llmrec .venv/bin/python bench/train_speed.py --steps 4 --batch-size 4 --threads 1

For each objective (`listwise`: ranking prompts of about 690 tokens, label cross-entropy at one position;
`sequence`: windows of 20 titles, loss on every item token) and each dtype, a few real PEFT steps, the
dtypes alternating in rounds so that other load on the CPU hits both alike. Printed: training tokens per
second over the steps after the first (the first pays the allocator's warm-up), and the CPU's bf16 flags.
`--top-layers 8` puts LoRA on the last 8 blocks only, so backward stops below them. Adapters go to a temp folder.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path


def cpu_flags() -> str:
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return "unknown"
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    return " ".join(f for f in wanted if f in flags) or "none of " + ", ".join(wanted)


def listwise(model: str, examples, tokens: float, dtype: str, args) -> float:
    from llmrec.adapters.loop import LoraTrainConfig, train_lora

    stamps: list[float] = []
    modules = ["q_proj", "k_proj", "v_proj", "o_proj"]
    config = LoraTrainConfig(steps=args.steps, batch_size=args.batch_size, dtype=dtype, checkpoint_every=10_000, threads=args.threads,
                             target_modules=modules)
    with tempfile.TemporaryDirectory() as tmp:
        train_lora(model, examples, Path(tmp) / "adapter", config, progress=False, on_step=lambda _: stamps.append(time.perf_counter()))
    return tokens * args.batch_size * (len(stamps) - 1) / (stamps[-1] - stamps[0])


def sequence(model: str, examples, dtype: str, args) -> float:
    from llmrec.adapters.sequence import SequenceTrainConfig, train_sequence_lora

    config = SequenceTrainConfig(steps=args.steps, batch_size=args.batch_size, dtype=dtype, top_layers=args.top_layers,
                                 checkpoint_every=10_000, threads=args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        manifest = train_sequence_lora(model, examples, Path(tmp) / "adapter", config, progress=False)
    return float(manifest["train_tokens_per_s"])


def main() -> None:
    from transformers import AutoTokenizer

    from llmrec.adapters.listwise import ranking_examples
    from llmrec.adapters.sequence import sequence_examples
    from llmrec.engines.models import pick_dtype
    from llmrec.settings import Settings

    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is faster on a shared 2-core machine)")
    parser.add_argument("--top-layers", type=int, default=None, help="sequence: LoRA on the last N blocks only")
    parser.add_argument("--objectives", default="listwise,sequence")
    args = parser.parse_args()
    settings = Settings()
    ranking, model = ranking_examples(settings, "movies", 32)
    tokenizer = AutoTokenizer.from_pretrained(model)
    mean_prompt = statistics.mean(len(tokenizer(ex.prompt, add_special_tokens=False)["input_ids"]) for ex in ranking)
    windows, _, _ = sequence_examples(settings, "movies", 20)
    print(f"CPU flags: {cpu_flags()}; `auto` picks {pick_dtype('auto')}; load {os.getloadavg()[0]:.1f}; "
          f"{args.steps} steps of {args.batch_size}, {args.threads} thread(s); listwise prompts of {mean_prompt:.0f} tokens")
    results: dict[tuple[str, str], list[float]] = {}
    for round_ in range(args.rounds):
        for objective in args.objectives.split(","):
            for dtype in ("float32", "bfloat16"):
                rate = listwise(model, ranking, mean_prompt, dtype, args) if objective == "listwise" else sequence(model, windows, dtype, args)
                results.setdefault((objective, dtype), []).append(rate)
                print(f"round {round_ + 1}: {objective:>8} {dtype:>8}: {rate:7.1f} training tokens/s (load {os.getloadavg()[0]:.1f})", flush=True)
    for objective in args.objectives.split(","):
        fp32, bf16 = (statistics.median(results[(objective, d)]) for d in ("float32", "bfloat16"))
        print(f"{objective}: fp32 {fp32:.1f} tokens/s, bf16 autocast {bf16:.1f} tokens/s, bf16/fp32 = {bf16 / fp32:.2f}x")


if __name__ == "__main__":
    main()
