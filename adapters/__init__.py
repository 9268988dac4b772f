"""Scenarios and their LoRA adapters: specs, PEFT training, registry."""
