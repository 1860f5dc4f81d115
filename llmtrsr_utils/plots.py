"""Every figure the kit draws, from saved results only, written as PNG and PDF."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: notebooks under papermill and CI have no display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402


def save_figure(fig: plt.Figure, out_dir: Path, stem: str) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for suffix in ("png", "pdf"):
        path = out_dir / f"{stem}.{suffix}"
        fig.savefig(path, dpi=150, bbox_inches="tight", metadata=_fixed_metadata(suffix))
        paths.append(path)
    plt.close(fig)
    return paths


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


def plot_table2(table: pd.DataFrame, out_dir: Path, stem: str = "table2") -> list[Path]:
    """Table 2 as a figure: Recall@k and MRR@k per system with 95% bootstrap CIs as error bars.

    ``table``: selected test rows of the results table (one per system), with metric columns
    and their ``_ci_low`` / ``_ci_high``.
    """
    sns.set_theme(style="whitegrid", context="notebook")
    families = ("recall", "mrr")
    ks = (3, 5, 10)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=False)
    systems = list(table["label"])
    width = 0.8 / len(systems)
    for ax, family in zip(axes, families, strict=True):
        for i, (_, row) in enumerate(table.iterrows()):
            names = [f"{family}@{k}" for k in ks]
            means = [row[n] for n in names]
            low = [row[n] - row[f"{n}_ci_low"] for n in names]
            high = [row[f"{n}_ci_high"] - row[n] for n in names]
            positions = [j + (i - (len(systems) - 1) / 2) * width for j in range(len(ks))]
            ax.bar(positions, means, width=width, yerr=[low, high], capsize=2,
                   label=row["label"])
        ax.set_xticks(range(len(ks)), [f"@{k}" for k in ks])
        ax.set(title=f"{family.upper() if family == 'mrr' else 'Recall'}@k (test, 95% CI)",
               ylabel=family, ylim=(0, 1.05))
    axes[1].legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return save_figure(fig, out_dir, stem)
