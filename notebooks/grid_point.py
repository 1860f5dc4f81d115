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
# # Grid point: train what is missing, evaluate one system
#
# Executed by `llmtrsr run-grid` for each point of a grid (or directly: `papermill
# notebooks/grid_point.ipynb OUT.ipynb -p params_file P -p system S -p output_dir D`). Writes
# `result.json` into `output_dir`: the system's selected test row (every metric with its 95% CI)
# and its training cost.

# %% tags=["parameters"]
# Parameters: papermill injects its values in a cell after this one.
params_file = "params/default.yaml"
# key=value strings applied on top of the params file: a list, or one string holding several
# separated by commas or newlines. From a shell, either form:
#   papermill NB.ipynb out.ipynb -p params_file params/smoke.yaml -p overrides "work_dir=work/x"
#   papermill NB.ipynb out.ipynb -y '{"overrides": ["work_dir=work/x", "data.n_test_users=8"]}'
overrides = []
system = "llmtrsr-hierarchical"
output_dir = "."

# %%
from pathlib import Path

from llmtrsr_utils.artifacts import write_json
from llmtrsr_utils.config import load_config, use_project_root
from llmtrsr_utils.pipeline import point_result, run_evaluation

use_project_root()  # params paths are relative to the kit's checkout
cfg = load_config(params_file, overrides)

run_evaluation(cfg, [system], [], reuse=True, write_tables=False)  # trains what it lacks
result = point_result(cfg, system)
write_json(result, Path(output_dir) / "result.json")
result
