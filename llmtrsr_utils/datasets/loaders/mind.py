"""MIND (Microsoft News Dataset): news articles as items, click logs as sequences.

Raw files (tab-separated, no header, no quoting), as released in ``MINDsmall_train.zip`` and
``MINDlarge_train.zip``:

- ``news.tsv``: News ID, Category, SubCategory, Title, Abstract, URL, Title Entities,
  Abstract Entities;
- ``behaviors.tsv``: Impression ID, User ID, Time (``11/15/2019 8:55:22 AM``), History
  (space-separated news ids, oldest first; may be empty), Impressions (``NewsID-1`` clicked,
  ``NewsID-0`` not).

MIND logs one row per impression, so a user can appear in many rows. ``data.mind_target`` says
how each user becomes one sequence (every row is checked for format whichever is chosen):

- ``history_last`` (default; the authors' ``preprocess/MIND/build_dataset.py``): rows with an
  empty History are dropped, then each user keeps their first remaining row in file order (not
  the latest in time); its History is split on spaces, the last news is the target and the
  news before it the history. The authors do not use the impressions; the kit keeps the chosen
  row's non-clicked news as ``impression_negatives``, so ``data.negative_source=impressions``
  still works (a kit option, not the authors').
- ``latest_impression_click`` (a kit option, not the authors'): each user's latest
  impression with a click (ties on time: the later line); its History is the history,
  its last clicked news in display order the target, its non-clicked news the
  ``impression_negatives``. Users who never click are dropped.

The authors read ``MINDlarge_train`` (``data.variant=large``); the kit's default variant is the
smaller ``MINDsmall_train``. Their filter of 11 to 26 History items is 10 to 25 history items,
which ``data.min_history``/``data.max_history`` apply to every dataset in
:mod:`llmtrsr_utils.datasets.splits`. They then shuffle and keep at most 100,000 sequences; the
kit instead draws ``data.n_*_users`` users at random there.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from llmtrsr_utils.artifacts import sha256_of
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
)

DOMAIN = "news"
# Figure 6 of the paper renders Category, SubCategory and Title; "abstract" is available too.
DEFAULT_ATTRIBUTES = ["category", "subcategory", "title"]
ITEM_ATTRIBUTES = ["category", "subcategory", "title", "abstract"]
# The default variant ("small") first; see folder_names() for the order a config asks for.
FOLDER_NAMES = ("MINDsmall_train", "MINDlarge_train", "mind")
REQUIRED_FILES = ("news.tsv", "behaviors.tsv")
# data.mind_target: the authors' rule first (the default).
MIND_TARGETS = ("history_last", "latest_impression_click")

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


def variant_name(data: DataConfig) -> str:
    """The MIND variant a config asks for: "small" (default) or "large"."""
    variant = data.variant or "small"
    if variant not in VARIANTS:
        raise ValueError(f"data.variant={variant!r} is not a MIND variant; "
                         f"expected one of {', '.join(VARIANTS)} (or null for small)")
    return variant


def folder_names(data: DataConfig) -> tuple[str, ...]:
    """FOLDER_NAMES reordered so the configured variant's folder is looked for first."""
    first = VARIANTS[variant_name(data)][0]
    return (first, *(name for name in FOLDER_NAMES if name != first))


def download(data: DataConfig, dest_root: Path) -> Path:
    """Fetch the configured MIND variant; refused until its licence has been accepted."""
    if not data.accept_licence:
        raise PermissionError(
            "MIND is distributed under the Microsoft Research License Terms "
            f"({LICENCE_URL}). Read them, and if you accept them set data.accept_licence=true "
            "(e.g. --set data.accept_licence=true) to let the kit download MIND; or place "
            "news.tsv and behaviors.tsv yourself and set data.dir.")
    folder, url = VARIANTS[variant_name(data)]
    from llmtrsr_utils.datasets.download import fetch_and_extract

    dest_dir = Path(dest_root) / folder
    # Microsoft publishes no checksum for the zips, so none is pinned.
    fetch_and_extract(url, dest_dir, sha256=None,
                      expected_files={name: None for name in REQUIRED_FILES})
    return dest_dir


def load(data: DataConfig, raw_dir: Path) -> RawDataset:
    """Parse news.tsv into items and behaviors.tsv into one sequence per user.

    Args:
        data: the data config; ``data.mind_target`` picks how a user's rows become a sequence
            (see the module docstring).
        raw_dir: the folder holding news.tsv and behaviors.tsv.

    Returns:
        The canonical dataset; ``counts`` says what was read and what was dropped.
    """
    if data.mind_target not in MIND_TARGETS:
        raise ValueError(f"data.mind_target={data.mind_target!r} is not a MIND target rule; "
                         f"expected one of {', '.join(MIND_TARGETS)}")
    raw_dir = Path(raw_dir)
    news_path, behaviors_path = (raw_dir / name for name in REQUIRED_FILES)
    items, news_read = _read_news(news_path)
    sequences, counts = _read_behaviors(behaviors_path, data.mind_target)
    counts = {"news_read": news_read, "news_duplicate_rows": news_read - len(items), **counts}
    return RawDataset(
        name=data.name, domain=DOMAIN, items=items, sequences=sequences,
        attributes=list(DEFAULT_ATTRIBUTES),
        source_files={p.name: sha256_of(p) for p in (news_path, behaviors_path)},
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


def _read_behaviors(path: Path, mind_target: str) -> tuple[pd.DataFrame, dict[str, int]]:
    """Check every row of behaviors.tsv, then build one sequence per user by ``mind_target``."""
    rows = _read_checked_behaviors(path)
    if mind_target == "history_last":
        sequences, counts = _history_last(rows)
    else:
        sequences, counts = _latest_impression_click(rows)
    sequences = sequences.sort_values(USER_ID, kind="stable").reset_index(drop=True)
    return sequences, {"behaviors_read": len(rows), **counts, "sequences": len(sequences)}


def _read_checked_behaviors(path: Path) -> pd.DataFrame:
    """All rows of behaviors.tsv in file order, with a parsed ``_time``; a bad field is refused
    with its line, whichever rows the target rule will use."""
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
    return rows.assign(_time=times)


def _not_clicked(impressions: str) -> list[str]:
    return [news for news, label in _TOKEN.findall(impressions) if label == "0"]


def _history_last(rows: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """The authors' rule: drop rows with an empty History, keep each user's first row in file
    order, target = History[-1], history = History[:-1]."""
    has_history = (rows["history"].str.strip() != "").to_numpy()
    with_history = rows[has_history]
    # read_records keeps file order: keep="first" is the authors' drop_duplicates(keep='first').
    chosen = with_history.drop_duplicates(subset=[USER_ID], keep="first")
    records = []
    for user, history, impressions in zip(chosen[USER_ID], chosen["history"],
                                          chosen["impressions"], strict=True):
        news = history.split()
        records.append({USER_ID: user, HISTORY: news[:-1], TARGET: news[-1],
                        IMPRESSION_NEGATIVES: _not_clicked(impressions)})
    sequences = pd.DataFrame(records, columns=[USER_ID, HISTORY, TARGET, IMPRESSION_NEGATIVES])
    n_users = int(rows[USER_ID].nunique())
    counts = {
        "behaviors_without_history": int((~has_history).sum()),
        "behaviors_not_first_of_user": len(with_history) - len(chosen),
        "users_read": n_users,
        "users_without_history": n_users - len(chosen),
    }
    return sequences, counts


def _latest_impression_click(rows: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Each user's latest impression with a click: its History, its last clicked news."""
    clicked = rows[rows["impressions"].str.contains(_CLICKED, regex=True)]
    # Latest clicked impression per user; equal times fall back to the later line.
    latest = (clicked.sort_values([USER_ID, "_time", _LINE], kind="stable")
              .drop_duplicates(subset=[USER_ID], keep="last"))
    records = []
    for user, history, impressions in zip(latest[USER_ID], latest["history"],
                                          latest["impressions"], strict=True):
        positives = [news for news, label in _TOKEN.findall(impressions) if label == "1"]
        records.append({USER_ID: user, HISTORY: history.split(), TARGET: positives[-1],
                        IMPRESSION_NEGATIVES: _not_clicked(impressions)})
    sequences = pd.DataFrame(records, columns=[USER_ID, HISTORY, TARGET, IMPRESSION_NEGATIVES])
    n_users = int(rows[USER_ID].nunique())
    counts = {
        "impressions_without_click": len(rows) - len(clicked),
        "users_read": n_users,
        "users_without_click": n_users - len(sequences),
    }
    return sequences, counts


def _first_bad_token(impressions: str) -> str:
    if not impressions:
        return ""
    for token in impressions.split(" "):
        if not _TOKEN.fullmatch(token):
            return token
    return impressions
