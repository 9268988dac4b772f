"""A batching queue in front of an `LLMEngine`: concurrent calls from many threads become one engine call.

The service answers each request on its own thread, and each recommendation asks the engine for one prompt (or a
few). Sent one by one, eight concurrent requests cost eight forward passes in a row; merged, they cost one pass
over eight prompts, which vLLM runs as one batch. `BatchingEngine` wraps any engine and does the merging:

- A caller's `score_next_token` or `generate` call goes into a queue and the caller waits for its own rows.
- One dispatcher thread takes the first queued call, then keeps taking calls for up to `window_ms` (or at once,
  those already queued), until `max_prompts` prompts are gathered.
- Calls that can share an engine call (the same label token ids and adapter for scoring; the same
  `max_tokens`, temperature, stop strings and adapter for generation) are merged, in arrival order, into one
  engine call; the rows are split back to their callers. Calls that differ go as separate engine calls.
- While the engine is busy, new calls wait in the queue, so the next batch takes all of them: the queue acts as
  continuous batching at the granularity of whole calls.
- An engine error (a timeout, a server down) reaches every caller of that engine call as itself; the pipeline
  then answers each request in the retriever's order, as it would without batching.

At most `max_concurrent` engine calls run at once: 1 for the in-process engine (which serialises its calls
anyway), more for a vLLM server, which batches concurrent HTTP requests itself. Everything else an engine has
(its tokenizer, `count_tokens`, `chat_prompt`, `check_adapter`, `prompt_logprobs`...) passes through unchanged.
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from llmrec.errors import LLMUnavailable
from llmrec.protocols import AdapterRef, LLMEngine


class BatchConfig(BaseModel):
    """How the batching queue merges concurrent engine calls."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window_ms: float = Field(default=5.0, ge=0, le=1000, description="How long the first call of a batch waits for others to join it.")
    max_prompts: int = Field(default=64, ge=1, le=4096, description="A batch is sent once it holds this many prompts (a larger "
                                                                     "single call goes alone, never split).")
    max_concurrent: int = Field(default=1, ge=1, le=64, description="Engine calls in flight at once: 1 for the in-process engine, "
                                                                    "a few for a vLLM server.")


BatchObserver = Callable[[str, int, int], None]
"""Called once per engine call with (kind: 'score' or 'generate', calls merged, prompts)."""


@dataclass
class _Call:
    kind: str
    key: tuple
    prompts: list[str]
    run: Callable[[list[str]], list]
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)


def _adapter_key(adapter: AdapterRef | None) -> tuple[str, str] | None:
    return None if adapter is None else (adapter.name, str(adapter.path))


class BatchingEngine:
    """An `LLMEngine` that merges concurrent `score_next_token` and `generate` calls into fewer calls of `engine`."""

    def __init__(self, engine: LLMEngine, config: BatchConfig | None = None, observer: BatchObserver | None = None):
        self.engine = engine
        self.batch_config = config or BatchConfig()
        """How calls are merged (`config`, like every other attribute, is the engine's own)."""
        self.observer = observer
        self._queue: queue.Queue[_Call | None] = queue.Queue()
        self._slots = threading.BoundedSemaphore(self.batch_config.max_concurrent)
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=self.batch_config.max_concurrent, thread_name_prefix="llm-batch")
        self._start = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._held: _Call | None = None  # taken from the queue, but too large for the batch it came to: the next one's first
        self.engine_calls = 0
        """Engine calls made so far (each may carry several callers' calls)."""

    # --- what passes through ------------------------------------------------------------------------

    @property
    def model_name(self) -> str:
        return self.engine.model_name

    def __getattr__(self, name: str) -> Any:  # the tokenizer, config, check_adapter, prompt_logprobs, url...
        if name == "engine":  # not set yet (e.g. while unpickling): never recurse
            raise AttributeError(name)
        return getattr(self.engine, name)

    def count_tokens(self, text: str) -> int:
        return self.engine.count_tokens(text)

    def chat_prompt(self, system: str, user: str, assistant_prefix: str = "") -> str:
        return self.engine.chat_prompt(system, user, assistant_prefix)

    def label_token_ids(self, labels: Sequence[str]) -> list[int]:
        return self.engine.label_token_ids(labels)

    # --- what is merged ---------------------------------------------------------------------------

    def score_next_token(self, prompts: Sequence[str], token_ids: Sequence[int], adapter: AdapterRef | None = None) -> list[list[float]]:
        ids = list(token_ids)
        return self._submit("score", ("score", tuple(ids), _adapter_key(adapter)), prompts,
                            lambda merged: self.engine.score_next_token(merged, ids, adapter))

    def generate(self, prompts: Sequence[str], max_tokens: int, adapter: AdapterRef | None = None, temperature: float = 0.0,
                 stop: Sequence[str] = ()) -> list[str]:
        stops = tuple(stop)
        key = ("generate", max_tokens, float(temperature), stops, _adapter_key(adapter))
        return self._submit("generate", key, prompts,
                            lambda merged: self.engine.generate(merged, max_tokens, adapter, temperature=temperature, stop=stops))

    def queue_depth(self) -> int:
        """Calls waiting for the engine (not yet dispatched)."""
        return self._queue.qsize() + (self._held is not None)

    def close(self) -> None:
        """Stop the dispatcher; calls still queued fail with LLMUnavailable. Engine calls in flight finish."""
        with self._start:
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout=5)
        closed = LLMUnavailable("the engine's batching queue is closed")
        held, self._held = self._held, None
        if held is not None and not held.future.done():
            held.future.set_exception(closed)
        self._fail_queued(closed)
        self._pool.shutdown(wait=False)

    # --- the queue --------------------------------------------------------------------------------

    def _submit(self, kind: str, key: tuple, prompts: Sequence[str], run: Callable[[list[str]], list]) -> list:
        prompts = list(prompts)
        if not prompts:
            return []
        call = _Call(kind, key, prompts, run)
        with self._start:
            if self._closed:
                raise LLMUnavailable("the engine's batching queue is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._dispatch_loop, name="llm-batcher", daemon=True)
                self._thread.start()
            self._queue.put(call)
        return call.future.result()

    def _dispatch_loop(self) -> None:
        while True:
            self._slots.acquire()  # an engine slot first: calls arriving meanwhile wait in the queue and join the next batch
            batch = self._gather()
            if batch is None:
                self._slots.release()
                return
            try:
                self._pool.submit(self._run_batch, batch)
            except RuntimeError as exc:  # the pool was shut down
                self._slots.release()
                for call in batch:
                    call.future.set_exception(LLMUnavailable(f"the engine's batching queue is closed ({exc})"))
                return

    def _gather(self) -> list[_Call] | None:
        """The next batch: the first queued call, then whatever joins within the window while the batch stays within
        `max_prompts` prompts (a call that would pass it starts the next batch; a larger call alone goes alone)."""
        first, self._held = (self._held, None) if self._held is not None else (self._queue.get(), None)
        if first is None:
            return None
        batch, prompts = [first], len(first.prompts)
        deadline = time.monotonic() + self.batch_config.window_ms / 1000
        while prompts < self.batch_config.max_prompts:
            try:
                wait = deadline - time.monotonic()
                call = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if call is None:  # closing: finish this batch, then stop
                self._queue.put(None)
                break
            if prompts + len(call.prompts) > self.batch_config.max_prompts:
                self._held = call
                break
            batch.append(call)
            prompts += len(call.prompts)
        return batch

    def _run_batch(self, batch: list[_Call]) -> None:
        try:
            groups: dict[tuple, list[_Call]] = {}
            for call in batch:
                groups.setdefault(call.key, []).append(call)
            for calls in groups.values():
                self._run_group(calls)
        finally:
            self._slots.release()

    def _run_group(self, calls: list[_Call]) -> None:
        merged = [p for call in calls for p in call.prompts]
        self.engine_calls += 1
        if self.observer is not None:
            self.observer(calls[0].kind, len(calls), len(merged))
        try:
            rows = calls[0].run(merged)
            if len(rows) != len(merged):
                raise LLMUnavailable(f"the engine answered {len(rows)} rows for {len(merged)} prompts")
        except BaseException as exc:  # noqa: BLE001 - every caller gets the engine's own error
            for call in calls:
                call.future.set_exception(exc)
            return
        start = 0
        for call in calls:
            call.future.set_result(list(rows[start : start + len(call.prompts)]))
            start += len(call.prompts)

    def _fail_queued(self, error: Exception) -> None:
        while True:
            try:
                call = self._queue.get_nowait()
            except queue.Empty:
                return
            if call is not None and not call.future.done():
                call.future.set_exception(error)
