"""The adapter contract, read by serving and training alike: what a scenario's adapter folder must hold.

A LoRA adapter is a PEFT `save_pretrained` folder whose `adapter_config.json` names its base model; an llmrec
adapter also has a `manifest.json` beside it (objective, base model identity and weights' sha256, data
fingerprint, training config, validation scores). Nothing here loads a model: only JSON and file hashes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

from llmrec.assets import folder_hash
from llmrec.errors import AdapterMismatch
from llmrec.protocols import AdapterRef

MAX_LORA_RANK = 16
"""vLLM's `max_lora_rank` for llmrec's engines (in-process and `llmrec serve-llm`); higher-rank adapters are refused."""


def model_key(model: str) -> str:
    """A local folder by its resolved absolute path; anything else (a hub id) exactly as written."""
    path = Path(model).expanduser()
    return str(path.resolve()) if model and path.exists() else model


def display_name(model: str) -> str:
    """A local folder by its name, a hub id in full (`someone-else/SmolLM2-135M-Instruct` is not our SmolLM2)."""
    path = Path(model).expanduser()
    return path.resolve().name if model and path.exists() else model


@lru_cache(maxsize=8)
def base_model_sha256(model: str) -> str | None:
    """sha256 over a local model folder's weight files (`*.safetensors`); None for a hub id or a folder without them."""
    path = Path(model).expanduser()
    if not path.is_dir() or not any(path.glob("*.safetensors")):
        return None
    return folder_hash(path.resolve(), "*.safetensors")


def adapter_json(adapter: AdapterRef, name: str) -> dict | None:
    path = Path(adapter.path) / name
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise AdapterMismatch(f"adapter {adapter.name!r}: {path} is not readable JSON ({exc})") from None
    if not isinstance(value, dict):
        raise AdapterMismatch(f"adapter {adapter.name!r}: {path} is not a JSON object")
    return value


def adapter_rank(config: dict) -> int:
    """The largest LoRA rank in a PEFT `adapter_config.json`: `r`, or a larger one from `rank_pattern`."""
    ranks = [config.get("r"), *(config.get("rank_pattern") or {}).values()]
    if not ranks[0] or not all(isinstance(r, int) and not isinstance(r, bool) and r > 0 for r in ranks):
        raise AdapterMismatch(f"adapter_config.json has no valid LoRA rank `r` ({config.get('r')!r})")
    return max(ranks)


def check_adapter(adapter: AdapterRef, base_model: str, max_rank: int | None = MAX_LORA_RANK) -> None:
    """Refuse (AdapterMismatch, exit 6) a folder that is not a PEFT LoRA, whose rank exceeds `max_rank`,
    or that was trained on another base model than `base_model` (the engine's resolved folder or hub id).

    Base models are compared by full identity, never by basename: a local folder by its resolved
    absolute path, a hub id as written, so `someone-else/SmolLM2-135M-Instruct` is neither
    `HuggingFaceTB/SmolLM2-135M-Instruct` nor the converted folder `<home>/models/SmolLM2-135M-Instruct`.
    The adapter's side is `base_model_name_or_path` in its adapter_config.json.

    A moved cache home (or a copied model folder) changes that path but not the weights. An adapter
    that llmrec trained records in its manifest.json the sha256 of the base folder's weight files
    (`base_model_sha256`); where the paths differ, it is accepted when the engine's folder has those
    same weights (hashing ~540 MB takes about a second, and only on this path). A PEFT folder trained
    elsewhere, without that record, must name the engine's model exactly.
    """
    config = adapter_json(adapter, "adapter_config.json")
    if config is None:
        raise AdapterMismatch(f"adapter {adapter.name!r}: {Path(adapter.path) / 'adapter_config.json'} is missing: not a PEFT folder")
    if config.get("peft_type", "LORA") != "LORA":
        raise AdapterMismatch(f"adapter {adapter.name!r} is a {config['peft_type']} adapter; vLLM serves only LoRA")
    _check_base(adapter, str(config.get("base_model_name_or_path") or ""), base_model)
    rank = adapter_rank(config)
    if max_rank is not None and rank > max_rank:
        raise AdapterMismatch(f"adapter {adapter.name!r} has LoRA rank {rank}, above the engine's max_lora_rank {max_rank}; "
                              f"retrain it with rank <= {max_rank}")


def _check_base(adapter: AdapterRef, named: str, base_model: str) -> None:
    if named and model_key(named) == model_key(base_model):
        return
    recorded = (adapter_json(adapter, "manifest.json") or {}).get("base_model_sha256")
    if recorded and recorded == base_model_sha256(base_model):
        return
    raise AdapterMismatch(
        f"adapter {adapter.name!r} was built for base model {named!r}, but the engine serves {base_model!r}"
        + ("; their weights differ too" if recorded else "")
    )


def model_identity(model: str) -> dict[str, str | int | None]:
    """What an adapter records about its base model: the same identity a LoRA adapter's check uses
    (a local folder's resolved path, or a hub id), its weights' sha256 and its hidden size."""
    config = Path(model) / "config.json"
    hidden = None
    if config.exists():
        raw = json.loads(config.read_text())
        hidden = raw.get("hidden_size") or raw.get("text_config", {}).get("hidden_size")
    return {"name": display_name(model), "path": model_key(model), "sha256": base_model_sha256(model), "hidden_size": hidden}


def same_base(recorded: Mapping, base_model: str) -> bool:
    """As for LoRA adapters: the same folder (or hub id), or a folder with the same weights."""
    if recorded.get("path") and recorded["path"] == model_key(base_model):
        return True
    return bool(recorded.get("sha256")) and recorded["sha256"] == base_model_sha256(base_model)


def read_manifest(path: str | Path) -> dict:
    try:
        return json.loads((Path(path) / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}


def objective_of(adapter: AdapterRef) -> str:
    """The training objective the adapter's manifest names; LoRA folders from before objectives: 'listwise'."""
    return str(read_manifest(adapter.path).get("objective", "listwise"))
