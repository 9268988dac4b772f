"""Leave-one-out split: targets, prefixes, short histories and a stable fingerprint."""

from __future__ import annotations

import pytest

from llmrec.data.split import LeaveOneOutSplit

HISTORIES = {"u1": ["a", "b", "c", "d", "e"], "u2": ["x", "y", "z"], "short": ["p", "q"], "empty": []}


@pytest.fixture
def split() -> LeaveOneOutSplit:
    return LeaveOneOutSplit(HISTORIES)


def test_last_two_items_are_valid_and_test_targets(split: LeaveOneOutSplit) -> None:
    assert split.train["u1"] == ("a", "b", "c")
    assert (split.valid["u1"], split.test["u1"]) == ("d", "e")
    assert (split.train["u2"], split.valid["u2"], split.test["u2"]) == (("x",), "y", "z")


def test_short_histories_train_only(split: LeaveOneOutSplit) -> None:
    assert split.train["short"] == ("p", "q") and split.train["empty"] == ()
    assert split.valid_users() == ["u1", "u2"] and split.test_users() == ["u1", "u2"]
    assert split.train_histories() == {"u1": ["a", "b", "c"], "u2": ["x"], "short": ["p", "q"], "empty": []}


def test_prefixes_for_valid_and_test(split: LeaveOneOutSplit) -> None:
    assert split.valid_history("u1").item_ids == ("a", "b", "c")
    assert split.test_history("u1").item_ids == ("a", "b", "c", "d")
    assert split.test_history("u1").user_id == "u1"
    with pytest.raises(KeyError):
        split.test_history("short")


def test_no_target_leaks_into_training(split: LeaveOneOutSplit) -> None:
    train = split.train_histories()
    for user in split.test_users():
        assert split.test[user] not in train[user] and split.valid[user] not in train[user]


def test_fingerprint_is_stable_and_sensitive(split: LeaveOneOutSplit) -> None:
    reordered = dict(reversed(list(HISTORIES.items())))
    assert LeaveOneOutSplit(reordered).fingerprint() == split.fingerprint()
    assert len(split.fingerprint()) == 64
    changed = {**HISTORIES, "u2": ["x", "z", "y"]}
    assert LeaveOneOutSplit(changed).fingerprint() != split.fingerprint()
    assert split.fingerprint() == LeaveOneOutSplit(HISTORIES).fingerprint()


def test_ml100k_split_is_pinned() -> None:
    """Pins the tie-break rule: 415 users tie on their last timestamp, so any change moves this hash."""
    from llmrec.data.datasets import load_dataset
    from llmrec.settings import Settings

    split = LeaveOneOutSplit.from_dataset(load_dataset("ml-100k", Settings().resolved_home()))
    assert len(split.test) == 943 and (split.valid["1"], split.test["1"]) == ("74", "102")
    assert split.fingerprint() == "41504f973cba83b846a30ebe41b4fc612f422ec20e9bc7a814115bdd7702c652"


def test_a_target_that_repeats_an_earlier_item_is_no_target() -> None:
    """Every retriever drops seen items, so a repeated target can never be ranked: the user has no such target."""
    split = LeaveOneOutSplit({"again": ["a", "b", "c", "a"], "valid-again": ["a", "b", "a", "c"], "new": ["a", "b", "c", "d"]})
    assert split.test_users() == ["valid-again", "new"] and split.valid_users() == ["again", "new"]
    assert split.repeated_targets == {"valid": 1, "test": 1}
    assert split.test_history("valid-again").item_ids == ("a", "b", "a")  # the repeat stays in the history
    assert split.train["again"] == ("a", "b") and split.valid["again"] == "c"
    with pytest.raises(KeyError):
        split.test_history("again")
    # a split without repeats keeps its fingerprint; one with them is told apart from the same items otherwise placed
    assert LeaveOneOutSplit(HISTORIES).repeated_targets == {"valid": 0, "test": 0}
    assert split.fingerprint() != LeaveOneOutSplit({"again": ["a", "b", "c", "b"], "valid-again": ["a", "b", "a", "c"],
                                                    "new": ["a", "b", "c", "d"]}).fingerprint()


def test_folds_and_histories_without_a_users_future(split: LeaveOneOutSplit) -> None:
    folds = split.folds(3, seed=0)
    assert sorted(u for f in folds for u in f) == sorted(split.train) and folds == split.folds(3, seed=0)
    assert split.histories_without(["u1"], keep=2) == {"u1": ["a", "b"], "u2": ["x"], "short": ["p", "q"], "empty": []}
    assert "u1" not in split.histories_without(["u1"], keep=None)
