"""Grid runs: points expand, run through papermill, resume without rerunning, survive failures."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from llmtrsr_utils import grid
from llmtrsr_utils.config import ConfigError, load_config
from llmtrsr_utils.recommend import resolve
from tests.conftest import smoke_overrides

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "params" / "smoke.yaml"


def write_grid(path: Path, axes: dict, **extra) -> Path:
    path.write_text(yaml.safe_dump({"name": path.stem, "notebook": "notebooks/grid_point.ipynb",
                                    "axes": axes, **extra}))
    return path


def test_expand_crosses_axes_in_order_and_names_points(tmp_path):
    spec = grid.load_grid(write_grid(tmp_path / "g.yaml", {
        "recommender.item_num": [0, 2], "system": ["llmtrsr-hierarchical", "llmtrsr-recurrent"]}))
    points = grid.expand(spec)
    assert [p.name for p in points] == [
        "item_num-0_llmtrsr-hierarchical", "item_num-0_llmtrsr-recurrent",
        "item_num-2_llmtrsr-hierarchical", "item_num-2_llmtrsr-recurrent"]
    assert points[1].overrides == ["recommender.item_num=0"]
    assert points[1].system == "llmtrsr-recurrent"


def test_reduced_axes_replace_the_grid_values(tmp_path):
    spec = grid.load_grid(ROOT / "params" / "ablations" / "item_count.yaml",
                          {"recommender.item_num": [0, 5]})
    assert spec.axes["recommender.item_num"] == [0, 5]
    assert len(grid.expand(spec)) == 4


@pytest.mark.parametrize("axes, message", [
    ({"recommender.itemnum": [1]}, "unknown key 'recommender.itemnum'"),
    ({"recommender.item_num": ["three"]}, "'recommender.item_num' expects int or null"),
    ({"system": ["sasrec"]}, "axis 'system': unknown ['sasrec']"),
    ({"recommender.item_num": []}, "axis 'recommender.item_num' expects a non-empty list"),
])
def test_bad_grid_files_name_the_file_and_axis(tmp_path, axes, message):
    path = write_grid(tmp_path / "bad.yaml", axes)
    with pytest.raises(ConfigError) as info:
        grid.load_grid(path)
    assert str(path) in str(info.value) and message in str(info.value)


def test_grid_file_with_unknown_key_or_missing_notebook(tmp_path):
    path = write_grid(tmp_path / "bad.yaml", {"system": ["tallrec"]}, figures="x")
    with pytest.raises(ConfigError, match="unknown key"):
        grid.load_grid(path)
    path.write_text(yaml.safe_dump({"notebook": "notebooks/nope.ipynb",
                                    "axes": {"system": ["tallrec"]}}))
    with pytest.raises(ConfigError, match="nope.ipynb does not exist"):
        grid.load_grid(path)


def test_every_shipped_grid_file_loads():
    files = sorted((ROOT / "params" / "ablations").glob("*.yaml"))
    assert {f.stem for f in files} == {"item_count", "recommender_size", "summarizer_size"}
    for path in files:
        spec = grid.load_grid(path)
        assert spec.figure in __import__("llmtrsr_utils.plots").plots.GRID_FIGURES


def test_adapters_are_kept_apart_per_setting_and_shared_when_equal(tmp_path, movielens_dir):
    base = smoke_overrides(tmp_path, movielens_dir)
    three = load_config(SMOKE, [*base, "recommender.item_num=3"])
    zero = load_config(SMOKE, [*base, "recommender.item_num=0"])
    faster = load_config(SMOKE, [*base, "recommender.score_batch_size=2"])
    system = "llmtrsr-hierarchical"

    def adapter_dir(cfg, name):
        return resolve(cfg, name).adapter_dir

    assert adapter_dir(three, system) != adapter_dir(zero, system)
    assert adapter_dir(three, system) == adapter_dir(faster, system)  # scoring-only setting
    # TALLRec ignores the summarizer, so its adapter survives a summarizer change.
    other = load_config(SMOKE, [*base, "summarizer.max_new_tokens=9"])
    assert adapter_dir(three, "tallrec") == adapter_dir(other, "tallrec")
    assert adapter_dir(three, system) != adapter_dir(other, system)


def test_grid_runs_resumes_and_reports_a_failed_point(tmp_path, movielens_dir):
    """Two good points and one that fails: the good ones give two rows, the failure is reported;
    a rerun executes nothing that finished and retries only the failed point."""
    overrides = smoke_overrides(tmp_path / "work", movielens_dir,
                                f"summarizer.cache_file={tmp_path / 'gen.sqlite'}")
    grid_file = write_grid(tmp_path / "two.yaml", {
        "recommender.item_num": [0, 1], "system": ["llmtrsr-hierarchical"]})
    report = grid.run_grid(grid_file, SMOKE, overrides, runs_dir=tmp_path / "runs")
    assert report.ran == ["item_num-0_llmtrsr-hierarchical", "item_num-1_llmtrsr-hierarchical"]
    assert not report.failed and not report.skipped
    table = pd.read_parquet(tmp_path / "runs" / "two" / "results.parquet")
    assert len(table) == 2
    assert list(table["axis.recommender.item_num"]) == [0, 1]
    assert list(table["param.recommender.item_num"]) == [0, 1]
    for column in ("recall@5", "recall@5_ci_low", "mrr@10_ci_high", "ndcg@10",
                   "train_seconds", "wall_seconds", "candidates_per_second",
                   "param.seed", "param.recommender.model", "kit_version"):
        assert table[column].notna().all(), column
    point_dir = tmp_path / "runs" / "two" / "item_num-0_llmtrsr-hierarchical"
    assert (point_dir / "grid_point.ipynb").is_file() and (point_dir / "result.json").is_file()

    again = grid.run_grid(grid_file, SMOKE, overrides, runs_dir=tmp_path / "runs")
    assert again.ran == [] and len(again.skipped) == 2
    assert len(pd.read_parquet(tmp_path / "runs" / "two" / "results.parquet")) == 2

    # A model that cannot load fails its point only.
    grid_file = write_grid(tmp_path / "two.yaml", {
        "recommender.item_num": [0, 1], "recommender.model": ["tiny-random-llama",
                                                              "no-such-model"],
        "system": ["llmtrsr-hierarchical"]})
    report = grid.run_grid(grid_file, SMOKE, overrides, runs_dir=tmp_path / "runs")
    assert len(report.skipped) == 2
    assert [name for name, _ in report.failed] == [
        "item_num-0_model-no-such-model_llmtrsr-hierarchical",
        "item_num-1_model-no-such-model_llmtrsr-hierarchical"]
    assert "no-such-model" in report.failed[0][1]
    with pytest.raises(grid.GridFailedError, match="2 point"):
        grid.raise_on_failure(report)
    assert len(pd.read_parquet(tmp_path / "runs" / "two" / "results.parquet")) == 2


def test_profile_reduces_only_each_grids_own_axis():
    cfg = load_config(ROOT / "params" / "default.yaml")
    ablations = ROOT / "params" / "ablations"
    assert grid.profile_axes(cfg, ablations / "item_count.yaml") == {
        "recommender.item_num": cfg.ablations.item_nums}
    # The summarizer grid keeps its fixed item_num 0 whatever the item-count list says.
    axes = grid.profile_axes(cfg, ablations / "summarizer_size.yaml")
    assert axes == {"summarizer.model": cfg.ablations.summarizers}
    spec = grid.load_grid(ablations / "summarizer_size.yaml", axes)
    assert [p.values["recommender.item_num"] for p in grid.expand(spec)] == [0, 0]


def test_in_process_executor_gives_the_papermill_row(tmp_path, movielens_dir):
    """``executor="inprocess"`` (``run-grid --in-process``, for nodes without a Jupyter kernel)
    makes the grid_point notebook's calls itself: same metrics, no executed notebook."""
    grid_file = write_grid(tmp_path / "one.yaml", {"recommender.item_num": [1],
                                                   "system": ["llmtrsr-hierarchical"]})
    tables = {}
    for executor in ("papermill", "inprocess"):  # each trains its own adapter
        overrides = smoke_overrides(tmp_path / executor / "work", movielens_dir,
                                    f"summarizer.cache_file={tmp_path / 'gen.sqlite'}")
        report = grid.run_grid(grid_file, SMOKE, overrides, runs_dir=tmp_path / executor,
                               executor=executor)
        assert report.ran == ["item_num-1_llmtrsr-hierarchical"] and not report.failed
        tables[executor] = pd.read_parquet(tmp_path / executor / "one" / "results.parquet")
    point = tmp_path / "inprocess" / "one" / "item_num-1_llmtrsr-hierarchical"
    assert (point / "result.json").is_file() and not (point / "grid_point.ipynb").exists()
    metrics = ["recall@5", "mrr@10", "ndcg@10", "point_key"]
    pd.testing.assert_frame_equal(tables["papermill"][metrics], tables["inprocess"][metrics])
    with pytest.raises(ValueError, match="executor must be"):
        grid.run_grid(grid_file, SMOKE, overrides, runs_dir=tmp_path / "x", executor="ray")


def test_anchors_run_once_per_other_axes_and_close_both_ends_of_the_figure(tmp_path):
    """Issue 22's anchored Figure 11: the controls run once per item_num (at the first
    summarizer), not once per summarizer; seeds enter the point key; the figure puts the NULL
    control first and the older-titles control last."""
    from llmtrsr_utils import plots

    spec = grid.load_grid(ROOT / "params" / "studies" / "summarizer_anchored.yaml")
    points = grid.expand(spec)
    assert len(points) == 8
    anchors = [p.values for p in points if p.system in ("null-summary", "oracle-older")]
    assert anchors == [
        {"summarizer.model": "smollm2-135m", "recommender.item_num": 0, "system": s}
        if i == 0 else
        {"summarizer.model": "smollm2-135m", "recommender.item_num": 3, "system": s}
        for s in ("null-summary", "oracle-older") for i in (0, 1)]
    with pytest.raises(ConfigError, match="anchor_axis"):
        grid.load_grid(write_grid(tmp_path / "bad.yaml", {"recommender.item_num": [0]},
                                  anchors=["null-summary"]))
    with pytest.raises(ConfigError, match="anchors"):
        grid.load_grid(write_grid(tmp_path / "bad2.yaml", {"recommender.item_num": [0]},
                                  anchors=["nobody"], anchor_axis="recommender.item_num"))
    cfg = load_config(ROOT / "params" / "laptop.yaml", ["seeds=[42]"])
    one = grid.point_key(cfg, "null-summary")
    assert ":seeds=" not in one
    three = grid.point_key(load_config(ROOT / "params" / "laptop.yaml", ["seeds=[42,43,44]"]),
                           "null-summary")
    assert three == f"{one}:seeds=42,43,44"
    rows = pd.DataFrame([
        {"system": system, "axis.summarizer.model": model, "axis.recommender.item_num": n,
         **{f"{f}@{k}{suffix}": value for f in ("recall", "mrr") for k in (3, 5, 10)
            for suffix in ("", "_ci_low", "_ci_high")}}
        for n in (0, 3) for system, model, value in (
            ("llmtrsr-hierarchical", "smollm2-135m", 0.3), ("llmtrsr-hierarchical",
                                                            "gemma3-270m", 0.35),
            ("oracle-older", "smollm2-135m", 0.5), ("null-summary", "smollm2-135m", 0.2))])
    drawn = []
    original = plots._metric_lines
    plots._metric_lines = lambda ax, part, *a, **k: drawn.append(list(part["x"])) or original(
        ax, part, *a, **k)
    try:
        files = plots.plot_anchored(rows, "summarizer.model", "t", tmp_path, "anchored")
    finally:
        plots._metric_lines = original
    assert drawn[0] == ["Control: no summary (NULL)", "smollm2-135m", "gemma3-270m",
                        "Control: older items verbatim"]
    assert len(drawn) == 4 and {p.suffix for p in files} == {".png", ".pdf"}


def test_anchored_grid_writes_its_numbers_with_paired_tests_against_each_anchor(
        tmp_path, movielens_dir):
    """An anchored grid's table (``llmtrsr figures`` writes it beside the figure, the README's
    ``anchored`` block renders it): each point pooled over its seeds, and tested against every
    anchor of its group. The pooled means are the per-seed rows' means, so the right adapters
    and seeds were read."""
    from llmtrsr_utils import readme, report
    from llmtrsr_utils.results import load_results

    grid_file = write_grid(
        tmp_path / "anchored.yaml",
        {"summarizer.model": ["tiny-random-llama"], "recommender.item_num": [0],
         "system": ["llmtrsr-hierarchical"]},
        anchors=["null-summary", "oracle-older"], anchor_axis="summarizer.model",
        figure="figure11_anchored")
    overrides = smoke_overrides(tmp_path / "work", movielens_dir,
                                f"summarizer.cache_file={tmp_path / 'gen.sqlite'}", "seeds=[1,2]")
    ran = grid.run_grid(grid_file, SMOKE, overrides, executor="inprocess")
    assert not ran.failed and len(ran.ran) == 3
    cfg = load_config(SMOKE, overrides)
    spec = grid.load_grid(grid_file)
    tests = grid.anchored_tests(cfg, spec, ran.rows(cfg))
    recall = tests[tests["metric"] == "recall@5"]
    own = recall[recall["versus"] == ""].set_index("system")
    assert list(own.index) == ["llmtrsr-hierarchical", "null-summary", "oracle-older"]
    assert list(own["summarizer"]) == ["tiny-random-llama", "", ""]
    assert set(own["group"]) == {"item_num 0"} and set(own["n_seeds"]) == {2}
    results = load_results(cfg)
    for point_cfg, point in zip(grid.point_configs(cfg, spec), grid.expand(spec), strict=True):
        seeds = results[(results["system"] == point.system) & (results["split"] == "test")
                        & results["selected"]
                        & (results["params_hash"] == point_cfg.fingerprint())]
        assert sorted(seeds["seed"]) == [1, 2]
        assert own.loc[point.system, "mean"] == pytest.approx(seeds["recall@5"].mean())
    pairs = recall[recall["versus"] != ""]
    assert sorted(zip(pairs["system"], pairs["versus"], strict=True)) == [
        ("llmtrsr-hierarchical", "null-summary"), ("llmtrsr-hierarchical", "oracle-older"),
        ("null-summary", "oracle-older"), ("oracle-older", "null-summary")]
    for _, row in pairs.iterrows():
        assert row["diff"] == pytest.approx(own.loc[row["system"], "mean"]
                                            - own.loc[row["versus"], "mean"])
        assert row["diff_ci_low"] <= row["diff"] <= row["diff_ci_high"]
        assert 0 <= row["p_value"] <= 1

    written, _ = report.redraw(cfg, [grid_file])
    csv = cfg.figures_path / "figure11_anchored.csv"
    assert csv in written
    frame = pd.read_csv(csv)
    text = readme.anchored(frame)
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert [line.split("|")[2].strip() for line in table[2:]] == [
        "Control: no summary (NULL)", "tiny-random-llama",
        "Control: older items verbatim"]
    from llmtrsr_utils.artifacts import library_versions

    made = text.split("Made by:")[1].strip().splitlines()
    assert len(made) == 1 and made[0].startswith(
        "- tiny-random-llama (item_num 0), Control: no summary (NULL) (item_num 0), ")
    # The recorded version (the distribution's: 2.13.0 for a +cu130 build), not torch.__version__.
    torch = library_versions()["torch"]
    assert f"torch {torch}," in made[0] and frame["git_commits"].iloc[0][:7] in made[0]
    gap = recall[(recall["system"] == "oracle-older") & (recall["versus"] == "null-summary")]
    point = gap["point"].iloc[0]
    assert readme.value_gap(frame, point, "null-summary") == (
        f"{gap['diff'].iloc[0]:+.2f} ({readme._p_plain(gap['p_value'].iloc[0])})")
    with pytest.raises(readme.ReadmeError, match="no paired test of point"):
        readme.value_gap(frame, point, "tallrec")
