"""Reusable fakes for unit tests of llmrec's own logic. Never used to claim that a feature works."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from llmrec.errors import LLMUnavailable


class ScriptedEngine:
    """An LLMEngine whose label scores and generations come from functions of the prompt."""

    model_name = "scripted"

    def __init__(self, score: Callable[[str, int], list[float]] | None = None,
                 text: Callable[[str], str] | None = None, fail: str | None = None):
        self._score = score or (lambda prompt, n: [0.0] * n)
        self._text = text or (lambda prompt: "")
        self.fail = fail
        self.calls: list[tuple[str, int]] = []

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def chat_prompt(self, system: str, user: str, assistant_prefix: str = "") -> str:
        return f"{system}\n{user}\n{assistant_prefix}"

    def label_token_ids(self, labels: Sequence[str]) -> list[int]:
        return list(range(len(labels)))

    def score_next_token(self, prompts, token_ids, adapter=None):
        if self.fail:
            raise LLMUnavailable(self.fail)
        self.calls.append(("score", len(prompts)))
        return [self._score(p, len(token_ids)) for p in prompts]

    def generate(self, prompts, max_tokens, adapter=None, temperature=0.0, stop=()):
        if self.fail:
            raise LLMUnavailable(self.fail)
        self.calls.append(("generate", len(prompts)))
        return [self._text(p) for p in prompts]


LOGPROB_TOLERANCE = {"float32": 0.05, "float16": 0.2, "bfloat16": 0.3}
"""Largest |engine − exact fp32 math| allowed per label log-probability, by the engine's dtype. bf16 keeps
8 significant bits (relative 2^-8): with logits of magnitude ~20 one rounding of a logit is ~.04, and the
hidden state under it carries the rounding of 30 layers. Measured on three prompts: bf16 engine vs fp32
reference .08-.11, vs a bf16 transformers forward .10-.15 (different kernels round differently, so a bf16
reference is no closer); fp32 engine vs fp32 reference stays under .05."""

BATCH_TOLERANCE = {"float32": 1e-3, "float16": 0.05, "bfloat16": 0.1}
"""Largest |a − b| allowed between two scorings of the same prompt by the same engine run differently: in
another batch (a batch of 20 and a batch of 1 run different kernels), or with its shared prefix read from
vLLM's prefix cache. In fp32 these agree to 1e-3 (what the tests asserted before bf16 CPUs). In bf16
SmolLM2's logits at the answer (8-16) step by 1/16, so a Yes/No log-probability moves in steps up to .06:
measured on an amx_bf16 CPU, .016 (one prompt alone vs in the pointwise ranker's batch of 20) and .035 (the
same batch again, its prefix from the cache); .1 allows under two steps. fp16 steps 8x finer."""


def logprob_tolerance(dtype: str, against: str = "exact") -> float:
    """The tolerance for comparing an engine's log-probabilities, by its dtype: `against="exact"` for a
    reference computed in fp32 (LOGPROB_TOLERANCE), `"batch"` for the same engine scoring the same prompt
    in another batch (BATCH_TOLERANCE)."""
    table = {"exact": LOGPROB_TOLERANCE, "batch": BATCH_TOLERANCE}[against]
    if dtype not in table:
        raise ValueError(f"no tolerance known for dtype {dtype!r} (known: {', '.join(table)})")
    return table[dtype]


class RecordingEngine:
    """Wraps an engine and keeps the prompts of every `score_next_token` call; everything else passes through."""

    def __init__(self, engine):
        self.engine = engine
        self.scored: list[list[str]] = []

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def score_next_token(self, prompts, token_ids, adapter=None):
        self.scored.append(list(prompts))
        return self.engine.score_next_token(prompts, token_ids, adapter)


def free_port() -> int:
    """A free TCP port on loopback."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_chroma_server(path, timeout_s: float = 60.0):
    """A real `chroma run` on loopback, storing under `path`: (process, url), once the port answers."""
    import shutil
    import socket
    import subprocess
    import sys
    import time
    from pathlib import Path

    chroma = shutil.which("chroma") or str(Path(sys.executable).with_name("chroma"))
    port = free_port()
    proc = subprocess.Popen([chroma, "run", "--path", str(path), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            time.sleep(0.5)
    return proc, f"http://127.0.0.1:{port}"


class WordFormatter:
    """Counts words as tokens; renders a chat as plain text. Enough for the prompt builders' rules."""

    model_name = "words"

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def chat_prompt(self, system: str, user: str, assistant_prefix: str = "") -> str:
        return f"[S]{system}\n[U]{user}\n[A]{assistant_prefix}"


def movie(i: int, title: str | None = None, genres: tuple[str, ...] = ("Drama",)):
    """A made-up catalog item: `Movie <i>`, year 1990 + i % 10."""
    from llmrec.schemas import Item

    return Item(item_id=str(i), title=title or f"Movie {i}", year=1990 + i % 10, genres=genres)


def tiny_home(root, real_home, users: int):
    """A home at `root` with scenario `tiny`: the first `users` users' ML-100K interactions and the items they saw,
    sharing `real_home`'s models."""
    import json

    from llmrec.data.datasets import builtin_folder

    (root / "models").symlink_to(real_home / "models")
    source = builtin_folder("ml-100k", real_home)
    header, *rows = (source / "ml-100k.inter").read_text().splitlines()
    chosen = set(sorted({r.split("\t")[0] for r in rows}, key=int)[:users])
    kept = [r for r in rows if r.split("\t")[0] in chosen]
    items = {r.split("\t")[1] for r in kept}
    data = root / "tiny"
    data.mkdir()
    (data / "tiny.inter").write_text("\n".join([header, *kept]) + "\n")
    item_header, *item_rows = (source / "ml-100k.item").read_text().splitlines()
    (data / "tiny.item").write_text("\n".join([item_header, *(r for r in item_rows if r.split("\t")[0] in items)]) + "\n")
    scenario = root / "scenarios" / "tiny" / "scenario.json"
    scenario.parent.mkdir(parents=True)
    scenario.write_text(json.dumps({"name": "tiny", "dataset": str(data), "domain": "movie"}))
    return root
