"""Dataset resolution: the pinned ML-100K built-in, folders of atomic files, and bad names."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from llmrec.data.datasets import BUILTINS, load_dataset
from llmrec.errors import AssetError, DatasetError
from llmrec.settings import Settings


@pytest.fixture(scope="module")
def asset_home() -> Path:
    """The shared llmrec cache (LLMREC_HOME): wheels are sha256-checked, so tests may reuse them."""
    return Settings().resolved_home()


def test_ml100k_builtin_loads_pinned_files(asset_home: Path) -> None:
    start = time.perf_counter()
    data = load_dataset("ml-100k", asset_home)
    assert time.perf_counter() - start < 10
    assert (data.report.interactions, data.report.users, data.report.items) == (100_000, 943, 1682)
    assert data.report.dropped_unknown_items == 0
    assert data.item("1").label() == "Toy Story (1995)"
    assert "unknown-title" in data.item("267").flags
    assert (data.item("1412").year, data.item("1412").flags) == (1995, ("year-from-title",))
    labels = [item.label() for item in data.items.values()]
    assert len(labels) - len(set(labels)) == 18  # duplicated title+year pairs keep distinct ids
    assert len(data.history("1").item_ids) == 272
    assert all(len(data.history(u).item_ids) >= 20 for u in data.users())


def test_ml100k_ties_follow_file_order(asset_home: Path) -> None:
    data = load_dataset("ml-100k", asset_home)
    folder = asset_home / "datasets" / "ml-100k"
    lines = (folder / "ml-100k.inter").read_text().splitlines()[1:]
    user1 = [(float(ts), n, item) for n, (u, item, _, ts) in enumerate(line.split("\t") for line in lines) if u == "1"]
    assert data.history("1").item_ids == tuple(item for _, _, item in sorted(user1))


def test_tampered_builtin_file_is_rejected_and_removed(asset_home: Path, tmp_path: Path) -> None:
    load_dataset("ml-100k", asset_home)  # makes sure the wheel is in the shared cache
    (tmp_path / "wheels").mkdir()
    for wheel in (asset_home / "wheels").glob("recbole-*.whl"):
        shutil.copy(wheel, tmp_path / "wheels")
    load_dataset("ml-100k", tmp_path)
    folder = tmp_path / "datasets" / "ml-100k"
    with (folder / "ml-100k.item").open("a") as handle:
        handle.write("9999\tInjected\t2000\tDrama\n")
    with pytest.raises(AssetError, match="does not match the pinned"):
        load_dataset("ml-100k", tmp_path)
    assert not folder.exists()
    assert load_dataset("ml-100k", tmp_path).report.items == 1682  # re-extracted from the wheel


def test_folder_path_loads_atomic_files(tmp_path: Path) -> None:
    folder = tmp_path / "shop"
    folder.mkdir()
    (folder / "shop.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\nu\tx\t1\n")
    (folder / "shop.item").write_text("item_id:token\ttitle:token_seq\nx\tA thing\n")
    data = load_dataset(str(folder), tmp_path)
    assert data.name == "shop" and data.history("u").item_ids == ("x",)


def test_folder_with_other_stem_uses_its_only_inter_file(tmp_path: Path) -> None:
    folder = tmp_path / "export-2024"
    folder.mkdir()
    (folder / "shop.inter").write_text("user_id:token\titem_id:token\nu\tx\n")
    (folder / "shop.item").write_text("item_id:token\ttitle:token_seq\nx\tA thing\n")
    assert load_dataset(str(folder), tmp_path).name == "shop"


def test_unknown_name_lists_builtins(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="built-ins are book-crossing, ml-100k"):
        load_dataset("ml-20m", tmp_path)
    with pytest.raises(DatasetError, match="not a folder"):
        load_dataset(str(tmp_path / "missing" / "dir"), tmp_path)


def test_empty_folder_is_a_dataset_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"expected empty\.inter"):
        (tmp_path / "empty").mkdir()
        load_dataset(str(tmp_path / "empty"), tmp_path)


def test_builtins_pin_every_file_they_read() -> None:
    assert set(BUILTINS["ml-100k"].sha256) == {"ml-100k.inter", "ml-100k.item", "ml-100k.user"}


def test_a_folder_named_like_a_builtin_is_another_source(asset_home: Path, tmp_path: Path) -> None:
    """The source keys the Chroma collection: a user's `ml-100k` folder must never pass for the built-in."""
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    (folder / "ml-100k.inter").write_text("user_id:token\titem_id:token\nu\tx\n")
    (folder / "ml-100k.item").write_text("item_id:token\ttitle:token_seq\nx\tA thing\n")
    mine = load_dataset(str(folder), tmp_path)
    assert mine.name == "ml-100k" and mine.source == str(folder.resolve())
    assert load_dataset("ml-100k", asset_home).source == "ml-100k"
