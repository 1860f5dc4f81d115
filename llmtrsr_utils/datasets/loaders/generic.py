"""Any dataset brought as two CSV files: an item catalogue and timestamped interactions.

- ``items.csv``: header ``item_id,<attribute>,<attribute>,...``; every column after the id is an
  attribute rendered into item text, in file order;
- ``interactions.csv``: header ``user_id,item_id,timestamp``; the timestamp is any number that
  orders a user's interactions (e.g. Unix seconds).

A user's interactions sorted by time make the sequence: the last is the target, the rest the
history. Equal timestamps keep the file's order, so sequences do not depend on sort internals.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd

from llmtrsr_utils.config import DataConfig
from llmtrsr_utils.datasets.base import (
    ITEM_ID,
    USER_ID,
    DataFormatError,
    RawDataset,
    items_from_records,
    numeric_column,
    raw_dataset,
    read_records,
    refuse_compressed,
    require_non_empty,
)

DOMAIN = "generic"
# The attributes are the columns of items.csv after item_id: see attributes_from_header().
DEFAULT_ATTRIBUTES: list[str] = []
FOLDER_NAMES = ("generic",)
REQUIRED_FILES = ("items.csv", "interactions.csv")
INTERACTION_COLUMNS = [USER_ID, ITEM_ID, "timestamp"]
_LINE = "_line"


def download(data: DataConfig, dest_root: Path) -> Path:
    """A generic dataset is the user's own: explain the two files it needs."""
    raise FileNotFoundError(
        "The generic loader reads your own data; there is nothing to download. Put two UTF-8 "
        "CSV files in one folder and point data.dir at it (or name the folder 'generic' under "
        "$LLMTRSR_DATA_DIR): items.csv with header 'item_id,<attribute>,...' (every column after "
        "item_id becomes item text, e.g. item_id,title,category), and interactions.csv with "
        "header 'user_id,item_id,timestamp' (timestamp: a number ordering each user's "
        f"interactions). Looked for under {Path(dest_root)}.")


def attributes_from_header(raw_dir: Path) -> list[str]:
    """The attribute columns of ``items.csv``: its header after ``item_id``, in file order."""
    path = Path(raw_dir) / REQUIRED_FILES[0]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found (expected a header item_id,<attribute>,"
                                "...)")
    refuse_compressed(path)
    with open(path, "rb") as handle:
        first = handle.readline()
    expected = "a header row 'item_id,<attribute>,...' naming at least one attribute"
    if not first.strip():
        raise DataFormatError(path, 1, expected, "an empty file" if not first else "an empty line")
    try:
        text = first.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataFormatError(path, 1, "UTF-8 text",
                              f"byte 0x{first[err.start:err.start + 1].hex()} at column "
                              f"{err.start + 1}") from None
    header = [name.strip().lstrip("\ufeff") for name in next(csv.reader([text]))]
    if header[0] != ITEM_ID or len(header) < 2:
        raise DataFormatError(path, 1, expected, ",".join(header))
    attributes = header[1:]
    for name in attributes:
        if not name or name == ITEM_ID or attributes.count(name) > 1:
            raise DataFormatError(path, 1, f"{expected}, each named once and non-empty",
                                  ",".join(header))
    return attributes


def timestamps(interactions: pd.DataFrame, path: Path) -> pd.Series:
    """The timestamp column as numbers that sort in time: numbers as they are (any unit), or,
    when every value is an ISO 8601 date or date-time (``2024-01-31``, ``2024-01-31T08:00:00Z``),
    seconds since 1970 (UTC; a date-time without a zone is read as UTC). A column that is
    neither names the first value that is not a number (with its line)."""
    column = interactions["timestamp"]
    numbers = pd.to_numeric(column, errors="coerce")
    if numbers.notna().all():
        return numeric_column(interactions, "timestamp", path, header=True)
    parsed = pd.to_datetime(column, format="ISO8601", utc=True, errors="coerce")
    if parsed.notna().all():
        return (parsed - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    # Mixed: the odd one out is the first value of the minority kind.
    odd = numbers.isna() if numbers.notna().sum() >= parsed.notna().sum() else parsed.isna()
    bad = int(odd.to_numpy().nonzero()[0][0])
    raise DataFormatError(path, int(interactions[_LINE].iloc[bad]),
                          "a number or an ISO 8601 date in column 'timestamp'",
                          repr(column.iloc[bad]))


def load(data: DataConfig, raw_dir: Path) -> RawDataset:
    """Parse items.csv (attributes from its header) and interactions.csv into sequences."""
    raw_dir = Path(raw_dir)
    items_path, interactions_path = (raw_dir / name for name in REQUIRED_FILES)
    attributes = attributes_from_header(raw_dir)

    items_raw = read_records(items_path, [ITEM_ID, *attributes], line_column=_LINE)
    items = items_from_records(items_raw, [ITEM_ID, *attributes], items_path, _LINE)

    interactions = read_records(interactions_path, INTERACTION_COLUMNS, line_column=_LINE)
    interactions["timestamp"] = timestamps(interactions, interactions_path)
    require_non_empty(interactions, USER_ID, interactions_path)
    require_non_empty(interactions, ITEM_ID, interactions_path)
    return raw_dataset(data.name, items, attributes, interactions,
                       (items_path, interactions_path), items_read=len(items_raw),
                       counts={"interactions_read": len(interactions)})

