"""SASRec, trained by RecBole in its own venv, as an external peer on exactly our split.

Our split is written out as RecBole's pre-split benchmark files, one sequence row per target:
`<ds>.train.inter` (every next-item step inside each training prefix), `<ds>.valid.inter`
(training prefix -> validation item) and `<ds>.test.inter` (training prefix + validation item ->
test item), with `item_id_list` given explicitly, so RecBole neither re-splits nor re-orders ties.
Ids are written as our own dense indexes ("u12", "i40"), so odd characters in a dataset's ids
cannot break RecBole's space-separated sequences.

Training takes ~165 s an epoch on ML-100K on these CPUs, so results are cached under
`<home>/eval-cache/sasrec/<key>/result.json`, keyed by the split fingerprint and the config.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from llmrec.errors import LLMRecError
from llmrec.eval.split import LeaveOneOutSplit

RUNNER = Path(__file__).with_name("_sasrec_runner.py")
DATASET_NAME = "llmrec_split"
SKIPPED = "SASRec skipped: run `make baselines` (it builds .venv-recbole with RecBole 1.2.1)"


class SASRecConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(default=2, ge=1, description="Training epochs (about 165 s each on ML-100K, 2 CPU cores).")
    seed: int = 2020
    batch_size: int = 256
    max_len: int = Field(default=50, description="RecBole's MAX_ITEM_LIST_LENGTH: most recent items the model reads.")
    depth: int = Field(default=0, ge=0, description="Items ranked per test user; 0 = every unseen item (the sampled protocol needs them).")
    python: Path = Field(default=Path(".venv-recbole/bin/python"), description="The RecBole venv's interpreter.")
    timeout_s: float = 6 * 3600

    def key(self, split_fingerprint: str) -> str:
        payload = self.model_dump(mode="json", exclude={"python", "timeout_s"}) | {"split": split_fingerprint, "v": 3}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


class SASRecResult(BaseModel):
    rankings: dict[str, list[str]] = Field(description="Our user id -> our item ids best first, history excluded.")
    epochs: int
    best_epoch: int
    train_seconds: float
    best_valid_ndcg10: float
    items_in_vocabulary: int
    train_rows: int
    cached: bool = False
    recbole_config: dict = Field(default_factory=dict)


class SASRecFailed(LLMRecError):
    """RecBole ran but did not produce rankings."""


def write_benchmark(split: LeaveOneOutSplit, folder: Path, max_len: int) -> tuple[list[str], list[str]]:
    """Write the three benchmark files plus histories.json; return (users, items) so index i <-> token."""
    users = sorted(split.train)  # users without targets still train, as they do for the retrievers
    items = sorted({i for u in split.train for i in split.train[u]} | set(split.valid.values()) | set(split.test.values()))
    u_tok = {u: f"u{n}" for n, u in enumerate(users)}
    i_tok = {i: f"i{n}" for n, i in enumerate(items)}
    data = folder / "data" / DATASET_NAME
    data.mkdir(parents=True, exist_ok=True)
    header = "user_id:token\titem_id_list:token_seq\titem_id:token\n"

    def row(user: str, prefix: Sequence[str], target: str) -> str:
        return f"{u_tok[user]}\t{' '.join(i_tok[i] for i in prefix[-max_len:])}\t{i_tok[target]}\n"

    with (data / f"{DATASET_NAME}.train.inter").open("w") as train:
        train.write(header)
        for user in users:
            prefix = split.train[user]
            for p in range(1, len(prefix)):
                train.write(row(user, prefix[:p], prefix[p]))
    tested = [u for u in users if u in split.test]
    for part, target_of, history_of in (("valid", split.valid, split.valid_history), ("test", split.test, split.test_history)):
        with (data / f"{DATASET_NAME}.{part}.inter").open("w") as handle:
            handle.write(header)
            for user in tested:
                handle.write(row(user, history_of(user).item_ids, target_of[user]))
    histories = {u_tok[u]: [i_tok[i] for i in split.test_history(u).item_ids] for u in tested}
    (folder / "histories.json").write_text(json.dumps(histories))
    return users, items


def run_sasrec(split: LeaveOneOutSplit, config: SASRecConfig, home: Path, repo_root: Path) -> SASRecResult | str:
    """Cached SASRec rankings for every test user, or the reason it was skipped."""
    python = config.python if config.python.is_absolute() else repo_root / config.python
    folder = home / "eval-cache" / "sasrec" / config.key(split.fingerprint())
    cached = folder / "result.json"
    if cached.is_file():
        return SASRecResult.model_validate_json(cached.read_text()).model_copy(update={"cached": True})
    if not python.is_file():
        return SKIPPED
    folder.mkdir(parents=True, exist_ok=True)
    users, items = write_benchmark(split, folder, config.max_len)
    command = [str(python), str(RUNNER), "--work", str(folder), "--dataset", DATASET_NAME, "--epochs", str(config.epochs),
               "--seed", str(config.seed), "--batch-size", str(config.batch_size), "--max-len", str(config.max_len),
               "--depth", str(config.depth)]
    env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1", "PYTHONWARNINGS": "ignore"}
    print(f"SASRec: training {config.epochs} epoch(s) with RecBole (about 165 s each on 2 CPU cores)…", file=sys.stderr)
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=config.timeout_s)
    except subprocess.TimeoutExpired:
        raise SASRecFailed(f"SASRec did not finish within {config.timeout_s:.0f} s") from None
    raw = folder / "result.json.raw"
    if done.returncode != 0 or not (folder / "result.json").is_file():
        tail = (done.stderr or done.stdout)[-1500:]
        raise SASRecFailed(f"RecBole exited with {done.returncode}; its last output:\n{tail}")
    (folder / "result.json").rename(raw)
    result = json.loads(raw.read_text())
    result["rankings"] = {users[int(u[1:])]: [items[int(i[1:])] for i in ranked] for u, ranked in result["rankings"].items()}
    parsed = SASRecResult.model_validate(result)
    cached.write_text(parsed.model_dump_json())
    raw.unlink()
    return parsed
