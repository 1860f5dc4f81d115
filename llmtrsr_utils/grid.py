"""Batch runs: one notebook execution per grid point, one results row per finished point.

A grid file (``params/ablations/*.yaml``) names the notebook each point runs and the axes to
cross: dotted config keys (``recommender.item_num``) and ``system`` (a Table-2 system, passed to
the notebook). ``llmtrsr run-grid`` executes the points with papermill into
``<runs_dir>/<grid>/<point>/`` and appends a row per finished point to
``<runs_dir>/<grid>/results.parquet``: every param, every metric with its CI, the timings.

Restarting is free: a point whose row is in the table (same settings) is skipped; a failed point
is reported at the end and the others still run; rows are appended by writing a new table under
a temporary name and renaming it, so a kill never leaves a half-written or duplicated row.
Summaries and adapters are shared with every other run through the work dir and the caches.

papermill is the executor (it injects parameters and keeps the executed notebook); what is
written here is only the grid bookkeeping, which no library does for notebooks.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from llmtrsr_utils import systems
from llmtrsr_utils.artifacts import check_writable
from llmtrsr_utils.config import (
    Config,
    ConfigError,
    apply_override,
    config_from_dict,
    load_config,
    override_list,
    project_root,
)
from llmtrsr_utils.kernels import ipc_kernel_manager
from llmtrsr_utils.results import upsert

log = logging.getLogger("llmtrsr")

SYSTEM_AXIS = "system"
# A grid without a system axis runs LLM-TRSR with the paper's first paradigm.
DEFAULT_SYSTEM = systems.paradigm_system(systems.HIERARCHICAL)
GRID_KEYS = {"name", "description", "notebook", "axes", "figure", "anchors", "anchor_axis"}
# Where grids beside the paper's ablations live (issue 22's anchored Figure 11): `llmtrsr
# figures` draws them when a profile ran them, and does not miss them when it did not.
STUDIES_DIR = "params/studies"
RESULTS = "results.parquet"


@dataclass
class Grid:
    """A grid file: which notebook, which axes; values are crossed in the order written."""

    name: str
    notebook: Path
    axes: dict[str, list[Any]]
    description: str = ""
    figure: str | None = None
    source: str = ""
    # Systems whose prompt does not depend on ``anchor_axis`` (the null and oracle controls do
    # not read a summary): run once per combination of the other axes, at ``anchor_axis``'s
    # first value, and drawn at both ends of the figure's axis.
    anchors: list[str] = field(default_factory=list)
    anchor_axis: str | None = None


@dataclass
class Point:
    """One combination of axis values."""

    values: dict[str, Any]
    overrides: list[str] = field(default_factory=list)

    @property
    def system(self) -> str:
        return self.values.get(SYSTEM_AXIS, DEFAULT_SYSTEM)

    @property
    def name(self) -> str:
        """A folder name that says what the point is: ``item_num-3_llmtrsr-hierarchical``."""
        parts = [str(v) if k == SYSTEM_AXIS else f"{k.rsplit('.', 1)[-1]}-{v}"
                 for k, v in self.values.items()]
        return re.sub(r"[^A-Za-z0-9._=-]+", "-", "_".join(parts))


@dataclass
class GridReport:
    """What a grid run did: points run now, skipped as done, and failed (name, error)."""

    grid: str
    results_path: Path
    spec: Grid | None = None
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    def rows(self, cfg: Config) -> pd.DataFrame:
        """This grid's finished rows for the profile ``cfg``, in grid order."""
        return rows_for(load_grid_results(self.results_path), cfg, self.spec)


def load_grid(path: str | Path, axes: Mapping[str, Sequence[Any]] | None = None) -> Grid:
    """Read and check a grid file; ``axes`` replaces the values of named axes (a reduced grid)."""
    path = Path(path)
    source = str(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{source}: grid file not found") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping with keys {', '.join(sorted(GRID_KEYS))}")
    unknown = set(raw) - GRID_KEYS
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(sorted(unknown))}; known: "
                          f"{', '.join(sorted(GRID_KEYS))}")
    for key in ("notebook", "axes"):
        if key not in raw:
            raise ConfigError(f"{source}: missing key '{key}'")
    if not isinstance(raw["axes"], dict) or not raw["axes"]:
        raise ConfigError(f"{source}: key 'axes' expects a mapping of axis -> list of values")
    grid_axes = {str(k): v for k, v in raw["axes"].items()}
    for key, values in (axes or {}).items():
        if key not in grid_axes:
            raise ConfigError(f"{source}: cannot reduce axis '{key}': the grid's axes are "
                              f"{', '.join(grid_axes)}")
        grid_axes[key] = list(values)
    for key, values in grid_axes.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{source}: axis '{key}' expects a non-empty list of values")
        if key == SYSTEM_AXIS:
            known = systems.names(systems.TRAINED_KINDS)
            bad = [v for v in values if v not in known]
            if bad:
                raise ConfigError(f"{source}: axis 'system': unknown {bad}; known: "
                                  f"{', '.join(known)}")
            continue
        for value in values:  # the schema checks key and type now, before any point runs
            trial: dict[str, Any] = {}
            apply_override(trial, f"{key}={json.dumps(value)}", source=source)
            try:
                config_from_dict(trial, source="value")
            except ConfigError as err:
                raise ConfigError(f"{source}: axis '{key}': {err}") from None
    anchors = raw.get("anchors") or []
    anchor_axis = raw.get("anchor_axis")
    if anchors:
        known = systems.names(systems.TRAINED_KINDS)
        bad = [v for v in anchors if v not in known]
        if not isinstance(anchors, list) or bad:
            raise ConfigError(f"{source}: key 'anchors' expects a list of trained systems; "
                              f"unknown {bad}; known: {', '.join(known)}")
        if anchor_axis not in grid_axes or anchor_axis == SYSTEM_AXIS:
            raise ConfigError(f"{source}: key 'anchor_axis' must name one of the grid's axes "
                              f"({', '.join(k for k in grid_axes if k != SYSTEM_AXIS)}) when "
                              f"'anchors' is set; got {anchor_axis!r}")
    notebook = Path(raw["notebook"])
    if not notebook.is_absolute():
        notebook = project_root() / notebook
    if not notebook.is_file():
        raise ConfigError(f"{source}: key 'notebook': {notebook} does not exist")
    return Grid(name=str(raw.get("name") or path.stem), notebook=notebook, axes=grid_axes,
                description=str(raw.get("description", "")), figure=raw.get("figure"),
                source=source, anchors=list(anchors), anchor_axis=anchor_axis)


# Which list of the params' ``ablations`` section sets which axis of which grid (a CPU profile
# runs fewer values). Only the grid's own ablated axis: the summarizer grid's fixed
# item_num 0 must not take the item-count grid's values.
ABLATION_AXES = {"item_count": ("recommender.item_num", "item_nums"),
                 "recommender_size": ("recommender.model", "recommenders"),
                 "summarizer_size": ("summarizer.model", "summarizers")}


def profile_axes(cfg: Config, grid_file: str | Path) -> dict[str, list[Any]]:
    """The axis of a shipped grid that the params' ``ablations`` section reduces, if any."""
    spec = load_grid(grid_file)
    if spec.name not in ABLATION_AXES:
        return {}
    axis, name = ABLATION_AXES[spec.name]
    values = getattr(cfg.ablations, name)
    return {axis: list(values)} if values is not None and axis in spec.axes else {}


def expand(grid: Grid) -> list[Point]:
    """Every combination of axis values, first axis slowest; then each anchor system once per
    combination of the other axes, at the anchor axis's first value."""
    keys = list(grid.axes)
    combos = [dict(zip(keys, combo, strict=True))
              for combo in itertools.product(*(grid.axes[k] for k in keys))]
    for anchor in grid.anchors:
        seen = []
        for combo in combos:
            values = {**combo, grid.anchor_axis: grid.axes[grid.anchor_axis][0],
                      SYSTEM_AXIS: anchor}
            if values not in seen:
                seen.append(values)
        combos += seen
    return [Point(values, [f"{k}={json.dumps(v)}" for k, v in values.items()
                           if k != SYSTEM_AXIS]) for values in combos]


def point_key(cfg: Config, system: str) -> str:
    """Identifies a finished point: the settings that change results, the system, and the
    training seeds it pools (left out for the one default seed, as before seeds existed)."""
    key = f"{cfg.fingerprint()}:{system}"
    if cfg.training_seeds != [cfg.seed]:
        key += ":seeds=" + ",".join(str(seed) for seed in cfg.training_seeds)
    return key


def flat_params(cfg: Config) -> dict[str, Any]:
    """Every parameter as a ``param.<dotted key>`` column (lists as JSON text)."""
    flat: dict[str, Any] = {}

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                flat[f"param.{prefix}{key}"] = json.dumps(value) if isinstance(value, list) \
                    else value
    walk(cfg.to_dict(), "")
    return flat


def grid_dir(cfg: Config, grid: Grid, runs_dir: str | Path | None = None) -> Path:
    base = Path(runs_dir) if runs_dir is not None else cfg.runs_path
    return base / grid.name


def load_grid_results(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no grid results yet; run `llmtrsr run-grid`")
    return pd.read_parquet(path)


def run_grid(grid_file: str | Path, params_file: str | Path,
             overrides: str | Sequence[str] = (), *,
             axes: Mapping[str, Sequence[Any]] | None = None, runs_dir: str | Path | None = None,
             kernel_name: str = "python3", executor: str = "papermill") -> GridReport:
    """Run every point not yet in the grid's results table; never stop at a failed point.

    ``executor``: ``papermill`` (default) runs ``grid.notebook`` per point and keeps the executed
    notebook; ``inprocess`` makes the same two calls as ``notebooks/grid_point.ipynb`` in this
    process (for machines without a Jupyter kernel, e.g. a GPU node; the model cache stays warm).
    """
    if executor not in ("papermill", "inprocess"):
        raise ValueError(f"executor must be 'papermill' or 'inprocess', got {executor!r}")

    overrides = override_list(overrides)  # papermill passes a string as typed after -p
    params_path = Path(params_file).resolve()
    base = load_config(params_path, overrides)
    grid = load_grid(grid_file, axes)
    out = check_writable(grid_dir(base, grid, runs_dir))
    results_path = out / RESULTS
    report = GridReport(grid.name, results_path, grid)
    done = set(load_grid_results(results_path)["point_key"]) if results_path.is_file() else set()
    points = expand(grid)
    configs = point_configs(base, grid)  # every point's params validated before any runs
    for index, (point, cfg) in enumerate(zip(points, configs, strict=True), start=1):
        key = point_key(cfg, point.system)
        if key in done:
            log.info("[%d/%d] %s: done already; skipped", index, len(points), point.name)
            report.skipped.append(point.name)
            continue
        point_dir = out / point.name
        point_dir.mkdir(parents=True, exist_ok=True)
        result_file = point_dir / "result.json"
        result_file.unlink(missing_ok=True)
        log.info("[%d/%d] %s: running %s", index, len(points), point.name, grid.notebook.name)
        began = time.perf_counter()
        try:
            if executor == "inprocess":
                _run_point_inprocess(cfg, point.system, result_file)
            else:
                import papermill as pm

                pm.execute_notebook(
                    str(grid.notebook), str(point_dir / grid.notebook.name),
                    cwd=str(Path.cwd()),
                    parameters={"params_file": str(params_path),
                                "overrides": [*overrides, *point.overrides],
                                "system": point.system, "output_dir": str(point_dir.resolve())},
                    kernel_name=kernel_name, progress_bar=False, log_output=False,
                    kernel_manager_class=ipc_kernel_manager())
            result = json.loads(result_file.read_text())
        except Exception as err:  # a failed point must not stop the grid: reported at the end
            message = _first_line(err)
            log.error("[%d/%d] %s failed: %s", index, len(points), point.name, message)
            report.failed.append((point.name, message))
            continue
        row = {"grid": grid.name, "point": point.name, "point_key": key,
               "base_params_hash": base.fingerprint(), "wall_seconds": round(
                   time.perf_counter() - began, 2),
               **{f"axis.{k}": v for k, v in point.values.items()}, **result,
               **flat_params(cfg)}
        upsert(results_path, pd.DataFrame([row]), keys=("point_key",))  # replaces a rerun
        report.ran.append(point.name)
    return report


def _run_point_inprocess(cfg: Config, system: str, result_file: Path) -> None:
    """What ``notebooks/grid_point.ipynb`` does, without a kernel."""
    from llmtrsr_utils.artifacts import write_json
    from llmtrsr_utils.pipeline import point_result, run_evaluation

    run_evaluation(cfg, [system], [], reuse=True, write_tables=False)  # trains what it lacks
    write_json(point_result(cfg, system), result_file)


def _first_line(err: Exception) -> str:
    """papermill's errors carry the notebook's traceback; the last line says what failed."""
    ename = getattr(err, "ename", None)
    if ename:
        return f"{ename}: {getattr(err, 'evalue', '')}"
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__


def point_configs(cfg: Config, spec: Grid) -> list[Config]:
    """Each point's config: ``cfg`` with the point's overrides, validated, in grid order."""
    configs = []
    for point in expand(spec):
        raw = cfg.to_dict()
        for override in point.overrides:
            apply_override(raw, override, source=spec.source)
        configs.append(config_from_dict(raw, source=spec.source))
    return configs


def point_keys(cfg: Config, spec: Grid) -> list[str]:
    """The results-table keys of a grid's points on top of ``cfg``, in grid order."""
    return [point_key(c, p.system) for c, p in zip(point_configs(cfg, spec), expand(spec),
                                                   strict=True)]


def rows_for(table: pd.DataFrame, cfg: Config, spec: Grid | None = None) -> pd.DataFrame:
    """The rows a profile produced (same base params), latest per point; with ``spec``, only
    the points of that grid (a reduced grid does not show rows of a fuller one), in its order."""
    rows = table[table["base_params_hash"] == cfg.fingerprint()]
    rows = rows.drop_duplicates(subset="point_key", keep="last")
    if spec is None:
        return rows
    keys = point_keys(cfg, spec)
    present = set(rows["point_key"])
    return rows.set_index("point_key").loc[[k for k in keys if k in present]].reset_index()


def point_rows(cfg: Config) -> pd.DataFrame:
    """The results rows a grid point's params made for its training seeds (its work dir keeps
    other params' rows beside them)."""
    from llmtrsr_utils.results import load_results

    results = load_results(cfg, current=True)
    return results[results["seed"].isin(cfg.training_seeds)]


def point_tables(cfg: Config, system: str, rows: pd.DataFrame | None = None
                 ) -> list[pd.DataFrame]:
    """Per-user test metrics of a grid point, one table per training seed of ``cfg`` that its
    work dir holds (the selected test rows' score files; a seed evaluated twice: the later).

    Args:
        rows: :func:`point_rows` of ``cfg`` when the caller has read them already.

    Raises:
        LookupError: no selected test row of ``system`` under these params and seeds.
    """
    from llmtrsr_utils.results import results_dir, seed_tables

    rows = point_rows(cfg) if rows is None else rows
    tables = seed_tables(rows, results_dir(cfg), system)
    if not tables:
        raise LookupError(f"{results_dir(cfg)}: no selected test row of {system} with these "
                          f"params and seeds {cfg.training_seeds}")
    return tables


ANCHORED_COLUMNS = ["point", "system", "summarizer", "group", "metric", "mean", "ci_low",
                    "ci_high", "n_seeds", "seed_min", "seed_max", "versus", "diff",
                    "diff_ci_low", "diff_ci_high", "p_value", "git_commits", "torch",
                    "hardware"]


def anchored_tests(cfg: Config, spec: Grid, rows: pd.DataFrame) -> pd.DataFrame:
    """An anchored grid's figures as numbers: every point's mean over seeds with its 95% CI,
    and its paired test against each anchor at the same values of the other axes (Figure 11
    anchored: each summarizer against NULL and against the older titles, per item_num).

    The tests are :func:`llmtrsr_utils.metrics.paired_bootstrap`, pooled over the training
    seeds (each side's seeds resampled independently: a point's seed 43 adapter has nothing to
    do with an anchor's), over the same test users and candidates. Computed from the score
    files in each point's work dir, so ``llmtrsr figures`` can write it without rerunning.

    Args:
        cfg: the profile the grid ran on (its base params).
        spec: the grid; without ``anchors`` there is nothing to compare and the table is empty.
        rows: the grid's finished rows for ``cfg`` (:func:`rows_for`).

    Returns:
        One row per point and metric with ``versus`` empty (the point's own values), then one
        per point, metric and anchor (``versus``: the anchor system; ``diff``: point minus
        anchor, with its CI and p); ``group`` names the other axes' values (``item_num 0``),
        ``summarizer`` the anchor axis's value (empty for an anchor), ``git_commits`` the
        commits that made the point's seeds' test rows, ``torch`` and ``hardware`` theirs.
        Columns :data:`ANCHORED_COLUMNS`.
    """
    from llmtrsr_utils import metrics
    from llmtrsr_utils.results import torch_versions

    if not spec.anchors or rows.empty:
        return pd.DataFrame(columns=ANCHORED_COLUMNS)
    by_key = {point_key(c, p.system): (p, c)
              for p, c in zip(expand(spec), point_configs(cfg, spec), strict=True)}
    others = [k for k in spec.axes if k not in (spec.anchor_axis, SYSTEM_AXIS)]
    points = []
    for key in rows["point_key"]:
        point, point_cfg = by_key[key]
        stored = point_rows(point_cfg)
        made = stored[(stored["system"] == point.system) & (stored["split"] == "test")]
        group = ", ".join(f"{k.rsplit('.', 1)[-1]} {point.values[k]}" for k in others)
        points.append({
            "point": point.name, "system": point.system, "group": group,
            "summarizer": "" if point.system in spec.anchors else str(
                point.values[spec.anchor_axis]),
            "tables": point_tables(point_cfg, point.system, stored), "seed": point_cfg.seed,
            "git_commits": " ".join(sorted(set(made["git_commit"].dropna().astype(str)))),
            "torch": " ".join(torch_versions(made["library_versions"])),
            "hardware": "; ".join(sorted(set(made["hardware"].dropna().astype(str))))})
    out = []
    for metric in metrics.METRICS:
        for p in points:
            ci = metrics.pooled_ci(p["tables"], seed=p["seed"], metrics=[metric]).loc[metric]
            own = {"point": p["point"], "system": p["system"], "summarizer": p["summarizer"],
                   "group": p["group"], "metric": metric, "mean": ci["mean"],
                   "ci_low": ci["ci_low"], "ci_high": ci["ci_high"],
                   "n_seeds": int(ci["n_seeds"]), "seed_min": ci["seed_min"],
                   "seed_max": ci["seed_max"], "git_commits": p["git_commits"],
                   "torch": p["torch"], "hardware": p["hardware"]}
            out.append({**own, "versus": ""})
            for anchor in (a for a in points
                           if a["system"] in spec.anchors and a["group"] == p["group"]
                           and a["system"] != p["system"]):
                test = metrics.paired_bootstrap(p["tables"], anchor["tables"], metric,
                                                seed=p["seed"])
                out.append({**own, "versus": anchor["system"], "diff": test["diff"],
                            "diff_ci_low": test["ci_low"], "diff_ci_high": test["ci_high"],
                            "p_value": test["p_value"]})
    return pd.DataFrame(out, columns=ANCHORED_COLUMNS)


class GridFailedError(RuntimeError):
    """Some grid points failed; the others finished and are in the results table."""


def run_ablation(grid_file: str | Path, params_file: str | Path,
                 overrides: str | Sequence[str] = (), **kwargs: Any) -> GridReport:
    """What notebooks 05 to 07 do: run the grid at the params' reduced values
    (``ablations.*``, :func:`profile_axes`), skipping finished points. ``kwargs`` go to
    :func:`run_grid`. The report's ``spec.axes`` are the values run."""
    cfg = load_config(Path(params_file).resolve(), override_list(overrides))
    axes = profile_axes(cfg, grid_file)
    log.info("grid %s run here: %s", Path(grid_file).stem, load_grid(grid_file, axes).axes)
    return run_grid(grid_file, params_file, overrides, axes=axes, **kwargs)


def summary(report: GridReport) -> pd.DataFrame:
    """One line per point: ran, skipped (done before) or failed with its error."""
    lines = ([{"point": p, "status": "ran", "error": ""} for p in report.ran]
             + [{"point": p, "status": "skipped (done)", "error": ""} for p in report.skipped]
             + [{"point": p, "status": "failed", "error": e} for p, e in report.failed])
    return pd.DataFrame(lines, columns=["point", "status", "error"])


def raise_on_failure(report: GridReport) -> None:
    if report.failed:
        listed = "; ".join(f"{p}: {e}" for p, e in report.failed)
        raise GridFailedError(f"grid {report.grid}: {len(report.failed)} point(s) failed "
                              f"({listed}); rerun to retry them, finished points are kept in "
                              f"{report.results_path}")


def metric_table(rows: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """The given columns, then Recall@k and MRR@k as 'mean [low, high]'."""
    from llmtrsr_utils.metrics import METRICS

    table = rows[list(columns)].copy()
    for name in METRICS:
        if name in rows.columns:
            table[name] = [f"{m:.3f} [{lo:.3f}, {hi:.3f}]" for m, lo, hi in zip(
                rows[name], rows[f"{name}_ci_low"], rows[f"{name}_ci_high"], strict=True)]
    return table.reset_index(drop=True)
