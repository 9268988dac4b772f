"""Retrieval quality on a dataset (default ML-100K), leave-one-out, every user, full ranking over unseen items.

Fits each retriever on the training split, then scores the validation targets (history = train)
and the test targets (history = train + valid). Run by hand:

    .venv/bin/python bench/retrieval_hr.py            # the table
    .venv/bin/python bench/retrieval_hr.py --tune     # grid-search the hybrid on validation only
    .venv/bin/python bench/retrieval_hr.py --dataset book-crossing   # another built-in, or a folder of atomic files
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

from llmrec.data.datasets import load_dataset
from llmrec.data.split import LeaveOneOutSplit
from llmrec.eval.metrics import evaluate_ranking, mean_rows
from llmrec.retrieval.embedder import SentenceEmbedder, ensure_minilm
from llmrec.retrieval.index import CatalogIndex, IndexConfig
from llmrec.retrieval.retrievers import (
    CooccurrenceConfig,
    CooccurrenceRetriever,
    EmbeddingConfig,
    EmbeddingRetriever,
    HybridConfig,
    HybridRetriever,
    PopularityRetriever,
    fuse,
)
from llmrec.settings import Settings

KS = (10, 20, 50)
COLUMNS = ("HR@10", "HR@20", "HR@50", "NDCG@10")


def evaluate(retriever, split: LeaveOneOutSplit, part: str) -> tuple[dict[str, float], float]:
    users = split.valid_users() if part == "valid" else split.test_users()
    start = time.perf_counter()
    rows = []
    for user in users:
        history = split.valid_history(user) if part == "valid" else split.test_history(user)
        target = split.valid[user] if part == "valid" else split.test[user]
        ranked = [c.item_id for c in retriever.retrieve(history, max(KS))]
        rows.append(evaluate_ranking(ranked, target, KS))
    return mean_rows(rows), time.perf_counter() - start


def build_retrievers(home: Path, chroma_url: str | None, dataset, split: LeaveOneOutSplit) -> dict[str, object]:
    index = CatalogIndex(dataset.name, SentenceEmbedder(ensure_minilm(home)), home, IndexConfig(chroma_url=chroma_url),
                         source=dataset.source)
    print("index:", index.build(dataset.items.values()))
    train = split.train_histories()
    return {
        "popularity": PopularityRetriever().fit(train),
        "embedding": EmbeddingRetriever(index).fit(train),
        "cooccurrence": CooccurrenceRetriever().fit(train),
        "cooc-window": CooccurrenceRetriever(HybridConfig().cooccurrence).fit(train),  # the hybrid's member alone
        "hybrid": HybridRetriever(index=index).fit(train),
    }


def table(retrievers: dict[str, object], split: LeaveOneOutSplit) -> None:
    print(f"{'retriever':<14}{'part':<7}" + "".join(f"{c:>9}" for c in COLUMNS) + f"{'users':>7}{'seconds':>9}")
    for name, retriever in retrievers.items():
        for part in ("valid", "test"):
            scores, seconds = evaluate(retriever, split, part)
            users = len(split.valid) if part == "valid" else len(split.test)
            print(f"{name:<14}{part:<7}" + "".join(f"{scores[c]:>9.4f}" for c in COLUMNS) + f"{users:>7}{seconds:>9.1f}")


def tune(retrievers: dict[str, object], split: LeaveOneOutSplit, depth: int = 100) -> None:
    """Grid over member variants, weights and rrf_k on VALIDATION targets; prints the best by HR@20."""
    train = split.train_histories()
    users = split.valid_users()
    histories = {u: split.valid_history(u) for u in users}
    members: dict[str, dict[str, list]] = {}
    variants = {
        **{f"cooc w={w} n={n} d={d}": CooccurrenceConfig(window=w, last_n=n, decay=d)
           for w, n, d in itertools.product((None, 10, 20, 30), (5, 10, 20), (1.0, 0.8, 0.7))},
        **{f"emb n={n} d={d}": EmbeddingConfig(last_n=n, decay=d) for n, d in itertools.product((1, 5, 10), (1.0, 0.7, 0.5))},
    }
    variants = {label: (CooccurrenceRetriever(cfg).fit(train) if isinstance(cfg, CooccurrenceConfig)
                        else EmbeddingRetriever(retrievers["embedding"].index, cfg)) for label, cfg in variants.items()}
    variants["popularity"] = retrievers["popularity"]
    for label, retriever in variants.items():
        members[label] = {u: retriever.retrieve(histories[u], depth) for u in users}
        hr = sum(split.valid[u] in [c.item_id for c in members[label][u][:20]] for u in users) / len(users)
        print(f"{label:<22} valid HR@20 {hr:.4f}")
    best_cooc = max((k for k in members if k.startswith("cooc")), key=lambda k: _hr20(members, {k: 1.0}, 60, split))
    best_emb = max((k for k in members if k.startswith("emb")), key=lambda k: _hr20(members, {k: 1.0}, 60, split))
    print("best members:", best_cooc, "|", best_emb)
    results = []
    for w_emb, w_pop, rrf_k in itertools.product((0, 0.05, 0.1, 0.2, 0.3, 0.5), (0, 0.05, 0.1, 0.2, 0.3, 0.5), (1, 5, 10, 20, 60)):
        weights = {best_cooc: 1.0, best_emb: w_emb, "popularity": w_pop}
        results.append((_hr20(members, weights, rrf_k, split), w_emb, w_pop, rrf_k))
    results.sort(reverse=True)
    for row in results[:10]:
        print("HR@20 {:.4f}  embedding {:.2f}  popularity {:.2f}  rrf_k {:g}".format(*row))
    print("cooccurrence alone (same member):", f"{_hr20(members, {best_cooc: 1.0}, 60, split):.4f}")


def _hr20(members: dict[str, dict[str, list]], weights: dict[str, float], rrf_k: float, split: LeaveOneOutSplit) -> float:
    hits = 0
    for user, target in split.valid.items():
        ranked = {name: members[name][user] for name, w in weights.items() if w > 0}
        fused = [i for i, _, _ in fuse(ranked, weights, rrf_k)[:20]]
        if len(fused) < 20:
            fused += [c.item_id for c in members["popularity"][user] if c.item_id not in fused][: 20 - len(fused)]
        hits += target in fused
    return hits / len(split.valid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=None, help="llmrec cache (default: LLMREC_HOME or ~/.cache/llmrec)")
    parser.add_argument("--tune", action="store_true", help="grid-search the hybrid on validation targets")
    parser.add_argument("--dataset", default="ml-100k", help="a built-in dataset's name or a folder of RecBole atomic files")
    args = parser.parse_args()
    settings = Settings()
    home = args.home.expanduser().resolve() if args.home else settings.resolved_home()
    dataset = load_dataset(args.dataset, home)
    for note in dataset.report.notes:
        print("note:", note)
    split = LeaveOneOutSplit.from_dataset(dataset)
    print(f"{dataset.name}: {len(split.train)} users, {len(split.test)} with test targets, split {split.fingerprint()[:12]}")
    retrievers = build_retrievers(home, settings.chroma_url, dataset, split)
    if args.tune:
        tune(retrievers, split)
    else:
        table(retrievers, split)


if __name__ == "__main__":
    main()
