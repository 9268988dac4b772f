"""Real PEFT LoRA training on SmolLM2 for a few steps: budgets, checkpoints, --resume, Ctrl-C, the staged swap."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from llmrec.adapters.loop import LoraTrainConfig, RankingExample, train_lora
from llmrec.errors import TrainingConflict, TrainingInterrupted

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def examples(model_dir):
    from llmrec.engines.vllm import TokenizerFormatter

    formatter = TokenizerFormatter(model_dir)
    labels = tuple(formatter.label_token_ids(["A", "B", "C"]))
    prompts = [formatter.chat_prompt("Pick one.", f"Watched: movie {i}.\nA. x\nB. y\nC. z", "Answer:") for i in range(6)]
    return [RankingExample(p, labels, i % 3) for i, p in enumerate(prompts)]


def config(**update):
    return LoraTrainConfig(steps=3, batch_size=2, learning_rate=1e-3, rank=4, checkpoint_every=1, dtype="float32").model_copy(update=update)


@pytest.fixture()
def existing(tmp_path):
    """An adapter folder that was there before: a failed or interrupted run must leave it as it was."""
    out = tmp_path / "adapter"
    out.mkdir()
    (out / "marker").write_text("the adapter that was there before")
    return out


def interrupt_at(n):
    def hook(step):
        if step == n:
            raise KeyboardInterrupt
    return hook


def test_an_interrupted_run_keeps_the_old_adapter_and_resumes_to_the_same_step_count(model_dir, examples, existing):
    with pytest.raises(TrainingInterrupted, match="step 2 of 3.*--resume"):
        train_lora(model_dir, examples, existing, config(), progress=False, on_step=interrupt_at(2))
    assert (existing / "marker").is_file() and not (existing / "adapter_config.json").exists()
    assert (existing.parent / "adapter.partial" / "checkpoint" / "state.pt").is_file()
    manifest = train_lora(model_dir, examples, existing, config(), progress=False, resume=True)
    assert manifest["complete"] and manifest["steps_done"] == 3 and len(manifest["loss_curve"]) == 3
    assert (existing / "adapter_config.json").is_file() and not (existing / "marker").exists()
    assert json.loads((existing / "manifest.json").read_text())["run_key"] == manifest["run_key"]
    assert not (existing.parent / "adapter.partial").exists()
    again = train_lora(model_dir, examples, existing, config(), progress=False)
    assert again.get("cached") is True  # same base, data and config: not trained twice


def test_resume_refuses_another_config_and_a_missing_checkpoint(model_dir, examples, existing):
    with pytest.raises(TrainingConflict, match="no checkpoint"):
        train_lora(model_dir, examples, existing, config(), progress=False, resume=True)
    with pytest.raises(TrainingInterrupted):
        train_lora(model_dir, examples, existing, config(), progress=False, on_step=interrupt_at(1))
    with pytest.raises(TrainingConflict, match="rank"):
        train_lora(model_dir, examples, existing, config(rank=8), progress=False, resume=True)
    with pytest.raises(TrainingConflict, match="other training data"):
        train_lora(model_dir, examples[:4], existing, config(), progress=False, resume=True)
    assert (existing / "marker").is_file()


def test_a_time_budget_stops_early_with_a_checkpoint_and_no_swap(model_dir, examples, existing):
    manifest = train_lora(model_dir, examples, existing, config(steps=1000, minutes=0.0001), progress=False)
    assert not manifest["complete"] and manifest["steps_done"] < 1000
    assert (existing / "marker").is_file() and (existing.parent / "adapter.partial" / "checkpoint").is_dir()


def test_sigint_to_a_real_training_process_is_one_line_exit_130_and_keeps_the_old_adapter(model_dir, existing):
    script = textwrap.dedent(f"""
        import signal, sys
        from pathlib import Path
        # Ctrl-C as a user's terminal delivers it: a shell's background job (CI) starts with SIGINT ignored
        signal.signal(signal.SIGINT, signal.default_int_handler)
        from llmrec.adapters.loop import LoraTrainConfig, RankingExample, train_lora
        from llmrec.engines.vllm import TokenizerFormatter
        from llmrec.errors import LLMRecError
        f = TokenizerFormatter({model_dir!r})
        labels = tuple(f.label_token_ids(["A", "B"]))
        ex = [RankingExample(f.chat_prompt("Pick.", "A. x B. y " * 40, "Answer:"), labels, i % 2) for i in range(4)]
        try:
            train_lora({model_dir!r}, ex, Path({str(existing)!r}), LoraTrainConfig(steps=100000, batch_size=2, rank=4, dtype="float32", threads=1),
                       on_step=lambda s: print("step", s, flush=True) if s == 1 else None, progress=False)
        except LLMRecError as exc:
            print(f"llmrec: error: {{exc}}", file=sys.stderr)
            sys.exit(exc.exit_code)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    assert proc.stdout.readline().strip() == "step 1"  # training is under way
    time.sleep(1)
    proc.send_signal(signal.SIGINT)  # taken between steps; one thread keeps a step short on a busy machine
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 130, err[-1500:]
    assert "Traceback" not in err and "training interrupted at step" in err
    assert (existing / "marker").is_file() and (existing.parent / "adapter.partial" / "checkpoint" / "state.pt").is_file()


def test_the_objective_is_recorded_and_a_resume_for_another_objective_is_refused(model_dir, examples, existing):
    with pytest.raises(TrainingInterrupted):
        train_lora(model_dir, examples, existing, config(), progress=False, on_step=interrupt_at(1))
    with pytest.raises(TrainingConflict, match="made for the 'listwise' objective, not 'pointwise'"):
        train_lora(model_dir, examples, existing, config(), progress=False, resume=True, objective="pointwise")
    manifest = train_lora(model_dir, examples, existing, config(steps=1), progress=False, objective="pointwise")
    assert manifest["objective"] == json.loads((existing / "manifest.json").read_text())["objective"] == "pointwise"
