"""The README's result tables, generated from the committed CSVs (`llmtrsr report --readme`).

A generated block in the README sits between two HTML comments that say what it is made from:

    <!-- generated: table2 figures/laptop/results.csv -->
    | system | Recall@3 | ...
    <!-- end generated -->

:func:`render` rewrites every block from its source; ``llmtrsr report --readme --check`` (and
``tests/test_readme.py``) fails when a block differs from what its CSV gives, so a number in
the README is never typed by hand and never drifts. Each value is rounded once, from the
unrounded CSV column. Kinds:

- ``table2 <table2_values.csv | results.csv>``: Table 2 (the selected test rows, one per system
  in the registry's order; pooled over seeds when the file says so), mean [95% CI] per metric;
- ``provenance <results.csv | table2_values.csv>``: the commits (and whether the tree was clean),
  torch versions and hardware that made the rows;
- ``paired <paired_tests.csv> [metric] [versus,...] [kinds]``: paired differences with CI and
  p (``kinds``: only systems of these registry kinds, e.g. ``llm,control``);
- ``curve <learning_curve.csv> [metric]``: the learning curve on validation users;
- ``shuffle <history_shuffle.csv> [metric]``: the history shuffle;
- ``decision <decision.csv> [metric]``: the decision table (:mod:`llmtrsr_utils.decision`);
- ``probe <summary_probe.csv> [split]``: the summary probe's screen of summarizer settings
  (:mod:`llmtrsr_utils.summary_probe`);
- ``anchored <figure11_anchored.csv> [metric]``: an anchored grid's points, per group of the
  other axes, between its anchors, each with its paired test against every anchor
  (:func:`llmtrsr_utils.grid.anchored_tests`).

A number quoted in the prose is generated the same way, inline, between
``<!-- value: <kind> <csv> [args] -->`` and ``<!-- end value -->`` (:data:`VALUE_KINDS`):

- ``diff <paired_tests.csv> <system> <versus> [metric]``: ``+0.19 (p 0.006)``;
- ``mean <results.csv | table2_values.csv> <system> [metric]``: the selected test row's value,
  ``0.44``;
- ``rise <learning_curve.csv> <system> [metric]``: the validation curve, ``0.25 → 0.40 → 0.60``;
- ``gap <figure11_anchored.csv> <point> <anchor> [metric]``: a grid point against an anchor of
  its group, ``+0.23 (p < 0.001)``.

Written here because no library renders these tables from these files; pandas' ``to_markdown``
does the table layout.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from llmtrsr_utils import decision, results, systems

BLOCK = re.compile(r"(<!-- generated: (?P<spec>[^>]*?) -->\n)(?P<body>.*?)(<!-- end generated -->)",
                   re.DOTALL)
VALUE = re.compile(r"(<!-- value: (?P<spec>[^>]*?) -->)(?P<body>.*?)(<!-- end value -->)",
                   re.DOTALL)
TABLE_METRICS = ("recall@3", "recall@5", "recall@10", "mrr@5", "mrr@10", "ndcg@10")


class ReadmeError(ValueError):
    """A generated block that cannot be made (unknown kind, missing file or column)."""


def _name(metric: str) -> str:
    family, k = metric.split("@")
    return f"{'MRR' if family == 'mrr' else family.upper() if family == 'ndcg' else 'Recall'}@{k}"


def _interval(row: pd.Series, metric: str, digits: int = 2) -> str:
    return (f"{row[metric]:.{digits}f} [{row[f'{metric}_ci_low']:.{digits}f}, "
            f"{row[f'{metric}_ci_high']:.{digits}f}]")


def _signed(value: float, low: float, high: float) -> str:
    return f"{value:+.3f} [{low:+.3f}, {high:+.3f}]"


def _p(value: float) -> str:
    """A p-value cell, bold below 0.05; 0 (below the bootstrap's 1/1000 resolution) is
    ``< 0.001``, bold like any other significant one."""
    return "**< 0.001**" if value == 0 else f"**{value:.3f}**" if value < 0.05 \
        else f"{value:.3f}"


def _markdown(frame: pd.DataFrame) -> str:
    return frame.to_markdown(index=False, tablefmt="github", disable_numparse=True) + "\n"


def _selected(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per system in Table 2 order: a table2_values file as it is, a results file's
    selected test rows (the last per system). A results file holding several training seeds of
    a system is refused: its last row would be one seed's figure, not the mean over seeds."""
    if "split" in frame.columns:
        frame = frame[(frame["split"] == "test") & frame["selected"].astype(bool)]
        if "seed" in frame.columns:
            seeds = frame.groupby("system")["seed"].nunique()
            if (seeds > 1).any():
                name = seeds[seeds > 1].index[0]
                found = sorted(int(x) for x in frame.loc[frame["system"] == name, "seed"].unique())
                raise ReadmeError(f"{name} has test rows of seeds {found}; quote the mean over "
                                  f"seeds from table2_values.csv")
        frame = frame.drop_duplicates("system", keep="last")
    order = systems.order_names(frame["system"])
    return frame.set_index("system").loc[order].reset_index()


def table2(frame: pd.DataFrame, *args: str) -> str:
    rows = _selected(frame)
    seeds = "n_seeds" in rows.columns and bool((rows["n_seeds"] > 1).any())
    out = pd.DataFrame({"system": [systems.label(s) for s in rows["system"]]})
    if seeds:
        out["seeds"] = rows["n_seeds"].astype(int).to_numpy()
    for metric in TABLE_METRICS:
        out[_name(metric)] = [_interval(r, metric) for _, r in rows.iterrows()]
    if seeds:
        out["Recall@5 across seeds"] = [
            f"{r['recall@5_seed_min']:.2f} to {r['recall@5_seed_max']:.2f}" if r["n_seeds"] > 1
            else "" for _, r in rows.iterrows()]
    return _markdown(out)


def provenance(frame: pd.DataFrame, *args: str) -> str:
    """Who made the rows: per commit, the systems (and, for rows of several training seeds,
    which seeds: a pooled system may have been made by more than one commit)."""
    if "split" in frame.columns:  # every seed's selected test row, not only the last
        rows = frame[(frame["split"] == "test") & frame["selected"].astype(bool)]
        rows = rows.drop_duplicates(["system", "seed"] if "seed" in rows else ["system"],
                                    keep="last")
        order = {name: i for i, name in enumerate(systems.order_names(rows["system"].unique()))}
        rows = rows.sort_values("system", key=lambda c: c.map(order), kind="stable")
    else:
        rows = _selected(frame)
    seeded = "seed" in rows.columns and rows.groupby("system")["seed"].nunique().gt(1).any()
    lines = []
    for commit, group in rows.groupby(rows["git_commit"].fillna("unknown"), sort=False):
        torch = results.torch_versions(group["library_versions"]) \
            if "library_versions" in group else []
        hardware = sorted({h for h in group.get("hardware", pd.Series(dtype=str)).dropna()})
        clean = "with uncommitted changes" if str(commit).endswith("+dirty") else "clean tree"
        if seeded:
            names = ", ".join(
                f"{systems.label(name)} (seed{'s' if len(seeds) > 1 else ''} "
                f"{', '.join(str(int(x)) for x in seeds)})"
                for name, seeds in group.groupby("system", sort=False)["seed"])
        else:
            names = ", ".join(systems.label(s) for s in group["system"])
        lines.append(f"- {names}: commit {str(commit).removesuffix('+dirty')[:7]} ({clean}), "
                     f"torch {', '.join(torch) or 'not recorded'}, "
                     f"{', '.join(hardware) or 'hardware not recorded'}")
    return "\n".join(lines) + "\n"


def paired(frame: pd.DataFrame, metric: str = "recall@5", versus: str = "",
           kinds: str = "") -> str:
    rows = frame[frame["metric"] == metric]
    if kinds:  # only systems of these registry kinds (llm,control)
        rows = rows[rows["system"].map(lambda s: s in systems.SYSTEMS and systems.SYSTEMS[
            s].kind in kinds.split(","))]
    if versus:
        wanted = versus.split(",")
        rows = rows[rows["versus"].isin(wanted)]
        rows = rows.assign(order=rows["versus"].map(wanted.index)).sort_values(
            ["order", "system"], key=lambda c: c if c.name == "order" else c.map(
                {s: i for i, s in enumerate(systems.order_names(rows["system"]))}))
    out = pd.DataFrame({
        "system": [systems.label(s) for s in rows["system"]],
        "versus": [systems.label(s) for s in rows["versus"]],
        f"{_name(metric)} difference [95% CI]": [
            _signed(r["diff"], r["ci_low"], r["ci_high"]) for _, r in rows.iterrows()],
        "p": [_p(v) for v in rows["p_value"]]})
    if "seeds" in rows.columns and (rows["seeds"] > 1).any():
        out.insert(2, "seeds", [f"{int(a)} vs {int(b)}" for a, b in
                                zip(rows["seeds"], rows["versus_seeds"], strict=True)])
    return _markdown(out)


def curve(frame: pd.DataFrame, metric: str = "recall@5") -> str:
    out = pd.DataFrame({
        "system": [systems.label(s) for s in frame["system"]],
        "examples seen": frame["examples_seen"].astype(int).to_numpy(),
        f"validation {_name(metric)} [95% CI]": [_interval(r, metric)
                                                  for _, r in frame.iterrows()],
        "MRR@5": [f"{v:.2f}" for v in frame["mrr@5"]]})
    return _markdown(out)


def shuffle(frame: pd.DataFrame, metric: str = "recall@5") -> str:
    rows = frame[frame["metric"] == metric]
    out = pd.DataFrame({
        "system": [systems.label(s) for s in rows["system"]],
        "seeds": rows["seeds"].astype(int).to_numpy() if "seeds" in rows else 1,
        f"{_name(metric)} own history": [f"{v:.3f}" for v in rows["normal"]],
        "another user's": [f"{v:.3f}" for v in rows["shuffled"]],
        "difference [95% CI]": [_signed(r["diff"], r["ci_low"], r["ci_high"])
                                for _, r in rows.iterrows()],
        "p": [_p(v) for v in rows["p_value"]]})
    return _markdown(out)


def decision_table(frame: pd.DataFrame, metric: str = "recall@5") -> str:
    return decision.markdown(frame[frame["metric"] == metric])


def probe(frame: pd.DataFrame, split: str = "valid") -> str:
    rows = frame[frame["split"] == split]
    name = _name(rows["metric"].iloc[0]) if len(rows) else "Recall@5"

    def setting(r: pd.Series) -> str:
        parts = [r["model"], r["summary_style"], f"{int(r['max_new_tokens'])} tokens"]
        if r["no_repeat_ngram_size"]:
            parts.append(f"no repeated {int(r['no_repeat_ngram_size'])}-grams")
        if r["repetition_penalty"] != 1.0:
            parts.append(f"repetition penalty {r['repetition_penalty']:g}")
        return ", ".join(parts)

    out = pd.DataFrame({
        "summarizer setting": [setting(r) for _, r in rows.iterrows()],
        "paradigm": rows["paradigm"].to_numpy(),
        "users": [str(int(v)) for v in rows["n_users"]],
        f"own summary {name}": [_interval(r, "summary") for _, r in rows.iterrows()],
        "another user's": [_interval(r, "another user's summary")
                           for _, r in rows.iterrows()],
        "own minus another [95% CI]": [
            _signed(r["own_minus_another"], r["own_minus_another_ci_low"],
                    r["own_minus_another_ci_high"]) for _, r in rows.iterrows()],
        "p": [_p(v) for v in rows["p_value"]],
        "labels named": [f"{v:.1f}" for v in rows["labels_named"]],
        "calls cut at the cap": [f"{v:.0%}" for v in rows["calls_cut_share"]]})
    if len(rows):
        history = rows.iloc[0]
        out.loc[len(out)] = ["the history's own labels (positive control)", "", str(
            int(history["n_users"])), _interval(history, "history"), "", "", "", "", ""]
    return _markdown(out)


def anchored(frame: pd.DataFrame, metric: str = "recall@5") -> str:
    """Per group (``item_num 0``): the first anchor, the points in grid order, the last anchor;
    each with its mean over seeds [95% CI], its spread across seeds and its paired difference
    from every anchor of the group."""
    frame = frame.assign(versus=frame["versus"].fillna(""),
                         summarizer=frame["summarizer"].fillna(""))
    rows = frame[frame["metric"] == metric]
    own = rows[rows["versus"] == ""]
    anchors = systems.order_names(own.loc[own["summarizer"] == "", "system"])
    lines = []
    for group, part in own.groupby("group", sort=False):
        ends = [part[part["system"] == a] for a in anchors]
        middle = part[part["summarizer"] != ""]
        for _, r in pd.concat([*ends[:1], middle, *ends[1:]]).iterrows():
            line = {"history in the prompt": group,
                    "summary slot": r["summarizer"] or systems.label(r["system"]),
                    "seeds": str(int(r["n_seeds"])),
                    f"{_name(metric)} [95% CI]": f"{r['mean']:.2f} [{r['ci_low']:.2f}, "
                                                 f"{r['ci_high']:.2f}]",
                    "across seeds": f"{r['seed_min']:.2f} to {r['seed_max']:.2f}"}
            for anchor in anchors:
                test = rows[(rows["point"] == r["point"]) & (rows["versus"] == anchor)]
                name = systems.label(anchor).removeprefix("Control: ")  # shorter headers
                line[f"minus {name} [95% CI]"] = "" if test.empty else _signed(
                    test["diff"].iloc[0], test["diff_ci_low"].iloc[0],
                    test["diff_ci_high"].iloc[0])
                line[f"p vs {name}"] = "" if test.empty else _p(test["p_value"].iloc[0])
            lines.append(line)
    made = own.drop_duplicates("point")
    sources = []
    for commits, part in made.groupby(made["git_commits"].fillna("unknown"), sort=False):
        names = ", ".join(f"{r['summarizer'] or systems.label(r['system'])} ({r['group']})"
                          for _, r in part.iterrows())
        shown = ", ".join(f"{c.removesuffix('+dirty')[:7]} ("
                          f"{'with uncommitted changes' if c.endswith('+dirty') else 'clean tree'})"
                          for c in str(commits).split())
        sources.append(f"- {names}: commit{'s' if ' ' in str(commits) else ''} {shown}, torch "
                       f"{', '.join(sorted(set(part['torch'].dropna())))}, "
                       f"{', '.join(sorted(set(part['hardware'].dropna())))}")
    return _markdown(pd.DataFrame(lines)) + "\nMade by:\n\n" + "\n".join(sources) + "\n"


KINDS: dict[str, Callable[..., str]] = {
    "table2": table2, "provenance": provenance, "paired": paired, "curve": curve,
    "shuffle": shuffle, "decision": decision_table, "probe": probe, "anchored": anchored}


def _p_plain(value: float) -> str:
    return "p < 0.001" if value == 0 else f"p {value:.3f}"


def _diff_text(frame: pd.DataFrame, column: str, name: str, versus: str, metric: str) -> str:
    """``+0.19 (p 0.006)``: the paired test of the row whose ``column`` is ``name``."""
    rows = frame[(frame[column] == name) & (frame["versus"] == versus)
                 & (frame["metric"] == metric)]
    if rows.empty:
        what = "point " if column == "point" else ""
        raise ReadmeError(f"no paired test of {what}{name} against {versus} on {metric}")
    row = rows.iloc[-1]
    return f"{row['diff']:+.2f} ({_p_plain(row['p_value'])})"


def value_diff(frame: pd.DataFrame, system: str, versus: str, metric: str = "recall@5") -> str:
    return _diff_text(frame, "system", system, versus, metric)


def value_mean(frame: pd.DataFrame, system: str, metric: str = "recall@5") -> str:
    """A system's test mean: a table2_values file's (pooled over seeds), or a one-seed results
    file's selected row (a results file of several seeds is refused, see ``_selected``)."""
    rows = _selected(frame[frame["system"] == system])
    if rows.empty:
        raise ReadmeError(f"no selected test row of {system}")
    return f"{rows.iloc[-1][metric]:.2f}"


def value_rise(frame: pd.DataFrame, system: str, metric: str = "recall@5") -> str:
    rows = frame[frame["system"] == system].sort_values("examples_seen")
    if rows.empty:
        raise ReadmeError(f"no learning-curve rows of {system}")
    return " → ".join(f"{v:.2f}" for v in rows[metric])


def value_gap(frame: pd.DataFrame, point: str, versus: str, metric: str = "recall@5") -> str:
    return _diff_text(frame, "point", point, versus, metric)


VALUE_KINDS: dict[str, Callable[..., str]] = {
    "diff": value_diff, "mean": value_mean, "rise": value_rise, "gap": value_gap}


def _made(spec: str, root: Path, kinds: dict[str, Callable[..., str]], what: str) -> str:
    kind, *rest = spec.split()
    if kind not in kinds or not rest:
        raise ReadmeError(f"{what} {spec!r}: expected '<kind> <csv> [args]' with kind one of "
                          f"{', '.join(kinds)}")
    path = root / rest[0]
    if not path.is_file():
        raise ReadmeError(f"{what} {spec!r}: {path} not found")
    try:
        return kinds[kind](pd.read_csv(path), *rest[1:])
    except KeyError as err:
        raise ReadmeError(f"{what} {spec!r}: {path} has no column {err}") from None
    except ReadmeError as err:
        raise ReadmeError(f"{what} {spec!r}: {path}: {err}") from None


def value(spec: str, root: Path) -> str:
    """The text one inline value's spec (``kind file [args...]``) makes."""
    return _made(spec, root, VALUE_KINDS, "generated value")


def block(spec: str, root: Path) -> str:
    """The markdown one block's spec (``kind file [args...]``) makes, from files under root."""
    return _made(spec, root, KINDS, "generated block")


def render(text: str, root: Path) -> str:
    """The README with every generated block and inline value made again from its CSV."""
    text = BLOCK.sub(lambda m: m.group(1) + block(m.group("spec"), root) + m.group(4), text)
    return VALUE.sub(lambda m: m.group(1) + value(m.group("spec"), root) + m.group(4), text)


def stale_blocks(text: str, root: Path) -> list[str]:
    """The specs of the blocks and inline values whose text differs from what their CSV
    gives."""
    return [m.group("spec") for m in BLOCK.finditer(text)
            if m.group("body") != block(m.group("spec"), root)] + [
        m.group("spec") for m in VALUE.finditer(text)
        if m.group("body") != value(m.group("spec"), root)]
