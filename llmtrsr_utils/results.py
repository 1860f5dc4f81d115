"""The results store and reporting: one table of every evaluation row, read and written here,
and the reports made from it (Table 2, the results CSV beside the figures).

``<work_dir>/results/metrics.parquet`` holds one row per (system, split, epoch or checkpoint)
with every metric's mean and 95% CI, the timings, the prompt shortening counts, the params hash,
versions and commit (written by :mod:`llmtrsr_utils.evaluate`). Nothing here imports torch or a
model: figures and reports are drawn from saved tables alone.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from llmtrsr_utils import metrics
from llmtrsr_utils.artifacts import write_parquet
from llmtrsr_utils.config import Config

# Table 2 labels of the kit's own systems (a row also carries its display_name when written).
LABELS = {"llmtrsr-hierarchical": "LLM-TRSR-Hierarchical",
          "llmtrsr-recurrent": "LLM-TRSR-Recurrent", "tallrec": "TALLRec",
          "zero-shot": "Zero-shot LLM"}
# Table 2's order: references first, the LLM systems last; any other system after them.
TABLE2_ORDER = ("zero-shot", "embedding", "popularity", "random", "ncf", "din", "dien",
                "gru4rec", "narm", "sasrec", "core", "tallrec", "llmtrsr-hierarchical",
                "llmtrsr-recurrent")


def results_dir(cfg: Config) -> Path:
    return cfg.work_path / "results"


def upsert_results(path: Path, new: pd.DataFrame) -> pd.DataFrame:
    """Add this run's rows to the results table; they replace every earlier row of the same
    system under the same params (a rerun supersedes the whole earlier evaluation: a row of an
    epoch the rerun no longer selects must not stay beside the new selected row)."""
    if path.is_file() and not new.empty:
        old = pd.read_parquet(path)
        replaced = pd.MultiIndex.from_frame(new[["system", "params_hash"]].drop_duplicates())
        keep = ~pd.MultiIndex.from_frame(old[["system", "params_hash"]]).isin(replaced)
        merged = pd.concat([old[keep], new], ignore_index=True)
    elif path.is_file():
        merged = pd.read_parquet(path)
    else:
        merged = new
    write_parquet(merged.reset_index(drop=True), path)
    return merged


def table2(results: pd.DataFrame, with_ci: bool = True) -> pd.DataFrame:
    """The paper's Table 2 from a results table: selected test rows, one per system.

    Metrics count ties at their expected value (the headline); two more columns show the share
    of users whose positive is tied and Recall@5 with every tie counted against the positive.
    """
    table = {}
    for _, row in selected_test_rows(results).iterrows():
        entry = {name: (f"{row[name]:.4f} [{row[f'{name}_ci_low']:.3f}, "
                        f"{row[f'{name}_ci_high']:.3f}]" if with_ci else round(row[name], 4))
                 for name in metrics.METRICS}
        if "tied_positive_share" in row and pd.notna(row["tied_positive_share"]):
            entry["tied positives"] = f"{row['tied_positive_share']:.2f}"
            entry["recall@5, ties lost"] = f"{row['recall@5_pessimistic']:.4f}"
        table[row["label"]] = entry
    return pd.DataFrame(table).T


def selected_test_rows(results: pd.DataFrame) -> pd.DataFrame:
    """One row per system (the selected test row), in Table 2 order, with a display label."""
    test = results[(results["split"] == "test") & results["selected"]]
    known = TABLE2_ORDER
    present = list(dict.fromkeys(test["system"]))
    order = ([s for s in known if s in present]  # Table 2's order, then any added baseline
             + [s for s in present if s not in known])
    rows = pd.concat([test[test["system"] == s].tail(1) for s in order], ignore_index=True)
    stored = (rows["display_name"] if "display_name" in rows
              else pd.Series([None] * len(rows), index=rows.index))
    rows["label"] = [label if isinstance(label, str) and label else LABELS.get(s, s)
                     for s, label in zip(rows["system"], stored, strict=True)]
    return rows


def write_table2(results: pd.DataFrame, out: Path) -> None:
    """Table 2 as ``table2.md`` and ``table2.csv`` in ``out`` (the one Table 2 writer)."""
    table = table2(results)
    table.to_csv(out / "table2.csv")
    (out / "table2.md").write_text(table.to_markdown() + "\n", encoding="utf-8")


# The results table's columns a reader of a committed results.csv needs (every metric with its
# CI, and what made the row).
REPORT_COLUMNS = ["system", "split", "epoch", "selected", "checkpoint", "train_examples",
                  "n_users", "selection_score", "tied_positive_share", "candidates_per_second",
                  "scoring_seconds", "params_hash", "git_commit", "kit_version"]


def write_report(cfg: Config, out_dir: Path | None = None) -> list[Path]:
    """This params' results, where figures go (``figures_dir``, or ``out_dir``): Table 2
    (``table2.md``, ``table2.csv``), the results table (``results.csv``: every split, epoch
    and checkpoint), the paired tests and the learning curve when the run made them. Returns
    the files written."""
    out_dir = Path(out_dir) if out_dir else cfg.figures_path
    out_dir.mkdir(parents=True, exist_ok=True)
    results = load_results(cfg, current=True)
    write_table2(results, out_dir)
    written = [out_dir / "table2.md", out_dir / "results.csv"]
    metric_columns = [c for c in results.columns
                      if c.split("_ci_")[0].removesuffix("_pessimistic") in metrics.METRICS]
    columns = [c for c in REPORT_COLUMNS if c in results.columns]
    results[columns[:7] + metric_columns + columns[7:]].to_csv(written[1], index=False)
    for name in ("paired_tests.csv", "learning_curve.csv"):
        source = results_dir(cfg) / name
        if source.is_file():
            written.append(out_dir / name)
            written[-1].write_text(source.read_text(encoding="utf-8"), encoding="utf-8")
    return written


def load_results(cfg: Config, current: bool = False) -> pd.DataFrame:
    """The results table of ``cfg``'s work dir; with ``current``, only the rows these params
    made (a work dir keeps the rows of earlier params beside them)."""
    path = results_dir(cfg) / "metrics.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no results yet; run `llmtrsr evaluate`")
    results = pd.read_parquet(path)
    return results[results["params_hash"] == cfg.fingerprint()] if current else results
