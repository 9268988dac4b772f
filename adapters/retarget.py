"""Towers served on another catalog: that catalog's feature standardisation, and one adapter retargeted whole.

An `embedding` adapter standardises item vectors by its own catalog's mean and spread before its two maps
(`adapters.embedding.standardisation`). The LLM's item vectors of two catalogs differ in mean by several of their
standard deviations (ML-100K against Book-Crossing), so towers served on another catalog as they are would shift
every feature by that difference. A tower applied to another catalog therefore keeps its maps and takes that
catalog's own standardisation, as the few-shot curve's zero-shot arm does (`curve.restandardised`):

- `merge.merge_adapters` does it for every input trained on another dataset than the merged scenario's;
- `retarget_adapter` writes one adapter so as a new scenario (`like`'s dataset and domain, the source's towers):
  the single adapter served on the other domain, as measured in `docs/results/merge/`.

The new scenario's fusion weight is not fitted (the retriever's order is served) until `llmrec fit-fusion` fits and
gates one on its own validation users.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from llmrec.errors import AdapterMismatch, RunConflict
from llmrec.manifest import objective_of, read_manifest
from llmrec.objectives import EMBEDDING
from llmrec.scenario import AdapterSpec, Scenario, builtin_names, check_name, load_scenario, user_scenario_path


def same_dataset(a: str, b: str) -> bool:
    """One dataset: the same built-in name, or folders that resolve to one path."""
    return a == b or Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def catalog_standardisation(base_model: str, dataset: str, home: Path, encoder: dict, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(center, scale) of `dataset`'s item vectors under `encoder` (an adapter manifest's `config.encoder`); cached vectors."""
    from llmrec.adapters.embedding import standardisation
    from llmrec.data.datasets import load_dataset
    from llmrec.engines.encoder import ItemEncoderConfig, item_vectors

    items = list(load_dataset(dataset, home).items.values())
    return standardisation(item_vectors(base_model, items, home, ItemEncoderConfig.model_validate(encoder), progress).matrix)


def retarget_adapter(settings, source: str, like: str, into: str, force: bool = False, progress: bool = True) -> tuple[Scenario, Path]:
    """A new user scenario `into`: scenario `like` (dataset, domain, description) serving `source`'s embedding adapter,
    its maps as trained and `like`'s catalog standardisation. Written under `<home>/.partial/` and renamed into place whole.

    Refused: a LoRA adapter (nothing to retarget: a scenario file may name it as it is), an encoder LoRA, no adapter
    (AdapterMismatch, exit 6); `into` taken without `force`, or one of the two (RunConflict, exit 9)."""
    from safetensors.numpy import save_file

    from llmrec.adapters.loop import publish_scenario
    from llmrec.assets import folder_hash
    from llmrec.engines.models import resolve_model
    from llmrec.ranking.embedding import WEIGHTS_FILE, load_two_tower

    home = settings.resolved_home()
    target = user_scenario_path(home, check_name(into)).parent
    if into in (source, like):
        raise RunConflict(f"--into {into!r} is {source!r} or {like!r}; retarget into a new name")
    if (target.exists() or into in builtin_names()) and not force:
        raise RunConflict(f"scenario {into!r} exists already; choose another name, or force to replace it")
    origin, template = load_scenario(source, home), load_scenario(like, home)  # unknown: exit 3
    adapter = origin.adapter
    if adapter is None or not Path(adapter.path).is_dir():
        raise AdapterMismatch(f"scenario {source!r} has no adapter folder to retarget")
    if objective_of(adapter) != EMBEDDING:
        raise AdapterMismatch(f"scenario {source!r}'s adapter is {objective_of(adapter)}, not {EMBEDDING}: a LoRA adapter has no "
                              "catalog statistics, so a scenario file can name it as it is")
    manifest = read_manifest(adapter.path)
    if (manifest.get("encoder_lora") or {}).get("kept"):
        raise AdapterMismatch(f"scenario {source!r}'s adapter carries an encoder LoRA; only frozen-encoder towers are retargeted")
    base = resolve_model(settings.model, home)
    tower, _ = load_two_tower(adapter, base)  # another base model: exit 6
    center, scale = catalog_standardisation(base, template.dataset, home, manifest["config"]["encoder"], progress)
    staging = home / ".partial"
    staging.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{into}.", dir=staging))
    try:
        (tmp / "adapter").mkdir()
        save_file({k: np.ascontiguousarray(v) for k, v in {**tower.tensors, "center": center, "scale": scale}.items()},
                  str(tmp / "adapter" / WEIGHTS_FILE))
        kept = {k: manifest[k] for k in ("objective", "base_model", "item_text", "config") if k in manifest}
        record = {**kept, "scenario": into, "dataset": template.dataset,
                  "retargeted_from": {"scenario": source, "adapter": adapter.name, "dataset": origin.dataset,
                                      "adapter_sha256": folder_hash(Path(adapter.path))},
                  "standardisation": f"{template.dataset}'s item vectors (mean, std); the maps as trained on {origin.dataset}"}
        (tmp / "adapter" / "manifest.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
        scenario = Scenario(name=into, dataset=template.dataset, domain=template.domain,
                            description=f"{source}'s {EMBEDDING} adapter on {like}'s catalog ({template.dataset})",
                            adapter=AdapterSpec(name=f"{into}-retargeted", path="adapter"))
        publish_scenario(tmp, scenario, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already when renamed into place
    return load_scenario(into, home), target / "scenario.json"


__all__ = ["catalog_standardisation", "retarget_adapter", "same_dataset"]
