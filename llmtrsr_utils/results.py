"""The results store and reporting: every evaluation row, every per-user score file, the grid
and efficiency tables, read and written here, and the reports made from them (Table 2, the
results CSV beside the figures).

``<work_dir>/results/metrics.parquet`` holds one row per (system, split, epoch or checkpoint)
with every metric's mean and 95% CI, the timings, the prompt shortening counts, the params hash,
versions and commit. Each row names its per-user score file (``scores_file``), keyed like the
row: ``scores/<system>_<split>_<params hash>_seed<training seed>.parquet``, so the same system
evaluated under two params or seeds in one work dir keeps both, and a paired test reads the
scores of exactly the rows it compares. Table 2 and the paired tests pool a system's training
seeds (``seeds``): the mean over seeds, with a two-level bootstrap interval
(:func:`llmtrsr_utils.metrics.pooled_ci`). :func:`upsert` is the one way a table gains rows
(evaluation, grids, efficiency).
Nothing here imports torch or a model: figures and reports are drawn from saved tables alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from llmtrsr_utils import metrics, systems
from llmtrsr_utils.artifacts import atomic_path, provenance, write_json, write_parquet
from llmtrsr_utils.config import Config

# The key of an evaluation row: a rerun of a system under the same params and training seed
# replaces its rows.
ROW_KEY = ("system", "params_hash", "seed")
SCORES_DIR = "scores"


def results_dir(cfg: Config) -> Path:
    return cfg.work_path / "results"


def upsert(path: Path, new: pd.DataFrame, keys: Sequence[str] = ROW_KEY) -> pd.DataFrame:
    """Add rows to a table, replacing every earlier row that shares their ``keys`` (a rerun
    supersedes the whole earlier evaluation of a system under the same params: a row of an epoch
    the rerun no longer selects must not stay beside the new selected row). Written atomically.

    Args:
        path: the table (parquet); created when missing.
        new: the rows to add.
        keys: the columns that identify what a row is a result of.

    Returns:
        The whole table as written.
    """
    keys = list(keys)
    if path.is_file() and not new.empty:
        old = pd.read_parquet(path)
        replaced = pd.MultiIndex.from_frame(new[keys].drop_duplicates())
        keep = ~pd.MultiIndex.from_frame(old[keys]).isin(replaced)
        merged = pd.concat([old[keep], new], ignore_index=True)
    elif path.is_file():
        merged = pd.read_parquet(path)
    else:
        merged = new
    write_parquet(merged.reset_index(drop=True), path)
    return merged


# -- per-user scores ---------------------------------------------------------------------------

def scores_file(system: str, split: str, params_hash: str, seed: int) -> str:
    """A score file's path relative to the results folder, keyed like its rows."""
    return f"{SCORES_DIR}/{system}_{split}_{params_hash[:16]}_seed{seed}.parquet"


def write_scores(cfg: Config, system: str, split: str, params_hash: str, seed: int,
                 scores: metrics.UserScores) -> str:
    """Save one system's per-user scores on a split; returns the path a row records."""
    relative = scores_file(system, split, params_hash, seed)
    write_parquet(scores.frame(), results_dir(cfg) / relative)
    return relative


def read_scores(cfg: Config, row: dict[str, Any] | pd.Series) -> metrics.UserScores:
    """The per-user scores a results row was computed from."""
    return metrics.UserScores.from_frame(pd.read_parquet(results_dir(cfg) / row["scores_file"]))


def stored_rows(cfg: Config, system: str, params_hash: str, seed: int) -> pd.DataFrame | None:
    """The rows of ``system`` under these params and training seed when its evaluation is
    complete (a test row, and every row's score file present), else None: what a run with
    ``reuse`` reads back."""
    path = results_dir(cfg) / "metrics.parquet"
    if not path.is_file():
        return None
    table = pd.read_parquet(path)
    rows = table[(table["system"] == system) & (table["params_hash"] == params_hash)
                 & (table["seed"] == seed)]
    if "scores_file" not in rows or "test" not in set(rows["split"]):
        return None
    files = [f for f in rows["scores_file"] if isinstance(f, str)]
    complete = all((results_dir(cfg) / f).is_file() for f in files)
    return rows if complete and len(files) == len(rows) else None


def test_per_user(cfg: Config, rows: pd.DataFrame) -> pd.DataFrame:
    """Per-user test metrics of a system's selected test row (the scores it was made from)."""
    test = rows[(rows["split"] == "test") & rows["selected"]].iloc[-1]
    return read_scores(cfg, test).per_user()


def torch_versions(library_versions: Iterable[object]) -> list[str]:
    """The torch versions recorded in results rows' ``library_versions`` (JSON strings; other
    values, such as a missing one, are skipped), sorted and without repeats."""
    return sorted({json.loads(v).get("torch", "?") for v in library_versions
                   if isinstance(v, str)})


def seed_tables(results: pd.DataFrame, folder: Path, system: str) -> list[pd.DataFrame]:
    """Per-user test metrics of ``system``, one table per training seed stored in ``results``
    (its selected test rows; a seed evaluated twice: the later), from the score files in
    ``folder`` (the results folder)."""
    rows = results[(results["system"] == system) & (results["split"] == "test")
                   & results["selected"]].drop_duplicates("seed", keep="last")
    return [metrics.UserScores.from_frame(pd.read_parquet(folder / f)).per_user()
            for f in rows["scores_file"]]


def save_evaluation(cfg: Config, rows: pd.DataFrame,
                    per_user: dict[str, list[pd.DataFrame]],
                    asked: dict[str, list[str]], *, write_tables: bool = True) -> pd.DataFrame:
    """Store an evaluation's rows; unless ``write_tables`` is off (grid points), also write
    the run's Table 2, the paired tests of its systems pooled over seeds (``per_user``: each
    system's per-user test metrics, one table per training seed; against
    :data:`llmtrsr_utils.systems.PAIRED_REFERENCES`) and a record of what was asked.

    Returns:
        The whole results table.
    """
    out = results_dir(cfg)
    table = upsert(out / "metrics.parquet", rows)
    if write_tables:
        write_table2(table[table["params_hash"] == cfg.fingerprint()], out, out)
        tests = metrics.paired_tests(per_user, systems.PAIRED_REFERENCES, seed=cfg.seed)
        if not tests.empty:
            write_csv(tests, out / "paired_tests.csv", index=False)
        write_json({**provenance(cfg), **asked}, out / "evaluate.json")
    return table


def point_result(cfg: Config, system: str, training: dict[str, Any] | None = None
                 ) -> dict[str, Any]:
    """One grid point's outcome: the system's selected test row, pooled over its training
    seeds (every metric with its CI and spread across seeds, the scoring speed) plus, for a
    trained system, its training cost (``training``: the first seed's record).

    Raises:
        LookupError: no selected test row of the system under these params.
    """
    results = load_results(cfg)
    rows = results[(results["system"] == system) & (results["params_hash"] == cfg.fingerprint())
                   & (results["split"] == "test") & results["selected"]]
    if rows.empty:
        raise LookupError(f"{results_dir(cfg)}: no selected test row for {system} with these "
                          f"params; evaluate it first")
    row = selected_test_rows(rows, results_dir(cfg)).iloc[0].to_dict()
    keep = ["system", "epoch", "n_users", "n_seeds", "seeds", "scoring_seconds",
            "candidates_per_second", "params_hash", "kit_version", "git_commit",
            *[c for c in row if c.split("_ci_")[0].split("_seed_")[0].removesuffix(
                "_pessimistic") in metrics.METRICS], "tied_positive_share",
            *[c for c in row if c.startswith("prompt_")]]  # shortening is never silent
    result = {k: _plain(row[k]) for k in keep if k in row}
    if training is not None:
        result.update({"train_seconds": training["train_seconds"],
                       "seconds_per_step": training["seconds_per_step"],
                       "train_steps": training["global_step"],
                       "train_examples": training["examples"]})
    return result


def _plain(value: Any) -> Any:
    """numpy scalars to Python ones, so the result is JSON."""
    return value.item() if hasattr(value, "item") else value


def write_csv(frame: pd.DataFrame, path: Path, **kwargs: Any) -> Path:
    """A CSV written under a temporary name and renamed into place."""
    with atomic_path(path) as temp:
        frame.to_csv(temp, **kwargs)
    return path


def table2(results: pd.DataFrame, folder: Path | None = None, with_ci: bool = True
           ) -> pd.DataFrame:
    """The paper's Table 2 from a results table: one row per system, the mean over its
    training seeds (:func:`selected_test_rows`; ``folder``: the results folder holding the
    score files, needed when a system has more than one seed).

    Metrics count ties at their expected value (the headline); more columns show the share of
    users whose positive is tied, Recall@5 with every tie counted against the positive, the
    number of seeds and, with more than one, Recall@5's spread across them.
    """
    table = {}
    rows = selected_test_rows(results, folder)
    several = bool((rows["n_seeds"] > 1).any())
    for _, row in rows.iterrows():
        entry = {name: (f"{row[name]:.4f} [{row[f'{name}_ci_low']:.3f}, "
                        f"{row[f'{name}_ci_high']:.3f}]" if with_ci else round(row[name], 4))
                 for name in metrics.METRICS}
        if "tied_positive_share" in row and pd.notna(row["tied_positive_share"]):
            entry["tied positives"] = f"{row['tied_positive_share']:.2f}"
            entry["recall@5, ties lost"] = f"{row['recall@5_pessimistic']:.4f}"
        if several:
            entry["seeds"] = int(row["n_seeds"])
            entry["recall@5 across seeds"] = (
                f"{row['recall@5_seed_min']:.3f} to {row['recall@5_seed_max']:.3f} "
                f"(sd {row['recall@5_seed_sd']:.3f})" if row["n_seeds"] > 1 else "")
        table[row["label"]] = entry
    return pd.DataFrame(table).T


def selected_test_rows(results: pd.DataFrame, folder: Path | None = None) -> pd.DataFrame:
    """One row per system in Table 2 order, with a display label: its selected test row, or,
    with several training seeds, their mean over seeds with a two-level bootstrap interval
    (:func:`llmtrsr_utils.metrics.pooled_ci`, read from the rows' score files in ``folder``).
    Columns added: ``n_seeds``, ``seeds`` and, per metric, ``<metric>_seed_sd``, ``_seed_min``,
    ``_seed_max``.

    Raises:
        ValueError: a system with several seeds and no ``folder`` to read their scores from.
    """
    test = results[(results["split"] == "test") & results["selected"]]
    order = systems.order_names(test["system"])  # the registry's order, then unknown names
    pooled = []
    for name in order:
        rows = test[test["system"] == name]
        if "seed" in rows:
            rows = rows.drop_duplicates("seed", keep="last")
        row = rows.iloc[-1].to_dict()
        row["n_seeds"], row["seeds"] = len(rows), ",".join(
            str(int(s)) for s in rows["seed"]) if "seed" in rows else ""
        if len(rows) > 1:
            if folder is None:
                raise ValueError(f"{name}: {len(rows)} training seeds; pooling them reads "
                                 f"their score files: pass the results folder")
            tables = seed_tables(rows, Path(folder), name)
            ci = metrics.pooled_ci(tables, seed=int(rows["seed"].iloc[0]),
                                   metrics=metrics.METRICS)
            for metric in metrics.METRICS:
                for column, value in ci.loc[metric].items():
                    if column not in ("n_users", "n_seeds"):
                        row[metric if column == "mean" else f"{metric}_{column}"] = value
            row["tied_positive_share"] = float(rows["tied_positive_share"].mean())
            row["recall@5_pessimistic"] = float(rows["recall@5_pessimistic"].mean())
        else:
            for metric in metrics.METRICS:
                row.update({f"{metric}_seed_sd": 0.0, f"{metric}_seed_min": row[metric],
                            f"{metric}_seed_max": row[metric]})
        pooled.append(row)
    rows = pd.DataFrame(pooled)
    stored = (rows["display_name"] if "display_name" in rows
              else pd.Series([None] * len(rows), index=rows.index))
    rows["label"] = [label if isinstance(label, str) and label else systems.label(s)
                     for s, label in zip(rows["system"], stored, strict=True)]
    return rows


# The pooled Table 2 rows' columns kept unrounded in table2_values.csv (what the README's
# tables are generated from: rounded once, there).
VALUE_COLUMNS = ["system", "label", "n_seeds", "seeds", "n_users", "tied_positive_share",
                 "git_commit", "hardware", "library_versions"]


def write_table2(results: pd.DataFrame, out: Path, folder: Path) -> None:
    """Table 2 as ``table2.md`` and ``table2.csv`` in ``out`` (the one Table 2 writer), from
    the score files in ``folder`` (the results folder), and its unrounded values, pooled over
    seeds, as ``table2_values.csv``."""
    table = table2(results, folder)
    write_csv(table, out / "table2.csv")
    rows = selected_test_rows(results, folder)
    metric_columns = [c for c in rows.columns
                      if c.split("_ci_")[0].split("_seed_")[0].removesuffix("_pessimistic")
                      in metrics.METRICS]
    write_csv(rows[[c for c in VALUE_COLUMNS if c in rows.columns] + metric_columns],
              out / "table2_values.csv", index=False)
    with atomic_path(out / "table2.md") as temp:
        temp.write_text(table.to_markdown() + "\n", encoding="utf-8")


# The results table's columns a reader of a committed results.csv needs (every metric with its
# CI, and what made the row).
REPORT_COLUMNS = ["system", "seed", "split", "epoch", "selected", "checkpoint", "selection_rule",
                  "train_examples",
                  "n_users", "selection_score", "tied_positive_share", "candidates_per_second",
                  "scoring_seconds", "params_hash", "git_commit", "kit_version", "hardware",
                  "library_versions"]


def write_report(cfg: Config, out_dir: Path | None = None) -> list[Path]:
    """This params' results, where figures go (``figures_dir``, or ``out_dir``): Table 2
    (``table2.md``, ``table2.csv``), the results table (``results.csv``: every split, epoch
    and checkpoint), the paired tests, the learning curve, the history shuffle and the
    decision table when the run made them. Returns the files written."""
    out_dir = Path(out_dir) if out_dir else cfg.figures_path
    out_dir.mkdir(parents=True, exist_ok=True)
    results = load_results(cfg, current=True)
    write_table2(results, out_dir, results_dir(cfg))
    written = [out_dir / "table2.md", out_dir / "table2_values.csv", out_dir / "results.csv"]
    metric_columns = [c for c in results.columns
                      if c.split("_ci_")[0].removesuffix("_pessimistic") in metrics.METRICS]
    columns = [c for c in REPORT_COLUMNS if c in results.columns]
    head = [c for c in columns if REPORT_COLUMNS.index(c) <= REPORT_COLUMNS.index("n_users")]
    tail = [c for c in columns if c not in head]
    write_csv(results[head + metric_columns + tail], out_dir / "results.csv", index=False)
    for name in ("paired_tests.csv", "learning_curve.csv", "history_shuffle.csv",
                 "decision.csv"):
        source = results_dir(cfg) / name
        if source.is_file():
            written.append(out_dir / name)
            with atomic_path(written[-1]) as temp:
                temp.write_text(source.read_text(encoding="utf-8"), encoding="utf-8")
    return written


def load_results(cfg: Config, current: bool = False) -> pd.DataFrame:
    """The results table of ``cfg``'s work dir; with ``current``, only the rows these params
    made (a work dir keeps the rows of earlier params beside them)."""
    path = results_dir(cfg) / "metrics.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no results yet; run `llmtrsr evaluate`")
    results = pd.read_parquet(path)
    return results[results["params_hash"] == cfg.fingerprint()] if current else results
