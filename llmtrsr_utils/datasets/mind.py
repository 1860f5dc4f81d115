"""MIND (Microsoft News Dataset): news articles as items, click logs as sequences.

Raw files (tab-separated, no header, no quoting), as released in ``MINDsmall_train.zip`` and
``MINDlarge_train.zip``:

- ``news.tsv``: News ID, Category, SubCategory, Title, Abstract, URL, Title Entities,
  Abstract Entities;
- ``behaviors.tsv``: Impression ID, User ID, Time (``11/15/2019 8:55:22 AM``), History
  (space-separated news ids, oldest first), Impressions (``NewsID-1`` clicked, ``NewsID-0`` not).

MIND logs one row per impression, so a user appears many times with growing histories. As the
authors did, each user is deduplicated to one sequence: the user's latest impression with a
click (ties on time: the later line), whose History is the history and whose last clicked news
is the target; the impression's non-clicked news are kept as ``impression_negatives`` for
``data.negative_source=impressions``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from llmtrsr_utils.config import DataConfig
from llmtrsr_utils.datasets.base import (
    HISTORY,
    IMPRESSION_NEGATIVES,
    ITEM_ID,
    TARGET,
    USER_ID,
    DataFormatError,
    RawDataset,
    check_unique_items,
    read_records,
    sha256_file,
)

DOMAIN = "news"
# Figure 6 of the paper renders Category, SubCategory and Title; "abstract" is available too.
DEFAULT_ATTRIBUTES = ["category", "subcategory", "title"]
ITEM_ATTRIBUTES = ["category", "subcategory", "title", "abstract"]
# The default variant ("small") first; see folder_names() for the order a config asks for.
FOLDER_NAMES = ("MINDsmall_train", "MINDlarge_train", "mind")
REQUIRED_FILES = ("news.tsv", "behaviors.tsv")

VARIANTS = {
    "small": ("MINDsmall_train",
              "https://mind201910small.blob.core.windows.net/release/MINDsmall_train.zip"),
    "large": ("MINDlarge_train",
              "https://mind201910small.blob.core.windows.net/release/MINDlarge_train.zip"),
}
LICENCE_URL = "https://github.com/msnews/MIND/blob/master/MSR%20License_Data.pdf"

NEWS_COLUMNS = ["news_id", "category", "subcategory", "title", "abstract", "url",
                "title_entities", "abstract_entities"]
BEHAVIOR_COLUMNS = ["impression_id", "user_id", "time", "history", "impressions"]
TIME_FORMAT = "%m/%d/%Y %I:%M:%S %p"
_LINE = "_line"
# One or more "NewsID-label" tokens separated by single spaces, label 0 or 1.
_IMPRESSIONS = r"\S+-[01](?: \S+-[01])*"
_CLICKED = r"-1(?: |$)"
_TOKEN = re.compile(r"(\S+)-([01])")


def variant_name(cfg: DataConfig) -> str:
    """The MIND variant a config asks for: "small" (default) or "large"."""
    variant = cfg.variant or "small"
    if variant not in VARIANTS:
        raise ValueError(f"data.variant={variant!r} is not a MIND variant; "
                         f"expected one of {', '.join(VARIANTS)} (or null for small)")
    return variant


def folder_names(cfg: DataConfig) -> tuple[str, ...]:
    """FOLDER_NAMES reordered so the configured variant's folder is looked for first."""
    first = VARIANTS[variant_name(cfg)][0]
    return (first, *(name for name in FOLDER_NAMES if name != first))


def download(cfg: DataConfig, dest_root: Path) -> Path:
    """Fetch the configured MIND variant; refused until its licence has been accepted."""
    if not cfg.accept_licence:
        raise PermissionError(
            "MIND is distributed under the Microsoft Research License Terms "
            f"({LICENCE_URL}). Read them, and if you accept them set data.accept_licence=true "
            "(e.g. --set data.accept_licence=true) to let the kit download MIND; or place "
            "news.tsv and behaviors.tsv yourself and set data.dir.")
    folder, url = VARIANTS[variant_name(cfg)]
    from llmtrsr_utils.datasets.download import fetch_and_extract

    dest_dir = Path(dest_root) / folder
    # Microsoft publishes no checksum for the zips, so none is pinned.
    fetch_and_extract(url, dest_dir, sha256=None,
                      expected_files={name: None for name in REQUIRED_FILES})
    return dest_dir


def load(cfg: DataConfig, raw_dir: Path) -> RawDataset:
    """Parse news.tsv into items and behaviors.tsv into one deduplicated sequence per user."""
    raw_dir = Path(raw_dir)
    news_path, behaviors_path = (raw_dir / name for name in REQUIRED_FILES)
    items, news_read = _read_news(news_path)
    sequences, counts = _read_behaviors(behaviors_path)
    counts = {"news_read": news_read, "news_duplicate_rows": news_read - len(items), **counts}
    return RawDataset(
        name=cfg.name, domain=DOMAIN, items=items, sequences=sequences,
        attributes=list(DEFAULT_ATTRIBUTES),
        source_files={p.name: sha256_file(p) for p in (news_path, behaviors_path)},
        counts=counts,
    )


def _read_news(path: Path) -> tuple[pd.DataFrame, int]:
    news = read_records(path, NEWS_COLUMNS, delimiter="\t", header=False, quoted=False,
                        line_column=_LINE)
    empty = news.index[news["news_id"].str.strip() == ""]
    if len(empty):
        raise DataFormatError(path, int(news[_LINE].iloc[empty[0]]), "a news id in field 1", "''")
    items = news[["news_id", *ITEM_ATTRIBUTES]].rename(columns={"news_id": ITEM_ID})
    # check_unique_items reports index + 1 as the line of a headerless file: index by line.
    items.index = news[_LINE].to_numpy() - 1
    items = check_unique_items(items, path, ITEM_ATTRIBUTES, header=False)
    return items.reset_index(drop=True), len(news)


def _read_behaviors(path: Path) -> tuple[pd.DataFrame, dict[str, int]]:
    rows = read_records(path, BEHAVIOR_COLUMNS, delimiter="\t", header=False, quoted=False,
                        line_column=_LINE)
    times = pd.to_datetime(rows["time"], format=TIME_FORMAT, errors="coerce")
    bad = times.isna().to_numpy().nonzero()[0]
    if len(bad):
        first = int(bad[0])
        raise DataFormatError(path, int(rows[_LINE].iloc[first]),
                              "a time like '11/15/2019 8:55:22 AM' in field 3",
                              repr(rows["time"].iloc[first]))
    bad = (~rows["impressions"].str.fullmatch(_IMPRESSIONS)).to_numpy().nonzero()[0]
    if len(bad):
        first = int(bad[0])
        raise DataFormatError(path, int(rows[_LINE].iloc[first]),
                              "space-separated impressions like 'N78206-0 N26368-1' in field 5 "
                              "(news id, '-', label 0 or 1)",
                              repr(_first_bad_token(rows["impressions"].iloc[first])))
    empty = rows.index[rows["user_id"].str.strip() == ""]
    if len(empty):
        raise DataFormatError(path, int(rows[_LINE].iloc[empty[0]]), "a user id in field 2", "''")

    rows = rows.assign(_time=times)
    clicked = rows[rows["impressions"].str.contains(_CLICKED, regex=True)]
    # Latest clicked impression per user; equal times fall back to the later line.
    latest = (clicked.sort_values([USER_ID, "_time", _LINE], kind="stable")
              .drop_duplicates(subset=[USER_ID], keep="last"))
    records = []
    for user, history, impressions in zip(latest[USER_ID], latest["history"],
                                          latest["impressions"], strict=True):
        tokens = _TOKEN.findall(impressions)
        positives = [news for news, label in tokens if label == "1"]
        negatives = [news for news, label in tokens if label == "0"]
        records.append({USER_ID: user, HISTORY: history.split(), TARGET: positives[-1],
                        IMPRESSION_NEGATIVES: negatives})
    sequences = pd.DataFrame(records, columns=[USER_ID, HISTORY, TARGET, IMPRESSION_NEGATIVES])
    sequences = sequences.sort_values(USER_ID, kind="stable").reset_index(drop=True)
    n_users = int(rows[USER_ID].nunique())
    counts = {
        "behaviors_read": len(rows),
        "impressions_without_click": len(rows) - len(clicked),
        "users_read": n_users,
        "users_without_click": n_users - len(sequences),
        "sequences": len(sequences),
    }
    return sequences, counts


def _first_bad_token(impressions: str) -> str:
    if not impressions:
        return ""
    for token in impressions.split(" "):
        if not _TOKEN.fullmatch(token):
            return token
    return impressions
