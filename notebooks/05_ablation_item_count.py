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
# # 05 · Ablation: recent items in the prompt (Figure 9)
#
# The recommendation prompt carries the preference summary and the `item_num` most recent items.
# The paper varies `item_num` from 0 to 5 for both paradigms (Figure 9). Each grid point trains
# what it lacks and evaluates one system through `notebooks/grid_point.ipynb` (papermill), into
# `<runs_dir>/item_count/<point>/`; points already in `results.parquet` are skipped. Adapters and
# summaries are shared with notebooks 03 and 04, so the point equal to the main run costs nothing.
#
# **Grid run here:** `ablations.item_nums` of the params (the CPU default runs a reduced grid;
# `params/paper_*.yaml` and the grid file have all six values).

# %% tags=["parameters"]
# Parameters: papermill injects its values in a cell after this one.
params_file = "params/default.yaml"
# key=value strings applied on top of the params file: a list, or one string holding several
# separated by commas or newlines. From a shell, either form:
#   papermill NB.ipynb out.ipynb -p params_file params/smoke.yaml -p overrides "work_dir=work/x"
#   papermill NB.ipynb out.ipynb -y '{"overrides": ["work_dir=work/x", "data.n_test_users=8"]}'
overrides = []
grid_file = "params/ablations/item_count.yaml"

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
grid.metric_table(rows, ["system", "axis.recommender.item_num"])

# %%
saved = plots.plot_item_count(rows, cfg.figures_path)

# %%
grid.raise_on_failure(report)  # after the figure: a failure fails the run
