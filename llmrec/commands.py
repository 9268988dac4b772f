"""What each CLI command does, given the settings object and parsed arguments."""

from __future__ import annotations

import argparse
import random
import sys

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


def sample(users: list[str], n: int, seed: int) -> list[str]:
    """A seeded sample, in the original order, so runs are comparable."""
    if n >= len(users):
        return list(users)
    chosen = set(random.Random(seed).sample(users, n))
    return [u for u in users if u in chosen]


