"""Item text is untrusted. Text that reads like an instruction to a model never reaches a prompt.

Such a title is replaced, in prompts and in explanations, by a neutral reference to the item
("item 1234 (title withheld)"); the item can still be ranked, but its text cannot steer the model.
"""

from __future__ import annotations

import re

INSTRUCTION = re.compile(
    r"ignore (all|any|the|previous|prior|above|earlier)|disregard|forget (all|everything|the|your)|system prompt|"
    r"\binstructions?\b|you are now|new rules?|<\|[a-z_]+\|>|\b(assistant|system|user)\s*:|answer with|respond with|"
    r"reply with|\bprint\b|\bsay\s+[\"']|\bjailbreak|\bprompt\b",
    re.IGNORECASE,
)


def looks_like_instruction(text: str) -> bool:
    return bool(INSTRUCTION.search(text))


def withheld(item_id: str) -> str:
    return f"item {item_id} (title withheld)"
