"""How InProcessVLLM runs calls on its one worker thread: deadlines, abandoned calls, adapter keys. No model loaded."""

import os
import sys
import threading
import time
import types

import pytest

from llmrec.engines.vllm import EngineConfig, InProcessVLLM, _environment
from llmrec.errors import LLMUnavailable


def engine(timeout_s: float, **config) -> InProcessVLLM:
    return InProcessVLLM(EngineConfig(model="no-such-model", timeout_s=timeout_s, **config))


def test_a_timed_out_call_does_not_eat_the_budgets_of_the_calls_after_it():
    """One stuck call used to keep the worker, so two 10 ms calls behind it waited out their own full timeouts and
    came back degraded. Now they are refused at once, saying why, and the engine serves again once it is free."""
    llm, release = engine(timeout_s=0.3), threading.Event()
    with pytest.raises(LLMUnavailable, match="longer than 0.3 s"):
        llm._run(lambda: release.wait(10))
    for _ in range(2):
        clock = time.perf_counter()
        with pytest.raises(LLMUnavailable, match="busy with an abandoned request"):
            llm._run(lambda: time.sleep(0.01) or "late")
        assert time.perf_counter() - clock < 0.1  # refused at once, not after 0.3 s
    release.set()
    assert llm.wait_idle(5)
    assert llm._run(lambda: time.sleep(0.01) or "answered") == "answered"


def test_the_deadline_counts_from_when_the_call_starts_on_the_worker():
    """A call queued behind a live call (one that finishes in time) gets its whole timeout once it runs."""
    llm, results = engine(timeout_s=0.5), []

    def call(name):
        try:
            results.append(llm._run(lambda: time.sleep(0.35) or name))
        except LLMUnavailable as exc:
            results.append(str(exc))

    threads = [threading.Thread(target=call, args=(name,)) for name in ("first", "second")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["first", "second"]  # the second waited .35 s, then ran .35 s of its own .5 s


def test_the_adapter_folder_is_hashed_once_not_on_every_call(tmp_path, monkeypatch):
    from llmrec import assets
    from llmrec.engines import vllm
    from llmrec.scenario import AdapterSpec

    (tmp_path / "adapter_config.json").write_text("{}")
    (tmp_path / "adapter_model.safetensors").write_bytes(b"w" * 4096)
    reads = []
    hash_files = assets.folder_hash
    monkeypatch.setattr(assets, "folder_hash", lambda path, pattern="*": reads.append(path) or hash_files(path, pattern))
    monkeypatch.setattr(vllm, "check_adapter", lambda *args, **kwargs: None)
    fake = types.ModuleType("vllm.lora.request")
    fake.LoRARequest = lambda name, lora_id, path: (name, lora_id, path)
    monkeypatch.setitem(sys.modules, "vllm.lora.request", fake)
    llm = engine(timeout_s=1, max_adapters=1)
    adapter = AdapterSpec(name="movies", path=str(tmp_path))
    first = llm._lora(adapter)
    assert all(llm._lora(adapter) == first for _ in range(5))
    assert len(reads) == 1


def test_an_environment_set_for_construction_is_restored(monkeypatch):
    monkeypatch.delenv("LLMREC_TEST_UNSET", raising=False)
    monkeypatch.setenv("LLMREC_TEST_SET", "before")
    with _environment(LLMREC_TEST_UNSET="1", LLMREC_TEST_SET="during"):
        assert os.environ["LLMREC_TEST_UNSET"] == "1" and os.environ["LLMREC_TEST_SET"] == "during"
    assert "LLMREC_TEST_UNSET" not in os.environ and os.environ["LLMREC_TEST_SET"] == "before"


def test_releasing_adapters_waits_for_an_abandoned_call_instead_of_being_refused():
    llm, release, removed = engine(timeout_s=0.2), threading.Event(), []
    llm.__dict__["llm"] = types.SimpleNamespace(llm_engine=types.SimpleNamespace(remove_lora=removed.append))
    llm._adapters = {"sha": types.SimpleNamespace(lora_int_id=1, lora_name="movies@sha")}
    with pytest.raises(LLMUnavailable, match="longer than"):
        llm._run(lambda: release.wait(10))
    threading.Timer(0.3, release.set).start()
    llm.release_adapters()
    assert removed == [1] and llm._adapters == {}
