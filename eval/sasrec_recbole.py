"""SASRec, trained by RecBole in its own venv, as an external peer on exactly our split.

Our split is written out as RecBole's pre-split benchmark files, one sequence row per target:
`<ds>.train.inter` (every next-item step inside each training prefix), `<ds>.valid.inter`
(training prefix -> validation item) and `<ds>.test.inter` (training prefix + validation item ->
test item), with `item_id_list` given explicitly, so RecBole neither re-splits nor re-orders ties.
Ids are written as our own dense indexes ("u12", "i40"), so odd characters in a dataset's ids
cannot break RecBole's space-separated sequences.

Training is early-stopped on our validation targets (NDCG@10 with history masked, the metric the
harness reports): up to `max_epochs`, stopping after `patience` epochs without a better one; the best
epoch's weights rank the test users. Each epoch is minutes on ML-100K on these CPUs, so results are
cached under `<home>/eval-cache/sasrec/<key>/result.json`, keyed by the split fingerprint and the
config; `<key>/curve.jsonl` grows one line per epoch while it trains.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from llmrec.data.split import LeaveOneOutSplit
from llmrec.errors import LLMRecError

RUNNER = Path(__file__).with_name("_sasrec_runner.py")
DATASET_NAME = "llmrec_split"
CURVE = "curve.jsonl"  # the runner's per-epoch log, also kept in result.json
RAW = "runner-result.json"  # the runner's output, in its dense tokens
SKIPPED = "SASRec skipped: run `make baselines` (it builds .venv-recbole with RecBole 1.2.1)"


class SASRecConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_epochs: int = Field(default=200, ge=1, description="Cap on training epochs; early stopping normally ends it sooner.")
    patience: int = Field(default=10, ge=1, description="Stop after this many epochs without a better validation NDCG@10 (RecBole's "
                          "default too). On ML-100K, 5 stopped at epoch 12 on a one-epoch spike while the loss was still falling.")
    seed: int = 2020
    batch_size: int = 256
    max_len: int = Field(default=50, description="RecBole's MAX_ITEM_LIST_LENGTH: most recent items the model reads.")
    depth: int = Field(default=0, ge=0, description="Items ranked per test user; 0 = every unseen item (the sampled protocol needs them).")
    python: Path = Field(default=Path(".venv-recbole/bin/python"), description="The RecBole venv's interpreter.")
    threads: int = Field(default=1, ge=0, description="torch threads in the runner (speed only); 0 = torch's default, one per core. "
                         "On a busy 2-core machine a training step took 0.26-0.29 s with 1 thread and 2.0-3.8 s with 2.")
    timeout_s: float = 24 * 3600

    def key(self, split_fingerprint: str) -> str:
        payload = self.model_dump(mode="json", exclude={"python", "timeout_s", "threads"}) | {"split": split_fingerprint, "v": 4}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


class EpochRow(BaseModel):
    """One training epoch, then validation on our targets (history masked)."""

    epoch: int = Field(description="0-based, as RecBole counts.")
    train_loss: float
    train_s: float
    valid_ndcg10: float
    valid_hr10: float
    valid_s: float


class SASRecResult(BaseModel):
    rankings: dict[str, list[str]] = Field(description="Our user id -> our item ids best first, history excluded.")
    epochs: int = Field(description="Epochs trained (early stopping or the cap ended it).")
    best_epoch: int = Field(description="0-based epoch whose weights rank the test users.")
    max_epochs: int
    patience: int
    valid_curve: list[EpochRow]
    train_seconds: float
    best_valid_ndcg10: float
    torch_threads: int
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
    histories: dict[str, dict[str, list[str]]] = {}
    for part, target_of, history_of in (("valid", split.valid, split.valid_history), ("test", split.test, split.test_history)):
        with (data / f"{DATASET_NAME}.{part}.inter").open("w") as handle:
            handle.write(header)
            for user in tested:
                handle.write(row(user, history_of(user).item_ids, target_of[user]))
        histories[part] = {u_tok[u]: [i_tok[i] for i in history_of(u).item_ids] for u in tested}
    (folder / "histories.json").write_text(json.dumps(histories))
    return users, items


def from_runner(raw: dict, users: Sequence[str], items: Sequence[str]) -> SASRecResult:
    """The runner's output, its dense tokens ("u12", "i40") mapped back to our ids."""
    rankings = {users[int(u[1:])]: [items[int(i[1:])] for i in ranked] for u, ranked in raw["rankings"].items()}
    return SASRecResult.model_validate({**raw, "rankings": rankings})


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
    with (folder / "training.lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return (f"SASRec skipped: another process is training this configuration now (one line an epoch in {folder / CURVE}); "
                    "run again when it ends")
        if cached.is_file():  # it finished while we waited for the lock
            return SASRecResult.model_validate_json(cached.read_text()).model_copy(update={"cached": True})
        parsed = _train(split, config, python, folder)
        cached.write_text(parsed.model_dump_json())
    return parsed


def _train(split: LeaveOneOutSplit, config: SASRecConfig, python: Path, folder: Path) -> SASRecResult:
    users, items = write_benchmark(split, folder, config.max_len)
    command = [str(python), str(RUNNER), "--work", str(folder), "--dataset", DATASET_NAME, "--max-epochs", str(config.max_epochs),
               "--patience", str(config.patience), "--seed", str(config.seed), "--batch-size", str(config.batch_size),
               "--max-len", str(config.max_len), "--threads", str(config.threads), "--depth", str(config.depth)]
    env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1", "PYTHONWARNINGS": "ignore"}
    print(f"SASRec: training with RecBole until validation NDCG@10 stops improving for {config.patience} epochs (at most "
          f"{config.max_epochs}; minutes an epoch on a CPU); one line an epoch in {folder / CURVE}", file=sys.stderr)
    raw = folder / RAW
    raw.unlink(missing_ok=True)
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=config.timeout_s)
    except subprocess.TimeoutExpired:
        raise SASRecFailed(f"SASRec did not finish within {config.timeout_s:.0f} s") from None
    if done.returncode != 0 or not raw.is_file():
        tail = (done.stderr or done.stdout)[-1500:]
        raise SASRecFailed(f"RecBole exited with {done.returncode}; its last output:\n{tail}")
    parsed = from_runner(json.loads(raw.read_text()), users, items)
    raw.unlink()
    return parsed
