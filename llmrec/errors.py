"""Typed errors. The CLI maps each to a one-line message and an exit code; nothing else should escape."""


class LLMRecError(Exception):
    """Base of every error llmrec reports to a user."""

    exit_code = 1


class UnknownUser(LLMRecError):
    exit_code = 3


class UnknownItem(LLMRecError):
    exit_code = 3


class UnknownScenario(LLMRecError):
    exit_code = 3


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
