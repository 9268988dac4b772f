"""Which dtype `auto` picks, by the CPU's flags (no engine needed)."""

import pytest

from llmrec.agents.models import cpu_has_bf16, pick_dtype

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

    from llmrec.agents.engines import guard_kernel_scan

    guard_kernel_scan()
    dispatcher._rebind_kernels([])  # raised AttributeError ('_lib_fn_wrapper' ... 'get') before the guard
