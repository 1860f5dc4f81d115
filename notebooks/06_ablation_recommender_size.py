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
# # 06 · Ablation: recommender size (Figure 10)
#
# LLM-TRSR-Hierarchical with recommenders of growing size, everything else fixed. The paper's
# ladder is Pythia-1.4b, Pythia-2.8b and Llama-2-7b (`params/paper_*.yaml`); offline, the ladder
# is SmolLM2-135M and Gemma-3-270M.
#
# **Grid run here:** `ablations.recommenders` of the params, else the grid file's list.

# %% tags=["parameters"]
# Parameters: papermill injects its values in a cell after this one.
params_file = "params/default.yaml"
# key=value strings applied on top of the params file: a list, or one string holding several
# separated by commas or newlines. From a shell, either form:
#   papermill NB.ipynb out.ipynb -p params_file params/smoke.yaml -p overrides "work_dir=work/x"
#   papermill NB.ipynb out.ipynb -y '{"overrides": ["work_dir=work/x", "data.n_test_users=8"]}'
overrides = []
grid_file = "params/ablations/recommender_size.yaml"

# %%
from llmtrsr_utils import grid, plots
from llmtrsr_utils.config import load_config, use_project_root

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
grid.metric_table(rows, ["axis.recommender.model", "train_seconds", "seconds_per_step"])

# %%
saved = plots.plot_model_size(rows, "recommender.model",
                              "Recommender size (paper Figure 10)", cfg.figures_path,
                              "figure10_recommender_size")

# %%
grid.raise_on_failure(report)  # after the figure: a failure fails the run
