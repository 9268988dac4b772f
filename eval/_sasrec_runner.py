"""Train SASRec with RecBole on pre-split benchmark files, early-stopped on our validation targets.

Run by `llmrec.eval.sasrec_recbole` with the python of the RecBole venv (`make baselines`); it imports
only RecBole, torch and the standard library, never llmrec, whose pins clash with RecBole's.

RecBole 1.2.1 does not exclude a user's history in full-sort evaluation of *sequential* models (its
`FullSortEvalDataLoader` returns no history index for them). So this script scores the validation rows
(every epoch, for early stopping) and the test rows itself with `model.full_sort_predict`, every history
item and the padding id 0 masked: validation NDCG@10 is the metric our harness reports, on the
validation targets. `CurveTrainer` replaces RecBole's `_valid_epoch` with that and records one row per
epoch, appended to `curve.jsonl` as it goes (a long run can be watched) and kept in the output.

Input (folder given by --work): `data/<dataset>/<dataset>.{train,valid,test}.inter` and `histories.json`
(`{"valid": {user token: history item tokens}, "test": {...}}`). Output: `curve.jsonl`, `runner-result.json`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

CURVE_FILE = "curve.jsonl"


def mask_seen(scores, seen) -> None:
    """Set the padding id 0 and each row's seen item ids (a LongTensor per row) to -inf, in place."""
    scores[:, 0] = -math.inf
    for row, ids in enumerate(seen):
        scores[row, ids] = -math.inf


def target_ranks(scores, targets) -> list[float]:
    """0-based rank of each row's target (items scoring strictly higher); inf where the target is masked."""
    target_scores = scores.gather(1, targets.view(-1, 1))
    ranks = (scores > target_scores).sum(dim=1).float()
    return [math.inf if not math.isfinite(s) else r for s, r in zip(target_scores.view(-1).tolist(), ranks.tolist())]


def ndcg_hr_at10(ranks: list[float]) -> tuple[float, float]:
    """Mean NDCG@10 and HR@10 of one relevant item per row, from 0-based ranks."""
    if not ranks:
        raise ValueError("no validation rows")
    ndcg = sum(1 / math.log2(r + 2) for r in ranks if r < 10) / len(ranks)
    return ndcg, sum(r < 10 for r in ranks) / len(ranks)


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--max-epochs", type=int, required=True)
    parser.add_argument("--patience", type=int, required=True, help="stop after this many epochs without a better validation NDCG@10")
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--max-len", type=int, default=50)
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 = torch's default")
    parser.add_argument("--depth", type=int, default=0, help="items ranked per user; 0 = every unseen item")
    return parser.parse_args()


def _seen_ids(dataset, histories: dict[str, list[str]]) -> dict[str, object]:
    import torch

    return {user: torch.as_tensor(dataset.token2id("item_id", items), dtype=torch.long).view(-1) for user, items in histories.items()}


def _scored_batches(model, data, dataset, seen: dict[str, object]):
    """(user tokens, masked scores, target ids) per batch of an evaluation dataloader."""
    import torch

    model.eval()
    with torch.no_grad():
        for interaction, _, _, _ in data:
            interaction = interaction.to("cpu")
            scores = model.full_sort_predict(interaction)
            users = [str(u) for u in dataset.id2token("user_id", interaction["user_id"].numpy())]
            mask_seen(scores, [seen[u] for u in users])
            yield users, scores, interaction["item_id"]


def _curve_trainer(trainer_class, dataset, seen: dict[str, object], log: Path):
    """RecBole's Trainer, validated on our masked NDCG@10 and recording every epoch."""

    class CurveTrainer(trainer_class):
        def __init__(self, config, model):
            super().__init__(config, model)
            self.curve: list[dict] = []

        def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
            start = time.perf_counter()
            loss = super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)
            self._row = {"epoch": epoch_idx, "train_loss": round(float(sum(loss) if isinstance(loss, tuple) else loss), 4),
                         "train_s": round(time.perf_counter() - start, 1)}
            return loss

        def _valid_epoch(self, valid_data, show_progress=False):
            start = time.perf_counter()
            ranks = [r for _, scores, targets in _scored_batches(self.model, valid_data, dataset, seen) for r in target_ranks(scores, targets)]
            ndcg, hr = ndcg_hr_at10(ranks)
            row = {**self._row, "valid_ndcg10": round(ndcg, 5), "valid_hr10": round(hr, 5), "valid_s": round(time.perf_counter() - start, 1)}
            self.curve.append(row)
            with log.open("a") as handle:
                handle.write(json.dumps(row) + "\n")
            return ndcg, {"ndcg@10": ndcg, "hit@10": hr}

    return CurveTrainer


def _config(args: argparse.Namespace, work: Path):
    from recbole.config import Config

    return Config(model="SASRec", dataset=args.dataset, config_dict={
        "data_path": str(work / "data"), "benchmark_filename": ["train", "valid", "test"],
        "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": None,
        "load_col": {"inter": ["user_id", "item_id_list", "item_id"]}, "alias_of_item_id": ["item_id_list"],
        "MAX_ITEM_LIST_LENGTH": args.max_len, "train_neg_sample_args": None, "loss_type": "CE",
        # RecBole stops once `stopping_step` epochs in a row fail to improve *and* one more does: patience - 1.
        "epochs": args.max_epochs, "stopping_step": args.patience - 1, "eval_step": 1, "train_batch_size": args.batch_size,
        "eval_batch_size": 256, "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
        "metrics": ["Hit", "NDCG"], "topk": [10], "valid_metric": "NDCG@10",
        "device": "cpu", "use_gpu": False, "seed": args.seed, "reproducibility": True, "show_progress": False,
        "checkpoint_dir": str(work / "saved"), "state": "WARNING",
    })


def _test_rankings(model, test_data, dataset, seen: dict[str, object], depth: int) -> dict[str, list[str]]:
    import torch

    rankings: dict[str, list[str]] = {}
    for users, scores, _ in _scored_batches(model, test_data, dataset, seen):
        values, top = torch.topk(scores, scores.shape[1] if depth <= 0 else min(depth, scores.shape[1]), dim=1)
        for row, user in enumerate(users):
            keep = top[row][torch.isfinite(values[row])].numpy()
            rankings[user] = [str(t) for t in dataset.id2token("item_id", keep)]
    return rankings


def main() -> None:
    args = _parse()
    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    work = Path(args.work)
    os.chdir(work)  # RecBole writes log/ and saved/ under the working directory

    import torch
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_logger, init_seed

    # Importing recbole's sequential models runs `torch.autograd.set_detect_anomaly(True)` (module level of
    # sine.py): anomaly mode records a Python stack for every op and made an epoch many times slower here.
    torch.autograd.set_detect_anomaly(False)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    config = _config(args, work)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    histories = json.loads((work / "histories.json").read_text())
    (work / CURVE_FILE).unlink(missing_ok=True)
    trainer = _curve_trainer(Trainer, dataset, _seen_ids(dataset, histories["valid"]), work / CURVE_FILE)(
        config, SASRec(config, train_data.dataset).to("cpu"))
    started = time.perf_counter()
    best_valid, _ = trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    train_s = time.perf_counter() - started
    checkpoint = torch.load(trainer.saved_model_file, map_location="cpu", weights_only=False)
    trainer.model.load_state_dict(checkpoint["state_dict"])
    result = {
        "rankings": _test_rankings(trainer.model, test_data, dataset, _seen_ids(dataset, histories["test"]), args.depth),
        "epochs": len(trainer.curve), "best_epoch": int(checkpoint["epoch"]), "max_epochs": args.max_epochs, "patience": args.patience,
        "valid_curve": trainer.curve, "train_seconds": round(train_s, 1), "best_valid_ndcg10": float(best_valid),
        "torch_threads": torch.get_num_threads(), "items_in_vocabulary": int(dataset.item_num - 1), "train_rows": len(train_data.dataset),
        "recbole_config": {k: config[k] for k in ("n_layers", "n_heads", "hidden_size", "inner_size", "hidden_dropout_prob", "attn_dropout_prob",
                                                   "learning_rate", "train_batch_size", "MAX_ITEM_LIST_LENGTH", "loss_type", "seed")},
    }
    (work / "runner-result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
