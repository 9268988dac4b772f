"""Merging adapters of one base model and one objective into a new scenario (`llmrec adapters merge`).

Merging is arithmetic, as in PEFT's `utils/merge_utils.py`: every method combines *task tensors* (what each adapter
adds to the base) with weights. The methods, on the full deltas, never on LoRA's A and B factors one by one:

- `linear` (task arithmetic): sum_i w_i * delta_i, exactly;
- `ties`: trim each delta to its largest `density` fraction by magnitude, elect each entry's sign (by total mass),
  and average the weighted entries that agree with it (disjoint mean);
- `dare_ties` / `dare_linear`: drop entries at random (keep `density`, rescaled by 1/density; seeded), then TIES's sign
  election and disjoint mean, or the plain weighted sum.

LoRA adapters (listwise, pointwise, sequence) are merged by PEFT's own `add_weighted_adapter` on one loaded base
model. Its `linear`/`ties`/`dare_*` combinations mix the A factors and the B factors separately; for adapters trained
from different random starts that is not the weighted sum of their deltas (sum_i sqrt(w_i) B_i times sum_j sqrt(w_j)
A_j has cross terms B_i A_j), so llmrec asks PEFT for the combinations that work on the deltas: `cat` for `linear`
(the exact sum, rank = the inputs' ranks added) or, past the engines' `MAX_LORA_RANK`, `svd` (the exact sum truncated to
that rank); `ties_svd`, `dare_ties_svd`, `dare_linear_svd` for the others (the merged delta truncated to the rank
the inputs add up to, at most `MAX_LORA_RANK`). Ranks may therefore differ between inputs.

`embedding` adapters (two towers, `ranking/embedding.py`) get the same functions over their tensors. Their task
tensors are the weights themselves, the deltas *from zero*: towers are trained from random starts, so there is no
shared start to take deltas from (and deltas from the inputs' mean cancel pairwise for two inputs, which leaves TIES's
sign election nothing to elect). The feature standardisation (`center`, `scale`) is the weights' normalised mean under
every method, after each input trained on another dataset than the merged scenario's has taken that dataset's own
(`adapters.retarget`): a books+movies merge for books standardises books' item vectors as the books towers did. Caution: two towers trained apart are aligned only up to a rotation of their projection space, so their
average may serve neither domain; `adapters.embedding.join` (the mean of the towers' scores) is the side-by-side form.

Every merge is refused (AdapterMismatch, exit 6) for inputs of other base models or objectives, a missing adapter, a
LoRA rank above `MAX_LORA_RANK`, LoRA inputs on different layers, towers of different shapes or encoders, or an
encoder LoRA. The new scenario's folder is written under a unique temporary name and renamed into place whole.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from llmrec import objectives
from llmrec.errors import AdapterMismatch, DatasetError, RunConflict
from llmrec.manifest import MAX_LORA_RANK, adapter_json, adapter_rank, check_adapter, model_key, objective_of, read_manifest
from llmrec.scenario import AdapterSpec, Scenario, builtin_names, check_name, load_scenario, user_scenario_path

METHODS = ("linear", "ties", "dare_ties", "dare_linear")
_SIGN_METHODS = {"ties", "dare_ties"}


class MergeInput(BaseModel):
    model_config = ConfigDict(frozen=True)

    scenario: str
    weight: float = Field(gt=0, description="Positive: task negation (a negative weight) is not supported.")


class MergeRequest(BaseModel):
    """What `llmrec adapters merge` is asked (any entry point)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    into: str = Field(description="The new scenario's name.")
    inputs: tuple[MergeInput, ...] = Field(min_length=2)
    method: str = Field(default="linear", pattern="^(" + "|".join(METHODS) + ")$")
    density: float = Field(default=0.5, gt=0, le=1, description="ties/dare: the fraction of each delta's entries kept.")
    dataset: str | None = Field(default=None, description="The new scenario's dataset; default: the first input's.")
    seed: int = Field(default=0, description="dare: the random drop's seed.")
    force: bool = Field(default=False, description="Replace an existing scenario of that name.")


def parse_sources(text: str) -> tuple[MergeInput, ...]:
    """`a:0.5,b:0.5` → inputs; ValueError (argparse's type error) for a malformed list or a scenario named twice."""
    inputs = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name, sep, weight = part.rpartition(":")
        try:
            inputs.append(MergeInput(scenario=name if sep else part, weight=float(weight) if sep else 1.0))
        except ValueError:
            raise ValueError(f"{part!r}: give SCENARIO:WEIGHT with a positive weight, e.g. movies:0.5") from None
    names = [i.scenario for i in inputs]
    if len(inputs) < 2 or len(set(names)) != len(names):
        raise ValueError(f"{text!r}: give two or more different scenarios, e.g. movies:0.5,books:0.5")
    return tuple(inputs)


# --- the arithmetic: pure functions over tensors -------------------------------------------------------------------


def combine(tensors: Sequence, weights: Sequence[float], method: str, density: float = 0.5):
    """One merged tensor from same-shaped task tensors (torch), by PEFT's merge functions; dare draws from torch's RNG."""
    import torch
    from peft.utils import merge_utils

    w = torch.tensor(list(weights), dtype=tensors[0].dtype)
    if method == "linear":
        return merge_utils.task_arithmetic(list(tensors), w)
    if method in _SIGN_METHODS:
        return getattr(merge_utils, method)(list(tensors), w, density, "total")
    return merge_utils.dare_linear(list(tensors), w, density)


def merge_towers(towers: Sequence[dict[str, np.ndarray]], weights: Sequence[float], method: str, density: float = 0.5,
                 seed: int = 0) -> dict[str, np.ndarray]:
    """The tower tensors merged by `method` (deltas from zero); `center` and `scale` by the weights' normalised mean."""
    import torch

    from llmrec.ranking.embedding import TENSORS

    torch.manual_seed(seed)
    share = np.asarray(weights, dtype=np.float64) / sum(weights)
    out = {}
    for name in TENSORS:
        stack = [np.asarray(t[name], dtype=np.float32) for t in towers]
        if name in ("center", "scale"):
            out[name] = np.tensordot(share, np.stack(stack), axes=1).astype(np.float32)
        else:
            out[name] = combine([torch.from_numpy(s) for s in stack], weights, method, density).numpy().astype(np.float32)
    return out


def peft_combination(method: str, ranks: Sequence[int]) -> tuple[str, int]:
    """PEFT's `combination_type` for `method` on the full deltas, and the merged rank (at most `MAX_LORA_RANK`)."""
    total = sum(ranks)
    if method == "linear":
        return ("cat", total) if total <= MAX_LORA_RANK else ("svd", MAX_LORA_RANK)
    return f"{method}_svd", min(total, MAX_LORA_RANK)


# --- the checks ----------------------------------------------------------------------------------------------------


def _inputs(request: MergeRequest, home: Path) -> list[tuple[MergeInput, Scenario, AdapterSpec]]:
    found = []
    for item in request.inputs:
        scenario = load_scenario(item.scenario, home)  # an unknown scenario: exit 3
        adapter = scenario.adapter
        if adapter is None:
            raise AdapterMismatch(f"scenario {item.scenario!r} has no adapter to merge; train one with "
                                  f"`llmrec adapters train --scenario {item.scenario}`")
        if not Path(adapter.path).is_dir():
            raise AdapterMismatch(f"scenario {item.scenario!r}: its adapter folder {adapter.path} is missing")
        found.append((item, scenario, adapter))
    return found


def _one_objective(adapters: Sequence[AdapterSpec]) -> str:
    named = {a.name: objective_of(a) for a in adapters}
    if len(set(named.values())) > 1:
        raise AdapterMismatch(f"adapters of different objectives ({', '.join(f'{n}: {o}' for n, o in named.items())}) do not merge; "
                              f"merge adapters of one objective ({', '.join(sorted(objectives.OBJECTIVES))})")
    objective = next(iter(named.values()))
    objectives.get(objective)  # an unknown objective: exit 6
    return objective


def _lora_bases(adapters: Sequence[AdapterSpec]) -> None:
    """The inputs name one base model (the same folder or hub id, or recorded weights with the same sha256)."""
    named = {a.name: str((adapter_json(a, "adapter_config.json") or {}).get("base_model_name_or_path") or "") for a in adapters}
    shas = {read_manifest(a.path).get("base_model_sha256") for a in adapters}
    if len({model_key(b) for b in named.values()}) > 1 and (None in shas or len(shas) > 1):
        raise AdapterMismatch("adapters of different base models do not merge: "
                              + ", ".join(f"{n} on {b or 'an unnamed base'}" for n, b in named.items()))


def _tower_bases(manifests: dict[str, dict]) -> None:
    bases = {n: m.get("base_model") or {} for n, m in manifests.items()}
    paths, shas = {b.get("path") for b in bases.values()}, {b.get("sha256") for b in bases.values()}
    if len(paths) > 1 and (None in shas or len(shas) > 1):
        raise AdapterMismatch("adapters of different base models do not merge: "
                              + ", ".join(f"{n} on {b.get('path')!r}" for n, b in bases.items()))


def _same(manifests: dict[str, dict], what: str, get) -> None:
    values = {n: get(m) for n, m in manifests.items()}
    if len({json.dumps(v, sort_keys=True) for v in values.values()}) > 1:
        raise AdapterMismatch(f"adapters with different {what} do not merge: "
                              + "; ".join(f"{n}: {json.dumps(v, sort_keys=True)}" for n, v in values.items()))


# --- the merges ----------------------------------------------------------------------------------------------------


def merge_lora(base_model: str, adapters: Sequence[AdapterSpec], weights: Sequence[float], method: str, out: Path,
               density: float = 0.5, seed: int = 0) -> dict:
    """Load `base_model` once and each adapter with PEFT, `add_weighted_adapter`, and save the merged PEFT folder
    (`adapter_config.json` naming `base_model`) at `out`, which must not exist. Returns what the manifest records."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    for adapter in adapters:
        if adapter_json(adapter, "adapter_config.json") is None:
            raise AdapterMismatch(f"adapter {adapter.name!r}: {Path(adapter.path) / 'adapter_config.json'} is missing: not a PEFT folder")
    _lora_bases(adapters)
    configs = []
    for adapter in adapters:
        check_adapter(adapter, base_model, MAX_LORA_RANK)  # a PEFT LoRA on this base, within the engines' rank
        configs.append(adapter_json(adapter, "adapter_config.json"))
    layers = {a.name: c.get("layers_to_transform") for a, c in zip(adapters, configs)}
    if len({json.dumps(v) for v in layers.values()}) > 1:
        raise AdapterMismatch(f"adapters on different layers do not merge into one PEFT config: {layers}")
    ranks = [adapter_rank(c) for c in configs]
    combination, rank = peft_combination(method, ranks)
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
    names = [f"input{i}" for i in range(len(adapters))]
    peft = PeftModel.from_pretrained(model, adapters[0].path, adapter_name=names[0])
    for name, adapter in zip(names[1:], adapters[1:]):
        peft.load_adapter(adapter.path, adapter_name=name)
    torch.manual_seed(seed)
    peft.add_weighted_adapter(names, list(weights), "merged", combination_type=combination,
                              svd_rank=rank if combination.endswith("svd") else None,
                              density=density if method != "linear" else None)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        peft.save_pretrained(tmp, selected_adapters=["merged"])
        Path(tmp, "merged").rename(out)  # PEFT saves a named adapter in a subfolder
    return {"combination_type": combination, "rank": rank, "input_ranks": ranks}


def merge_embedding(base_model: str, adapters: Sequence[AdapterSpec], weights: Sequence[float], method: str, out: Path,
                    density: float = 0.5, seed: int = 0, catalog: tuple[np.ndarray, np.ndarray] | None = None,
                    foreign: Sequence[bool] = ()) -> dict:
    """Merge `embedding` adapters' towers into `out` (which must not exist); returns what the manifest records.

    `foreign[i]`: input i was trained on another catalog than the merged scenario's; its standardisation is replaced
    by `catalog` (the merged scenario's (center, scale), `retarget.catalog_standardisation`) before the merge."""
    from safetensors.numpy import save_file

    from llmrec.ranking.embedding import WEIGHTS_FILE, load_two_tower

    manifests = {a.name: read_manifest(a.path) for a in adapters}
    _tower_bases(manifests)
    kept = [n for n, m in manifests.items() if (m.get("encoder_lora") or {}).get("kept")]
    if kept:
        raise AdapterMismatch(f"adapter(s) {', '.join(kept)} carry an encoder LoRA; merging supports frozen-encoder towers only")
    _same(manifests, "tower shapes", lambda m: (m.get("config") or {}).get("tower"))
    _same(manifests, "item encoders", lambda m: [(m.get("config") or {}).get("encoder"), m.get("item_text")])
    towers = [load_two_tower(a, base_model)[0].tensors for a in adapters]  # base model and tensors checked (exit 6)
    shapes = {a.name: {k: list(v.shape) for k, v in t.items()} for a, t in zip(adapters, towers)}
    _same({n: {"s": s} for n, s in shapes.items()}, "tensor shapes", lambda m: m["s"])
    if any(foreign):
        towers = [{**t, "center": catalog[0], "scale": catalog[1]} if away else t for t, away in zip(towers, foreign)]
    tensors = merge_towers(towers, weights, method, density, seed)
    out.mkdir()
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(out / WEIGHTS_FILE))
    first = manifests[adapters[0].name]
    return {"base_model": first["base_model"], "item_text": first.get("item_text"),
            "config": {"tower": first["config"]["tower"], "encoder": first["config"]["encoder"]},
            "deltas": "from zero (the tower weights themselves); center and scale: the weights' normalised mean",
            "restandardised": [a.name for a, away in zip(adapters, foreign) if away]}


def _catalog(base: str, dataset: str, home: Path, adapters: Sequence[AdapterSpec], trained_on: Sequence[str]) -> dict:
    """merge_embedding's `catalog` and `foreign`: the merged scenario's standardisation, for inputs of other datasets."""
    from llmrec.adapters.retarget import catalog_standardisation, same_dataset

    foreign = [not same_dataset(d, dataset) for d in trained_on]
    if not any(foreign):
        return {}
    encoder = (read_manifest(adapters[0].path).get("config") or {}).get("encoder") or {}
    return {"catalog": catalog_standardisation(base, dataset, home, encoder), "foreign": foreign}


def _sha256(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def merge_adapters(settings, request: MergeRequest) -> tuple[Scenario, Path]:
    """Merge the inputs' adapters into a new user scenario `request.into`; returns it and its file.

    The scenario's folder (scenario.json and the merged adapter) is built under `<home>/.partial/` and renamed into
    `<home>/scenarios/<into>` whole; a failure leaves nothing behind and the old scenario (with `force`) untouched."""
    from llmrec.adapters.loop import publish_scenario
    from llmrec.assets import folder_hash
    from llmrec.data.datasets import BUILTINS
    from llmrec.engines.models import resolve_model

    home = settings.resolved_home()
    target = user_scenario_path(home, check_name(request.into)).parent
    if request.into in {i.scenario for i in request.inputs}:
        raise RunConflict(f"--into {request.into!r} is one of the inputs; merge into a new name")
    if (target.exists() or request.into in builtin_names()) and not request.force:
        raise RunConflict(f"scenario {request.into!r} exists already; choose another name, or --force to replace it")
    inputs = _inputs(request, home)
    adapters = [a for _, _, a in inputs]
    objective = _one_objective(adapters)
    dataset = request.dataset or inputs[0][1].dataset
    if dataset not in BUILTINS and not Path(dataset).expanduser().is_dir():
        raise DatasetError(f"unknown dataset {dataset!r}: built-ins are {', '.join(sorted(BUILTINS))}, or give a folder path")
    base = resolve_model(settings.model, home)
    weights = [i.weight for i, _, _ in inputs]
    staging = home / ".partial"
    staging.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{request.into}.", dir=staging))
    try:
        folder = tmp / "adapter"
        if objective == objectives.EMBEDDING:
            info = merge_embedding(base, adapters, weights, request.method, folder, request.density, request.seed,
                                   **_catalog(base, dataset, home, adapters, [s.dataset for _, s, _ in inputs]))
        else:
            info = merge_lora(base, adapters, weights, request.method, folder, request.density, request.seed)
        manifest = {"objective": objective, "scenario": request.into, "dataset": dataset, **info}
        if objective != objectives.EMBEDDING:
            manifest |= {"base_model": str(adapter_json(adapters[0], "adapter_config.json")["base_model_name_or_path"]),
                         "base_model_sha256": read_manifest(adapters[0].path).get("base_model_sha256")}
        manifest["merged_from"] = [{"scenario": i.scenario, "adapter": a.name, "weight": i.weight, "dataset": s.dataset,
                                    "manifest_sha256": _sha256(Path(a.path) / "manifest.json"), "adapter_sha256": folder_hash(Path(a.path))}
                                   for i, s, a in inputs]
        manifest |= {"method": request.method, "density": None if request.method == "linear" else request.density,
                     "seed": request.seed if request.method.startswith("dare") else None, "complete": True}
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
        domain = next((s.domain for _, s, _ in inputs if s.dataset == dataset), inputs[0][1].domain)
        parts = ", ".join(f"{i.scenario} ({i.weight:g})" for i, _, _ in inputs)
        scenario = Scenario(name=request.into, dataset=dataset, domain=domain, description=f"{request.method} merge of {parts}",
                            adapter=AdapterSpec(name=f"{request.into}-merged", path="adapter"))
        publish_scenario(tmp, scenario, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already when renamed into place
    return load_scenario(request.into, home), target / "scenario.json"


def describe(scenario: Scenario) -> str:
    """One line on the merged scenario for the CLI."""
    manifest = read_manifest(scenario.adapter.path) if scenario.adapter else {}
    how = manifest.get("combination_type")
    rank = f", rank {manifest['rank']} (PEFT {how})" if how else ""
    return (f"scenario {scenario.name}: {scenario.description} on {scenario.dataset}{rank}; adapter in {scenario.adapter.path}. "
            f"Its fusion weight is not fitted (the retriever's order is served): run `llmrec fit-fusion --scenario {scenario.name}`"
            if scenario.adapter else "")


__all__ = ["METHODS", "MergeInput", "MergeRequest", "combine", "describe", "merge_adapters", "merge_embedding", "merge_lora",
           "merge_towers", "parse_sources", "peft_combination"]
