"""LLM engines (vLLM in-process, OpenAI-compatible server), the ranker, the explainer and the conversational agent."""
