"""A scenario: a dataset, a domain noun for the prompts, an optional LoRA adapter, and the fusion weight.

Built-in scenarios ship as JSON in `adapters/scenarios/`; a user's own (or a re-fitted copy of a
built-in) live in `<home>/scenarios/<name>/scenario.json`, which wins. An adapter is a PEFT
`save_pretrained` folder; its `adapter_config.json` must name the engine's base model.
"""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from llmrec.errors import UnknownScenario


class FusionFit(BaseModel):
    """How the fusion weight was chosen, so a reader can judge it."""

    split: str = Field(description="e.g. 'ml-100k leave-one-out, validation targets'")
    users: int
    metric: str = "NDCG@10"
    grid: dict[str, float] = Field(description="metric value at each tried weight ('inf' = retriever order)")
    model: str
    adapter: str | None = None
    permutations: int = 1


class FusionSpec(BaseModel):
    weight: float | None = Field(default=None, description="w in logprob - w*log(1+rank); None: not fitted, keep the retriever's order.")
    fitted_on: FusionFit | None = None

    def effective_weight(self) -> float:
        return math.inf if self.weight is None else self.weight


class AdapterSpec(BaseModel):
    name: str
    path: str = Field(description="PEFT adapter folder; relative paths are relative to the scenario file.")


class Scenario(BaseModel):
    name: str
    dataset: str
    domain: str = "item"
    description: str = ""
    adapter: AdapterSpec | None = None
    fusion: FusionSpec = FusionSpec()


def user_scenario_path(home: Path, name: str) -> Path:
    return home / "scenarios" / name / "scenario.json"


def builtin_names() -> list[str]:
    folder = resources.files("llmrec.adapters").joinpath("scenarios")
    return sorted(p.name.removesuffix(".json") for p in folder.iterdir() if p.name.endswith(".json"))


def load_scenario(name: str, home: Path) -> Scenario:
    path = user_scenario_path(home, name)
    try:
        if path.exists():
            scenario = Scenario.model_validate_json(path.read_text())
            if scenario.adapter and not Path(scenario.adapter.path).is_absolute():
                scenario.adapter.path = str((path.parent / scenario.adapter.path).resolve())
            return scenario
        if name in builtin_names():
            text = resources.files("llmrec.adapters").joinpath("scenarios", f"{name}.json").read_text()
            return Scenario.model_validate_json(text)
    except (ValidationError, ValueError) as exc:
        raise UnknownScenario(f"scenario {name!r} has a malformed file: {exc}") from None
    known = sorted(set(builtin_names()) | {p.parent.name for p in (home / "scenarios").glob("*/scenario.json")})
    raise UnknownScenario(f"unknown scenario {name!r}; known: {', '.join(known) or 'none'}")


def save_scenario(scenario: Scenario, home: Path) -> Path:
    """Write atomically, so an interrupted save never loses the previous file."""
    path = user_scenario_path(home, scenario.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(scenario.model_dump(mode="json"), indent=2, default=str) + "\n")
    tmp.replace(path)
    return path
