# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · Summarization
#
# Hierarchical (summarize blocks, then summarize the summaries) and recurrent (summarize block 1,
# then update with each next block) preference summaries for the test users, side by side, with
# the summary length distribution, flagged outputs (empty or repetitive) and the time per user.
# Summaries are cached: this notebook only generates what `llmtrsr summarize` has not already
# written.

# %% tags=["parameters"]
# Parameters: papermill injects its values in a cell after this one.
params_file = "params/default.yaml"
# key=value strings applied on top of the params file: a list, or one string holding several
# separated by commas or newlines. From a shell, either form:
#   papermill NB.ipynb out.ipynb -p params_file params/smoke.yaml -p overrides "work_dir=work/x"
#   papermill NB.ipynb out.ipynb -y '{"overrides": ["work_dir=work/x", "data.n_test_users=8"]}'
overrides = []
split = "test"
n_users_shown = 3

# %%
import pandas as pd
from IPython.display import display

from llmtrsr_utils import plots, systems
from llmtrsr_utils.config import load_config, use_project_root
from llmtrsr_utils.models import load_model_tokenizer
from llmtrsr_utils.pipeline import ensure_splits
from llmtrsr_utils.summarize import (
    load_summaries,
    read_record,
    side_by_side,
    summarize_split,
    summary_lengths,
)

use_project_root()  # params paths are relative to the kit's checkout
cfg = load_config(params_file, overrides)
ensure_splits(cfg)

paradigms = systems.paradigm_names()  # every registered paradigm, extensions included
records = {p: summarize_split(cfg, split, p) for p in paradigms}
frames = {p: load_summaries(cfg, split, p) for p in paradigms}
pd.DataFrame(records).T[["users", "calls_requested", "cache_hits", "model_calls",
                         "tokens_per_second", "seconds_per_user", "items_shortened",
                         "texts_shortened", "flags"]]

# %% [markdown]
# ## Side by side

# %%
with pd.option_context("display.max_colwidth", None):
    display(side_by_side(frames, n_users_shown))

# %% [markdown]
# ## Every layer of one user (hierarchical) and every step (recurrent)

# %%
user = frames[systems.HIERARCHICAL].iloc[0]
for depth, layer in enumerate(user["layers"]):
    for position, text in enumerate(layer, start=1):
        print(f"[layer {depth}, summary {position}] {text}\n")
for step, text in enumerate(frames[systems.RECURRENT].iloc[0]["block_summaries"], start=1):
    print(f"[recurrent step {step}] {text}\n")

# %% [markdown]
# ## Length and time

# %%
tokenizer = load_model_tokenizer(cfg.summarizer, cache_dir=cfg.cache_dir)
lengths = summary_lengths(frames, tokenizer)
seconds = {p: read_record(cfg, split, p)["seconds_per_user"] for p in paradigms}
saved = plots.plot_summary_lengths(lengths, seconds, cfg.figures_path)

# %%
flagged = pd.concat(frames.values())
flagged[flagged["n_flagged_calls"] > 0][["user_id", "paradigm", "flags"]]
