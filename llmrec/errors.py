"""Typed errors. The CLI maps each to a one-line message and an exit code; nothing else should escape."""

from __future__ import annotations

from collections.abc import Sequence


class LLMRecError(Exception):
    """Base of every error llmrec reports to a user."""

    exit_code = 1


class UnknownUser(LLMRecError):
    exit_code = 3


class UnknownItem(LLMRecError):
    exit_code = 3


class UnknownScenario(LLMRecError):
    exit_code = 3


class NoRoute(UnknownScenario):
    """`--scenario auto` (or a chat with no scenario) found no single scenario to serve a request (exit 3).

    `options`: the (scenario, score) pairs weighed, best first: a text's similarity to each scenario, or how many of a
    history's items each catalog holds. `askable`: each option could serve the request as it stands (an ambiguous text,
    ids held by several catalogs), so asking the person which one they mean is an answer; when False (a mix of catalogs,
    items or a user no catalog holds) the request itself must change."""

    def __init__(self, message: str, options: Sequence[tuple[str, float]] = (), askable: bool = False):
        super().__init__(message)
        self.options = tuple(options)
        self.askable = askable


class EmptyHistory(LLMRecError):
    exit_code = 3


class DatasetError(LLMRecError):
    """A dataset file is missing or malformed."""

    exit_code = 4


class AssetError(LLMRecError):
    """A model or data asset could not be fetched, verified or converted."""

    exit_code = 5


class AdapterMismatch(LLMRecError):
    """A LoRA adapter was built for another base model, or is not a PEFT folder."""

    exit_code = 6


class LLMUnavailable(LLMRecError):
    """The LLM engine failed or timed out; callers fall back to the retriever's order."""

    exit_code = 7


class ChromaUnavailable(LLMRecError):
    exit_code = 8


class RunConflict(LLMRecError):
    """An eval output folder holds the report of a different run; nothing is overwritten silently."""

    exit_code = 9


class EmptyTestSet(LLMRecError):
    """No user has a test target to evaluate."""

    exit_code = 3


class TrainingConflict(LLMRecError):
    """`--resume` found no checkpoint, or one made with another config, other data or another base model."""

    exit_code = 10


class TrainingInterrupted(LLMRecError):
    """Ctrl-C during training: the checkpoint is saved and the existing adapter is untouched."""

    exit_code = 130


class InputTooLarge(LLMRecError):
    """A user-facing field over its cap (`llmrec.schemas.LIMITS`): a chat message, a history, `k`, an id."""

    exit_code = 2


class StoreError(LLMRecError):
    """A session or feedback database (SQLite) is corrupt, not a database, or locked past its timeout."""

    exit_code = 11
