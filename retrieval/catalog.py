"""Load any dataset in RecBole's atomic-file format into an immutable `Dataset`.

Format: `<name>.inter` (required), `<name>.item` (required: item text), `<name>.user` (optional);
tab-separated, with a typed header `field:type`. Errors are `DatasetError`s that name the file,
the line and the problem, because these files are often produced by users' own scripts.

History order (one rule, used everywhere): by timestamp, ties broken by the order of lines in
the .inter file (earlier line = earlier). Without a timestamp column the file order is the order.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np

from llmrec.errors import DatasetError, UnknownItem, UnknownUser
from llmrec.schemas import Interaction, Item, UserHistory

FIELD_TYPES = ("token", "token_seq", "float", "float_seq")
TITLE_COLUMNS = ("movie_title", "title", "item_name")
YEAR_COLUMNS = ("release_year", "year")
GENRE_COLUMNS = ("class", "genre", "genres", "categories")
MAX_TITLE_CHARS = 120
MAX_GENRE_CHARS = 40
MAX_GENRES = 20
_UNKNOWN_TITLES = {"", "unknown", "unkonwn"}  # "unkonwn" is ML-100K's own spelling (item 267)
_YEAR_SUFFIX = re.compile(r"\s*\((\d{4})\)\s*$")


# --- atomic files ------------------------------------------------------------------------------


@dataclass(frozen=True)
class AtomicTable:
    """The raw cells of one atomic file, in file order."""

    path: Path
    fields: tuple[str, ...]
    types: tuple[str, ...]
    rows: list[list[str]]
    line_numbers: list[int]  # 1-based file line of each row, for error messages

    def has(self, name: str) -> bool:
        return name in self.fields

    def column(self, name: str) -> list[str]:
        i = self.fields.index(name)
        return [row[i] for row in self.rows]


def read_atomic(path: Path, required: tuple[str, ...] = ()) -> AtomicTable:
    """Read one atomic file, checking its header, every row's column count and every float cell."""
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    with path.open("r", encoding="utf-8", errors="replace", newline="") as handle:
        lines = handle.read().split("\n")
    fields, types = _parse_header(path, lines[0])
    missing = [name for name in required if name not in fields]
    if missing:
        raise DatasetError(f"{path.name} line 1: missing required column(s) {', '.join(missing)} (found: {', '.join(fields)})")
    float_cols = [i for i, kind in enumerate(types) if kind == "float"]
    seq_cols = [i for i, kind in enumerate(types) if kind == "float_seq"]
    rows: list[list[str]] = []
    line_numbers: list[int] = []
    for number, line in enumerate(lines[1:], start=2):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        cells = line.split("\t")
        if len(cells) != len(fields):
            raise DatasetError(f"{path.name} line {number}: expected {len(fields)} tab-separated columns, found {len(cells)}")
        for i in float_cols:
            _check_float(path, number, fields[i], cells[i])
        for i in seq_cols:
            for part in cells[i].split():
                _check_float(path, number, fields[i], part)
        rows.append(cells)
        line_numbers.append(number)
    return AtomicTable(path, fields, types, rows, line_numbers)


def _parse_header(path: Path, header: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    header = header.lstrip("\ufeff").rstrip("\r")
    if not header.strip():
        raise DatasetError(f"{path.name} line 1: empty header, expected tab-separated name:type fields")
    fields: list[str] = []
    types: list[str] = []
    for cell in header.split("\t"):
        name, sep, kind = cell.strip().rpartition(":")
        if not sep or not name:
            raise DatasetError(f"{path.name} line 1: header field {cell!r} is not name:type")
        if kind not in FIELD_TYPES:
            raise DatasetError(f"{path.name} line 1: field {name!r} has unknown type {kind!r} (expected {', '.join(FIELD_TYPES)})")
        if name in fields:
            raise DatasetError(f"{path.name} line 1: field {name!r} appears twice")
        fields.append(name)
        types.append(kind)
    return tuple(fields), tuple(types)


def _check_float(path: Path, number: int, field: str, value: str) -> None:
    if value == "":
        return  # a missing value; callers decide whether the column may miss
    try:
        ok = math.isfinite(float(value))
    except ValueError:
        ok = False
    if not ok:
        raise DatasetError(f"{path.name} line {number}: {field} value {value[:40]!r} is not a finite number")


# --- item text -----------------------------------------------------------------------------------


def clean_text(text: str, limit: int) -> str:
    """Drop control/format characters and newlines, collapse whitespace, cap at `limit` chars.

    Item text is untrusted and ends up inside LLM prompts.
    """
    if not text.isprintable():
        text = "".join(" " if unicodedata.category(ch)[0] == "C" else ch for ch in text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _pick(table: AtomicTable, preferred: tuple[str, ...]) -> str | None:
    return next((name for name in preferred if table.has(name)), None)


def _parse_year(raw: str) -> int | None:
    try:
        value = float(raw)
    except ValueError:
        return None
    return int(value) if value.is_integer() and 1000 <= value <= 2999 else None


def make_item(item_id: str, raw_title: str, raw_year: str | None, raw_genres: str) -> Item:
    """Build one clean `Item`, recording every data quirk it met in `flags`.

    A missing or non-numeric year is taken from a "(1995)" title suffix when there is one
    (ML-100K item 1412 has year "V"); a suffix equal to the year is dropped from the title.
    """
    flags: list[str] = []
    title = clean_text(raw_title, 10 * MAX_TITLE_CHARS)
    given = (raw_year or "").strip()
    year = _parse_year(given) if given else None
    suffix = _YEAR_SUFFIX.search(title)
    if title.lower() in _UNKNOWN_TITLES:
        title = f"Unknown title (item {clean_text(item_id, 40)})"  # ML-100K item 267: "unkonwn"
        flags.append("unknown-title")
    elif suffix and (year is None or int(suffix.group(1)) == year):
        if year is None:
            year = int(suffix.group(1))
            flags.append("year-from-title")
        title = title[: suffix.start()]
    if year is None and given:
        flags.append("bad-year")
    genres = tuple(clean_text(g, MAX_GENRE_CHARS) for g in raw_genres.split()[:MAX_GENRES])
    return Item(item_id=item_id, title=clean_text(title, MAX_TITLE_CHARS), year=year, genres=genres, flags=tuple(flags))


def load_items(path: Path) -> dict[str, Item]:
    """Read the `.item` file, picking title-, year- and genre-like columns by name."""
    table = read_atomic(path, required=("item_id",))
    title_col = _pick(table, TITLE_COLUMNS)
    genre_col = _pick(table, GENRE_COLUMNS)
    if title_col is None:
        title_col = next((f for f, t in zip(table.fields, table.types) if t == "token_seq" and f != genre_col), None)
    year_col = _pick(table, YEAR_COLUMNS)
    ids = table.column("item_id")
    titles = table.column(title_col) if title_col else [""] * len(ids)
    years = table.column(year_col) if year_col else [None] * len(ids)
    genres = table.column(genre_col) if genre_col else [""] * len(ids)
    items: dict[str, Item] = {}
    for number, item_id, title, year, genre in zip(table.line_numbers, ids, titles, years, genres):
        if not item_id.strip():
            raise DatasetError(f"{path.name} line {number}: empty item_id")
        if item_id in items:
            raise DatasetError(f"{path.name} line {number}: item_id {item_id[:40]!r} appears twice")
        items[item_id] = make_item(item_id, title, year, genre)
    return items


# --- the dataset ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadReport:
    """What loading found and did, so callers can warn instead of guessing."""

    interactions: int
    users: int
    items: int
    dropped_unknown_items: int = 0
    duplicate_interactions: int = 0
    has_timestamps: bool = True
    has_ratings: bool = False
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class InteractionArrays:
    """All kept interactions in history order (grouped by user), as parallel arrays of indexes."""

    user: np.ndarray  # int32 index into Dataset.user_ids
    item: np.ndarray  # int32 index into Dataset.item_ids
    timestamp: np.ndarray  # float64; the .inter line order when the file has no timestamps
    rating: np.ndarray  # float32, NaN where missing


def _natural_key(value: str) -> tuple[int, int, str]:
    return (0, int(value), "") if value.isdigit() else (1, 0, value)


class Dataset:
    """An immutable catalog plus interaction log. Build it with `Dataset.from_folder`."""

    def __init__(self, name: str, items: dict[str, Item], user_ids: list[str], interactions: InteractionArrays,
                 report: LoadReport) -> None:
        self.name = name
        self.items: Mapping[str, Item] = MappingProxyType(dict(items))
        self.item_ids: tuple[str, ...] = tuple(items)
        self.user_ids: tuple[str, ...] = tuple(user_ids)
        self.interactions = interactions
        self.report = report
        self._user_pos = {u: i for i, u in enumerate(self.user_ids)}
        self._item_array = np.array(self.item_ids, dtype=object)
        self._offsets = np.searchsorted(interactions.user, np.arange(len(user_ids) + 1))

    @classmethod
    def from_folder(cls, folder: Path, name: str | None = None) -> Dataset:
        name = name or folder.name
        items = load_items(folder / f"{name}.item")
        table = read_atomic(folder / f"{name}.inter", required=("user_id", "item_id"))
        extra_users: list[str] = []
        if (folder / f"{name}.user").exists():
            extra_users = read_atomic(folder / f"{name}.user", required=("user_id",)).column("user_id")
        return cls._build(name, items, table, extra_users)

    @classmethod
    def _build(cls, name: str, items: dict[str, Item], table: AtomicTable, extra_users: Iterable[str]) -> Dataset:
        users, item_col = table.column("user_id"), table.column("item_id")
        for number, user, item in zip(table.line_numbers, users, item_col):
            if not user.strip() or not item.strip():
                raise DatasetError(f"{table.path.name} line {number}: empty {'user_id' if not user.strip() else 'item_id'}")
        notes: list[str] = []
        keep = np.fromiter((item in items for item in item_col), dtype=bool, count=len(item_col))
        dropped = int((~keep).sum())
        if dropped:
            notes.append(f"dropped {dropped} interactions whose item is not in {name}.item")
        has_ts = table.has("timestamp")
        if has_ts:
            ts_raw = table.column("timestamp")
            if "" in ts_raw:
                raise DatasetError(f"{table.path.name} line {table.line_numbers[ts_raw.index('')]}: empty timestamp")
            timestamps = np.array(ts_raw, dtype=np.float64)
        else:
            timestamps = np.arange(len(users), dtype=np.float64)
            notes.append("no timestamp column: history order is the .inter file order")
        has_rating = table.has("rating")
        ratings = np.array([float(r) if r else np.nan for r in table.column("rating")] if has_rating
                           else np.full(len(users), np.nan), dtype=np.float32)
        user_ids = sorted(set(users) | set(extra_users), key=_natural_key)
        user_pos = {u: i for i, u in enumerate(user_ids)}
        item_pos = {it: i for i, it in enumerate(items)}
        u = np.array([user_pos[x] for x in users], dtype=np.int32)[keep]
        i = np.array([item_pos.get(x, -1) for x in item_col], dtype=np.int32)[keep]
        timestamps, ratings = timestamps[keep], ratings[keep]
        order = np.lexsort((np.arange(len(u)), timestamps, u))  # user, then time, then file line
        arrays = InteractionArrays(u[order], i[order], timestamps[order], ratings[order])
        pairs = u.astype(np.int64) * max(len(items), 1) + i
        duplicates = int(len(pairs) - len(np.unique(pairs)))
        if duplicates:
            notes.append(f"{duplicates} repeated (user, item) interactions kept in histories")
        report = LoadReport(interactions=len(u), users=len(user_ids), items=len(items), dropped_unknown_items=dropped,
                            duplicate_interactions=duplicates, has_timestamps=has_ts, has_ratings=has_rating, notes=tuple(notes))
        return cls(name, items, user_ids, arrays, report)

    def users(self) -> list[str]:
        """Every known user (from .inter and .user), in natural id order."""
        return list(self.user_ids)

    def _slice(self, user_id: str) -> slice:
        pos = self._user_pos.get(user_id)
        if pos is None:
            raise UnknownUser(f"unknown user {user_id!r} in dataset {self.name}")
        return slice(int(self._offsets[pos]), int(self._offsets[pos + 1]))

    def history(self, user_id: str) -> UserHistory:
        """The user's items, oldest first, by the module's ordering rule."""
        span = self._slice(user_id)
        return UserHistory(user_id=user_id, item_ids=tuple(self._item_array[self.interactions.item[span]].tolist()))

    def histories(self) -> dict[str, tuple[str, ...]]:
        """Every user's history (possibly empty), by the same ordering rule."""
        return {user: self.history(user).item_ids for user in self.user_ids}

    def user_interactions(self, user_id: str) -> list[Interaction]:
        span = self._slice(user_id)
        arr = self.interactions
        return [Interaction(user_id=user_id, item_id=self.item_ids[int(item)], timestamp=float(ts),
                            rating=None if math.isnan(r) else float(r))
                for item, ts, r in zip(arr.item[span], arr.timestamp[span], arr.rating[span])]

    def item(self, item_id: str) -> Item:
        try:
            return self.items[item_id]
        except KeyError:
            raise UnknownItem(f"unknown item {item_id!r} in dataset {self.name}") from None

    def popularity(self) -> dict[str, int]:
        """Interaction count per item, over every kept interaction (items never seen are absent)."""
        counts = np.bincount(self.interactions.item, minlength=len(self.item_ids))
        return {self.item_ids[j]: int(c) for j, c in enumerate(counts) if c}
