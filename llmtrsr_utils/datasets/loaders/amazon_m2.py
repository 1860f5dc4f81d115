"""Amazon-M2 (KDD Cup 2023 Multilingual Shopping Session dataset): products and sessions.

Raw files, placed by the user (the challenge's terms require signing in to download them):

- ``sessions_train.csv``: ``prev_items,next_item,locale``; ``prev_items`` is numpy's printout of
  an array, e.g. ``['B09W9FND7K' 'B09JSPLN1M']``, wrapped onto several lines inside the quoted
  field for long sessions;
- ``products_train.csv``: ``id,locale,title,price,brand,color,size,model,material,author,desc``.

Each session is one sequence: the previous items are the history, ``next_item`` the target.
The same product id is listed once per locale with text in that locale's language, so both
files are filtered to ``data.locale`` (the authors used UK) before the catalogue is built.

Item text: the authors' ``preprocess/amazon/build_dataset.py`` renders ten attributes, ``id,
title, price, brand, color, size, model, material, author, description`` (``desc`` renamed), and
no locale; the paper's Figures 3 and 8 show items starting with ``Title:``. DEFAULT_ATTRIBUTES
are therefore the nine text fields in the authors' order (``desc`` is rendered with the label
"Description"); the id is rendered first only with ``data.include_item_id``, as the authors'
``id: ...`` was. The locale column is read for the filter and kept in the items table (add
``locale`` to ``data.attributes`` to render it), but it is not rendered by default.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from llmtrsr_utils.artifacts import sha256_of
from llmtrsr_utils.config import DataConfig
from llmtrsr_utils.datasets.base import (
    HISTORY,
    ITEM_ID,
    TARGET,
    USER_ID,
    DataFormatError,
    RawDataset,
    check_unique_items,
    read_records,
)

DOMAIN = "shopping"
# The authors' rendered fields after the id, in their order (no locale); with the id
# (data.include_item_id) they are the ten attributes of Table 1.
DEFAULT_ATTRIBUTES = ["title", "price", "brand", "color", "size", "model", "material", "author",
                      "desc"]
# Every column of products_train.csv after the id: what the items table holds.
ITEM_ATTRIBUTES = ["locale", *DEFAULT_ATTRIBUTES]
FOLDER_NAMES = ("amazon-m2", "amazon_m2", "kddcup2023")
REQUIRED_FILES = ("sessions_train.csv", "products_train.csv")

CHALLENGE_URL = ("https://www.aicrowd.com/challenges/"
                 "amazon-kdd-cup-23-multilingual-recommendation-challenge")
LOCALES = ("DE", "JP", "UK", "ES", "FR", "IT")
SESSION_COLUMNS = ["prev_items", "next_item", "locale"]
PRODUCT_COLUMNS = ["id", *ITEM_ATTRIBUTES]
_LINE = "_line"
# "['id' 'id' ...]": at least one quoted id, separated (and possibly wrapped) by whitespace.
_ARRAY = r"\[\s*'[^'\s]+'(?:\s+'[^'\s]+')*\s*\]"
_QUOTED_ID = re.compile(r"'([^'\s]+)'")
_ARRAY_EXPECTED = "an array of quoted product ids like ['B09W9FND7K' 'B09JSPLN1M']"


def download(data: DataConfig, dest_root: Path) -> Path:
    """Amazon-M2 cannot be fetched unattended: explain where to get it and where to put it."""
    raise FileNotFoundError(
        "Amazon-M2 is not downloaded by the kit: its terms require signing in at "
        f"{CHALLENGE_URL}. Download sessions_train.csv and products_train.csv from the "
        "challenge's resources, put them in one folder, and point data.dir at it (or put the "
        f"folder, named one of {', '.join(FOLDER_NAMES)}, under $LLMTRSR_DATA_DIR; looked for "
        f"under {Path(dest_root)}).")


def load(data: DataConfig, raw_dir: Path) -> RawDataset:
    """Parse both files, keeping only ``data.locale``.

    With ``locale`` None every session is kept and, since a product id then has one row per
    locale, the catalogue keeps the first row of each id in file order.
    """
    raw_dir = Path(raw_dir)
    sessions_path, products_path = (raw_dir / name for name in REQUIRED_FILES)
    locale = data.locale
    if locale is not None and locale not in LOCALES:
        raise ValueError(f"data.locale={locale!r} is not an Amazon-M2 locale; expected one of "
                         f"{', '.join(LOCALES)} or null for all")

    sessions = read_records(sessions_path, SESSION_COLUMNS, line_column=_LINE)
    # Record numbers, not line numbers, name sessions: stable however the arrays wrap.
    sessions["user_id"] = [f"session-{n}" for n in range(1, len(sessions) + 1)]
    _check_sessions(sessions, sessions_path)
    kept = sessions if locale is None else sessions[sessions["locale"] == locale]
    sequences = pd.DataFrame({
        USER_ID: kept["user_id"].to_list(),
        HISTORY: [_QUOTED_ID.findall(text) for text in kept["prev_items"]],
        TARGET: kept["next_item"].to_list(),
    }, columns=[USER_ID, HISTORY, TARGET])
    sequences = sequences.sort_values(USER_ID, kind="stable").reset_index(drop=True)

    products = read_records(products_path, PRODUCT_COLUMNS, line_column=_LINE)
    empty = products.index[products["id"].str.strip() == ""]
    if len(empty):
        raise DataFormatError(products_path, int(products[_LINE].iloc[empty[0]]),
                              "a product id in column 'id'", "''")
    if locale is None:
        chosen = products.drop_duplicates(subset=["id"], keep="first")
    else:
        chosen = products[products["locale"] == locale]
    items = chosen[PRODUCT_COLUMNS].rename(columns={"id": ITEM_ID})
    # check_unique_items reports index + 2 as the line (header file); descriptions span lines,
    # so index the rows by their first physical line for the report to name the right one.
    items.index = chosen[_LINE].to_numpy() - 2
    items = check_unique_items(items, products_path, ITEM_ATTRIBUTES)
    items = items.reset_index(drop=True)

    return RawDataset(
        name=data.name, domain=DOMAIN, items=items, sequences=sequences,
        attributes=list(DEFAULT_ATTRIBUTES),
        source_files={p.name: sha256_of(p) for p in (sessions_path, products_path)},
        counts={
            "sessions_read": len(sessions),
            "sessions_kept_locale": len(sequences),
            "sessions_other_locale": len(sessions) - len(sequences),
            "products_read": len(products),
            "products_kept": len(items),
            "products_dropped": len(products) - len(items),
        },
    )


def _check_sessions(sessions: pd.DataFrame, path: Path) -> None:
    """Every field of every session is checked, whichever locale is kept: a bad file is bad."""
    bad = (~sessions["prev_items"].str.fullmatch(_ARRAY)).to_numpy().nonzero()[0]
    if len(bad):
        first = int(bad[0])
        raise DataFormatError(path, int(sessions[_LINE].iloc[first]), _ARRAY_EXPECTED,
                              repr(_shorten(sessions["prev_items"].iloc[first])))
    bad = (~sessions["next_item"].str.fullmatch(r"[^'\s]+")).to_numpy().nonzero()[0]
    if len(bad):
        first = int(bad[0])
        raise DataFormatError(path, int(sessions[_LINE].iloc[first]),
                              "a product id in column 'next_item'",
                              repr(sessions["next_item"].iloc[first]))
    bad = (~sessions["locale"].isin(LOCALES)).to_numpy().nonzero()[0]
    if len(bad):
        first = int(bad[0])
        raise DataFormatError(path, int(sessions[_LINE].iloc[first]),
                              f"a locale in column 'locale' ({', '.join(LOCALES)})",
                              repr(sessions["locale"].iloc[first]))


def _shorten(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
