"""Train SASRec with RecBole on pre-split benchmark files and write each test user's top-N items.

Run by `llmrec.eval.sasrec_recbole` with the python of the RecBole venv (`make baselines`); it imports
only RecBole, torch and the standard library, never llmrec, whose pins clash with RecBole's.

RecBole 1.2.1 does not exclude a user's history in full-sort evaluation of *sequential* models (its
`FullSortEvalDataLoader` returns no history index for them), so this script scores the test rows
itself with `model.full_sort_predict` and masks every history item, plus the padding id 0.

Input (folder given by --work): `data/<dataset>/<dataset>.{train,valid,test}.inter` and `histories.json`
(user token -> every history item token of the test history). Output: `result.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--max-len", type=int, default=50)
    parser.add_argument("--depth", type=int, default=0, help="items ranked per user; 0 = every unseen item")
    args = parser.parse_args()
    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    work = Path(args.work)
    os.chdir(work)  # RecBole writes log/ and saved/ under the working directory

    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_logger, init_seed

    # Importing recbole's sequential models runs `torch.autograd.set_detect_anomaly(True)` (module level of
    # sine.py): anomaly mode records a Python stack for every op and made an epoch many times slower here.
    torch.autograd.set_detect_anomaly(False)

    config = Config(model="SASRec", dataset=args.dataset, config_dict={
        "data_path": str(work / "data"), "benchmark_filename": ["train", "valid", "test"],
        "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": None,
        "load_col": {"inter": ["user_id", "item_id_list", "item_id"]}, "alias_of_item_id": ["item_id_list"],
        "MAX_ITEM_LIST_LENGTH": args.max_len, "train_neg_sample_args": None, "loss_type": "CE",
        "epochs": args.epochs, "train_batch_size": args.batch_size, "eval_batch_size": 256, "stopping_step": 10,
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
        "metrics": ["Hit", "NDCG", "MRR"], "topk": [10], "valid_metric": "NDCG@10",
        "device": "cpu", "use_gpu": False, "seed": args.seed, "reproducibility": True, "show_progress": False,
        "checkpoint_dir": str(work / "saved"), "state": "WARNING",
    })
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    model = SASRec(config, train_data.dataset).to(config["device"])
    trainer = Trainer(config, model)
    started = time.perf_counter()
    best_valid, best_result = trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    train_s = time.perf_counter() - started
    checkpoint = torch.load(trainer.saved_model_file, map_location="cpu", weights_only=False)
    model.load_state_dict(checkpoint["state_dict"])
    model.eval()

    histories = json.loads((work / "histories.json").read_text())
    rankings: dict[str, list[str]] = {}
    with torch.no_grad():
        for interaction, _, _, _ in test_data:
            scores = model.full_sort_predict(interaction.to("cpu"))
            users = dataset.id2token("user_id", interaction["user_id"].numpy())
            scores[:, 0] = -float("inf")
            for row, user in enumerate(users):
                seen = dataset.token2id("item_id", histories[str(user)])
                scores[row, torch.as_tensor(seen, dtype=torch.long)] = -float("inf")
            depth = scores.shape[1] if args.depth <= 0 else min(args.depth, scores.shape[1])
            values, top = torch.topk(scores, depth, dim=1)
            for row, user in enumerate(users):
                keep = top[row][torch.isfinite(values[row])].numpy()
                rankings[str(user)] = [str(t) for t in dataset.id2token("item_id", keep)]
    result = {
        "rankings": rankings, "epochs": args.epochs, "best_epoch": int(checkpoint.get("epoch", -1)),
        "train_seconds": round(train_s, 1), "best_valid_ndcg10": float(best_valid),
        "best_valid_result": {k: float(v) for k, v in best_result.items()},
        "items_in_vocabulary": int(dataset.item_num - 1), "train_rows": len(train_data.dataset),
        "recbole_config": {k: config[k] for k in ("n_layers", "n_heads", "hidden_size", "inner_size", "hidden_dropout_prob", "attn_dropout_prob", "learning_rate",
                                                   "train_batch_size", "MAX_ITEM_LIST_LENGTH", "loss_type", "seed")},
    }
    (work / "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
