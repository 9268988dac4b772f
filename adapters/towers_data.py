"""The data side of the `embedding` objective's towers, shared by stage 1 (`embedding`) and stage 2 (`encoder_lora`):
next-item training examples and the validation NDCG they are selected on."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from llmrec.data.split import LeaveOneOutSplit
from llmrec.engines.encoder import ItemVectors
from llmrec.ranking.embedding import EmbeddingRanker, TwoTower, TwoTowerConfig, history_weights


@dataclass(frozen=True)
class Examples:
    """Next-item examples as arrays: history rows (-1 = padding), their weights, the target row."""

    history: np.ndarray
    weights: np.ndarray
    target: np.ndarray


def next_item_examples(histories: dict[str, Sequence[str]], row: dict[str, int], config: TwoTowerConfig) -> Examples:
    """Every position p >= 1 of every history: the `history_items` items before p -> item p."""
    width = config.history_items
    hist, weights, target = [], [], []
    for items in histories.values():
        rows = [row[i] for i in items if i in row]
        for p in range(1, len(rows)):
            prefix = rows[max(0, p - width) : p]
            hist.append([-1] * (width - len(prefix)) + prefix)
            weights.append([0.0] * (width - len(prefix)) + history_weights(len(prefix), config.decay).tolist())
            target.append(rows[p])
    return Examples(np.array(hist, dtype=np.int64).reshape(-1, width), np.array(weights, dtype=np.float32).reshape(-1, width),
                    np.array(target, dtype=np.int64))


def validation_ndcg(tower: TwoTower, vectors: ItemVectors, split: LeaveOneOutSplit, k: int = 10, users: Sequence[str] | None = None) -> float:
    """Mean NDCG@k of the validation targets of `users` (None: all; training selects on the selection half,
    `adapters.fit.validation_halves`), full ranking over items unseen in each training prefix."""
    ranker = EmbeddingRanker(tower, vectors)
    total, users = 0.0, split.valid_users() if users is None else list(users)
    for user in users:
        scores = ranker.catalog_scores(split.train[user])
        if scores is None:
            continue
        seen = [ranker.row[i] for i in split.train[user] if i in ranker.row]
        scores[seen] = -np.inf
        target = scores[ranker.row[split.valid[user]]] if split.valid[user] in ranker.row else -np.inf
        rank = int((scores > target).sum())
        total += 1.0 / math.log2(rank + 2) if rank < k else 0.0
    return total / max(len(users), 1)
