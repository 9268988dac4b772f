"""The adapter workshop: one LoRA loop, one trainer per objective, fusion-weight fitting with its significance gate."""
