"""Versioned prompt templates (Jinja2 files under templates/, no logic) and the builders that fill them."""

from llmrec.prompts.builders import (
    ExplainPromptBuilder,
    ExplainPromptConfig,
    RankPrompt,
    RankPromptBuilder,
    RankPromptConfig,
    clean_for_prompt,
)

__all__ = [
    "ExplainPromptBuilder",
    "ExplainPromptConfig",
    "RankPrompt",
    "RankPromptBuilder",
    "RankPromptConfig",
    "clean_for_prompt",
]
