"""Every results figure draws from small tables written here; `llmtrsr figures` redraws them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llmtrsr_utils import plots
from llmtrsr_utils.config import load_config
from llmtrsr_utils.metrics import METRICS

ROOT = Path(__file__).resolve().parents[1]


def metric_columns(rng: np.random.Generator) -> dict[str, float]:
    row = {}
    for name in METRICS:
        mean = float(rng.uniform(0.2, 0.8))
        row.update({name: mean, f"{name}_ci_low": mean - 0.1, f"{name}_ci_high": mean + 0.1})
    return row


def grid_rows(axis: str, values: list, systems: list[str]) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame([{"system": s, f"axis.{axis}": v, **metric_columns(rng)}
                         for s in systems for v in values])


def efficiency_table() -> pd.DataFrame:
    return pd.DataFrame([
        {"system": "llmtrsr-hierarchical", "device": "cpu", "prompt_tokens_mean": 250.0,
         "prompt_tokens_max": 280, "sft_seconds_per_step": 12.0, "candidates_per_second": 9.0,
         "peak_memory_gib": 3.1},
        {"system": "tallrec", "device": "cpu", "prompt_tokens_mean": 420.0,
         "prompt_tokens_max": 470, "sft_seconds_per_step": 20.0, "candidates_per_second": 5.0,
         "peak_memory_gib": 3.9}])


def assert_drawn(paths: list[Path], stem: str) -> None:
    assert [p.name for p in paths] == [f"{stem}.png", f"{stem}.pdf"]
    assert all(p.stat().st_size > 5_000 for p in paths)


@pytest.fixture
def layout(monkeypatch) -> list[list[dict]]:
    """Each figure saved, as its panels: title, x tick labels, line count, in reading order."""
    figures: list[list[dict]] = []
    original = plots.save_figure

    def recording(fig, out_dir, stem):
        figures.append([{"title": ax.get_title(), "row": ax.get_subplotspec().rowspan.start,
                         "xticks": [t.get_text() for t in ax.get_xticklabels()],
                         "lines": len(ax.get_lines()), "bars": len(ax.patches)}
                        for ax in fig.axes if ax.get_visible()])
        return original(fig, out_dir, stem)

    monkeypatch.setattr(plots, "save_figure", recording)
    return figures


def test_figure9_one_row_of_panels_per_paradigm(tmp_path, layout):
    rows = grid_rows("recommender.item_num", [0, 1, 3, 5],
                     ["llmtrsr-recurrent", "llmtrsr-hierarchical"])
    assert_drawn(plots.plot_item_count(rows, tmp_path), "figure9_item_count")
    panels = layout[0]
    # Two rows (the registry's paradigm order, whatever the table's), Recall then MRR in each,
    # three lines (k = 3, 5, 10) per panel, the item counts on the x axis.
    assert [(p["row"], p["title"]) for p in panels] == [
        (0, "LLM-TRSR-Hierarchical: Recall@k"), (0, "LLM-TRSR-Hierarchical: MRR@k"),
        (1, "LLM-TRSR-Recurrent: Recall@k"), (1, "LLM-TRSR-Recurrent: MRR@k")]
    assert all(p["xticks"] == ["0", "1", "3", "5"] for p in panels)
    assert all(p["lines"] >= 3 for p in panels)


@pytest.mark.parametrize("axis", ["recommender.model", "summarizer.model"])
def test_model_size_figures_keep_the_grid_order(tmp_path, axis, layout):
    order = ["smollm2-135m", "gemma3-270m", "llama-2-7b"]  # smallest first, as grids list them
    rows = grid_rows(axis, order, ["llmtrsr-hierarchical"])
    assert_drawn(plots.plot_model_size(rows, axis, "size", tmp_path, "size"), "size")
    panels = layout[0]
    assert [p["title"] for p in panels] == ["Recall@k", "MRR@k"]
    assert all(p["xticks"] == order for p in panels)


def test_efficiency_charts(tmp_path):
    assert_drawn(plots.plot_efficiency(efficiency_table(), tmp_path), "efficiency")
    curve = pd.DataFrame([{"history_length": n, "system": s, "tokens": t}
                          for n in (1, 10, 100) for s, t in (("tallrec", 30 * n + 100),
                                                             ("llmtrsr-hierarchical", 250))])
    assert_drawn(plots.plot_prompt_growth(curve, 2048, tmp_path), "efficiency_prompt_growth")


def test_table2_figure_from_results_rows(tmp_path, layout):
    rng = np.random.default_rng(1)
    labels = ["Random", "TALLRec", "LLM-TRSR-Hierarchical"]
    rows = pd.DataFrame([{"label": label, **metric_columns(rng)} for label in labels])
    assert_drawn(plots.plot_table2(rows, tmp_path), "table2")
    panels = layout[0]
    # Recall then MRR; in each, k = 3, 5, 10 groups of one bar per system (3 x 3 bars).
    assert [p["title"] for p in panels] == ["Recall@k (test, 95% CI)", "MRR@k (test, 95% CI)"]
    assert all(p["xticks"] == ["@3", "@5", "@10"] and p["bars"] == 9 for p in panels)


def test_redraw_uses_only_saved_tables(tmp_path):
    """`llmtrsr figures`: grid tables and the efficiency table on disk are all it needs; what is
    missing is named, not silently skipped."""
    from llmtrsr_utils import efficiency, grid, report

    cfg = load_config(ROOT / "params" / "smoke.yaml", [
        f"work_dir={tmp_path / 'work'}", f"runs_dir={tmp_path / 'runs'}",
        f"figures_dir={tmp_path / 'figures'}"])
    base = cfg.fingerprint()
    item_rows = grid_rows("recommender.item_num", [0, 3],
                          ["llmtrsr-hierarchical", "llmtrsr-recurrent"])
    spec = grid.load_grid(ROOT / "params" / "ablations" / "item_count.yaml",
                          grid.profile_axes(cfg, ROOT / "params" / "ablations" / "item_count.yaml"))
    keys = {(p.values["recommender.item_num"], p.system): key
            for p, key in zip(grid.expand(spec), grid.point_keys(cfg, spec), strict=True)}
    item_rows["point_key"] = [keys[(v, s)] for v, s in zip(
        item_rows["axis.recommender.item_num"], item_rows["system"], strict=True)]
    item_rows["base_params_hash"] = base
    other = item_rows.assign(base_params_hash="another profile", point_key="other")
    path = tmp_path / "runs" / "item_count" / grid.RESULTS
    path.parent.mkdir(parents=True)
    pd.concat([item_rows, other]).to_parquet(path)
    efficiency_path = efficiency.efficiency_path(cfg)
    efficiency_path.parent.mkdir(parents=True)
    # The efficiency table keeps every profile's rows (results.upsert): redraw takes this one's.
    pd.concat([efficiency_table().assign(params_hash=cfg.fingerprint()),
               efficiency_table().assign(params_hash="another profile")]).to_parquet(
        efficiency_path)

    written, missing = report.redraw(cfg)
    names = {p.name for p in written}
    assert {"figure9_item_count.png", "efficiency.png"} <= names
    assert any(line.startswith("Table 2") for line in missing)
    assert any("figure10_recommender_size" in line for line in missing)
    assert any("prompt growth" in line for line in missing)


def test_a_figure_is_written_atomically_and_shown_only_in_a_kernel(tmp_path, monkeypatch):
    """Issue 23: a failed save must leave the earlier figure whole (each file is written
    under a temporary name and renamed), and a figure is displayed inline only when a
    notebook kernel runs (outside one, nothing is displayed)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    first = plots.save_figure(fig, tmp_path, "line")
    before = {p.name: p.read_bytes() for p in first}
    assert plots.show_inline(first[0]) is False  # pytest is no kernel

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    original = fig.savefig

    def half_then_fail(path, **kwargs):
        original(path, **kwargs)
        with open(path, "r+b") as handle:
            handle.truncate(100)
        raise OSError("disk full")

    monkeypatch.setattr(fig, "savefig", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        plots.save_figure(fig, tmp_path, "line")
    assert {p.name: p.read_bytes() for p in first} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["line.pdf", "line.png"]

    shown = []
    import IPython
    import IPython.display

    class Kernel:
        kernel = object()

    monkeypatch.setattr(IPython, "get_ipython", lambda: Kernel())
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj))
    assert plots.show_inline(first[0]) is True
    assert shown and shown[0].data == before["line.png"]
