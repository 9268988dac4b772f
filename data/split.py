"""Leave-one-out split over ordered histories (the catalog's ordering rule: time, then file line).

For a user with n >= 3 items: train = the first n-2, valid target = item n-1, test target = item n.
Users with fewer than 3 items are kept whole in training and have no valid or test target, so
every metric is averaged over the users with targets only.

Repeated items: histories keep repeats, but every retriever drops the items a history holds, so a target that
repeats an earlier item of the user's could never be ranked and would count as a miss for every method. Such a
target is no target: the item stays where it is (in the training prefix, or in the test history), the user has no
validation (or no test) target, and `repeated_targets` counts them (the eval report states the test count).
MovieLens-100K and -1M have none (one rating per user and movie), so their split is unchanged.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence

from llmrec.data.catalog import Dataset
from llmrec.schemas import UserHistory

MIN_HISTORY = 3
SPLIT_VERSION = "leave-one-out/v1"


class LeaveOneOutSplit:
    """Per-user train prefix plus one validation and one test target."""

    def __init__(self, histories: Mapping[str, Sequence[str]]) -> None:
        self.train: dict[str, tuple[str, ...]] = {}
        self.valid: dict[str, str] = {}
        self.test: dict[str, str] = {}
        self.repeated_targets: dict[str, int] = {"valid": 0, "test": 0}
        """Targets dropped because the user had taken the item before (see the module doc)."""
        self._held: dict[str, str] = {}  # item n-1 of every user with n >= 3 items: the test history's last item
        self._last: dict[str, str] = {}  # item n
        for user, items in histories.items():
            items = tuple(items)
            if len(items) < MIN_HISTORY:
                self.train[user] = items
                continue
            self.train[user] = items[:-2]
            self._held[user], self._last[user] = items[-2], items[-1]
            if items[-2] in self.train[user]:
                self.repeated_targets["valid"] += 1
            else:
                self.valid[user] = items[-2]
            if items[-1] in items[:-1]:
                self.repeated_targets["test"] += 1
            else:
                self.test[user] = items[-1]

    @classmethod
    def from_dataset(cls, dataset: Dataset) -> LeaveOneOutSplit:
        return cls(dataset.histories())

    def train_histories(self) -> dict[str, list[str]]:
        """What a retriever may be fitted on: every user's training prefix."""
        return {user: list(items) for user, items in self.train.items()}

    def valid_users(self) -> list[str]:
        return list(self.valid)

    def test_users(self) -> list[str]:
        return list(self.test)

    def valid_history(self, user: str) -> UserHistory:
        """The history used to predict the validation target: the training prefix."""
        return UserHistory(user_id=user, item_ids=self.train[user])

    def test_history(self, user: str) -> UserHistory:
        """The history used to predict the test target: training prefix plus the validation item."""
        if user not in self.test:
            raise KeyError(user)
        return UserHistory(user_id=user, item_ids=self.train[user] + (self._held[user],))

    def fingerprint(self) -> str:
        """sha256 over the whole split, stable across runs and machines; goes into eval run ids."""
        payload = [SPLIT_VERSION] + [
            [user, list(self.train[user]), self._target(self.valid, user, "held"), self._target(self.test, user, "last")]
            for user in sorted(self.train)
        ]
        return hashlib.sha256(json.dumps(payload, separators=(",", ":")).encode()).hexdigest()

    def _target(self, targets: dict[str, str], user: str, which: str):
        """The fingerprint's entry for a target: the item, None (under 3 items) or ["repeat", item] (dropped as a repeat,
        so a split without repeats keeps its fingerprint)."""
        if user in targets or user not in self._held:
            return targets.get(user)
        return ["repeat", self._held[user] if which == "held" else self._last[user]]

    def folds(self, folds: int = 5, seed: int = 0) -> list[list[str]]:
        """Every user in one of `folds` groups by a seeded hash of the user id (`user_bucket`), users in split order."""
        groups: list[list[str]] = [[] for _ in range(folds)]
        for user in self.train:
            groups[user_bucket(user, seed, folds)].append(user)
        return groups

    def histories_without(self, users, keep: int | None = 0) -> dict[str, list[str]]:
        """Training histories with none of `users`' future: every other user's training prefix, and `users` cut to
        their first `keep` items (None: left out entirely). What a retriever for those users may be fitted on when their
        history is cut short (a cold user knows only their first items; a training example only its prefix)."""
        users = set(users)
        return {user: list(items if user not in users else items[: keep or 0]) for user, items in self.train.items()
                if user not in users or keep is not None}


def user_bucket(user: str, seed: int, buckets: int) -> int:
    """A user's bucket out of `buckets`, by sha256 of "<seed>:<user id>": the same on every machine and run, and
    independent of which other users are loaded."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{user}".encode()).digest()[:8], "big") % buckets
