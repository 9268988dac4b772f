"""The `embedding` objective on ML-100K: validation diagnostics, then (with --test) the test targets and the cold-start slice.

    LLMREC_HOME=.llmrec .venv/bin/python bench/embedding_eval.py [--adapter FOLDER] [--test] [--cold-start 3]

Without --adapter it trains towers here (seeded, `--seeds` of them averaged) from the same config as
`llmrec adapters train --objective embedding`. Validation: the fusion grid on all validation users and
a 2-fold cross-fit (w chosen on one half of the users, measured on the other), the honest estimate of
what fusion adds. --test: all test users with the weight fitted on all validation users, paired test
against the hybrid; --cold-start N: the same with each test user's history cut to their first N
training items (the hybrid is refitted on nothing new: it is the same fitted retriever).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time

from llmrec.adapters.embedding import EmbeddingTrainConfig, train_towers
from llmrec.adapters.fit import best_weight, choose_weight, fit_weight
from llmrec.data.datasets import load_dataset
from llmrec.data.split import LeaveOneOutSplit
from llmrec.engines.encoder import ItemEncoderConfig, ItemVectors, item_vectors
from llmrec.engines.models import resolve_model
from llmrec.eval import methods, stats
from llmrec.pipeline import build_index
from llmrec.ranking.embedding import EmbeddingRanker, TwoTowerConfig, load_two_tower
from llmrec.retrieval.retrievers import HybridRetriever
from llmrec.scenario import AdapterSpec
from llmrec.schemas import UserHistory
from llmrec.settings import Settings


def runs_for(ranker, catalog, retriever, cases, n=20):
    """(candidate ids, scores, ranks, target) per case, as adapters.fit.choose_weight takes them."""
    out, heads = [], {}
    for user, history, target in cases:
        cands = retriever.retrieve(history, n)
        heads[user] = cands
        scores = ranker.score_many([([catalog[i] for i in history.item_ids], cands)])[0]
        out.append(([c.item_id for c in cands], scores, [c.retriever_rank for c in cands], target))
    return out, heads


def cross_fit(runs, grid, seed=0):
    """Mean NDCG@10 when w is chosen on one half of the users and applied to the other (both ways)."""
    idx = list(range(len(runs)))
    random.Random(seed).shuffle(idx)
    halves = [idx[: len(idx) // 2], idx[len(idx) // 2 :]]
    total, chosen = 0.0, []
    for fit_on, apply_to in (halves, halves[::-1]):
        w = best_weight(choose_weight([runs[i] for i in fit_on], grid))
        chosen.append(w)
        total += choose_weight([runs[i] for i in apply_to], (w,))[w] * len(apply_to)
    return total / len(runs), chosen


def test_report(name, ranker, weight, catalog, retriever, cases, resamples=1000):
    runs, heads = runs_for(ranker, catalog, retriever, cases)
    scores = {user: r[1] for (user, _, _), r in zip(cases, runs)}
    targets = {user: target for user, _, target in cases}
    tails = {user: [c.item_id for c in heads[user]] for user in heads}
    hybrid = {u: [c.item_id for c in heads[u]] for u in heads}
    fused = methods.rerank_head(heads, tails, scores, weight)
    alone = methods.rerank_head(heads, tails, scores, 0.0)
    users = [u for u, _, _ in cases]
    out = {"users": len(users), "weight": weight}
    for label, ranked in (("hybrid", hybrid), ("fused", fused), ("alone (on the candidates)", alone)):
        est = stats.bootstrap_ci([stats.metric_row(ranked[u], targets[u])["NDCG@10"] for u in users], resamples, 0)
        out[label] = {"NDCG@10": round(est.mean, 4), "ci95": [round(est.low, 4), round(est.high, 4)]}
    for label, ranked in (("fused", fused), ("alone (on the candidates)", alone)):
        test = stats.paired_test(ranked, hybrid, targets, users, (label, "hybrid"))
        out[f"paired: {label} vs hybrid"] = {"p": test.p_value, "wins": test.wins, "ties": test.ties, "losses": test.losses}
    print(name, json.dumps(out, indent=1), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--adapter", help="an embedding adapter folder (default: train here)")
    parser.add_argument("--model", help="item encoder: a built-in alias (gemma3-270m, ...) or an HF folder (default: LLMREC_MODEL)")
    parser.add_argument("--dataset", default="ml-100k", help="a built-in dataset (ml-100k, ml-1m) or a folder of atomic files")
    parser.add_argument("--control", choices=["random"], help="random: seeded Gaussian item vectors of the same shape instead of "
                                                             "the LLM's (the same towers with no item text: what the LLM adds)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--layer", type=int, default=None)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--test", action="store_true", help="also the test targets (only for a config already chosen on validation)")
    parser.add_argument("--cold-start", type=int, default=0, help="with --test: also test users with only their first N training items")
    parser.add_argument("--curve", help="comma-separated optimizer-step budgets (0: no limit): for each, train, fit w on validation, "
                                        "test fused and alone; with --plot, a figure of NDCG@10 against training compute")
    parser.add_argument("--plot", help="with --curve: where to write the PNG")
    parser.add_argument("--lora-curve", help="comma-separated encoder-LoRA step budgets (stage 2): stage 1 once, then one stage-2 run "
                                             "whose kept state is tested at each budget (0 = stage 1 alone)")
    args = parser.parse_args()
    if args.curve:
        return curve(args)
    if args.lora_curve:
        return lora_curve(args)
    home, dataset, split, model, retriever = _setup(args)
    started = time.perf_counter()
    if args.adapter:
        tower, manifest = load_two_tower(AdapterSpec(name="bench", path=args.adapter), model)
        vectors = item_vectors(model, list(dataset.items.values()), home, ItemEncoderConfig.model_validate(manifest["config"]["encoder"]))
    else:
        encoder = ItemEncoderConfig(layer=args.layer, dtype=args.dtype)
        vectors = item_vectors(model, list(dataset.items.values()), home, encoder)
        print(f"item vectors {vectors.matrix.shape} from {model} in {time.perf_counter() - started:.1f} s (cached in {home}/item-vectors)", flush=True)
        if args.control == "random":
            import numpy as np

            vectors = ItemVectors(vectors.ids, np.random.default_rng(0).standard_normal(vectors.matrix.shape).astype(np.float32))
            print("CONTROL: seeded Gaussian item vectors instead of the LLM's", flush=True)
        config = EmbeddingTrainConfig(encoder=encoder, epochs=args.epochs, seeds=args.seeds, tower=TwoTowerConfig(dim=args.dim))
        result = train_towers(vectors, split, config, progress=True)
        tower = result.tower
        print("valid NDCG@10 alone, full ranking:", result.manifest["valid_ndcg10_alone_full_ranking"],
              f"(towers trained in {result.manifest['wall_time_s']} s, {result.manifest['steps']} steps)")
    print(f"towers ready in {time.perf_counter() - started:.1f} s", flush=True)
    ranker = EmbeddingRanker(tower, vectors)
    valid = [(u, split.valid_history(u), split.valid[u]) for u in split.valid_users()]
    grid = EmbeddingTrainConfig().fusion_grid
    runs, _ = runs_for(ranker, dataset.items, retriever, valid)
    table = choose_weight(runs, grid)
    crossed, chosen = cross_fit(runs, grid)
    fit = fit_weight(runs, grid)
    weight = fit.best
    print("valid grid", {("inf" if math.isinf(w) else w): round(v, 4) for w, v in table.items()})
    print(f"valid cross-fit fused {crossed:.4f} (w per half {chosen}) vs retriever order {table[math.inf]:.4f}; w on all: {weight}", flush=True)
    print(f"significance gate (adapters.fit.fit_weight): best w {fit.best}, one-sided paired p = {fit.p_value}; ships w = {fit.weight}")
    if not args.test:
        return
    test = [(u, split.test_history(u), split.test[u]) for u in split.test_users()]
    test_report("TEST all users (the grid's best w, ungated)", ranker, weight, dataset.items, retriever, test)
    if args.cold_start:
        cold = [(u, UserHistory(user_id=u, item_ids=split.train[u][: args.cold_start]), split.test[u]) for u in split.test_users()]
        test_report(f"TEST cold-start slice (first {args.cold_start} training items)", ranker, weight, dataset.items, retriever, cold)


def _setup(args):
    """(home, the dataset (ML-100K by default), its split, the resolved model, the hybrid fitted on the training prefixes)."""
    settings = Settings(model=args.model) if args.model else Settings()
    home = settings.resolved_home()
    dataset = load_dataset(getattr(args, "dataset", "ml-100k"), home)
    split = LeaveOneOutSplit.from_dataset(dataset)
    model = resolve_model(settings.model, home)
    retriever = HybridRetriever(index=build_index(settings, dataset, progress=False)).fit(split.train_histories())
    return home, dataset, split, model, retriever


def curve(args) -> None:
    """Test NDCG@10 (fused and alone, 95% CIs, paired p against the hybrid) against the towers' training budget."""
    home, dataset, split, model, retriever = _setup(args)
    encoder = ItemEncoderConfig(layer=args.layer, dtype=args.dtype)
    vectors = item_vectors(model, list(dataset.items.values()), home, encoder)
    valid = [(u, split.valid_history(u), split.valid[u]) for u in split.valid_users()]
    test = [(u, split.test_history(u), split.test[u]) for u in split.test_users()]
    grid = EmbeddingTrainConfig().fusion_grid
    points = []
    for budget in (int(b) for b in args.curve.split(",")):
        config = EmbeddingTrainConfig(encoder=encoder, epochs=args.epochs, seeds=args.seeds, tower=TwoTowerConfig(dim=args.dim),
                                      max_steps=budget or None)
        started = time.perf_counter()
        result = train_towers(vectors, split, config, progress=False)
        seconds = time.perf_counter() - started
        ranker = EmbeddingRanker(result.tower, vectors)
        weight = best_weight(choose_weight(runs_for(ranker, dataset.items, retriever, valid)[0], grid))
        out = test_report(f"budget {budget or 'none'}: {result.manifest['steps']} steps, {seconds:.0f} s", ranker, weight,
                          dataset.items, retriever, test)
        points.append({"budget": budget, "steps": result.manifest["steps"], "seconds": round(seconds, 1), **out})
    print("steps | train s | w | test fused [CI] | p | test alone [CI] | p | hybrid")
    for p in points:
        f, a = p["fused"], p["alone (on the candidates)"]
        print(f"{p['steps']} | {p['seconds']} | {p['weight']} | {f['NDCG@10']} {f['ci95']} | {p['paired: fused vs hybrid']['p']:.3f} | "
              f"{a['NDCG@10']} {a['ci95']} | {p['paired: alone (on the candidates) vs hybrid']['p']:.3g} | {p['hybrid']['NDCG@10']}")
    if args.plot:
        _plot(points, args.plot)


def lora_curve(args) -> None:
    """Test NDCG@10 (fused, alone; paired p against the hybrid) against encoder-LoRA steps, w refitted on validation at each."""
    from llmrec.adapters.encoder_lora import EncoderLoraConfig, train_encoder_lora
    from llmrec.engines.encoder import ItemVectors

    home, dataset, split, model, retriever = _setup(args)
    encoder = ItemEncoderConfig(layer=args.layer, dtype=args.dtype)
    items = list(dataset.items.values())
    vectors = item_vectors(model, items, home, encoder)
    valid = [(u, split.valid_history(u), split.valid[u]) for u in split.valid_users()]
    test = [(u, split.test_history(u), split.test[u]) for u in split.test_users()]
    grid = EmbeddingTrainConfig().fusion_grid
    started = time.perf_counter()
    stage1 = train_towers(vectors, split, EmbeddingTrainConfig(encoder=encoder, epochs=args.epochs, seeds=args.seeds,
                                                               tower=TwoTowerConfig(dim=args.dim)), progress=False)
    stage1_s = time.perf_counter() - started
    budgets = sorted(int(b) for b in args.lora_curve.split(","))
    points = []

    def measure(step, tower, matrix):
        if step not in budgets:
            return
        ranker = EmbeddingRanker(tower, ItemVectors(vectors.ids, matrix))
        weight = best_weight(choose_weight(runs_for(ranker, dataset.items, retriever, valid)[0], grid))
        out = test_report(f"encoder LoRA budget {step} steps", ranker, weight, dataset.items, retriever, test)
        points.append({"steps": step, "seconds": round(time.perf_counter() - started, 1), **out})

    measure(0, stage1.tower, vectors.matrix)
    config = EncoderLoraConfig(steps=max(budgets), validate_every=math.gcd(*[b for b in budgets if b]) if any(budgets) else 1)
    two = train_encoder_lora(model, items, vectors, stage1.tower, split, encoder, config, progress=True, on_validated=measure)
    print(f"stage 1: {stage1_s:.0f} s; stage 2: {two.manifest['seconds_per_step']} s/step, validation curve {two.manifest['valid_curve']}")
    print("LoRA steps | s (with evals) | w | test fused [CI] | p | test alone [CI] | p | hybrid")
    for p in points:
        f, a = p["fused"], p["alone (on the candidates)"]
        print(f"{p['steps']} | {p['seconds']} | {p['weight']} | {f['NDCG@10']} {f['ci95']} | {p['paired: fused vs hybrid']['p']:.3f} | "
              f"{a['NDCG@10']} {a['ci95']} | {p['paired: alone (on the candidates) vs hybrid']['p']:.3g} | {p['hybrid']['NDCG@10']}")
    if args.plot:
        _plot(points, args.plot, xlabel="encoder-LoRA steps (stage 2, after the towers)", log=False)


def _plot(points, path, xlabel="optimizer steps of the towers (batch 512)", log=True) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [p["steps"] for p in points]
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, key in (("fused with the hybrid (w fitted on validation)", "fused"), ("LLM vectors alone, on the 20 candidates", "alone (on the candidates)")):
        mean = [p[key]["NDCG@10"] for p in points]
        low = [p[key]["ci95"][0] for p in points]
        high = [p[key]["ci95"][1] for p in points]
        ax.plot(steps, mean, marker="o", label=label)
        ax.fill_between(steps, low, high, alpha=0.15)
    ax.axhline(points[0]["hybrid"]["NDCG@10"], color="k", linestyle="--", label="hybrid retriever")
    if log:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"test NDCG@10, {points[0]['users']} users")
    ax.set_title("embedding objective: test NDCG@10 against training compute")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
