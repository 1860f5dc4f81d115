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
# # 07 · Ablation: summarizer size (Figure 11)
#
# Summaries written by summarizers of different size, read by the same recommender with no recent
# item in the prompt (`item_num` 0), so the summary alone describes the user. The paper compares
# Llama-2-13b with Llama-30b-instruct and finds the smaller one's summaries disorganised; offline,
# SmolLM2-135M and Gemma-3-270M (a base model without chat template). The same users' summaries
# from each are shown below.
#
# **Grid run here:** `ablations.summarizers` of the params, else the grid file's list.

# %% tags=["parameters"]
# Parameters: papermill injects its values in a cell after this one.
params_file = "params/default.yaml"
# key=value strings applied on top of the params file: a list, or one string holding several
# separated by commas or newlines. From a shell, either form:
#   papermill NB.ipynb out.ipynb -p params_file params/smoke.yaml -p overrides "work_dir=work/x"
#   papermill NB.ipynb out.ipynb -y '{"overrides": ["work_dir=work/x", "data.n_test_users=8"]}'
overrides = []
grid_file = "params/ablations/summarizer_size.yaml"
n_users_shown = 2

# %%
import pandas as pd
from IPython.display import display

from llmtrsr_utils import grid, plots
from llmtrsr_utils.config import load_config, use_project_root
from llmtrsr_utils.pipeline import summaries_by_model

use_project_root()  # params paths are relative to the kit's checkout
cfg = load_config(params_file, overrides)

# %%
# The params' reduced values (ablations.*), points already in results.parquet skipped.
report = grid.run_ablation(grid_file, params_file, overrides)
print("grid run here:", report.spec.axes)
grid.summary(report)  # points run now, skipped as already done, failed

# %% [markdown]
# ## Results (test users, mean and 95% CI)

# %%
rows = report.rows(cfg)  # this grid's finished points for these params
grid.metric_table(rows, ["axis.summarizer.model"])

# %%
saved = plots.plot_model_size(rows, "summarizer.model",
                              "Summarizer size, item_num 0 (paper Figure 11)", cfg.figures_path,
                              "figure11_summarizer_size")

# %% [markdown]
# ## The same users' summaries from each summarizer

# %%
with pd.option_context("display.max_colwidth", None):
    display(summaries_by_model(cfg, report.spec.axes["summarizer.model"], "test", n_users_shown))

# %%
grid.raise_on_failure(report)  # after the figure: a failure fails the run
