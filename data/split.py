"""Leave-one-out split over ordered histories (the catalog's ordering rule: time, then file line).

For a user with n >= 3 items: train = the first n-2, valid target = item n-1, test target = item n.
Users with fewer than 3 items are kept whole in training and have no valid or test target, so
every metric is averaged over the users with targets only.
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
        for user, items in histories.items():
            items = tuple(items)
            if len(items) < MIN_HISTORY:
                self.train[user] = items
                continue
            self.train[user] = items[:-2]
            self.valid[user] = items[-2]
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
        return UserHistory(user_id=user, item_ids=self.train[user] + (self.valid[user],))

    def fingerprint(self) -> str:
        """sha256 over the whole split, stable across runs and machines; goes into eval run ids."""
        payload = [SPLIT_VERSION] + [
            [user, list(self.train[user]), self.valid.get(user), self.test.get(user)] for user in sorted(self.train)
        ]
        return hashlib.sha256(json.dumps(payload, separators=(",", ":")).encode()).hexdigest()
