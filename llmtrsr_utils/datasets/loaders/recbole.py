"""RecBole's atomic files, read without conversion: ``<name>.inter`` and ``<name>.item``.

RecBole (recbole.io, "Atomic Files") publishes dozens of datasets in one format: Amazon reviews
with titles and descriptions, Yelp, Steam, MIND, MovieLens and more. Each file is tab-separated
UTF-8 with a header naming every field as ``name:type``, type one of ``token``, ``token_seq``
(space-separated tokens), ``float`` or ``float_seq``; values are not quoted. For example::

    ml-1m.inter   user_id:token  item_id:token  rating:float  timestamp:float
    ml-1m.item    item_id:token  movie_title:token_seq  release_year:token  genre:token_seq

Settings: ``data.variant`` is the dataset's name (the files' stem, e.g. ``ml-1m``, found in
``data.dir``, or under ``$LLMTRSR_DATA_DIR/<name>`` or ``$LLMTRSR_DATA_DIR/recbole/<name>``);
``data.attributes`` chooses which ``.item`` fields become item text (default: every ``token``
and ``token_seq`` field after ``item_id``, in file order; a ``token_seq`` is rendered as its
space-joined tokens, which is how RecBole stores titles and descriptions). With a ``rating``
field in ``.inter``, ``data.min_rating`` drops the interactions below it.

A user's interactions sorted by ``timestamp`` make the sequence (the last is the target); a file
without a ``timestamp`` field keeps the file's order, as RecBole does. An item without any text
is kept (its line renders empty) and counted in the manifest (``items_without_text``).

Written by hand rather than through ``recbole.data``: RecBole's reader builds its whole
training framework (torch datasets, remapped integer ids, its own config) to read two files,
and the kit needs only the raw tokens in canonical form.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from llmtrsr_utils.config import ConfigError, DataConfig
from llmtrsr_utils.datasets.base import (
    ITEM_ID,
    USER_ID,
    DataFormatError,
    RawDataset,
    items_from_records,
    numeric_column,
    raw_dataset,
    read_records,
    require_non_empty,
)

DOMAIN = "generic"
# Every token/token_seq field of the .item file after item_id: see item_fields().
DEFAULT_ATTRIBUTES: list[str] = []
FIELD_TYPES = ("token", "token_seq", "float", "float_seq")
TEXT_TYPES = ("token", "token_seq")
_LINE = "_line"


def dataset_name(data: DataConfig) -> str:
    """The RecBole dataset's name (``data.variant``): the stem of its atomic files."""
    if not data.variant:
        raise ConfigError("data.variant: expected the RecBole dataset's name, the stem of its "
                          "atomic files (e.g. ml-1m for ml-1m.inter and ml-1m.item)")
    return data.variant


def folder_names(data: DataConfig) -> tuple[str, ...]:
    name = dataset_name(data)
    return (name, f"recbole/{name}")


def required_files(data: DataConfig) -> tuple[str, ...]:
    name = dataset_name(data)
    return (f"{name}.inter", f"{name}.item")


def download(data: DataConfig, dest_root: Path) -> Path:
    """RecBole's datasets come from its own site; say where and where to put them."""
    name = dataset_name(data)
    raise FileNotFoundError(
        f"recbole: {name}.inter and {name}.item not found. Download the dataset's atomic files "
        "from RecBole's dataset list (https://recbole.io/dataset_list.html), unzip them into "
        f"one folder and set data.dir to it (or put it at $LLMTRSR_DATA_DIR/{name}). Looked "
        f"for under {Path(dest_root)}.")


def read_header(path: Path) -> list[tuple[str, str]]:
    """The ``(name, type)`` of every field named in an atomic file's header (its first line)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found (expected a RecBole atomic file with "
                                f"a header of name:type fields)")
    with open(path, "rb") as handle:
        first = handle.readline()
    try:
        text = first.decode("utf-8").rstrip("\r\n").lstrip("\ufeff")
    except UnicodeDecodeError as err:
        bad = first[err.start:err.start + 1].hex()
        raise DataFormatError(path, 1, "UTF-8 text",
                              f"byte 0x{bad} at column {err.start + 1}") from None
    expected = f"a tab-separated header of name:type fields, type one of {', '.join(FIELD_TYPES)}"
    fields = []
    for part in text.split("\t"):
        name, sep, kind = part.strip().rpartition(":")
        if not sep or not name or kind not in FIELD_TYPES:
            raise DataFormatError(path, 1, expected, repr(part) if text else "an empty line")
        fields.append((name, kind))
    names = [name for name, _ in fields]
    if len(set(names)) != len(names):
        raise DataFormatError(path, 1, f"{expected}, each name once", text)
    return fields


def _read(path: Path, fields: list[tuple[str, str]]) -> pd.DataFrame:
    """Rows of an atomic file as strings, columns named without their types."""
    frame = read_records(path, [f"{name}:{kind}" for name, kind in fields], delimiter="\t",
                         quoted=False, line_column=_LINE)
    return frame.rename(columns={f"{name}:{kind}": name for name, kind in fields})


def _require(fields: list[tuple[str, str]], name: str, kinds: tuple[str, ...],
             path: Path) -> None:
    found = dict(fields)
    if found.get(name) not in kinds:
        raise DataFormatError(path, 1, f"a field {name}:{' or '.join(kinds)} in the header",
                              "\t".join(f"{n}:{k}" for n, k in fields))


def item_fields(fields: list[tuple[str, str]]) -> list[str]:
    """The .item fields rendered by default: every token/token_seq field after item_id."""
    return [name for name, kind in fields if name != ITEM_ID and kind in TEXT_TYPES]


def load(data: DataConfig, raw_dir: Path) -> RawDataset:
    """Parse ``<name>.item`` and ``<name>.inter`` into the canonical items and sequences."""
    raw_dir = Path(raw_dir)
    items_path, inter_path = (raw_dir / f"{dataset_name(data)}.{ext}" for ext in ("item", "inter"))

    item_header = read_header(items_path)
    _require(item_header, ITEM_ID, ("token",), items_path)
    attributes = item_fields(item_header)
    items_raw = _read(items_path, item_header)
    for name, kind in item_header:  # a token_seq is its tokens joined by single spaces
        if kind == "token_seq" and name != ITEM_ID:
            items_raw[name] = items_raw[name].map(lambda text: " ".join(text.split()))
    columns = [ITEM_ID, *(name for name, _ in item_header if name != ITEM_ID)]
    items = items_from_records(items_raw, columns, items_path, _LINE)
    without_text = int((items[attributes].apply(lambda c: c.str.strip() == "").all(axis=1))
                       .sum()) if attributes else len(items)

    inter_header = read_header(inter_path)
    _require(inter_header, USER_ID, ("token",), inter_path)
    _require(inter_header, ITEM_ID, ("token",), inter_path)
    names = dict(inter_header)
    interactions = _read(inter_path, inter_header)
    require_non_empty(interactions, USER_ID, inter_path)
    require_non_empty(interactions, ITEM_ID, inter_path)
    has_time = names.get("timestamp") == "float"
    interactions["timestamp"] = (numeric_column(interactions, "timestamp", inter_path,
                                                header=True) if has_time
                                 else interactions[_LINE].astype("float64"))
    read = len(interactions)
    below = 0
    if names.get("rating") == "float" and data.min_rating > 0:
        ratings = numeric_column(interactions, "rating", inter_path, header=True)
        below = int((ratings < data.min_rating).sum())
        interactions = interactions[ratings >= data.min_rating]
    # Timestamp ties keep the file's order (RecBole sorts stably too).
    return raw_dataset(f"recbole:{dataset_name(data)}", items, attributes, interactions,
                       (items_path, inter_path), items_read=len(items_raw), counts={
                           "items_without_text": without_text,
                           "interactions_read": read,
                           "interactions_below_min_rating": below,
                           "interactions_ordered_by": "timestamp" if has_time else "file order",
                       })
