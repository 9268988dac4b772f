"""LLM engines: vLLM in-process and an OpenAI-compatible vLLM server behind one `LLMEngine` protocol, model resolution
(built-in aliases, local folders, hub ids), the dtype chosen by the CPU, LoRA adapter checks, and the LLM as an item-text encoder."""
