"""Benchmark (run by hand): warm 20-candidate rankings per second for each objective's ranker, side by side in one run.

    LLMREC_HOME=.llmrec .venv/bin/python bench/objective_speed.py --users 12

One in-process engine (no LoRA, base model: the rankers' cost, not an adapter's) serves the listwise verbalizer
(one prompt, label logprobs), the pointwise ranker (20 Yes/No prompts sharing the history prefix), the sequence
likelihood ranker (20 prompt-logprob requests sharing the history prefix; its prefix-cache hit rate is printed)
and, where `--embedding-scenario` names a scenario with an embedding adapter, the two-tower ranker (a dot
product). Each ranker gets its own disjoint users, so vLLM's prefix cache never serves one ranker from another's
prompts, and the order of the rankers rotates over rounds so CPU load hits all alike. Printed per ranker: the
median seconds per ranking and rankings/s, prompt tokens per ranking, and the distance to the 0.5 s target.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


def main() -> None:
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    from llmrec.data.sampling import sample
    from llmrec.engines.models import pick_dtype, resolve_model
    from llmrec.pipeline import build_pipeline
    from llmrec.prompts.builders import SequencePromptBuilder
    from llmrec.ranking.embedding import load_embedding_ranker
    from llmrec.ranking.pointwise import PointwiseRanker
    from llmrec.ranking.sequence import LikelihoodRanker
    from llmrec.scenario import load_scenario
    from llmrec.settings import Settings

    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=12, help="users per ranker and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--embedding-scenario", default="movies-embedding")
    args = parser.parse_args()
    settings = Settings()
    pipeline = build_pipeline(settings, "movies", progress=False)
    engine, items = pipeline.engine, pipeline.dataset.items
    engine.generate(["warm-up"], max_tokens=2)
    rankers = {"listwise (verbalizer)": pipeline.ranker, "pointwise (Yes/No)": PointwiseRanker(engine, items),
               "sequence (likelihood, mean)": LikelihoodRanker(engine, items, SequencePromptBuilder())}
    try:
        scenario = load_scenario(args.embedding_scenario, settings.resolved_home())
        if scenario.adapter is not None:
            rankers["embedding (two towers)"] = load_embedding_ranker(scenario.adapter, resolve_model(settings.model, settings.resolved_home()),
                                                                      list(items.values()), settings.resolved_home(), 0.0, False)
    except Exception as exc:  # noqa: BLE001 - the embedding row is optional
        print(f"no embedding row: {exc}")
    users = sample(pipeline.dataset.users(), args.users * len(rankers) * args.rounds, seed=3)
    seconds: dict[str, list[float]] = {name: [] for name in rankers}
    tokens: dict[str, list[int]] = {name: [] for name in rankers}
    names = list(rankers)
    for round_ in range(args.rounds):
        order = names[round_ % len(names):] + names[: round_ % len(names)]
        for slot, name in enumerate(order):
            start = (round_ * len(names) + slot) * args.users
            for user in users[start : start + args.users]:
                history = pipeline.dataset.history(user)
                candidates = pipeline.retriever.retrieve(history, settings.candidates)
                began = time.perf_counter()
                scores = rankers[name].score_many([(pipeline.items(history.item_ids), candidates)])[0]
                seconds[name].append(time.perf_counter() - began)
                tokens[name].append(scores.prompt_tokens)
    print(f"{settings.candidates} candidates, {args.users * args.rounds} users per ranker, dtype {pick_dtype(settings.dtype)}, "
          f"load {os.getloadavg()[0]:.1f}")
    print("ranker | median s / ranking | rankings/s | prompt tokens / ranking | x the 0.5 s target")
    for name in rankers:
        median = statistics.median(seconds[name])
        print(f"{name} | {median:.3f} | {1 / median:.2f} | {statistics.mean(tokens[name]):.0f} | {median / 0.5:.1f}")
    stats = rankers["sequence (likelihood, mean)"].stats["conditional"]
    print(f"sequence ranker prefix-cache hit rate: {stats.hit_rate:.2f} of {stats.prompt_tokens} prompt tokens")


if __name__ == "__main__":
    main()
