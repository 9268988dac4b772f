"""A scenario: a dataset, a domain noun for the prompts, an optional LoRA adapter, and the fusion weight.

Built-in scenarios ship as JSON in `llmrec/scenarios/`; a user's own (or a re-fitted copy of a
built-in) live in `<home>/scenarios/<name>/scenario.json`, which wins. A scenario's name is also a
folder name, so it must match NAME_PATTERN, and a file's `name` must be its folder's (or, built in,
its file's) name: a copied folder is never saved back over the original. An adapter is a PEFT
`save_pretrained` folder; its `adapter_config.json` must name the engine's base model.

A stored fusion weight is applied only to the model, adapter and permutation count it was fitted
for (`FusionSpec.weight_for`); any other run keeps the retriever's order and says which fit is missing.
"""

from __future__ import annotations

import json
import math
import re
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llmrec.assets import atomic_write_text, folder_hash
from llmrec.errors import UnknownScenario
from llmrec.protocols import AdapterRef

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
"""Lowercase letters, digits, '-' and '_', at most 64, not starting with '-' or '_': safe as a folder name."""


class FusionFit(BaseModel):
    """How the fusion weight was chosen, so a reader can judge it."""

    split: str = Field(description="e.g. 'ml-100k leave-one-out, validation targets'")
    users: int
    metric: str = "NDCG@10"
    grid: dict[str, float] = Field(description="metric value at each tried weight ('inf' = retriever order)")
    model: str = Field(description="The engine's model name: a local folder's name, or a hub id in full.")
    adapter: str | None = None
    adapter_sha256: str | None = Field(default=None, description="The adapter folder's bytes (`folder_hash`) when it was fitted.")
    permutations: int = 1
    best_weight: float | None = Field(default=None, description="The grid's best weight on these users (None: the retriever's order).")
    p_value: float | None = Field(default=None, description=(
        "One-sided paired t-test of the best weight's gain over the retriever's order, Bonferroni-corrected for the grid's "
        "weights; the weight ships only below `alpha`."))
    alpha: float | None = None
    selection_users: int | None = Field(default=None, description="Of `users`: those the grid's best weight was chosen on.")
    gate_users: int | None = Field(default=None, description="Of `users`: the others, on which the chosen weight was tested.")
    user_split: str | None = Field(default=None, description="The rule that split the validation users into the two halves.")
    gate_grid: dict[str, float] | None = Field(default=None, description="The metric on the gate half at the best weight and at 'inf'.")


class ShortHistoryFusion(BaseModel):
    """A weight of its own for histories of at most `max_items` items, fitted (and gated) on validation targets with
    each user's first `max_items` training items as history. It applies wherever the main weight does."""

    max_items: int = Field(ge=1)
    weight: float | None = Field(default=None, description="None: the retriever's order for short histories.")
    fitted_on: FusionFit


class FusionSpec(BaseModel):
    weight: float | None = Field(default=None, description="w in logprob - w*log(1+rank); None: not fitted, keep the retriever's order.")
    fitted_on: FusionFit | None = None
    short_history: ShortHistoryFusion | None = None

    def effective_weight(self) -> float:
        return math.inf if self.weight is None else self.weight

    def weight_for(self, model: str, adapter: AdapterRef | None, permutations: int, scenario: str) -> tuple[float, str | None]:
        """The weight to apply to a run of `model` (its engine's name) with `adapter` and `permutations`, and a
        note for the response when it is not the stored one.

        The stored weight applies only when its fit matches all three (the adapter by name and, where
        recorded, by its folder's bytes); otherwise w = inf, the retriever's order. A weight with no fit
        record was set by hand and applies as given.
        """
        fit = self.fitted_on
        if fit is None:
            if self.weight is None:
                return math.inf, ("the scenario's fusion weight is not fitted, so the retriever's order is kept; "
                                  f"run `llmrec fit-fusion --scenario {scenario}` to let the LLM's scores count")
            return self.weight, None
        adapter_name = adapter.name if adapter else None
        missing = [f"model {model}"] if fit.model != model else []
        if fit.adapter != adapter_name or (adapter and fit.adapter_sha256 and fit.adapter_sha256 != folder_hash(Path(adapter.path))):
            missing.append(f"adapter {adapter_name or 'none'}" + (" (other files)" if fit.adapter == adapter_name else ""))
        if fit.permutations != permutations:
            missing.append(f"permutations {permutations}")
        if not missing:
            return self.effective_weight(), None
        return math.inf, (f"the fusion weight was fitted for model {fit.model}, adapter {fit.adapter or 'none'}, permutations "
                          f"{fit.permutations}; this run uses {', '.join(missing)}, so the retriever's order is kept; run "
                          f"`llmrec fit-fusion --scenario {scenario}` with this model, adapter and LLMREC_PERMUTATIONS to fit one")


class AdapterSpec(BaseModel):
    name: str
    path: str = Field(description="PEFT adapter folder; relative paths are relative to the scenario file.")


class Scenario(BaseModel):
    model_config = ConfigDict(validate_assignment=True)

    name: str = Field(pattern=NAME_PATTERN, description="Also its folder's name under <home>/scenarios.")
    dataset: str
    domain: str = "item"
    description: str = ""
    adapter: AdapterSpec | None = None
    fusion: FusionSpec = FusionSpec()


def check_name(name: str) -> str:
    """A scenario name that is safe as a folder name, or UnknownScenario (exit 3)."""
    if not isinstance(name, str) or not re.fullmatch(NAME_PATTERN, name):
        raise UnknownScenario(f"bad scenario name {name!r}: use lowercase letters, digits, '-' and '_' "
                              "(at most 64, starting with a letter or digit)")
    return name


def user_scenario_path(home: Path, name: str) -> Path:
    return home / "scenarios" / check_name(name) / "scenario.json"


def builtin_names() -> list[str]:
    folder = resources.files("llmrec").joinpath("scenarios")
    return sorted(p.name.removesuffix(".json") for p in folder.iterdir() if p.name.endswith(".json"))


def load_scenario(name: str, home: Path) -> Scenario:
    path = user_scenario_path(home, name)
    try:
        if path.exists():
            scenario = _named(Scenario.model_validate_json(path.read_text()), name, path)
            if scenario.adapter and not Path(scenario.adapter.path).is_absolute():
                scenario.adapter.path = str((path.parent / scenario.adapter.path).resolve())
            return scenario
        if name in builtin_names():
            builtin = resources.files("llmrec").joinpath("scenarios", f"{name}.json")
            return _named(Scenario.model_validate_json(builtin.read_text()), name, builtin)
    except (ValidationError, ValueError) as exc:
        raise UnknownScenario(f"scenario {name!r} has a malformed file: {exc}") from None
    known = sorted(set(builtin_names()) | {p.parent.name for p in (home / "scenarios").glob("*/scenario.json")})
    raise UnknownScenario(f"unknown scenario {name!r}; known: {', '.join(known) or 'none'}")


def _named(scenario: Scenario, name: str, path) -> Scenario:
    if scenario.name != name:
        raise UnknownScenario(f"{path} names scenario {scenario.name!r}, but it is scenario {name!r} (its folder's name); "
                              f"set its \"name\" to {name!r}")
    return scenario


def save_scenario(scenario: Scenario, home: Path) -> Path:
    """Write atomically to the scenario's own folder, so an interrupted save never loses the previous file."""
    path = user_scenario_path(home, scenario.name)
    atomic_write_text(path, json.dumps(scenario.model_dump(mode="json"), indent=2, default=str) + "\n")
    return path


def scenario_names(home: Path) -> list[str]:
    """Every scenario: the built-in ones and the user's under `<home>/scenarios`, sorted."""
    return sorted(set(builtin_names()) | {p.parent.name for p in (home / "scenarios").glob("*/scenario.json")})


def served_adapters(home: Path, only: str | None = None) -> tuple[dict[str, str], list[str]]:
    """The LoRA adapters a vLLM server serves for every scenario (or for `only` that one): {adapter name: folder},
    the name being what a request's `model` field picks; and a note for each adapter left out (an `embedding`
    adapter is a projection tower that llmrec runs itself, never a vLLM LoRA).

    Scenarios that share one adapter (same name, same folder or the same bytes) serve it once; two adapters of
    one name from different files are refused (AdapterMismatch, exit 6), as vLLM serves one adapter per name.
    """
    from llmrec import objectives
    from llmrec.errors import AdapterMismatch
    from llmrec.manifest import objective_of

    served: dict[str, tuple[str, str]] = {}  # adapter name → (folder, first scenario naming it)
    notes: list[str] = []
    for name in [check_name(only)] if only is not None else scenario_names(home):
        adapter = load_scenario(name, home).adapter
        if adapter is None:
            continue
        if not objectives.get(objective_of(adapter)).vllm_lora:
            notes.append(f"scenario {name}: adapter {adapter.name!r} is an embedding adapter (a projection tower llmrec runs "
                         "in process), so the vLLM server does not serve it")
            continue
        if adapter.name not in served:
            served[adapter.name] = (adapter.path, name)
            continue
        folder, owner = served[adapter.name]
        same = Path(folder).resolve() == Path(adapter.path).resolve() or folder_hash(Path(folder)) == folder_hash(Path(adapter.path))
        if not same:
            raise AdapterMismatch(f"scenarios {owner!r} and {name!r} both name adapter {adapter.name!r}, from different files "
                                  f"({folder} and {adapter.path}); a vLLM server serves one adapter per name: rename one "
                                  "(its scenario's adapter.name) or serve one scenario with --scenario")
    return {adapter: folder for adapter, (folder, _) in served.items()}, notes


def stale_data_note(scenario: Scenario, split_fingerprint: str) -> str | None:
    """A warning when the scenario's adapter was trained on other data than the scenario's dataset holds now.

    Every adapter manifest records `split_fingerprint` (the leave-one-out split of the data it learned from);
    a manifest without one (older adapters) is not judged."""
    if scenario.adapter is None:
        return None
    try:
        recorded = json.loads((Path(scenario.adapter.path) / "manifest.json").read_text()).get("split_fingerprint")
    except (OSError, ValueError):
        return None
    if not recorded or recorded == split_fingerprint:
        return None
    return (f"adapter {scenario.adapter.name!r} was trained on other data than {scenario.dataset!r} holds now (split fingerprint "
            f"{recorded[:12]}, now {split_fingerprint[:12]}); its scores and fusion weight may not fit: retrain it with "
            f"`llmrec adapters train --scenario {scenario.name}`")
