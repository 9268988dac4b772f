"""The LLM as an item encoder, and the ranker of the `embedding` objective (the serving side).

Item vectors are the frozen base model's hidden state (by default the last layer), mean-pooled over
the tokens of each item's text, "Title (Year) | genres". Item text is untrusted, so it is sanitised
as for prompts (`prompts.builders.safe_title`). The vectors are computed once per (model, layer,
dtype, catalog text) and cached under `<home>/item-vectors/`.

A trained `embedding` adapter (written by `llmrec.adapters.embedding`) is a folder with
`adapter.safetensors` (two linear maps and the feature standardisation) and `manifest.json`:

    user  = W_u · standardise(recency-weighted mean of the last `history_items` item vectors) + b_u
    item  = W_i · standardise(item vector) + b_i
    score = user · item, as a log-softmax over the candidates

so it slots into the same fusion as the verbalizer: score - w·log(1 + retriever_rank).
Ranking 20 candidates costs a dot product; the LLM runs only when the vector cache misses.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from llmrec.engines.encoder import ItemEncoderConfig, ItemVectors, item_vectors
from llmrec.errors import AdapterMismatch
from llmrec.manifest import model_identity, read_manifest, same_base
from llmrec.objectives import EMBEDDING as OBJECTIVE
from llmrec.objectives import RankerInputs
from llmrec.protocols import AdapterRef, LLMScores
from llmrec.ranking.fusion import FusedRanking
from llmrec.schemas import Candidate, Item

log = logging.getLogger(__name__)
WEIGHTS_FILE = "adapter.safetensors"
TENSORS = ("center", "scale", "user_weight", "user_bias", "item_weight", "item_bias")


class TwoTowerConfig(BaseModel):
    """The user side of the model; saved in the manifest."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    history_items: int = Field(default=10, ge=1, description="Most recent history items pooled into the user vector.")
    decay: float = Field(default=0.8, gt=0, le=1, description="Weight of the i-th most recent item is decay**i.")
    dim: int = Field(default=64, ge=1, description="Width of the projected user and item vectors (64, 128 and 256 tied on validation).")


def history_weights(n: int, decay: float) -> np.ndarray:
    """Recency weights for n items, oldest first, summing to 1."""
    weights = decay ** np.arange(n - 1, -1, -1, dtype=np.float64)
    return (weights / weights.sum()).astype(np.float32)


@dataclass(frozen=True)
class TwoTower:
    """The trained projections (numpy): what an `embedding` adapter holds."""

    tensors: dict[str, np.ndarray]
    config: TwoTowerConfig

    def items(self, vectors: np.ndarray) -> np.ndarray:
        x = (vectors - self.tensors["center"]) / self.tensors["scale"]
        return x @ self.tensors["item_weight"] + self.tensors["item_bias"]

    def user(self, history_vectors: np.ndarray) -> np.ndarray:
        """From the history's item vectors (oldest first); all of them are used, so cut before."""
        pooled = history_weights(len(history_vectors), self.config.decay) @ history_vectors
        x = (pooled - self.tensors["center"]) / self.tensors["scale"]
        return x @ self.tensors["user_weight"] + self.tensors["user_bias"]


def load_two_tower(adapter: AdapterRef, base_model: str) -> tuple[TwoTower, dict]:
    """Read an `embedding` adapter folder; refuse one built for another base model (AdapterMismatch, exit 6)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    manifest = read_manifest(adapter.path)
    if manifest.get("objective") != OBJECTIVE:
        raise AdapterMismatch(f"adapter {adapter.name!r}: {adapter.path}/manifest.json is missing or names no '{OBJECTIVE}' objective")
    recorded = manifest.get("base_model") or {}
    if not same_base(recorded, base_model):
        raise AdapterMismatch(f"adapter {adapter.name!r} was built for base model {recorded.get('path')!r}, "
                              f"but the engine serves {base_model!r}, and their weights differ")
    try:
        tensors = load_file(str(Path(adapter.path) / WEIGHTS_FILE))
    except (OSError, SafetensorError) as exc:
        raise AdapterMismatch(f"adapter {adapter.name!r}: {WEIGHTS_FILE} is missing or unreadable ({exc})") from None
    hidden = model_identity(base_model)["hidden_size"]
    if set(tensors) != set(TENSORS) or (hidden is not None and tensors["center"].shape != (hidden,)):
        raise AdapterMismatch(f"adapter {adapter.name!r}: {WEIGHTS_FILE} does not fit {Path(base_model).name} "
                              f"(hidden size {hidden}, tensors {sorted(tensors)})")
    return TwoTower(tensors, TwoTowerConfig.model_validate(manifest["config"]["tower"])), manifest


class EmbeddingRankerConfig(BaseModel):
    fusion_weight: float = Field(default=float("inf"), ge=0, description="w in score - w*log(1+retriever_rank); inf = retriever order.")


class EmbeddingRanker(FusedRanking):
    """Ranks candidates by user·item over precomputed LLM item vectors; the same interface as `LLMRanker`."""

    def __init__(self, tower: TwoTower, vectors: ItemVectors, config: EmbeddingRankerConfig | None = None):
        self.tower = tower
        self.config = config or EmbeddingRankerConfig()
        self.ids = vectors.ids
        self.row = vectors.index()
        self.raw = vectors.matrix
        self.item_matrix = tower.items(vectors.matrix).astype(np.float32)

    def user_vector(self, history_ids: Sequence[str]) -> np.ndarray | None:
        rows = [self.row[i] for i in history_ids if i in self.row][-self.tower.config.history_items :]
        if not rows:
            return None
        return self.tower.user(self.raw[rows])

    def catalog_scores(self, history_ids: Sequence[str]) -> np.ndarray | None:
        """user·item for every catalog item (in `self.ids` order); None for a history without vectors."""
        user = self.user_vector(history_ids)
        return None if user is None else self.item_matrix @ user

    def score_many(self, requests: Sequence[tuple[Sequence[Item], Sequence[Candidate]]]) -> list[LLMScores]:
        out = []
        for history, candidates in requests:
            ids = [item.item_id for item in history]
            used = min(len(ids), self.tower.config.history_items)
            user = self.user_vector(ids)
            if user is None or not candidates:
                logits = np.zeros(len(candidates))
            else:
                logits = self.item_matrix[[self.row[c.item_id] for c in candidates]] @ user
            logprobs = logits - np.logaddexp.reduce(logits) if len(logits) else logits
            out.append(LLMScores([float(x) for x in logprobs], used, len(ids) - used, 0))
        return out


def load_embedding_ranker(adapter: AdapterRef, base_model: str, items: Sequence[Item], home: Path, fusion_weight: float,
                          progress: bool = True) -> EmbeddingRanker:
    """The serving side of an `embedding` adapter: its towers over the catalog's (cached) item vectors."""
    tower, manifest = load_two_tower(adapter, base_model)
    encoder = ItemEncoderConfig.model_validate(manifest["config"]["encoder"])
    lora = Path(adapter.path) / "encoder-lora" if (manifest.get("encoder_lora") or {}).get("kept") else None
    if lora is not None and not (lora / "adapter_config.json").is_file():
        raise AdapterMismatch(f"adapter {adapter.name!r}: its manifest names an encoder LoRA, but {lora}/adapter_config.json is missing")
    vectors = item_vectors(base_model, items, home, encoder, progress, lora)
    return EmbeddingRanker(tower, vectors, EmbeddingRankerConfig(fusion_weight=fusion_weight))


def build(inputs: RankerInputs) -> EmbeddingRanker:
    """The registry's builder: the adapter's towers over the catalog's item vectors (exit 6 for another base model)."""
    return load_embedding_ranker(inputs.adapter, inputs.base_model, list(inputs.catalog.values()), inputs.home, inputs.weight,
                                 inputs.progress)
