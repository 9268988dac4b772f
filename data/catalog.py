"""Load any dataset in RecBole's atomic-file format into an immutable `Dataset`.

Format: `<name>.inter` (required), `<name>.item` (required: item text), `<name>.user` (optional);
tab-separated, with a typed header `field:type`. Errors are `DatasetError`s that name the file,
the line and the problem, because these files are often produced by users' own scripts.

History order (one rule, used everywhere): by timestamp, ties broken by the order of lines in
the .inter file (earlier line = earlier). Without a timestamp column the file order is the order.

Data loss is never silent: interactions whose item is missing from the .item file are dropped with
a note in `LoadReport.notes` (counts, a few ids and their lines), and a file that would lose more
than half of its rows that way, or has no rows at all, is refused.
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
ATTRIBUTE_COLUMNS = ("author", "publisher")
"""Extra text columns read into `Item.attributes` (by exact name, any token/token_seq type), in this order; any other
column is ignored. Book-Crossing's .item has both. A column listed here is never picked as the title."""
MAX_ATTRIBUTE_CHARS = 80
MAX_TITLE_CHARS = 120
MAX_GENRE_CHARS = 40
MAX_GENRES = 20
_UNKNOWN_TITLES = {"", "unknown", "unkonwn"}  # "unkonwn" is ML-100K's own spelling (item 267)
_YEAR_SUFFIX = re.compile(r"\s*\((\d{4})\)\s*$")
MAX_DROPPED_SHARE = 0.5  # more unknown-item rows than this share of the .inter file: refused, not loaded
DROPPED_EXAMPLES = 5


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


def _check_float(path: Path, number: int, field: str, value: str, hint: str = "") -> float:
    """The cell as a float (NaN when empty: callers decide whether the column may miss)."""
    if value == "":
        return math.nan
    try:
        parsed = float(value)
    except ValueError:
        parsed = math.nan
    if not math.isfinite(parsed):
        raise DatasetError(f"{path.name} line {number}: {field} value {value[:40]!r} is not a finite number{hint}")
    return parsed


def _numeric_column(table: AtomicTable, name: str, allow_empty: bool) -> np.ndarray:
    """A column llmrec reads as numbers, whatever its declared type, checked cell by cell (float64, NaN = empty)."""
    kind = table.types[table.fields.index(name)]
    hint = f" (declared {kind}; llmrec reads {name} as a number)" if kind != "float" else ""
    values = np.empty(len(table.rows), dtype=np.float64)
    for n, (number, cell) in enumerate(zip(table.line_numbers, table.column(name))):
        if cell == "" and not allow_empty:
            raise DatasetError(f"{table.path.name} line {number}: empty {name}")
        values[n] = _check_float(table.path, number, name, cell, hint)
    return values


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


def make_item(item_id: str, raw_title: str, raw_year: str | None, raw_genres: str,
              raw_attributes: tuple[tuple[str, str], ...] = ()) -> Item:
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
    attributes = tuple((name, text) for name, value in raw_attributes if (text := clean_text(value, MAX_ATTRIBUTE_CHARS)))
    return Item(item_id=item_id, title=clean_text(title, MAX_TITLE_CHARS), year=year, genres=genres, flags=tuple(flags),
                attributes=attributes)


def load_items(path: Path) -> dict[str, Item]:
    """Read the `.item` file, picking title-, year- and genre-like columns by name, and `ATTRIBUTE_COLUMNS`."""
    table = read_atomic(path, required=("item_id",))
    if not table.rows:
        raise DatasetError(f"{path}: no items (a header and no rows)")
    title_col = _pick(table, TITLE_COLUMNS)
    genre_col = _pick(table, GENRE_COLUMNS)
    if title_col is None:
        title_col = next((f for f, t in zip(table.fields, table.types)
                          if t == "token_seq" and f != genre_col and f not in ATTRIBUTE_COLUMNS), None)
    year_col = _pick(table, YEAR_COLUMNS)
    ids = table.column("item_id")
    titles = table.column(title_col) if title_col else [""] * len(ids)
    years = table.column(year_col) if year_col else [None] * len(ids)
    genres = table.column(genre_col) if genre_col else [""] * len(ids)
    extra = [name for name in ATTRIBUTE_COLUMNS if table.has(name)]
    columns = [table.column(name) for name in extra]
    attributes = [tuple(zip(extra, values)) for values in zip(*columns)] if extra else [()] * len(ids)
    items: dict[str, Item] = {}
    for number, item_id, title, year, genre, attrs in zip(table.line_numbers, ids, titles, years, genres, attributes):
        if not item_id.strip():
            raise DatasetError(f"{path.name} line {number}: empty item_id")
        if item_id in items:
            raise DatasetError(f"{path.name} line {number}: item_id {item_id[:40]!r} appears twice")
        items[item_id] = make_item(item_id, title, year, genre, attrs)
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


def _dropped_note(table: AtomicTable, name: str, keep: np.ndarray) -> str:
    """The note on rows whose item is unknown; a DatasetError when they are most of the file."""
    lost = np.flatnonzero(~keep)
    item_col = table.fields.index("item_id")
    examples = ", ".join(f"{table.rows[j][item_col][:40]!r} (line {table.line_numbers[j]})" for j in lost[:DROPPED_EXAMPLES])
    examples += ", …" if len(lost) > DROPPED_EXAMPLES else ""
    counts = f"{len(lost)} of {len(keep)} interactions"
    if len(lost) > MAX_DROPPED_SHARE * len(keep):
        raise DatasetError(f"{table.path}: {counts} name items that are not in {name}.item (e.g. {examples}); "
                           f"refusing to load a dataset that would lose more than half of its interactions")
    return f"{table.path.name}: dropped {counts} whose item is not in {name}.item (e.g. {examples})"


def _natural_key(value: str) -> tuple[int, int, str]:
    return (0, int(value), "") if value.isdigit() else (1, 0, value)


class Dataset:
    """An immutable catalog plus interaction log. Build it with `Dataset.from_folder`."""

    def __init__(self, name: str, items: dict[str, Item], user_ids: list[str], interactions: InteractionArrays,
                 report: LoadReport, source: str | None = None) -> None:
        self.name = name
        self.source = source or name
        """Where the data comes from: a built-in's name, or the resolved folder. Keys the Chroma collection."""
        self.items: Mapping[str, Item] = MappingProxyType(dict(items))
        self.item_ids: tuple[str, ...] = tuple(items)
        self.user_ids: tuple[str, ...] = tuple(user_ids)
        self.interactions = interactions
        self.report = report
        self._user_pos = {u: i for i, u in enumerate(self.user_ids)}
        self._item_array = np.array(self.item_ids, dtype=object)
        self._offsets = np.searchsorted(interactions.user, np.arange(len(user_ids) + 1))

    @classmethod
    def from_folder(cls, folder: Path, name: str | None = None, source: str | None = None, notes: tuple[str, ...] = ()) -> Dataset:
        """Load `<name>.item`, `<name>.inter` and an optional `<name>.user`; `source` defaults to the resolved folder;
        `notes` (what the caller knows about the data, e.g. a built-in's timestamps are not times) lead the report's notes."""
        name = name or folder.name
        table = read_atomic(folder / f"{name}.inter", required=("user_id", "item_id"))
        items = load_items(folder / f"{name}.item")
        extra_users: list[str] = []
        if (folder / f"{name}.user").exists():
            extra_users = read_atomic(folder / f"{name}.user", required=("user_id",)).column("user_id")
        return cls._build(name, items, table, extra_users, source or str(folder.resolve()), notes)

    @classmethod
    def _build(cls, name: str, items: dict[str, Item], table: AtomicTable, extra_users: Iterable[str], source: str,
               given_notes: tuple[str, ...] = ()) -> Dataset:
        users, item_col = table.column("user_id"), table.column("item_id")
        if not table.rows:
            raise DatasetError(f"{table.path}: no interactions (a header and no rows)")
        for number, user, item in zip(table.line_numbers, users, item_col):
            if not user.strip() or not item.strip():
                raise DatasetError(f"{table.path.name} line {number}: empty {'user_id' if not user.strip() else 'item_id'}")
        keep = np.fromiter((item in items for item in item_col), dtype=bool, count=len(item_col))
        dropped = int((~keep).sum())
        notes = [*given_notes, *([_dropped_note(table, name, keep)] if dropped else [])]
        has_ts = table.has("timestamp")
        if has_ts:
            timestamps = _numeric_column(table, "timestamp", allow_empty=False)
        else:
            timestamps = np.arange(len(users), dtype=np.float64)
            notes.append(f"{table.path.name}: no timestamp column: history order is the .inter file order")
        has_rating = table.has("rating")
        ratings = (_numeric_column(table, "rating", allow_empty=True) if has_rating else np.full(len(users), np.nan)).astype(np.float32)
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
            notes.append(f"{table.path.name}: {duplicates} repeated (user, item) interactions kept in histories")
        report = LoadReport(interactions=len(u), users=len(user_ids), items=len(items), dropped_unknown_items=dropped,
                            duplicate_interactions=duplicates, has_timestamps=has_ts, has_ratings=has_rating, notes=tuple(notes))
        return cls(name, items, user_ids, arrays, report, source)

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
