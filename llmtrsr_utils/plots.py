"""Every figure the kit draws, from saved results only, written as PNG and PDF."""

from __future__ import annotations

import textwrap
from collections.abc import Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: notebooks under papermill and CI have no display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from llmtrsr_utils import systems  # noqa: E402
from llmtrsr_utils.artifacts import atomic_path  # noqa: E402
from llmtrsr_utils.kernels import in_kernel  # noqa: E402


def save_figure(fig: plt.Figure, out_dir: Path, stem: str) -> list[Path]:
    """Write ``fig`` as ``<stem>.png`` and ``.pdf`` (each under a temporary name, renamed into
    place), show it inline when a notebook kernel is running (the saved PNG: an executed
    notebook holds the image), and close it. Returns the two paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for suffix in ("png", "pdf"):
        path = out_dir / f"{stem}.{suffix}"
        with atomic_path(path) as temp:
            fig.savefig(temp, format=suffix, dpi=150, bbox_inches="tight",
                        metadata=_fixed_metadata(suffix))
        paths.append(path)
    plt.close(fig)
    show_inline(paths[0])
    return paths


def show_inline(png: Path) -> bool:
    """Display a saved PNG in the running notebook kernel (JupyterLab, papermill); nothing
    outside a kernel (the CLI, tests). Returns whether it was shown."""
    if not in_kernel():
        return False
    from IPython.display import Image, display

    display(Image(filename=str(png)))
    return True


def _fixed_metadata(suffix: str) -> dict[str, object]:
    # No creation date: the same data gives the same file.
    return {"CreationDate": None} if suffix == "pdf" else {}


def plot_data_overview(full_history_lengths: pd.Series, max_history: int,
                       item_tokens: pd.Series, dataset: str, out_dir: Path) -> list[Path]:
    """History length per user (before any truncation, cap marked) and tokens per item: the
    two numbers that drive prompt cost and the reason summaries exist."""
    sns.set_theme(style="whitegrid", context="notebook")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    sns.histplot(full_history_lengths, bins=30, ax=axes[0], color="#4C72B0")
    if full_history_lengths.max() > max_history:
        axes[0].axvline(max_history, color="black", linestyle="--",
                        label=f"kept: most recent {max_history}")
        axes[0].legend()
        if full_history_lengths.max() > 20 * full_history_lengths.median():
            axes[0].set_xscale("log")
    axes[0].set(title=f"{dataset}: history length per user", xlabel="items in history",
                ylabel="users")
    sns.histplot(item_tokens, bins=30, ax=axes[1], color="#55A868")
    axes[1].axvline(item_tokens.mean(), color="black", linestyle="--",
                    label=f"mean {item_tokens.mean():.1f}")
    axes[1].set(title=f"{dataset}: tokens per item", xlabel="tokens (recommender tokenizer)",
                ylabel="items")
    axes[1].legend()
    fig.tight_layout()
    return save_figure(fig, out_dir, f"data_overview_{dataset}")


def plot_segmentation(table: pd.DataFrame, out_dir: Path, stem: str = "segmentation"
                      ) -> list[Path]:
    """Prompt tokens per block against the context budget, per shown user."""
    sns.set_theme(style="whitegrid", context="notebook")
    fig, ax = plt.subplots(figsize=(8, 3.8))
    sns.barplot(data=table, x="block", y="prompt_tokens", hue="user_id", ax=ax)
    budget = int(table["budget"].iloc[0])
    ax.axhline(budget, color="black", linestyle="--", label=f"budget {budget}")
    ax.set(title="Block summary prompts: tokens against the context budget", xlabel="block",
           ylabel="prompt tokens")
    ax.legend(title="user", fontsize="small")
    return save_figure(fig, out_dir, stem)


def plot_summary_lengths(lengths: pd.DataFrame, seconds_per_user: dict[str, float],
                         out_dir: Path, stem: str = "summary_lengths") -> list[Path]:
    """Final summary length per paradigm, and summarization time per user."""
    sns.set_theme(style="whitegrid", context="notebook")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [2, 1]})
    sns.histplot(lengths, x="tokens", hue="paradigm", bins=20, multiple="dodge", ax=axes[0])
    axes[0].set(title="Final summary length", xlabel="tokens", ylabel="users")
    names = list(seconds_per_user)
    axes[1].bar(names, [seconds_per_user[n] for n in names], color=["#4C72B0", "#DD8452"])
    axes[1].set(title="Time per user", ylabel="seconds (this run)")
    fig.tight_layout()
    return save_figure(fig, out_dir, stem)


def plot_training_curves(histories: dict[str, list[dict]], out_dir: Path,
                         stem: str = "sft_loss") -> list[Path]:
    """Training loss per optimizer step for each system (from trl's log history)."""
    sns.set_theme(style="whitegrid", context="notebook")
    fig, ax = plt.subplots(figsize=(8, 3.8))
    for system, history in histories.items():
        points = [(h["step"], h["loss"]) for h in history if "loss" in h and "step" in h]
        if points:
            steps, losses = zip(*points, strict=True)
            ax.plot(steps, [float(v) for v in losses], marker="o", markersize=3, label=system)
    ax.set(title="LoRA SFT: training loss", xlabel="optimizer step", ylabel="loss")
    ax.legend()
    return save_figure(fig, out_dir, stem)


def plot_learning_curve(curve: pd.DataFrame, levels: pd.DataFrame, out_dir: Path,
                        metric: str = "recall@5", stem: str = "learning_curve") -> list[Path]:
    """Validation ``metric`` against training examples seen, one line per LLM system with its
    95% CI band, and the baselines' validation levels as horizontal lines.

    Args:
        curve: ``learning.learning_curve``'s first frame (system, examples_seen, metric and
            its ``_ci_low``/``_ci_high``).
        levels: its second frame (system, metric): Random, Popularity, Zero-shot LLM.
    """
    sns.set_theme(style="whitegrid", context="notebook")
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for system, part in curve.groupby("system", sort=False):
        part = part.sort_values("examples_seen")
        line, = ax.plot(part["examples_seen"], part[metric], marker="o", label=_label(system))
        ax.fill_between(part["examples_seen"], part[f"{metric}_ci_low"],
                        part[f"{metric}_ci_high"], color=line.get_color(), alpha=0.12)
    for (_, row), style in zip(levels.iterrows(), (":", "--", "-."), strict=False):
        name = row.get("display_name") or _label(row["system"])
        ax.axhline(row[metric], color="0.35", linestyle=style,
                   label=f"{name} ({row[metric]:.3f})")
    n_users = int(curve["n_users"].iloc[0]) if "n_users" in curve else 0
    ax.set(title=f"Learning curve: validation {_family(metric.split('@')[0])}@"
                 f"{metric.split('@')[1]} ({n_users} users, 95% CI)",
           xlabel="training examples seen", ylabel=metric)
    ax.set_ylim(0, 1.0)
    ax.legend(fontsize="small", loc="upper left")
    fig.tight_layout()
    return save_figure(fig, out_dir, stem)


def plot_table2(table: pd.DataFrame, out_dir: Path, stem: str = "table2") -> list[Path]:
    """Table 2 as a figure: Recall@k and MRR@k per system with 95% bootstrap CIs as error bars.

    ``table``: selected test rows of the results table (one per system), with metric columns
    and their ``_ci_low`` / ``_ci_high``.
    """
    sns.set_theme(style="whitegrid", context="notebook")
    families = ("recall", "mrr")
    ks = (3, 5, 10)
    labels = list(table["label"])
    fig, axes = plt.subplots(1, 2, figsize=(max(12, 1.1 * len(labels)), 4.2), sharey=False)
    width = 0.8 / len(labels)
    for ax, family in zip(axes, families, strict=True):
        for i, (_, row) in enumerate(table.iterrows()):
            names = [f"{family}@{k}" for k in ks]
            means = [row[n] for n in names]
            low = [row[n] - row[f"{n}_ci_low"] for n in names]
            high = [row[f"{n}_ci_high"] - row[n] for n in names]
            positions = [j + (i - (len(labels) - 1) / 2) * width for j in range(len(ks))]
            ax.bar(positions, means, width=width, yerr=[low, high], capsize=2,
                   label=row["label"])
        ax.set_xticks(range(len(ks)), [f"@{k}" for k in ks])
        ax.set(title=f"{family.upper() if family == 'mrr' else 'Recall'}@k (test, 95% CI)",
               ylabel=family, ylim=(0, 1.05))
    axes[1].legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return save_figure(fig, out_dir, stem)


def _metric_lines(ax: plt.Axes, rows: pd.DataFrame, x: str, family: str,
                  categorical: bool) -> None:
    """Lines for family@3/5/10 against x, CIs as error bars."""
    positions = range(len(rows)) if categorical else rows[x]
    for k, marker in zip((3, 5, 10), ("o", "s", "^"), strict=True):
        name = f"{family}@{k}"
        errors = [rows[name] - rows[f"{name}_ci_low"], rows[f"{name}_ci_high"] - rows[name]]
        ax.errorbar(list(positions), rows[name], yerr=errors, marker=marker, capsize=3,
                    label=f"@{k}")
    if categorical:
        ax.set_xticks(list(positions), list(rows[x]))
    ax.set_ylim(0, 1.05)


def plot_item_count(rows: pd.DataFrame, out_dir: Path, stem: str = "figure9_item_count"
                    ) -> list[Path]:
    """Figure 9: Recall@k and MRR@k against the number of recent items in the prompt, one row
    of panels per paradigm. ``rows``: grid results with ``axis.recommender.item_num`` and
    ``system`` columns."""
    sns.set_theme(style="whitegrid", context="notebook")
    series = paradigm_series(rows["system"])
    fig, axes = plt.subplots(len(series), 2, figsize=(10, 3.6 * len(series)), squeeze=False)
    for r, system in enumerate(series):
        part = rows[rows["system"] == system].sort_values("axis.recommender.item_num")
        for c, family in enumerate(("recall", "mrr")):
            ax = axes[r][c]
            _metric_lines(ax, part, "axis.recommender.item_num", family, categorical=False)
            ax.set(title=f"{_label(system)}: {_family(family)}@k",
                   xlabel="recent items in the prompt (item_num)", ylabel=_family(family))
            ax.set_xticks(sorted(part["axis.recommender.item_num"].unique()))
            ax.legend(title="k", fontsize="small")
    fig.suptitle("Number of recent items (paper Figure 9), test users, 95% CI", y=1.0)
    fig.tight_layout()
    return save_figure(fig, out_dir, stem)


def plot_model_size(rows: pd.DataFrame, axis: str, title: str, out_dir: Path, stem: str
                    ) -> list[Path]:
    """Figures 10 and 11: Recall@k and MRR@k against the model on ``axis`` (grid order, which
    lists models smallest first)."""
    sns.set_theme(style="whitegrid", context="notebook")
    column = f"axis.{axis}"
    order = list(dict.fromkeys(rows[column]))
    part = rows.set_index(column).loc[order].reset_index()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, family in zip(axes, ("recall", "mrr"), strict=True):
        _metric_lines(ax, part, column, family, categorical=True)
        ax.set(title=f"{_family(family)}@k", xlabel=axis.split(".")[0] + " model",
               ylabel=_family(family))
        ax.legend(title="k", fontsize="small")
    fig.suptitle(f"{title}, test users, 95% CI", y=1.02)
    fig.tight_layout()
    return save_figure(fig, out_dir, stem)


def plot_efficiency(table: pd.DataFrame, out_dir: Path, stem: str = "efficiency"
                    ) -> list[Path]:
    """What summarization buys: prompt tokens per example, SFT seconds per step, scoring
    candidates per second and peak memory, per system (one row each in ``table``)."""
    sns.set_theme(style="whitegrid", context="notebook")
    panels = [("prompt_tokens_mean", "prompt tokens per example", "prompt_tokens_max"),
              ("sft_seconds_per_step", "SFT seconds per step", None),
              ("candidates_per_second", "scoring candidates / s", None),
              ("peak_memory_gib", "peak memory (GiB)", None)]
    panels = [p for p in panels if p[0] in table.columns]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.8))
    labels = [_label(s) for s in table["system"]]
    palette = sns.color_palette(n_colors=len(labels))
    for ax, (column, title, upper) in zip(axes, panels, strict=True):
        ax.bar(labels, table[column], color=palette)
        if upper and upper in table.columns:
            ax.scatter(labels, table[upper], marker="_", s=400, color="black", label="max")
            ax.legend(fontsize="small")
        ax.set(title=title)
        ax.tick_params(axis="x", rotation=30)
        for tick in ax.get_xticklabels():
            tick.set_ha("right")
    device = table["device"].iloc[0] if "device" in table.columns else ""
    fig.suptitle(f"LLM-TRSR against TALLRec's full history ({device})", y=1.02)
    fig.tight_layout()
    return save_figure(fig, out_dir, stem)


def plot_prompt_growth(curve: pd.DataFrame, limit: int, out_dir: Path,
                       stem: str = "efficiency_prompt_growth") -> list[Path]:
    """Prompt tokens against history length: TALLRec grows with every item, LLM-TRSR stays
    flat; the context limit is marked. ``curve``: history_length, system, tokens."""
    sns.set_theme(style="whitegrid", context="notebook")
    fig, ax = plt.subplots(figsize=(7, 3.8))
    sns.lineplot(data=curve, x="history_length", y="tokens", hue="system", ax=ax)
    ax.axhline(limit, color="black", linestyle="--", label=f"context limit {limit}")
    ax.set(title="Recommendation prompt length against history length",
           xlabel="items in the user's history", ylabel="prompt tokens")
    ax.legend(fontsize="small")
    return save_figure(fig, out_dir, stem)


def _family(family: str) -> str:
    return {"mrr": "MRR", "ndcg": "NDCG"}.get(family, "Recall")


def _label(system: str) -> str:
    return systems.label(system)


def paradigm_series(present: Iterable[str]) -> list[str]:
    """The LLM-TRSR systems (one per registered paradigm, extensions included) among
    ``present``, in the registry's order: the rows of Figure 9's panels."""
    present = set(present)
    return [s.name for s in systems.all_systems() if s.paradigm and s.name in present]


def plot_anchored(rows: pd.DataFrame, axis: str, title: str, out_dir: Path, stem: str
                  ) -> list[Path]:
    """Figure 11 anchored at both ends (issue 22): Recall@k and MRR@k against the model on
    ``axis``, with the anchor systems of the grid (no information: the NULL control, on the
    left; full information: the older titles verbatim, on the right) as the end points, one
    row of panels per ``recommender.item_num``. Anchors are the rows whose system is a
    control; the rest are drawn in grid order between them."""
    sns.set_theme(style="whitegrid", context="notebook")
    column = f"axis.{axis}"
    item_nums = list(dict.fromkeys(rows["axis.recommender.item_num"]))
    controls = set(systems.names("control"))
    fig, axes = plt.subplots(len(item_nums), 2, figsize=(11, 3.8 * len(item_nums)),
                             squeeze=False)
    for r, item_num in enumerate(item_nums):
        part = rows[rows["axis.recommender.item_num"] == item_num]
        anchors = part[part["system"].isin(controls)]
        # The no-information anchor first, the full-information one last (registry order).
        order = systems.order_names(anchors["system"])
        middle = part[~part["system"].isin(controls)].copy()
        middle["x"] = middle[column].astype(str)
        ends = [anchors[anchors["system"] == name].assign(x=_label(name)) for name in order]
        line = pd.concat([*ends[:1], middle, *ends[1:]], ignore_index=True)
        for c, family in enumerate(("recall", "mrr")):
            ax = axes[r][c]
            _metric_lines(ax, line, "x", family, categorical=True)
            ax.set(title=f"item_num {item_num}: {_family(family)}@k",
                   xlabel=axis.split(".")[0] + " model (ends: controls)",
                   ylabel=_family(family))
            # The controls' labels are long: wrapped on two lines, not rotated into the
            # neighbour's.
            ax.set_xticks(ax.get_xticks(), [textwrap.fill(t.get_text(), 18)
                                            for t in ax.get_xticklabels()])
    # One legend for the figure, below the panels: inside a panel it sat on a line.
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.suptitle(f"{title}, test users, 95% CI", y=1.01)
    fig.tight_layout()
    fig.legend(handles, labels, title="k", ncol=len(labels), loc="lower center",
               bbox_to_anchor=(0.5, -0.09), fontsize="small")
    return save_figure(fig, out_dir, stem)


GRID_FIGURES = {
    "figure9_item_count": lambda rows, out, stem: plot_item_count(rows, out, stem),
    "figure10_recommender_size": lambda rows, out, stem: plot_model_size(
        rows, "recommender.model", "Recommender size (paper Figure 10)", out, stem),
    "figure11_summarizer_size": lambda rows, out, stem: plot_model_size(
        rows, "summarizer.model", "Summarizer size, item_num 0 (paper Figure 11)", out, stem),
    "figure11_anchored": lambda rows, out, stem: plot_anchored(
        rows, "summarizer.model", "Summarizer size between no summary and the titles "
        "themselves (Figure 11, anchored)", out, stem),
}
