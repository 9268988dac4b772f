"""The two LLMEngine implementations: in-process `vllm.LLM` and an OpenAI-compatible vLLM server.

Ranking reads the next-token log-probabilities of the label tokens in one forward pass
(`max_tokens=1`, `allowed_token_ids=labels`, engine in `processed_logprobs` mode, so the returned
log-probabilities are already renormalised over the labels). Sampled-position logprobs are used
rather than `prompt_logprobs`, which crash vLLM 0.32 when LoRA batches mix adapters.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
from collections.abc import Sequence
from functools import cached_property

from pydantic import BaseModel, Field

from llmrec.errors import AdapterMismatch, LLMUnavailable
from llmrec.protocols import AdapterRef

log = logging.getLogger(__name__)


class EngineConfig(BaseModel):
    model: str = Field(description="Resolved model: a local HF folder or a hub id.")
    served_name: str | None = Field(default=None, description="Name shown in responses; defaults to the folder name.")
    dtype: str = "float32"
    max_model_len: int = 2048
    enforce_eager: bool = True
    kv_cache_gb: int = 2
    max_lora_rank: int = 16
    max_adapters: int = Field(default=0, ge=0, description="Adapters served at once; 0 disables LoRA (faster).")
    timeout_s: float = 120.0
    seed: int = 0


class _ChatFormatting:
    """Tokenizer-based helpers shared by both engines."""

    model_name: str

    @cached_property
    def tokenizer(self):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self._tokenizer_source)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def chat_prompt(self, system: str, user: str, assistant_prefix: str = "") -> str:
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        if self.tokenizer.chat_template:
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:  # base models: a plain transcript
            text = f"{system}\n\n{user}\n\n"
        return text + assistant_prefix

    def label_token_ids(self, labels: Sequence[str]) -> list[int]:
        """Token of ' A' after a prefix ending in ':' (most BPE vocabularies fold the space in)."""
        ids = []
        for label in labels:
            pieces = self.tokenizer(":" + " " + label, add_special_tokens=False)["input_ids"]
            head = self.tokenizer(":", add_special_tokens=False)["input_ids"]
            tail = pieces[len(head) :]
            if len(tail) != 1:
                raise LLMUnavailable(f"label {label!r} is not a single token for {self.model_name}")
            ids.append(tail[0])
        if len(set(ids)) != len(ids):
            raise LLMUnavailable(f"labels collide as tokens for {self.model_name}")
        return ids


def check_adapter(adapter: AdapterRef, base_model: str) -> None:
    """Refuse a LoRA folder that is not PEFT or that names another base model."""
    import json
    from pathlib import Path

    config_path = Path(adapter.path) / "adapter_config.json"
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise AdapterMismatch(f"adapter {adapter.name!r}: {config_path} is missing or not JSON ({exc})") from None
    named = str(config.get("base_model_name_or_path") or "")
    if Path(named).name != Path(base_model).name:
        raise AdapterMismatch(
            f"adapter {adapter.name!r} was built for base model {named!r}, but the engine serves {base_model!r}"
        )


class TokenizerFormatter(_ChatFormatting):
    """Prompt formatting without an engine: used to build training examples."""

    def __init__(self, model: str):
        self._tokenizer_source = model
        self.model_name = os.path.basename(model.rstrip("/"))


class InProcessVLLM(_ChatFormatting):
    """`vllm.LLM` in this process: the embedded default. Calls are serialised and time-limited."""

    def __init__(self, config: EngineConfig):
        self.config = config
        self.model_name = config.served_name or os.path.basename(config.model.rstrip("/"))
        self._tokenizer_source = config.model
        self._lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="vllm")
        self._adapter_ids: dict[str, int] = {}

    @cached_property
    def llm(self):
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(self.config.kv_cache_gb))
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from vllm import LLM

        kwargs: dict = dict(
            model=self.config.model, dtype=self.config.dtype, max_model_len=self.config.max_model_len,
            enforce_eager=self.config.enforce_eager, seed=self.config.seed, logprobs_mode="processed_logprobs",
            max_logprobs=32,
        )
        if self.config.max_adapters:
            # One slot more than adapters: vLLM 0.32 gives base requests the last slot's adapter when all are full.
            kwargs.update(enable_lora=True, max_loras=self.config.max_adapters + 1, max_lora_rank=self.config.max_lora_rank)
        try:
            return LLM(**kwargs)
        except Exception as exc:  # vLLM raises many types; report one clear error
            raise LLMUnavailable(f"vLLM could not load {self.config.model}: {exc}") from exc

    @cached_property
    def tokenizer(self):
        return self.llm.get_tokenizer()

    def _lora(self, adapter: AdapterRef | None):
        if adapter is None:
            return None
        if not self.config.max_adapters:
            raise LLMUnavailable("this engine was started without LoRA support (max_adapters=0)")
        from vllm.lora.request import LoRARequest

        if adapter.name not in self._adapter_ids:
            check_adapter(adapter, self.config.model)
            self._adapter_ids[adapter.name] = len(self._adapter_ids) + 1
        return LoRARequest(adapter.name, self._adapter_ids[adapter.name], adapter.path)

    def _run(self, fn):
        with self._lock:
            future = self._pool.submit(fn)
            try:
                return future.result(timeout=self.config.timeout_s)
            except concurrent.futures.TimeoutError:
                raise LLMUnavailable(f"the LLM took longer than {self.config.timeout_s:.0f} s") from None
            except (AdapterMismatch, LLMUnavailable):
                raise
            except Exception as exc:
                raise LLMUnavailable(f"the LLM failed: {type(exc).__name__}: {exc}") from exc

    def score_next_token(self, prompts, token_ids, adapter=None):
        from vllm import SamplingParams

        # No per-request seed: vLLM 0.32's CPU sampler fails on seeded batches ('CPU Generator does not use offset').
        params = SamplingParams(max_tokens=1, temperature=1.0, logprobs=len(token_ids), allowed_token_ids=list(token_ids))
        lora = self._lora(adapter)

        def call():
            outputs = self.llm.generate(list(prompts), params, lora_request=lora, use_tqdm=False)
            table = []
            for output in outputs:
                position = output.outputs[0].logprobs[0]
                table.append([position[t].logprob if t in position else float("-inf") for t in token_ids])
            return table

        return self._run(call)

    def generate(self, prompts, max_tokens, adapter=None, temperature=0.0, stop=()):
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=max_tokens, temperature=temperature, stop=list(stop) or None)
        lora = self._lora(adapter)
        return self._run(lambda: [o.outputs[0].text for o in self.llm.generate(list(prompts), params, lora_request=lora, use_tqdm=False)])


class ServerVLLM(_ChatFormatting):
    """An OpenAI-compatible `vllm` server; the adapter's name is the request's `model`.

    The server must run with `--logprobs-mode processed_logprobs` (as `llmrec serve-llm` starts it),
    so that `allowed_token_ids` renormalises the returned log-probabilities over the labels.
    """

    def __init__(self, url: str, tokenizer_source: str, model_name: str | None = None, timeout_s: float = 120.0):
        self.url = url.rstrip("/")
        self._tokenizer_source = tokenizer_source
        self.timeout_s = timeout_s
        self.model_name = model_name or self._served_models()[0]

    @cached_property
    def client(self):
        from openai import OpenAI

        return OpenAI(base_url=self.url, api_key=os.environ.get("OPENAI_API_KEY", "EMPTY"), timeout=self.timeout_s, max_retries=0)

    def _served_models(self) -> list[str]:
        try:
            return [m.id for m in self.client.models.list().data]
        except Exception as exc:
            raise LLMUnavailable(f"no vLLM server answers at {self.url}: {exc}") from exc

    def _completions(self, prompts, adapter, **kwargs):
        model = adapter.name if adapter else self.model_name
        try:
            response = self.client.completions.create(model=model, prompt=list(prompts), **kwargs)
        except Exception as exc:
            raise LLMUnavailable(f"the vLLM server at {self.url} failed: {exc}") from exc
        return sorted(response.choices, key=lambda c: c.index)

    def score_next_token(self, prompts, token_ids, adapter=None):
        choices = self._completions(
            prompts, adapter, max_tokens=1, temperature=1.0, logprobs=len(token_ids),
            extra_body={"allowed_token_ids": list(token_ids), "return_tokens_as_token_ids": True},
        )
        wanted = set(token_ids)
        table = []
        for choice in choices:
            top = {int(k.split(":", 1)[1]): v for k, v in (choice.logprobs.top_logprobs[0] or {}).items()}
            if not set(top) <= wanted:
                raise LLMUnavailable("the server returned raw logprobs: start it with --logprobs-mode processed_logprobs")
            table.append([top.get(t, float("-inf")) for t in token_ids])
        return table

    def generate(self, prompts, max_tokens, adapter=None, temperature=0.0, stop=()):
        choices = self._completions(prompts, adapter, max_tokens=max_tokens, temperature=temperature, stop=list(stop) or None)
        return [c.text for c in choices]
