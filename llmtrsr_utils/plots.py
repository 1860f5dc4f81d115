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
