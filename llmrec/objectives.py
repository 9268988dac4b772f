"""The objective registry: one entry per adapter objective, the one place that maps its name to its ranker, its
trainer and what it needs from serving.

Entries point at their code by dotted path (as vLLM's model registry does), so the ground imports nothing above
it and nothing heavy loads until an objective is used. A new objective (or a transferred or merged adapter kind)
is one entry here plus its two modules, `llmrec/ranking/<name>.py` and `llmrec/adapters/<name>.py`;
`tests/llmrec/test_objectives.py` resolves every entry.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from llmrec.errors import AdapterMismatch

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from llmrec.protocols import AdapterRef, LLMEngine
    from llmrec.schemas import Item
    from llmrec.settings import Settings

LISTWISE, POINTWISE, SEQUENCE, EMBEDDING = "listwise", "pointwise", "sequence", "embedding"
DEFAULT = LISTWISE
"""A scenario without an adapter ranks with the base model's listwise verbalizer; a LoRA folder from before
objectives were recorded is listwise too."""


class TrainRequest(BaseModel):
    """What a user asks of `llmrec adapters train` (any entry point), whatever the objective; None: the objective's default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scenario: str
    objective: str = DEFAULT
    steps: int | None = Field(default=None, ge=0, description="Optimizer steps in all (a resumed run counts the earlier ones).")
    minutes: float | None = Field(default=None, gt=0, description="Wall-clock budget; the run stops there with a checkpoint.")
    resume: bool = False
    batch_size: int | None = Field(default=None, ge=1)
    learning_rate: float | None = Field(default=None, gt=0)
    examples: int = Field(default=2000, ge=1, description="LoRA objectives: training examples drawn from the training split.")
    fit_users: int = Field(default=300, ge=0, description="Validation users the fusion weight is fitted on (0: skip).")
    epochs: int = Field(default=8, ge=1, description="embedding: passes over the training positions (early stop on validation).")
    seeds: int = Field(default=5, ge=1, description="embedding: towers trained from successive seeds and averaged.")
    layer: int | None = Field(default=None, description="embedding: the hidden-state layer pooled into item vectors.")
    encoder_lora_steps: int = Field(default=0, ge=0, description="embedding: stage-2 LoRA steps on the item encoder (0: frozen).")
    encoder_lora_blocks: int = Field(default=2, ge=1, description="embedding: blocks that get the encoder LoRA.")


@dataclass(frozen=True)
class RankerInputs:
    """What every objective's ranker is built from (`Objective.build_ranker()(inputs)`)."""

    settings: Settings
    scenario: Any
    """The `llmrec.scenario.Scenario` being served (its domain words shape the prompts)."""
    catalog: Mapping[str, Item]
    engine: LLMEngine
    base_model: str
    """The engine's resolved model folder or hub id (what an adapter's base is checked against)."""
    adapter: AdapterRef | None
    weight: float
    home: Path
    progress: bool = True

    @property
    def token_budget(self) -> int:
        return self.settings.max_model_len - 16


@dataclass(frozen=True)
class Objective:
    name: str
    summary: str
    ranker: str
    """`module:function` building the ranker: `(RankerInputs) -> ScoringRanker`."""
    trainer: str
    """`module:function` training the scenario's adapter: `(settings, TrainRequest) -> int` (the CLI's exit code)."""
    vllm_lora: bool
    """The adapter is a PEFT LoRA that vLLM serves (False: llmrec runs it in process and never sends it to the engine)."""
    explains: bool
    """The adapter was trained to write, so the explainer may use it (the others were trained to score)."""

    def build_ranker(self) -> Callable[..., Any]:
        return _resolve(self.ranker)

    def train(self) -> Callable[..., Any]:
        return _resolve(self.trainer)


OBJECTIVES: dict[str, Objective] = {}


def register(objective: Objective) -> Objective:
    """Add an objective; a second one under a taken name is refused."""
    if objective.name in OBJECTIVES:
        raise ValueError(f"objective {objective.name!r} is registered already")
    OBJECTIVES[objective.name] = objective
    return objective


def get(name: str) -> Objective:
    """The registered objective `name`; an adapter naming an unknown one is refused (AdapterMismatch, exit 6)."""
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise AdapterMismatch(f"unknown objective {name!r}; llmrec knows {', '.join(sorted(OBJECTIVES))}") from None


def _resolve(ref: str) -> Callable[..., Any]:
    module, _, attribute = ref.partition(":")
    return getattr(importlib.import_module(module), attribute)


for _objective in (
    Objective(LISTWISE, "LoRA on ranking prompts; label log-probabilities of lettered candidates (LlamaRec-style)",
              "llmrec.ranking.listwise:build", "llmrec.adapters.listwise:train", vllm_lora=True, explains=True),
    Objective(POINTWISE, "LoRA on one Yes/No prompt per candidate (TALLRec-style); P(Yes)",
              "llmrec.ranking.pointwise:build", "llmrec.adapters.pointwise:train", vllm_lora=True, explains=False),
    Objective(SEQUENCE, "LoRA causal LM on histories as title lines; each candidate's line likelihood (PMI)",
              "llmrec.ranking.sequence:build", "llmrec.adapters.sequence:train", vllm_lora=True, explains=False),
    Objective(EMBEDDING, "two towers over the LLM's item-text vectors (optionally an encoder LoRA); user·item",
              "llmrec.ranking.embedding:build", "llmrec.adapters.embedding:train", vllm_lora=False, explains=False),
):
    register(_objective)
