"""Benchmark (run by hand): how long explanations take, for a `recommend` list (10 items) and a chat turn (5).

    LLMREC_HOME=.llmrec .venv/bin/python bench/explain_speed.py --users 12

For each size, a disjoint group of sampled users (so vLLM's prefix cache never serves one measurement
from another's prompts) gets `recommend(k, explain=True)`; printed: median and p95 of the explain
stage (`timings_ms["explain"]`) and of the whole call, the process's CPU seconds per call (steadier than
wall time when other jobs share the CPU; vLLM runs in this process), and the share of explanations with a
generated reason. One untimed call first warms the engine up. Targets (issue 11): p95 under 3 s for 10 items,
under 1.5 s for 5.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


def percentile(values: list[float], q: int) -> float:
    """The q-th percentile (inclusive method: the max for q=100, interpolated between samples otherwise)."""
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    from tqdm.auto import tqdm

    from llmrec.data.sampling import sample
    from llmrec.pipeline import build_pipeline
    from llmrec.schemas import RecommendRequest
    from llmrec.settings import Settings

    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=12, help="users per list size")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 5])
    args = parser.parse_args()
    settings = Settings()
    started = time.perf_counter()
    pipeline = build_pipeline(settings, "movies", progress=False)
    pipeline.engine.count_tokens("warm")
    print(f"pipeline + engine load: {time.perf_counter() - started:.1f} s; model {pipeline.engine.model_name}; "
          f"load average {os.getloadavg()[0]:.1f}")
    users = sample(pipeline.dataset.users(), len(args.sizes) * args.users + 1, seed=2)
    pipeline.recommend(RecommendRequest(user_id=users[-1], k=max(args.sizes), explain=True))  # warm-up, untimed
    for n, k in enumerate(args.sizes):
        explain, total, cpu, generated, shown = [], [], [], 0, 0
        for user in tqdm(users[n :: len(args.sizes)][: args.users], desc=f"k={k}", unit="user"):
            t, c = time.perf_counter(), time.process_time()
            response = pipeline.recommend(RecommendRequest(user_id=user, k=k, explain=True))
            total.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
            explain.append(response.timings_ms.get("explain", 0.0) / 1000)
            generated += sum(r.explanation.source != "template" for r in response.recommendations)
            shown += len(response.recommendations)
        print(f"k={k:>2} explain stage: median {statistics.median(explain):.2f} s, p95 {percentile(explain, 95):.2f} s, "
              f"max {max(explain):.2f} s | whole recommend: median {statistics.median(total):.2f} s, "
              f"p95 {percentile(total, 95):.2f} s, CPU median {statistics.median(cpu):.2f} s | {generated}/{shown} with a generated part | {len(explain)} users")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
