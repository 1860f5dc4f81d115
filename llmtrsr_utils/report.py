"""Figures and report tables of a profile, redrawn from its saved tables (``llmtrsr figures``).

The top of the line: reads what the evaluation, the grids and the efficiency measurements
saved, runs nothing.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from llmtrsr_utils import efficiency, grid, plots
from llmtrsr_utils.config import Config, project_root
from llmtrsr_utils.results import (
    load_results,
    results_dir,
    selected_test_rows,
    write_csv,
    write_report,
)


def redraw(cfg: Config, grid_files: list[Path] | None = None) -> tuple[list[Path], list[str]]:
    """Every results figure of a profile from its saved tables, nothing rerun (`llmtrsr
    figures`): Table 2 and the report tables, Figures 9 to 11 from the grids' tables (and
    the studies' of ``params/studies`` that these params ran), the efficiency charts.
    Returns (files written, sources not found)."""
    written: list[Path] = []
    missing: list[str] = []
    out = cfg.figures_path
    try:
        results = load_results(cfg, current=True)
        if results.empty:
            raise FileNotFoundError("no rows with these params")
        written += plots.plot_table2(selected_test_rows(results, results_dir(cfg)), out)
        written += write_report(cfg)  # table2.md and the tables beside the figures
    except FileNotFoundError as err:
        missing.append(f"Table 2: {err}")
    files = grid_files if grid_files is not None else sorted(
        (project_root() / "params" / "ablations").glob("*.yaml"))
    studies = [] if grid_files is not None else sorted(
        (project_root() / grid.STUDIES_DIR).glob("*.yaml"))
    for grid_file in [*files, *studies]:
        spec = grid.load_grid(grid_file, grid.profile_axes(cfg, grid_file))
        path = grid.grid_dir(cfg, spec) / grid.RESULTS
        if spec.figure not in plots.GRID_FIGURES:
            continue
        rows = grid.rows_for(grid.load_grid_results(path), cfg, spec) if path.is_file() \
            else None
        if rows is None or rows.empty:
            if grid_file not in studies:  # a study is drawn when a profile ran it
                missing.append(f"{spec.figure}: no rows for these params in {path}")
            continue
        written += plots.GRID_FIGURES[spec.figure](rows, out, spec.figure)
        if spec.anchors:  # the figure's numbers, with each point's test against its anchors
            try:
                tests = grid.anchored_tests(cfg, spec, rows)
            except (FileNotFoundError, LookupError) as err:
                missing.append(f"{spec.figure}.csv: {err}")
            else:
                written.append(write_csv(tests, out / f"{spec.figure}.csv", index=False))
    table_path = efficiency.efficiency_path(cfg)
    table = pd.read_parquet(table_path) if table_path.is_file() else None
    if table is not None and (table["params_hash"] == cfg.fingerprint()).any():
        written += plots.plot_efficiency(table[table["params_hash"] == cfg.fingerprint()], out)
    else:
        missing.append(f"efficiency: {table_path} not found")
    curve_path = efficiency.prompt_growth_path(cfg)
    if curve_path.is_file():
        curve = pd.read_parquet(curve_path)
        written += plots.plot_prompt_growth(curve, int(curve["limit"].iloc[0]), out)
    else:
        missing.append(f"prompt growth: {curve_path} not found")
    return written, missing
