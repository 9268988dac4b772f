"""Explanations: checkable evidence (co-watch, genres, era), a short generated reason, grounding and claim checks."""
