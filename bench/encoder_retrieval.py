"""The `embedding` adapter as a retriever: its item vectors in Chroma, alone and as a member of the hybrid.

    LLMREC_HOME=.llmrec .venv/bin/python bench/encoder_retrieval.py [--scenario movies-embedding]

Needs a scenario with an `embedding` adapter (`llmrec adapters train --scenario movies-embedding --objective embedding`).
The member's vote weight is chosen on the validation targets (HR@20, all users); the test targets then give
HR@20 and NDCG@10 of the hybrid with and without it, with an exact McNemar test on the per-user HR@20 hits.
It also checks that Chroma's answers equal a brute-force numpy ranking of the same vectors.
"""

from __future__ import annotations

import argparse
import time

from scipy.stats import binomtest
from tqdm.auto import tqdm

WEIGHTS = (0.03, 0.1, 0.3, 0.6, 1.0)


def score(retriever, split, part: str, users, desc: str) -> dict[str, list[float]]:
    from llmrec.eval.metrics import hit_at, ndcg_at

    hits, ndcg = [], []
    for user in tqdm(users, desc=desc, unit="user", leave=False):
        history = split.valid_history(user) if part == "valid" else split.test_history(user)
        target = split.valid[user] if part == "valid" else split.test[user]
        ranked = [c.item_id for c in retriever.retrieve(history, 20)]
        hits.append(hit_at(ranked, target, 20))
        ndcg.append(ndcg_at(ranked, target, 10))
    return {"HR@20": hits, "NDCG@10": ndcg}


def main() -> None:
    from llmrec.assets import folder_hash
    from llmrec.data.datasets import load_dataset
    from llmrec.data.split import LeaveOneOutSplit
    from llmrec.engines.models import resolve_model
    from llmrec.pipeline import build_index
    from llmrec.ranking.embedding import load_embedding_ranker
    from llmrec.retrieval.encoder_retriever import EncoderRetriever, exact_top
    from llmrec.retrieval.retrievers import HybridConfig, HybridRetriever
    from llmrec.scenario import load_scenario
    from llmrec.settings import Settings

    parser = argparse.ArgumentParser()
    parser.add_argument("--scenario", default="movies-embedding")
    args = parser.parse_args()
    settings = Settings()
    home = settings.resolved_home()
    scenario = load_scenario(args.scenario, home)
    dataset = load_dataset(scenario.dataset, home)
    split = LeaveOneOutSplit.from_dataset(dataset)
    train = split.train_histories()
    ranker = load_embedding_ranker(scenario.adapter, resolve_model(settings.model, home), list(dataset.items.values()), home, 0.0)
    encoder = EncoderRetriever(ranker, folder_hash(__import__("pathlib").Path(scenario.adapter.path)), home)
    index = build_index(settings, dataset, progress=False)
    started = time.perf_counter()
    encoder.collection  # noqa: B018 - fills Chroma once
    print(f"adapter {scenario.adapter.name}: {len(ranker.ids)} item vectors in Chroma collection {encoder.name_in_chroma} "
          f"({time.perf_counter() - started:.1f} s)")
    users = split.test_users()
    same = sum([c.item_id for c in encoder.retrieve(split.test_history(u), 20)] == exact_top(ranker, split.test_history(u).item_ids, 20)
               for u in users[:100])
    print(f"Chroma top-20 equals the brute-force top-20 for {same} of 100 users")

    base = HybridRetriever(index=index).fit(train)
    valid_users = split.valid_users()
    table = {"hybrid": score(base, split, "valid", valid_users, "valid: hybrid")["HR@20"]}
    for w in WEIGHTS:
        config = HybridConfig(weights={**HybridConfig().weights, "llm-encoder": w})
        table[w] = score(HybridRetriever(config, index=index, extra=[encoder]).fit(train), split, "valid", valid_users, f"valid: w={w}")["HR@20"]
    print("validation HR@20: " + ", ".join(f"{k}: {sum(v) / len(v):.4f}" for k, v in table.items()))
    best = max(WEIGHTS, key=lambda w: sum(table[w]))
    chosen = HybridRetriever(HybridConfig(weights={**HybridConfig().weights, "llm-encoder": best}), index=index, extra=[encoder]).fit(train)
    rows = {"hybrid": score(base, split, "test", users, "test: hybrid"),
            f"hybrid + llm-encoder (w={best})": score(chosen, split, "test", users, "test: with encoder"),
            "llm-encoder alone": score(encoder, split, "test", users, "test: encoder alone")}
    print(f"\ntest, {len(users)} users | HR@20 | NDCG@10")
    for name, row in rows.items():
        print(f"{name} | {sum(row['HR@20']) / len(users):.4f} | {sum(row['NDCG@10']) / len(users):.4f}")
    a, b = rows[f"hybrid + llm-encoder (w={best})"]["HR@20"], rows["hybrid"]["HR@20"]
    gained, lost = sum(x > y for x, y in zip(a, b)), sum(x < y for x, y in zip(a, b))
    p = binomtest(gained, gained + lost).pvalue if gained + lost else 1.0
    print(f"HR@20 with vs without the encoder member: {gained} targets gained, {lost} lost, exact McNemar p = {p:.3f}")


if __name__ == "__main__":
    main()
