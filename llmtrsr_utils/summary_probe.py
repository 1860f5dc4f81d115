"""The summary probe: does a summary carry information about its user, measured before any
recommender is trained on it (issue 22, item 5)?

Training a recommender per summarizer setting costs about 15 minutes per seed on 2 cores, so
settings are first screened here on the validation users, in seconds once their summaries
exist. A fixed, training-free reader ranks each user's candidates (the same 1 positive + 20
negatives as the evaluation) by how many of the item labels (MovieLens genres, MIND
categories) named in a text each candidate carries:

- ``summary``: the user's own final summary;
- ``another user's summary``: the summary of another user (the history shuffle's seeded
  derangement, :func:`llmtrsr_utils.datasets.splits.derangement`), with the user's own
  candidates: the negative control. A summary that says the same thing for everyone (or
  nothing) scores the same under both; one that describes its user scores higher on its own;
- ``history``: the labels of the history's items themselves, each weighted by how often it
  occurs, a candidate's sum divided by the square root of its label count (the positive
  control: the reader given the labels without a summarizer in between; a summary naming the
  user's main genres can come close to it, or above it, since it drops the rare ones).

Every reader's Recall/MRR/NDCG come from :func:`llmtrsr_utils.metrics.per_user_metrics`, ties
counted at their expected value (a text naming no label ties every candidate: chance,
5/21 = 0.238 Recall@5). The row also says how many labels a summary names, the share of the
history's titles it repeats, and the share of its model calls cut at ``max_new_tokens``.
The paired bootstrap of summary vs another user's summary answers the question; it is a
screen, not the claim, which stays with the trained recommender against ``null-summary``
(:mod:`llmtrsr_utils.decision`).

Written here rather than taken from a library: the label matching is a few regular
expressions over the kit's own item table, and the ranking reuses the kit's metrics.
Labels are matched as words, plural allowed; MovieLens' genres also by the words a summary
uses for them (``comedies``, ``romantic``, ``science fiction``: :data:`LABEL_WORDS`).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np
import pandas as pd

from llmtrsr_utils import metrics, systems
from llmtrsr_utils.artifacts import provenance
from llmtrsr_utils.config import Config
from llmtrsr_utils.datasets.base import HISTORY, ITEM_ID, TARGET, USER_ID
from llmtrsr_utils.datasets.splits import (
    NEGATIVES,
    derangement,
    load_items,
    load_split,
)
from llmtrsr_utils.results import results_dir, write_csv

log = logging.getLogger("llmtrsr")

TABLE = "summary_probe.csv"
LABEL_COLUMNS = ("genres", "category")  # the first the item table has is read
READERS = ("summary", "another user's summary", "history")
# The summarizer settings a row records (what the probe compares).
SETTINGS = ("summarizer.model", "summarizer.summary_style", "summarizer.max_new_tokens",
            "summarizer.no_repeat_ngram_size", "summarizer.repetition_penalty",
            "summarizer.block_size", "summarizer.prompt_format")
# MovieLens' genres, and the other words a summary uses for them (regular expressions on the
# lower-cased text). Any other label is matched as a word, plural allowed.
LABEL_WORDS: dict[str, str] = {
    "Action": r"\baction", "Adventure": r"adventur", "Animation": r"animat|cartoon",
    "Children": r"\bchild|\bkids?\b|\bfamily", "Comedy": r"comed|comic|funny|humou?r",
    "Crime": r"\bcrime|criminal|gangster|heist", "Documentary": r"documentar",
    "Drama": r"drama", "Fantasy": r"fantas", "Film-Noir": r"\bnoir", "Horror": r"horror|scary",
    "IMAX": r"\bimax", "Musical": r"musical", "Mystery": r"myster",
    "Romance": r"romanc|romantic|\blove\b", "Sci-Fi": r"sci-?fi|science[- ]fiction|sci fi",
    "Thriller": r"thrill|suspense", "War": r"\bwars?\b|military", "Western": r"\bwestern",
}
NO_LABEL = "(no genres listed)"  # MovieLens' own placeholder: not a label


def label_column(items: pd.DataFrame, source: str = "items.parquet") -> str:
    """The item table's label column (:data:`LABEL_COLUMNS`).

    Raises:
        ValueError: the table has none of them (naming ``source`` and what was expected).
    """
    for column in LABEL_COLUMNS:
        if column in items.columns:
            return column
    raise ValueError(f"{source}: the summary probe needs an item label column, one of "
                     f"{', '.join(LABEL_COLUMNS)}; the table has {', '.join(items.columns)}")


def item_labels(value: str) -> frozenset[str]:
    """The labels of one item: a comma (or MovieLens' ``|``) separated field."""
    parts = (part.strip() for part in re.split(r"[,|]", value or ""))
    return frozenset(part for part in parts if part and part != NO_LABEL)


def _pattern(label: str) -> re.Pattern[str]:
    return re.compile(LABEL_WORDS.get(label) or rf"\b{re.escape(label.lower())}s?\b")


def named_labels(text: str, patterns: dict[str, re.Pattern[str]]) -> frozenset[str]:
    """The labels a text names (``patterns``: label -> its compiled pattern)."""
    lower = (text or "").lower()
    return frozenset(label for label, pattern in patterns.items() if pattern.search(lower))


def _label_scores(weights: dict[str, float], candidates: Sequence[frozenset[str]],
                  normalise: bool) -> np.ndarray:
    """Each candidate's sum of ``weights`` over its labels (divided by the square root of
    its label count when ``normalise``: a candidate with many genres does not win by count)."""
    scores = []
    for labels in candidates:
        total = sum(weights.get(label, 0.0) for label in labels)
        scores.append(total / np.sqrt(len(labels)) if normalise and labels else total)
    return np.asarray(scores, dtype=float)


def probe_frame(frame: pd.DataFrame, items: pd.DataFrame, summaries: dict[str, str],
                seed: int, source: str = "items.parquet") -> dict[str, pd.DataFrame]:
    """Per-user metrics of the three readers (:data:`READERS`) on one split.

    Args:
        frame: the split, one row per user (``user_id``, ``history``, ``target``,
            ``negatives``).
        items: the item table (``item_id``, a label column, ``title`` if any).
        summaries: user -> final summary; every user of ``frame`` must have one.
        seed: seeds the derangement that hands each user another user's summary.
        source: the item table's file, named in errors.

    Returns:
        Reader -> per-user metrics (index ``user_id``), plus ``"texts"``: per user, the
        labels its summary names and the share of its history's titles it repeats.

    Raises:
        ValueError: no label column, a user without summary, fewer than 2 users.
    """
    column = label_column(items, source)
    users = [str(u) for u in frame[USER_ID]]
    missing = [u for u in users if u not in summaries]
    if missing:
        raise ValueError(f"no summary for {len(missing)} of {len(users)} users (first: "
                         f"{missing[0]}); summarize the split again")
    table = items.set_index(items[ITEM_ID].astype(str))
    labels = {item: item_labels(value) for item, value in table[column].items()}
    patterns = {label: _pattern(label) for label in sorted(set().union(*labels.values()))}
    titles = table["title"].astype(str).str.lower() if "title" in table else None
    donors = derangement(users, seed)
    said = {u: named_labels(summaries[u], patterns) for u in users}
    rows: dict[str, list[np.ndarray]] = {reader: [] for reader in READERS}
    texts = []
    for user, record in zip(users, frame.to_dict("records"), strict=True):
        history = [str(i) for i in record[HISTORY]]
        candidates = [labels[str(i)] for i in [record[TARGET], *record[NEGATIVES]]]
        counts = Counter(label for item in history for label in labels[item])
        rows["summary"].append(_label_scores(dict.fromkeys(said[user], 1.0), candidates, False))
        rows["another user's summary"].append(
            _label_scores(dict.fromkeys(said[donors[user]], 1.0), candidates, False))
        rows["history"].append(_label_scores(dict(counts), candidates, True))
        repeated = (np.mean([titles[i][:20] in summaries[user].lower() for i in history])
                    if titles is not None and history else np.nan)
        texts.append({USER_ID: user, "labels_named": len(said[user]),
                      "titles_repeated": repeated})
    out = {reader: metrics.per_user_metrics(np.vstack(scores), user_ids=users)
           for reader, scores in rows.items()}
    out["texts"] = pd.DataFrame(texts).set_index(USER_ID)
    return out


def probe_row(per_reader: dict[str, pd.DataFrame], metric: str = "recall@5",
              seed: int = 0) -> dict[str, float]:
    """One table row: each reader's ``metric`` with its 95% CI, the paired bootstrap of the
    user's own summary against another user's, and the text statistics."""
    row: dict[str, float] = {}
    for reader in READERS:
        ci = metrics.bootstrap_ci(per_reader[reader], seed=seed, metrics=[metric]).loc[metric]
        row[reader] = float(ci["mean"])
        row[f"{reader}_ci_low"] = float(ci["ci_low"])
        row[f"{reader}_ci_high"] = float(ci["ci_high"])
    test = metrics.paired_bootstrap(per_reader["summary"], per_reader["another user's summary"],
                                    metric, seed=seed)
    row.update({"own_minus_another": test["diff"], "own_minus_another_ci_low": test["ci_low"],
                "own_minus_another_ci_high": test["ci_high"], "p_value": test["p_value"]})
    texts = per_reader["texts"]
    row["labels_named"] = float(texts["labels_named"].mean())
    row["titles_repeated"] = float(texts["titles_repeated"].mean())
    return row


def probe(cfg: Config, split: str = "valid", paradigms: Sequence[str] | None = None, *,
          metric: str = "recall@5", progress: bool = True) -> pd.DataFrame:
    """Probe the summaries of ``split`` (summarizing first what is missing or stale) under the
    config's summarizer settings, one row per paradigm; the rows replace earlier rows of the
    same split, paradigm and settings in ``<work_dir>/results/summary_probe.csv`` (copied to
    the figures folder), so runs with other settings (``--set
    summarizer.summary_style=fields``) gather in one table.

    Returns:
        The whole table.
    """
    from llmtrsr_utils.pipeline import ensure_splits, ensure_summaries

    if metric not in metrics.metric_names():
        raise ValueError(f"metric must be one of {', '.join(metrics.metric_names())}; got "
                         f"{metric!r}")
    data_dir = ensure_splits(cfg)
    frame, items = load_split(data_dir, split), load_items(data_dir)
    new = []
    for paradigm in paradigms or systems.paradigm_names():
        summary_frame = ensure_summaries(cfg, split, paradigm, progress=progress)
        per_reader = probe_frame(frame, items,
                                 dict(zip(summary_frame[USER_ID].astype(str),
                                          summary_frame["final_summary"], strict=True)),
                                 cfg.seed, source=str(data_dir / "items.parquet"))
        calls = summary_frame["n_calls"].sum()
        cut = summary_frame["calls_cut_at_max_new_tokens"].sum()
        new.append({
            "split": split, "paradigm": paradigm, "metric": metric,
            **{key.split(".")[1]: cfg.value_at(key) for key in SETTINGS},
            "summarizer_hash": cfg.fingerprint("summarizer")[:16],
            "n_users": len(frame), **probe_row(per_reader, metric, cfg.seed),
            "calls_cut_share": float(cut / calls) if calls else np.nan,
            "mean_chars": float(summary_frame["final_summary"].str.len().mean()),
            "git_commit": provenance(cfg)["git_commit"],
        })
    path = results_dir(cfg) / TABLE
    table = pd.DataFrame(new)
    if path.is_file():
        old = pd.read_csv(path, dtype={"summarizer_hash": str})
        key = ["split", "paradigm", "metric", "summarizer_hash"]
        fresh = table.set_index(key).index
        old = old[~old.set_index(key).index.isin(fresh)]
        table = pd.concat([old, table], ignore_index=True)
    write_csv(table, path, index=False)
    write_csv(table, cfg.figures_path / TABLE, index=False)  # beside the profile's figures
    return table
