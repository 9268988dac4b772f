"""llmrec: an open LLM as the recommender."""
