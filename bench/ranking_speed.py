"""Benchmark (run by hand): verbalizer ranking vs generating the ranking as text, and end-to-end latency.

    LLMREC_HOME=.llmrec .venv/bin/python bench/ranking_speed.py --users 16

Prints, from one run on one engine: requests/s of one-forward-pass label scoring of 20 candidates
versus generating the whole ranking as text; `recommend` latency with and without explanations;
peak RSS of the process.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time


def main() -> None:
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    from llmrec.data.sampling import sample
    from llmrec.pipeline import build_pipeline
    from llmrec.prompts.builders import LABELS
    from llmrec.schemas import RecommendRequest
    from llmrec.settings import Settings

    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=16)
    args = parser.parse_args()
    settings = Settings()
    started = time.perf_counter()
    pipeline = build_pipeline(settings, "movies", progress=False)
    engine = pipeline.engine
    engine.count_tokens("warm")  # loads vLLM
    print(f"pipeline + engine load: {time.perf_counter() - started:.1f} s; model {engine.model_name}")
    # Three disjoint user groups, so vLLM's prefix cache never serves one measurement from another's work.
    users = sample(pipeline.dataset.users(), 3 * args.users, seed=1)
    group_a, group_b, group_c = users[0::3], users[1::3], users[2::3]

    def prompts_for(group):
        out = []
        for user in group:
            history = pipeline.dataset.history(user)
            candidates = pipeline.retriever.retrieve(history, settings.candidates)
            items = [pipeline.dataset.items[c.item_id] for c in candidates]
            out.append(pipeline.ranker.prompts.build(engine, pipeline.items(history.item_ids), items).text)
        return out

    prompts = prompts_for(group_a)
    label_ids = engine.label_token_ids(LABELS[: settings.candidates])
    tokens = statistics.mean(engine.count_tokens(p) for p in prompts)
    engine.generate(["warm-up"], max_tokens=2)
    t = time.perf_counter()
    engine.score_next_token(prompts, label_ids)
    verbalizer = len(prompts) / (time.perf_counter() - t)
    # The alternative: ask for the full ranking as text ("C, A, F, ..."), ~60 tokens, then parse it.
    generative_prompts = [p.removesuffix("Answer:") + "Ranking of all letters, best first:" for p in prompts_for(group_b)]
    t = time.perf_counter()
    outputs = engine.generate(generative_prompts, max_tokens=60)
    generative = len(prompts) / (time.perf_counter() - t)
    parsed = sum(len({c for c in o if c in LABELS[: settings.candidates]}) == settings.candidates for o in outputs)
    print(f"prompts: {len(prompts)} users, mean {tokens:.0f} tokens, {settings.candidates} candidates")
    print(f"verbalizer (1 forward pass, label logprobs): {verbalizer:.2f} req/s")
    print(f"generate ranking as text (60 tokens):        {generative:.2f} req/s; "
          f"{parsed}/{len(outputs)} outputs name all {settings.candidates} candidates")
    print(f"ratio verbalizer/generative: {verbalizer / generative:.1f}x")
    for explain in (False, True):
        latencies = []
        for user in (group_c[: len(group_c) // 2] if not explain else group_c[len(group_c) // 2 :]):
            t = time.perf_counter()
            pipeline.recommend(RecommendRequest(user_id=user, k=10, explain=explain))
            latencies.append(time.perf_counter() - t)
        print(f"recommend k=10 explain={explain}: median {statistics.median(latencies):.2f} s, max {max(latencies):.2f} s "
              f"over {len(latencies)} users")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
