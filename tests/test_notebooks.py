"""Notebooks: thin, one `parameters` cell, no stored outputs, and they run under papermill."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from llmtrsr_utils.notebooks import series
from tests.conftest import smoke_overrides

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = series(ROOT)
GRID_POINT = ROOT / "notebooks" / "grid_point.ipynb"


def test_series_is_numbered_00_to_08():
    assert [nb.name[:2] for nb in NOTEBOOKS] == [f"{i:02d}" for i in range(9)]


@pytest.mark.parametrize("path", [*NOTEBOOKS, GRID_POINT], ids=lambda p: p.name)
def test_one_parameters_cell_and_no_outputs(path):
    cells = json.loads(path.read_text())["cells"]
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1
    assert all(not c.get("outputs") and c.get("execution_count") is None
               for c in cells if c["cell_type"] == "code")


def test_notebooks_match_their_sources():
    """notebooks/*.py (jupytext percent) are the sources; each committed .ipynb must be what
    tools/sync_notebooks.py writes from its source, cell for cell."""
    import jupytext

    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import sync_notebooks
    finally:
        sys.path.remove(str(ROOT / "tools"))
    sources = sync_notebooks.sources()
    assert [p.stem for p in sources] == [p.stem for p in [*NOTEBOOKS, GRID_POINT]]
    for source in sources:
        assert source.with_suffix(".ipynb").read_text() == sync_notebooks.build(source), (
            f"{source.name}: run python tools/sync_notebooks.py")
        paired = nbformat.read(source.with_suffix(".ipynb"), as_version=4)
        text = jupytext.read(source)
        assert [c.source for c in paired.cells] == [c.source for c in text.cells]
    # The command-line check agrees (what a contributor runs before committing).
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "sync_notebooks.py"), "--check"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_notebook_sources_are_linted():
    """The code users run is linted: ruff checks notebooks/*.py with the rest of the kit."""
    ruff = Path(sys.executable).with_name("ruff")  # the dev extra, which make test installs
    assert ruff.is_file(), f"{ruff}: not installed (pip install -e '.[dev]')"
    done = subprocess.run([str(ruff), "check", "notebooks"], capture_output=True, text=True,
                          cwd=ROOT)
    assert done.returncode == 0 and "All checks passed" in done.stdout, done.stdout


def test_series_runs_under_papermill(tmp_path, movielens_dir, capfd):
    from llmtrsr_utils.notebooks import run_series

    overrides = smoke_overrides(tmp_path, movielens_dir,
                                f"summarizer.cache_file={tmp_path / 'gen.sqlite'}")
    executed = run_series(ROOT / "params" / "smoke.yaml", overrides,
                          output_dir=tmp_path / "executed")
    assert [p.name for p in executed] == [p.name for p in NOTEBOOKS]
    # The kernels run over IPC: no "Kernel is running over TCP without encryption" per
    # notebook (issue 23), and no Python warning reaches the terminal.
    printed = capfd.readouterr().err
    assert "without encryption" not in printed and "Warning:" not in printed, printed[-2000:]
    for path in executed:
        notebook = nbformat.read(path, as_version=4)
        injected = [c for c in notebook.cells
                    if "injected-parameters" in c.metadata.get("tags", [])]
        assert injected and "smoke" in injected[0].source, path.name
        errors = [o for c in notebook.cells if c.cell_type == "code"
                  for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, path.name
        # Every figure a notebook draws is in the executed notebook as an inline image
        # (issue 23: there were none, only the paths the figures were written to).
        draws = [c for c in notebook.cells if c.cell_type == "code"  # unconditional draws
                 and re.search(r"^\w+ = plots\.plot_", c.source, re.M)]
        for cell in draws:
            shown = [o for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
            assert shown, f"{path.name}: no inline image in {cell.source[:60]!r}"
            assert not any("PosixPath" in str(o.get("data", {}).get("text/plain", ""))
                           for o in cell.get("outputs", [])), path.name
    assert sum(bool(re.search(r"^\w+ = plots\.plot_", c.source, re.M)) for p in executed
               for c in nbformat.read(p, as_version=4).cells) >= 10

    # 00: Table 1 and the data figure
    table = pd.read_csv(tmp_path / "table1.csv", index_col=0)
    assert table.loc["# of positive samples in the test set", "movielens"] == 3
    assert table.loc["Avg. # of historical user behavior sequence", "movielens"] == 10
    assert table.loc["Avg. # of tokens corresponding to an item", "movielens"] > 3
    figures = tmp_path / "figures"
    for stem in ("data_overview_movielens", "segmentation", "summary_lengths", "sft_loss",
                 "table2", "figure9_item_count", "figure10_recommender_size",
                 "figure11_summarizer_size", "efficiency", "efficiency_prompt_growth"):
        assert (figures / f"{stem}.png").stat().st_size > 10_000, stem
        assert (figures / f"{stem}.pdf").is_file(), stem
    # 02: both paradigms' summaries for the test users
    for paradigm in ("hierarchical", "recurrent"):
        (path,) = (tmp_path / "summaries").glob(
            f"movielens_test_{paradigm}_tiny-random-llama_*.parquet")
        frame = pd.read_parquet(path)
        assert len(frame) == 3
    # 03 + 04: every system trained, Table 2 written with every system and baseline
    table2 = (figures / "table2.md").read_text()
    for label in ("LLM-TRSR-Hierarchical", "LLM-TRSR-Recurrent", "TALLRec", "Random",
                  "Popularity", "Text embedding (MiniLM)", "Zero-shot LLM", "NCF", "DIN",
                  "DIEN", "GRU4Rec", "NARM", "SASRec", "CORE"):
        assert label in table2, label
    results = pd.read_parquet(tmp_path / "results" / "metrics.parquet")
    assert set(results["split"]) == {"valid", "test"}
    # The results table beside the figures: every row of the main run's params (the grid
    # points of 05 to 07 add rows under their own params later).
    report = pd.read_csv(figures / "results.csv")
    assert report["params_hash"].nunique() == 1 and report["recall@5_ci_low"].notna().all()
    assert len(report) == (results["params_hash"] == report["params_hash"].iloc[0]).sum()
    paired = pd.read_csv(figures / "paired_tests.csv")
    assert set(paired["versus"]) == {"tallrec", "zero-shot", "random"}

    # 05: the reduced grid of params/smoke.yaml (item_num 0 and 3, both paradigms); the points
    # equal to the main run reused its adapters instead of training again.
    item_count = pd.read_parquet(tmp_path / "runs" / "item_count" / "results.parquet")
    points = zip(item_count["system"], item_count["axis.recommender.item_num"], strict=True)
    assert sorted(points) == [
        ("llmtrsr-hierarchical", 0), ("llmtrsr-hierarchical", 3),
        ("llmtrsr-recurrent", 0), ("llmtrsr-recurrent", 3)]
    adapters = sorted(p.name for p in (tmp_path / "adapters").iterdir())
    assert len(adapters) == 5, adapters  # 3 systems of notebook 03 + 2 at item_num 0
    for name in ("recommender_size", "summarizer_size"):
        assert len(pd.read_parquet(tmp_path / "runs" / name / "results.parquet")) == 1
    # 08: one efficiency row per measured system, TALLRec's prompts the longer
    efficiency = pd.read_parquet(tmp_path / "efficiency" / "efficiency.parquet").set_index(
        "system")
    assert set(efficiency.index) == {"llmtrsr-hierarchical", "tallrec"}
    assert efficiency.loc["tallrec", "prompt_tokens_mean"] > efficiency.loc[
        "llmtrsr-hierarchical", "prompt_tokens_mean"]
    assert (efficiency["peak_memory_gib"] > 0).all()
    assert (efficiency["sft_seconds_per_step"] > 0).all()

    # `llmtrsr figures` redraws every results figure from the saved tables alone.
    for path in figures.glob("*.png"):
        path.unlink()
    from llmtrsr_utils.config import load_config
    from llmtrsr_utils.report import redraw

    written, missing = redraw(load_config(ROOT / "params" / "smoke.yaml", overrides))
    assert not missing, missing
    assert {p.name for p in written if p.suffix == ".png"} == {
        "table2.png", "figure9_item_count.png", "figure10_recommender_size.png",
        "figure11_summarizer_size.png", "efficiency.png", "efficiency_prompt_growth.png"}


@pytest.mark.parametrize("form", ["-p", "-y"])
def test_papermill_command_line_as_a_user_types_it(tmp_path, movielens_dir, form):
    """`papermill nb out -p overrides "k=v,k2=v2"` passes one string (it used to be read
    character by character: "--set 'w': expected key=value"); `-y` passes a YAML list."""
    overrides = smoke_overrides(tmp_path, movielens_dir)
    args = (["-p", "overrides", ",".join(overrides)] if form == "-p"
            else ["-y", json.dumps({"overrides": overrides})])
    done = subprocess.run(
        [sys.executable, "-m", "papermill", str(NOTEBOOKS[0]), str(tmp_path / "out.ipynb"),
         "-p", "params_file", "params/smoke.yaml", *args, "--cwd", str(ROOT)],
        capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "data" / "manifest.json").is_file()  # work_dir came from the string


@pytest.mark.parametrize("path", [*NOTEBOOKS, GRID_POINT], ids=lambda p: p.name)
def test_papermill_reads_every_parameter(path):
    """papermill must parse each line of the parameters cell (a comment it cannot parse makes
    it drop the parameter with only a warning)."""
    import papermill as pm

    names = list(pm.inspect_notebook(str(path)))
    source = next(c for c in nbformat.read(path, as_version=4).cells
                  if "parameters" in c.metadata.get("tags", [])).source
    assigned = [line.split("=")[0].strip() for line in source.splitlines()
                if "=" in line and not line.lstrip().startswith("#")]
    assert names == assigned
    assert names[:2] == ["params_file", "overrides"]
