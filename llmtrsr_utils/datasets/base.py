"""The canonical form every loader produces, and strict readers for the raw files.

Each loader returns a :class:`RawDataset`: an items table (``item_id`` plus ordered text
attributes) and a sequences table (``user_id``, chronological ``history`` of item ids,
``target`` item id). Filtering, splitting and negative sampling happen once, in
:mod:`llmtrsr_utils.datasets.splits`, for every dataset alike.

The readers use the standard ``csv`` module rather than ``pandas.read_csv``: pandas fills a row
with too few fields with empty strings and reports decoding errors without a line number, and
both must be refused here with the file and line named.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from llmtrsr_utils.artifacts import sha256_of

ITEM_ID = "item_id"
USER_ID = "user_id"
HISTORY = "history"
TARGET = "target"
# Optional per-sequence column: negatives offered by the dataset itself (MIND impressions).
IMPRESSION_NEGATIVES = "impression_negatives"

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # Amazon-M2 descriptions exceed the default


class DataFormatError(ValueError):
    """A raw data file that does not have the expected format: names file, line and expectation."""

    def __init__(self, path: str | Path, line: int | None, expected: str, got: str | None = None):
        self.path = str(path)
        self.line = line
        self.expected = expected
        self.got = got
        where = f"{self.path}:{line}" if line is not None else self.path
        message = f"{where}: expected {expected}"
        if got is not None:
            message += f"; got {got}"
        super().__init__(message)


@dataclass
class RawDataset:
    """A dataset in canonical form, before users are filtered and split."""

    name: str
    domain: str  # "movies", "news", "shopping" or "generic": selects prompt wording and labels
    items: pd.DataFrame  # item_id + attribute columns, all str, item_id unique
    sequences: pd.DataFrame  # user_id, history (list[str], oldest first), target
    attributes: list[str]  # the dataset's default attribute order for rendering
    source_files: dict[str, str] = field(default_factory=dict)  # file name -> sha256
    counts: dict[str, Any] = field(default_factory=dict)  # what the loader read and dropped


def _first_undecodable_line(path: Path) -> tuple[int, str]:
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as err:
                bad = raw[err.start:err.start + 1]
                return number, f"byte 0x{bad.hex()} at column {err.start + 1}"
    return 0, "an undecodable byte"


COMPRESSED = ((b"\x1f\x8b", "gzip", "gunzip"), (b"PK\x03\x04", "zip", "unzip"),
              (b"BZh", "bzip2", "bunzip2"), (b"\xfd7zXZ", "xz", "unxz"))


def refuse_compressed(path: Path) -> None:
    """A compressed file under a text file's name is named as such (it would otherwise be
    reported as a stray byte that is not UTF-8)."""
    with open(path, "rb") as handle:
        magic = handle.read(6)
    for signature, kind, tool in COMPRESSED:
        if magic.startswith(signature):
            raise DataFormatError(path, None, "plain UTF-8 delimited text",
                                  f"a {kind}-compressed file; decompress it first ({tool})")


def read_records(path: str | Path, columns: Sequence[str], *, delimiter: str = ",",
                 header: bool = True, quoted: bool = True,
                 min_columns: int | None = None,
                 line_column: str | None = None) -> pd.DataFrame:
    """Read a delimited UTF-8 file into a DataFrame of strings, refusing malformed rows.

    ``columns`` are the expected fields in order. With ``header`` the first row must name them
    (extra trailing columns in the header are an error too). ``min_columns`` allows rows with
    fewer trailing fields (missing ones become ""), for formats whose last fields are optional.
    ``line_column`` adds an int column holding each record's first physical line, for errors
    found later (a record may span lines when a quoted field holds a newline).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found (expected {', '.join(columns)})")
    refuse_compressed(path)
    n_expected = len(columns)
    n_min = n_expected if min_columns is None else min_columns
    rows: list[list[str]] = []
    sep_name = "tab" if delimiter == "\t" else repr(delimiter)
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle, delimiter=delimiter,
                                quoting=csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE,
                                strict=quoted)
            line_start = 1
            try:
                if header:
                    first = next(reader, None)
                    if first is None:
                        raise DataFormatError(path, 1, f"a header row naming {', '.join(columns)}",
                                              "an empty file")
                    if [c.strip().lstrip("\ufeff") for c in first] != list(columns):
                        raise DataFormatError(path, 1, f"header {','.join(columns)}",
                                              ",".join(first))
                    line_start = reader.line_num + 1
                for row in reader:
                    if row in ([], [""]):  # a blank line (often at the end): skipped
                        line_start = reader.line_num + 1
                        continue
                    row = [field.replace("\r\n", "\n") for field in row]  # Windows files
                    if not (n_min <= len(row) <= n_expected):
                        count = (f"{n_expected}" if n_min == n_expected
                                 else f"{n_min} to {n_expected}")
                        raise DataFormatError(
                            path, line_start,
                            f"{count} {sep_name}-separated fields ({', '.join(columns)})",
                            f"{len(row)} field{'s' if len(row) != 1 else ''}")
                    if len(row) < n_expected:
                        row = row + [""] * (n_expected - len(row))
                    if line_column:
                        row.append(line_start)
                    rows.append(row)
                    line_start = reader.line_num + 1
            except csv.Error as err:
                raise DataFormatError(path, reader.line_num, "well-formed quoted fields",
                                      str(err)) from None
    except UnicodeDecodeError:
        line, what = _first_undecodable_line(path)
        raise DataFormatError(path, line, "UTF-8 text", what) from None
    if not rows:
        raise DataFormatError(path, None, "at least one data row", "none")
    names = [*columns, line_column] if line_column else list(columns)
    frame = pd.DataFrame(rows, columns=names, dtype=object)
    if line_column:
        frame[line_column] = frame[line_column].astype("int64")
    return frame


def numeric_column(frame: pd.DataFrame, column: str, path: Path | str, *, header: bool,
                   kind: str = "float") -> pd.Series:
    """Convert a string column to numbers; the first bad value is reported with its line.

    Line numbers assume one record per physical line (true for every numeric-bearing file the
    loaders read: ratings, interactions, behaviors).
    """
    converted = pd.to_numeric(frame[column], errors="coerce")
    bad = converted.isna()
    if bad.any():
        position = int(bad.to_numpy().nonzero()[0][0])
        line = position + 1 + (1 if header else 0)
        raise DataFormatError(path, line, f"a number in column '{column}'",
                              repr(frame[column].iloc[position]))
    if kind == "int":
        if (converted % 1 != 0).any():
            position = int(((converted % 1) != 0).to_numpy().nonzero()[0][0])
            raise DataFormatError(path, position + 1 + (1 if header else 0),
                                  f"an integer in column '{column}'",
                                  repr(frame[column].iloc[position]))
        return converted.astype("int64")
    return converted.astype("float64")


def check_unique_items(items: pd.DataFrame, path: Path | str, attributes: Sequence[str],
                       *, header: bool = True) -> pd.DataFrame:
    """Exact duplicate rows are collapsed; the same id with different text is an error."""
    duplicated = items[ITEM_ID].duplicated(keep=False)
    if not duplicated.any():
        return items
    dupes = items[duplicated]
    for item_id, group in dupes.groupby(ITEM_ID, sort=False):
        texts = group[list(attributes)].drop_duplicates()
        if len(texts) > 1:
            positions = group.index.tolist()
            line = positions[1] + 1 + (1 if header else 0)
            raise DataFormatError(path, line, f"item id {item_id!r} to appear once (or repeat "
                                  f"identical text)", f"a second, different row for it (first at "
                                  f"line {positions[0] + 1 + (1 if header else 0)})")
    return items.drop_duplicates(subset=[ITEM_ID], keep="first").reset_index(drop=True)


def require_non_empty(frame: pd.DataFrame, column: str, path: Path | str,
                      line_column: str = "_line") -> None:
    """Refuse an empty value in ``column``, naming the record's line (``line_column``)."""
    empty = frame.index[frame[column].str.strip() == ""]
    if len(empty):
        raise DataFormatError(path, int(frame[line_column].iloc[empty[0]]),
                              f"a non-empty value in column '{column}'", "''")


def items_from_records(raw: pd.DataFrame, columns: Sequence[str], path: Path | str,
                       line_column: str = "_line") -> pd.DataFrame:
    """The catalogue of a header-and-records file read by :func:`read_records`: ``columns``
    (item_id first, then the attributes), every id non-empty, one row per id (exact repeats
    collapsed; the same id with different text is an error naming both lines).

    Quoted text may span lines, so rows are indexed by their first physical line
    (``line_column``) for the error to name the right one.
    """
    require_non_empty(raw, ITEM_ID, path, line_column)
    items = raw[list(columns)].copy()
    items.index = raw[line_column].to_numpy() - 2  # check_unique_items reports index + 2
    return check_unique_items(items, path, list(columns)[1:]).reset_index(drop=True)


def sequences_by_time(interactions: pd.DataFrame, line_column: str = "_line"
                      ) -> tuple[pd.DataFrame, pd.Series]:
    """Each user's interactions ordered by ``timestamp`` (ties: the file's order, from
    ``line_column``) make a sequence: the last item is the target, the rest the history.

    Returns:
        (sequences of users with at least 2 interactions, sorted by user; each user's ordered
        item list, every user).
    """
    ordered = interactions.sort_values([USER_ID, "timestamp", line_column], kind="stable")
    per_user = ordered.groupby(USER_ID, sort=True)[ITEM_ID].agg(list)
    long_enough = per_user[per_user.map(len) >= 2]
    sequences = pd.DataFrame({
        USER_ID: long_enough.index.to_list(),
        HISTORY: [ids[:-1] for ids in long_enough],
        TARGET: [ids[-1] for ids in long_enough],
    }, columns=[USER_ID, HISTORY, TARGET])
    return sequences.sort_values(USER_ID, kind="stable").reset_index(drop=True), per_user


def raw_dataset(name: str, items: pd.DataFrame, attributes: Sequence[str],
                interactions: pd.DataFrame, paths: Sequence[Path], *, items_read: int,
                counts: dict[str, int | str], line_column: str = "_line") -> RawDataset:
    """A "generic"-domain dataset from parsed tables (the generic and RecBole loaders'): each
    user's interactions ordered by ``timestamp`` (ties: file order, ``line_column``) become a
    sequence.

    Args:
        name: the dataset's name in the manifest.
        items: the catalogue, one row per item (:func:`items_from_records`).
        attributes: the item columns rendered as text, in order.
        interactions: ``user_id``, ``item_id``, numeric ``timestamp`` and ``line_column``,
            checked.
        paths: the raw files, fingerprinted (sha256) in the manifest.
        items_read: item rows read, before duplicates were collapsed.
        counts: the loader's own counts, placed after the item counts.
        line_column: the column holding each interaction's line in its file.

    Returns:
        The canonical :class:`RawDataset` (users with one interaction are dropped, counted).
    """
    sequences, per_user = sequences_by_time(interactions, line_column)
    return RawDataset(
        name=name, domain="generic", items=items, sequences=sequences,
        attributes=list(attributes),
        source_files={p.name: sha256_of(p) for p in paths},
        counts={
            "items_read": items_read,
            "items_duplicate_rows": items_read - len(items),
            **counts,
            "users_read": len(per_user),
            "users_with_one_interaction": len(per_user) - len(sequences),
            "sequences": len(sequences),
        },
    )
