"""The service's settings (`ServiceSettings`): keys, limits, the scenarios served, where it listens, batching.

Read once, where the service starts (`llmrec serve`, or whoever calls `create_app`), from `LLMREC_*` variables like
the pipeline's `llmrec.settings.Settings`. API keys are hashed as they are read: the settings object, and everything
after it, holds only their sha256 digests, never the keys.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from llmrec.engines.batching import BatchConfig
from llmrec.scenario import NAME_PATTERN


def key_digest(key: str) -> str:
    """The sha256 hex digest a key is stored and compared as."""
    return hashlib.sha256(key.encode()).hexdigest()


def _names(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LLMREC_", extra="ignore")

    api_keys: Annotated[tuple[str, ...], NoDecode] = Field(default=(), repr=False, description=(
        "LLMREC_API_KEYS: the API keys, comma-separated. Stored here as their sha256 digests only (hashed as they are "
        "read); requests are checked by comparing digests in constant time. Write endpoints and the chat need a key."))
    open_reads: bool = Field(default=True, description="Whether reads (recommend, profile, scenarios) are open without a key.")
    rate_limit_per_minute: int = Field(default=600, ge=0, description=(
        "Requests per minute per API key (anonymous reads: per client address), in bursts of up to as many; 0: no limit."))
    max_body_bytes: int = Field(default=1_000_000, ge=1024, le=100_000_000, description="Largest request body (413 above it).")
    scenario: str = Field(default="movies", pattern=NAME_PATTERN, description="The default scenario (also the chat's).")
    scenarios: Annotated[tuple[str, ...], NoDecode] = Field(default=(), description=(
        "More scenarios served beside the default, comma-separated (each built at start; requests name one with 'scenario')."))
    host: str = Field(default="127.0.0.1", description="Where `llmrec serve` listens: loopback unless set.")
    port: int = Field(default=8080, ge=1, le=65535)
    drain_s: float = Field(default=10.0, ge=0, le=600, description="On SIGTERM: seconds in-flight requests get to finish.")
    batching: bool = Field(default=True, description="Merge concurrent LLM calls into one engine call (False: one call at a time).")
    batch_window_ms: float = Field(default=5.0, ge=0, le=1000, description="How long a batch waits for more calls to join.")
    batch_max_prompts: int = Field(default=64, ge=1, le=4096, description="A batch is sent once it holds this many prompts.")
    batch_max_concurrent: int = Field(default=4, ge=1, le=64, description="Engine calls in flight at once on a vLLM server "
                                                                           "(the in-process engine takes one at a time).")
    readiness_timeout_s: float = Field(default=2.0, gt=0, le=60, description="How long /readyz waits for the LLM server or Chroma.")

    @field_validator("api_keys", mode="before")
    @classmethod
    def _hash_keys(cls, value: Any) -> Any:
        keys = _names(value)
        if isinstance(keys, (list, tuple, set, frozenset)):
            return tuple(sorted({key_digest(str(k)) for k in keys if str(k)}))
        return keys

    @field_validator("scenarios", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return _names(value)

    def batch_config(self) -> BatchConfig | None:
        if not self.batching:
            return None
        return BatchConfig(window_ms=self.batch_window_ms, max_prompts=self.batch_max_prompts, max_concurrent=self.batch_max_concurrent)

    def served_scenarios(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((self.scenario, *self.scenarios)))
