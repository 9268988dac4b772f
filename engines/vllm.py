"""The two LLMEngine implementations: in-process `vllm.LLM` and an OpenAI-compatible vLLM server.

Ranking reads the next-token log-probabilities of the label tokens in one forward pass
(`max_tokens=1`, `allowed_token_ids=labels`, engine in `processed_logprobs` mode, so the returned
log-probabilities are already renormalised over the labels). Sampled-position logprobs are used
rather than `prompt_logprobs`, which crash vLLM 0.32 when LoRA batches mix adapters.
The `sequence` objective's line likelihoods are the one use of prompt logprobs
(`InProcessVLLM.prompt_logprobs`): one request per engine step wherever LoRA is enabled, in process only.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import os
import threading
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from pydantic import BaseModel, Field

from llmrec.assets import cached_folder_hash, folder_hash
from llmrec.errors import AdapterMismatch, LLMUnavailable
from llmrec.manifest import MAX_LORA_RANK, check_adapter, display_name
from llmrec.protocols import AdapterRef

log = logging.getLogger(__name__)


class EngineConfig(BaseModel):
    model: str = Field(description="Resolved model: a local HF folder or a hub id.")
    served_name: str | None = Field(default=None, description="Name shown in responses; defaults to the folder name.")
    dtype: str = "float32"
    max_model_len: int = 2048
    enforce_eager: bool = True
    kv_cache_gb: int = Field(default=2, description="This engine's KV cache, GiB (vLLM's kv_cache_memory_bytes).")
    max_lora_rank: int = MAX_LORA_RANK
    max_adapters: int = Field(default=0, ge=0, description="Adapters served at once; 0 disables LoRA (faster).")
    timeout_s: float = 120.0
    seed: int = 0


@dataclass(frozen=True)
class PromptLogprobs:
    """One prompt's scored tokens (`InProcessVLLM.prompt_logprobs`) and vLLM's prefix-cache hit for it."""

    logprobs: tuple[float, ...]
    """log p(token j | tokens before j) for j from the requested start to the prompt's end."""
    cached_tokens: int
    """Prompt tokens vLLM took from its prefix cache instead of computing (`RequestOutput.num_cached_tokens`)."""


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


def verify_adapter(engine, adapter: AdapterRef) -> None:
    """Check `adapter` against the engine that will serve it (AdapterMismatch, exit 6, when refused).

    Both vLLM engines check adapters themselves (`check_adapter`: the in-process one also reserves its
    LoRA slot, the server one asks the server what it serves). Another engine that names its base model
    in `config.model` (a test double) gets the folder check; one that names none cannot be checked.
    """
    own = getattr(engine, "check_adapter", None)
    if own is not None:
        own(adapter)
    elif getattr(engine, "config", None) is not None:
        check_adapter(adapter, engine.config.model)


class TokenizerFormatter(_ChatFormatting):
    """Prompt formatting without an engine: used to build training examples."""

    def __init__(self, model: str):
        self._tokenizer_source = model
        self.model_name = display_name(model)


def guard_kernel_scan() -> None:
    """Let vLLM's start-up scan of `sys.modules` survive objects that lie about `__dict__`.

    vLLM 0.32 (`triton_utils.dispatcher._rebind_kernels`) calls `vars(value).get(...)` on every module
    attribute that has a `__dict__`. llvmlite's `binding.ffi.lib` (imported with numba by ranx or
    implicit) answers any attribute, `__dict__` included, with a function wrapper, so an engine loaded
    after `llmrec eval`'s imports failed with "'_lib_fn_wrapper' object has no attribute 'get'". The scan
    resolves `vars` through its module's globals first, so a `vars` there that yields an empty mapping
    for such objects keeps it working and changes nothing else.
    """
    import builtins
    from collections.abc import Mapping

    try:
        from vllm.triton_utils import dispatcher
    except ImportError:  # another vLLM version: nothing to guard
        return

    def safe_vars(obj=None):
        found = builtins.vars(obj)
        return found if isinstance(found, Mapping) else {}

    dispatcher.vars = safe_vars


def _eager_sampler() -> None:
    """Keep the first request free of a torch.compile of vLLM's sampler helper.

    vLLM 0.32 wraps `batched_count_greater_than` (the rank of the sampled token, computed whenever
    logprobs are asked for) in `torch.compile`, even with `enforce_eager`. On a machine without an
    inductor cache that compile (dynamo tracing plus a C++ build) ran inside the first ranking request:
    15.9 s against 1.0 s for the next one (`bench/cold_start.py`). An eager engine asks for no
    compilation, so vLLM's sampler gets the function's plain torch original (the same math). Only
    vLLM's two modules that hold it change; dynamo stays on for the rest of the process (it used to be
    switched off process-wide, which also turned off any torch.compile of a trainer in the same process).
    """
    import importlib

    for name in ("vllm.v1.sample.ops.logprobs", "vllm.v1.sample.sampler"):
        try:
            module = importlib.import_module(name)
        except ImportError:  # another vLLM version: nothing to unwrap
            continue
        original = getattr(getattr(module, "batched_count_greater_than", None), "_torchdynamo_orig_callable", None)
        if original is not None:
            module.batched_count_greater_than = original


@contextmanager
def _environment(**values: str):
    """Set environment variables for the block only, then restore them (removing those that were unset)."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _warm_up(llm) -> None:
    """One tiny scoring call at load time, so the first real request does not pay the first forward's setup."""
    from vllm import SamplingParams

    llm.generate(["Warm-up:"], SamplingParams(max_tokens=1, temperature=1.0, logprobs=2), use_tqdm=False)


class InProcessVLLM(_ChatFormatting):
    """`vllm.LLM` in this process: the embedded default. Calls are serialised and time-limited.

    Adapters are keyed by their folder's bytes (`folder_hash`), not by name or path: each distinct
    folder is checked once (`check_adapter`) and gets its own vLLM LoRA id and name (vLLM caches
    weights by id and compares requests by name), so a second adapter of the same name is served
    its own weights. At most `max_adapters` distinct adapters are held; one more is refused with
    AdapterMismatch (exit 6) rather than evicted, because the engine keeps one LoRA slot free:
    vLLM 0.32 gives base-model requests the last slot's adapter when every slot is full.
    `release_adapters()` frees the slots.
    """

    def __init__(self, config: EngineConfig):
        self.config = config
        self.model_name = config.served_name or display_name(config.model)
        self._tokenizer_source = config.model
        self._lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="vllm")
        self._adapters: dict[str, object] = {}  # folder sha256 → its vllm LoRARequest
        self._abandoned: tuple[concurrent.futures.Future, float] | None = None  # a timed-out call still running, since when
        self._lora_ids = itertools.count(1)

    @cached_property
    def llm(self):
        """Load the model. The KV cache size is this engine's own (`kv_cache_memory_bytes`; vLLM lets a
        VLLM_CPU_KVCACHE_SPACE in the user's environment override it). The engine core runs in this
        process (VLLM_ENABLE_V1_MULTIPROCESSING=0, unless the environment says otherwise), which vLLM reads
        only from the environment, so it is set while the engine is built and restored after (vLLM keeps
        its own copy of its settings from then on)."""
        kwargs: dict = dict(
            model=self.config.model, dtype=self.config.dtype, max_model_len=self.config.max_model_len,
            enforce_eager=self.config.enforce_eager, seed=self.config.seed, logprobs_mode="processed_logprobs",
            max_logprobs=32, kv_cache_memory_bytes=self.config.kv_cache_gb * 2**30,
        )
        if self.config.max_adapters:
            # One slot more than adapters: vLLM 0.32 gives base requests the last slot's adapter when all are full.
            kwargs.update(enable_lora=True, max_loras=self.config.max_adapters + 1, max_lora_rank=self.config.max_lora_rank)
        try:
            with _environment(VLLM_ENABLE_V1_MULTIPROCESSING=os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "0")):
                from vllm import LLM

                if self.config.enforce_eager:
                    _eager_sampler()
                guard_kernel_scan()
                llm = LLM(**kwargs)
            _warm_up(llm)
        except Exception as exc:  # vLLM raises many types; report one clear error
            raise LLMUnavailable(f"vLLM could not load {self.config.model}: {exc}") from exc
        return llm

    @cached_property
    def tokenizer(self):
        return self.llm.get_tokenizer()

    def check_adapter(self, adapter: AdapterRef) -> None:
        """Check `adapter` and reserve its LoRA slot now, before any request needs it."""
        self._lora(adapter)

    def _lora(self, adapter: AdapterRef | None):
        if adapter is None:
            return None
        key = cached_folder_hash(Path(adapter.path))  # a stat per file; the bytes are read again only when they change
        with self._lock:
            if key not in self._adapters:
                check_adapter(adapter, self.config.model, self.config.max_lora_rank)
                if len(self._adapters) >= self.config.max_adapters:
                    held = ", ".join(r.lora_name for r in self._adapters.values()) or "none"
                    raise AdapterMismatch(
                        f"adapter {adapter.name!r} ({adapter.path}) needs a LoRA slot, but this engine holds "
                        f"{self.config.max_adapters} (max_adapters) and they are taken (by: {held}); start it with more")
                from vllm.lora.request import LoRARequest

                self._adapters[key] = LoRARequest(f"{adapter.name}@{key[:12]}", next(self._lora_ids), str(adapter.path))
            return self._adapters[key]

    def release_adapters(self) -> None:
        """Unload every adapter this engine holds, so that its LoRA slots can take others. Waits for an abandoned
        call to end first (it may still use an adapter, and a refused unload would leave the slots taken)."""
        self.wait_idle()
        with self._lock:
            held, self._adapters = list(self._adapters.values()), {}
        if held and "llm" in self.__dict__:
            self._run(lambda: [self.llm.llm_engine.remove_lora(r.lora_int_id) for r in held])

    def _run(self, fn):
        """Run `fn` on the engine's one worker thread, giving it `timeout_s` from when it starts there.

        vLLM cannot stop a call midway, so a call past its deadline is abandoned: its caller gets
        LLMUnavailable, and the worker finishes it for no one. Calls that come while it still runs are
        refused at once (LLMUnavailable, "busy with an abandoned request") rather than queued behind it:
        queued, each would wait out work that nobody reads and then run late, or time out in turn (two
        10 ms requests behind one stuck call used to be answered degraded after the full timeout). The
        pipeline answers a refused call as one that timed out, in the retriever's order; the first call
        after the abandoned one ends runs normally. Callers waiting for a live call (the lock) are
        served in turn, each with its own full `timeout_s` once it runs.
        """
        with self._lock:
            abandoned = self._abandoned
            if abandoned is not None and not abandoned[0].done():
                raise LLMUnavailable(
                    f"the LLM is still busy with an abandoned request (it passed its {self.config.timeout_s:g} s limit "
                    f"{time.monotonic() - abandoned[1]:.1f} s ago and cannot be stopped); try again later")
            self._abandoned = None
            started = threading.Event()

            def timed():
                started.set()
                return fn()

            future = self._pool.submit(timed)
            started.wait()  # at once: nothing else runs on the worker (only _run submits, under the lock)
            try:
                return future.result(timeout=self.config.timeout_s)
            except concurrent.futures.TimeoutError:
                self._abandoned = (future, time.monotonic())
                raise LLMUnavailable(f"the LLM took longer than {self.config.timeout_s:g} s") from None
            except (AdapterMismatch, LLMUnavailable):
                raise
            except Exception as exc:
                raise LLMUnavailable(f"the LLM failed: {type(exc).__name__}: {exc}") from exc

    def wait_idle(self, timeout_s: float | None = None) -> bool:
        """Wait until an abandoned call (if any) has finished; True when the engine takes calls again."""
        abandoned = self._abandoned
        if abandoned is None:
            return True
        try:
            abandoned[0].exception(timeout=timeout_s)
        except concurrent.futures.TimeoutError:
            return False
        return True

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

    def prompt_logprobs(self, prompts: Sequence[Sequence[int]], starts: Sequence[int],
                        adapter: AdapterRef | None = None) -> list[PromptLogprobs]:
        """For each token-id prompt, log p(token j | tokens before j) for every j from `starts[i]` on.

        One forward pass per prompt, reading vLLM's prefix cache (which vLLM skips by default when prompt
        logprobs are asked): prompts sharing a prefix, such as one user's history followed by each
        candidate, compute the prefix's full KV blocks (128 tokens each on CPU) once. Rows that come from
        the cache get no logprob, so a prompt whose hit reaches past `starts[i] - 1` is computed again
        without the cache. Ids are taken as given, so the caller decides where tokens split.

        vLLM 0.32 kills a LoRA-enabled engine when prompt logprobs are asked of several requests in one
        batch (its LoRA logits kernel gets one row per request, not per prompt token). On such an engine,
        with or without an adapter in the request, the prompts go one request per engine step, in order,
        so the first prompt of a shared prefix fills the cache for the rest; without LoRA they go as one
        batch, and vLLM's scheduler already serves later prompts of a prefix from the first one's blocks.
        """
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if len(prompts) != len(starts):
            raise ValueError(f"{len(prompts)} prompts but {len(starts)} start positions")
        for ids, start in zip(prompts, starts):
            if not 1 <= start < len(ids):
                raise ValueError(f"start {start} is outside 1..{len(ids) - 1} for a prompt of {len(ids)} tokens")
        lora = self._lora(adapter)
        serial = self.config.max_adapters > 0

        def params(read_cache: bool):
            # detokenize=False: rows served from the cache hold no values, and vLLM would try to decode them.
            return SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False,
                                  skip_reading_prefix_cache=not read_cache)

        def run(indices: list[int], read_cache: bool) -> list:
            inputs = [TokensPrompt(prompt_token_ids=list(prompts[i])) for i in indices]
            if serial:
                return [self.llm.generate([x], params(read_cache), lora_request=lora, use_tqdm=False)[0] for x in inputs]
            return self.llm.generate(inputs, params(read_cache), lora_request=lora, use_tqdm=False) if inputs else []

        def call() -> list[PromptLogprobs]:
            outputs = dict(enumerate(run(list(range(len(prompts))), True)))
            stale = [i for i, out in outputs.items() if (out.num_cached_tokens or 0) > starts[i] - 1]
            outputs.update(zip(stale, run(stale, False)))
            return [PromptLogprobs(tuple(out.prompt_logprobs[j][prompts[i][j]].logprob for j in range(starts[i], len(prompts[i]))),
                                   out.num_cached_tokens or 0) for i, out in sorted(outputs.items())]

        return self._run(call)


class ServerVLLM(_ChatFormatting):
    """An OpenAI-compatible `vllm` server; the adapter's name is the request's `model`.

    The server must run with `--logprobs-mode processed_logprobs` (as `llmrec serve-llm` starts it),
    so that `allowed_token_ids` renormalises the returned log-probabilities over the labels.
    """

    def __init__(self, url: str, tokenizer_source: str, model_name: str | None = None, timeout_s: float = 120.0):
        self.url = url.rstrip("/")
        self._tokenizer_source = tokenizer_source
        self.timeout_s = timeout_s
        self._checked: set[tuple[str, str | None]] = set()
        self.model_name = model_name or next(c["id"] for c in self._model_cards() if not c.get("parent"))

    @cached_property
    def client(self):
        from openai import OpenAI

        return OpenAI(base_url=self.url, api_key=os.environ.get("OPENAI_API_KEY", "EMPTY"), timeout=self.timeout_s, max_retries=0)

    def _model_cards(self) -> list[dict]:
        """`/v1/models`: base models have a `root` (the folder or hub id they were loaded from), adapters a `parent`."""
        try:
            cards = [m.model_dump() for m in self.client.models.list().data]
        except Exception as exc:
            raise LLMUnavailable(f"no vLLM server answers at {self.url}: {exc}") from exc
        if not any(not c.get("parent") for c in cards):
            raise LLMUnavailable(f"the server at {self.url} lists no base model")
        return cards

    def check_adapter(self, adapter: AdapterRef) -> None:
        """The server must serve `adapter.name` as an adapter, loaded from this folder (or one with the same
        bytes, where its folder is readable here), on top of a base model that `check_adapter` accepts
        for this adapter folder. Each mismatch is an AdapterMismatch (exit 6). The rank needs no check:
        the server loaded the adapter, so it fits the server's slots.
        """
        key = (adapter.name, cached_folder_hash(Path(adapter.path)))
        if key in self._checked:
            return
        cards = self._model_cards()
        card = next((c for c in cards if c["id"] == adapter.name and c.get("parent")), None)
        if card is None:
            served = ", ".join(c["id"] for c in cards if c.get("parent")) or "none"
            raise AdapterMismatch(f"the vLLM server at {self.url} does not serve adapter {adapter.name!r} (its adapters: {served}); "
                                  "start it with `llmrec serve-llm --scenario <the scenario>`")
        root = card.get("root")
        if root and Path(root).is_dir() and folder_hash(Path(root)) != key[1]:
            raise AdapterMismatch(f"the vLLM server serves adapter {adapter.name!r} from {root}, whose files differ from {adapter.path}")
        base = next((c.get("root") or c["id"] for c in cards if c["id"] == card["parent"]), card["parent"])
        check_adapter(adapter, base, max_rank=None)
        self._checked.add(key)

    def _completions(self, prompts, adapter, **kwargs):
        if adapter is not None:
            self.check_adapter(adapter)
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
