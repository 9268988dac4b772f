"""A LoRA adapter served merged into an in-process vLLM engine's weights, for scoring many prompts on a CPU.

vLLM 0.32's CPU LoRA kernels (`lora/ops/torch_ops`) gather a weight matrix per prompt token, so a prefill-heavy
workload such as Yes/No scoring runs far slower with an adapter than without. Measured on TALLRec prompts (about 225
tokens each, new prompts, no prefix-cache hits, a busy 2-core machine): in bf16, 3.0 s of CPU a prompt with an adapter
against 0.14 without (128 prompts); in fp32, 2.9 s against 0.54 (32 and 256 prompts). Here
the adapter's LoRA is merged into the base weights with PEFT (`merge_and_unload`, fp32) and loaded into the running
engine with vLLM's own in-place reload (`collective_rpc("reload_weights")`), about a second; the prefix cache is
reset so no KV block computed with other weights is reused. Measured: the merged engine's log P(Yes) matched PEFT's
fp32 forward pass to 1e-5 on 8 prompts, and reloading the base weights gave back the base scores exactly.

Only for an engine used by one caller at a time (an evaluation run): while an adapter is merged, every request the
engine serves gets it. `base()` puts the base weights back.
"""

from __future__ import annotations

from pathlib import Path

from llmrec.engines.vllm import InProcessVLLM
from llmrec.errors import AdapterMismatch
from llmrec.manifest import check_adapter
from llmrec.protocols import AdapterRef


class MergedWeights:
    """Loads base + merged LoRA weights into `engine` (an in-process vLLM engine without LoRA slots)."""

    def __init__(self, engine: InProcessVLLM):
        if not isinstance(engine, InProcessVLLM):
            raise AdapterMismatch("merged adapters need the in-process vLLM engine (not --llm-url)")
        self.engine = engine
        self.current: str | None = None
        """The merged adapter's folder, or None for the base weights."""

    def _base(self) -> dict:
        import torch
        from transformers import AutoModelForCausalLM

        return dict(AutoModelForCausalLM.from_pretrained(self.engine.config.model, dtype=torch.float32).state_dict())

    def load(self, adapter: AdapterRef) -> None:
        """Serve `adapter` merged into the base weights (checked first: a PEFT LoRA folder of this base model)."""
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        check_adapter(adapter, self.engine.config.model, max_rank=None)
        model = AutoModelForCausalLM.from_pretrained(self.engine.config.model, dtype=torch.float32)
        merged = PeftModel.from_pretrained(model, str(adapter.path)).merge_and_unload()
        self._reload(dict(merged.state_dict()))
        self.current = str(Path(adapter.path))

    def base(self) -> None:
        """Serve the base model's own weights again."""
        if self.current is not None:
            self._reload(self._base())
            self.current = None

    def _reload(self, weights: dict) -> None:
        self.engine.wait_idle()
        llm = self.engine.llm
        llm.collective_rpc("reload_weights", kwargs={"weights_iterator": list(weights.items()), "is_checkpoint_format": True})
        llm.reset_prefix_cache()
