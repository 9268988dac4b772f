"""Seeded samples of users, the same for every method of a run."""

from __future__ import annotations

import random


def sample(users: list[str], n: int, seed: int) -> list[str]:
    """A seeded sample, in the original order, so runs are comparable."""
    if n >= len(users):
        return list(users)
    chosen = set(random.Random(seed).sample(users, n))
    return [u for u in users if u in chosen]
