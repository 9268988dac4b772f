"""Benchmark (run by hand): what a person waits for when they type `llmrec recommend`, cold and warm.

    LLMREC_HOME=.llmrec .venv/bin/python bench/cold_start.py --users 8

One run, side by side:
- a cold CLI call (`llmrec recommend --user 196 --json` in a fresh process, with an empty torch
  inductor cache, as on a fresh machine): the process's wall time, its engine load, and the
  request's own rank time from the response's `timings_ms`;
- warm requests in one process (the engine loaded once): the first request after the load, then the
  median over `--users` other users (disjoint, so vLLM's prefix cache cannot serve one from another).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


def cold_cli(user: str) -> dict:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": tempfile.mkdtemp(prefix="llmrec-inductor-")}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "llmrec.entrypoints.cli", "recommend", "--user", user, "--json"],
                          capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"cold CLI call failed ({done.returncode}): {done.stderr[-500:]}")
    timings = json.loads(done.stdout)["timings_ms"]
    return {"wall_s": round(wall, 2), "rank_s": round(timings["rank"] / 1000, 2)}


def warm(users: list[str]) -> dict:
    from llmrec.pipeline import build_pipeline
    from llmrec.schemas import RecommendRequest
    from llmrec.settings import Settings

    started = time.perf_counter()
    pipeline = build_pipeline(Settings(), "movies", progress=False)
    pipeline.engine.count_tokens("")  # loads vLLM (and warms it up)
    load = time.perf_counter() - started
    times = []
    for user in users:
        t = time.perf_counter()
        pipeline.recommend(RecommendRequest(user_id=user, k=10))
        times.append(time.perf_counter() - t)
    return {"pipeline_and_engine_load_s": round(load, 1), "first_request_s": round(times[0], 2),
            "median_later_request_s": round(statistics.median(times[1:]), 2), "dtype": pipeline.engine.config.dtype}


def main() -> None:
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=8)
    args = parser.parse_args()
    from llmrec.data.datasets import load_dataset
    from llmrec.data.sampling import sample
    from llmrec.settings import Settings

    users = sample([u for u in load_dataset("ml-100k", Settings().resolved_home()).users() if u != "196"], args.users + 1, seed=3)
    print(json.dumps({"cold_cli": cold_cli("196"), "warm_in_process": warm(users)}, indent=2))


if __name__ == "__main__":
    main()
