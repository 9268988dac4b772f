"""The LLM as a LangChain chat model: the in-process engine (embedded default) or a `llmrec serve-llm` server.

Both take structured output the same way, as vLLM's request field:
`model.invoke(messages, max_tokens=n, extra_body={"structured_outputs": {"grammar": g}})`.
`ChatOpenAI(base_url=...)` sends `extra_body` to the server as is; `EngineChatModel` hands it to the
in-process engine as `SamplingParams(structured_outputs=StructuredOutputsParams(...))`.

`compact_json_grammar` turns a JSON schema into xgrammar's grammar for the same JSON without any
optional whitespace. vLLM 0.32 reads `disable_any_whitespace` from the engine's config only, not from
the request's `StructuredOutputsParams` (`backend_xgrammar.py`), and with whitespace allowed SmolLM2
filled its token budget with newlines and indentation (measured: 60 tokens, output cut inside the
third key). The grammar form gives the compact JSON per request, on either engine.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import ConfigDict

from llmrec.errors import LLMUnavailable

_ROLES = {"system": "system", "human": "user", "ai": "assistant", "tool": "tool"}


@lru_cache(maxsize=16)
def _grammar(schema_json: str) -> str:
    import xgrammar

    return str(xgrammar.Grammar.from_json_schema(schema_json, any_whitespace=False, separators=(",", ":")))


def compact_json_grammar(schema: dict) -> str:
    """xgrammar EBNF for `schema`'s JSON with no whitespace between tokens (cached per schema)."""
    return _grammar(json.dumps(schema))


def generate_structured(engine: Any, prompts: Sequence[str], structured: dict, max_tokens: int, temperature: float = 0.0) -> list[str]:
    """Constrained generation on llmrec's engines; an engine without vLLM (a test double) generates freely
    and leaves the checking to the caller's validation."""
    from llmrec.engines.vllm import InProcessVLLM, ServerVLLM

    if isinstance(engine, InProcessVLLM):
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        params = SamplingParams(max_tokens=max_tokens, temperature=temperature, structured_outputs=StructuredOutputsParams(**structured))
        return engine._run(lambda: [o.outputs[0].text for o in engine.llm.generate(list(prompts), params, use_tqdm=False)])
    if isinstance(engine, ServerVLLM):
        try:
            response = engine.client.completions.create(model=engine.model_name, prompt=list(prompts), max_tokens=max_tokens,
                                                        temperature=temperature, extra_body={"structured_outputs": structured})
        except Exception as exc:
            raise LLMUnavailable(f"the vLLM server at {engine.url} failed: {exc}") from exc
        return [c.text for c in sorted(response.choices, key=lambda c: c.index)]
    return engine.generate(list(prompts), max_tokens, temperature=temperature)


class EngineChatModel(BaseChatModel):
    """A LangChain chat model over an `LLMEngine` (in-process vLLM by default); no tool calling."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    engine: Any
    max_tokens: int = 64
    temperature: float = 0.0

    @property
    def _llm_type(self) -> str:
        return "llmrec-engine"

    def render(self, messages: Sequence[BaseMessage]) -> str:
        """The chat with the model's own template, ready for completion."""
        turns = [{"role": _ROLES.get(m.type, "user"), "content": str(m.content)} for m in messages]
        tokenizer = getattr(self.engine, "tokenizer", None)
        if tokenizer is not None and getattr(tokenizer, "chat_template", None):
            return tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        return "\n\n".join(f"{t['role']}: {t['content']}" for t in turns) + "\n\nassistant: "

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        prompt = self.render(messages)
        max_tokens = int(kwargs.get("max_tokens") or self.max_tokens)
        temperature = float(kwargs.get("temperature", self.temperature))
        structured = (kwargs.get("extra_body") or {}).get("structured_outputs")
        if structured:
            text = generate_structured(self.engine, [prompt], structured, max_tokens, temperature)[0]
        else:
            text = self.engine.generate([prompt], max_tokens, temperature=temperature, stop=stop or ())[0]
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])
