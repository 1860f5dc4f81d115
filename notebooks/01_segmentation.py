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
# # 01 · Segmentation
#
# Each history is cut into blocks of `summarizer.block_size` items, oldest first (paper section
# 4.1.1). Every block-summary prompt must fit the summarizer's context minus the room for its
# answer; when one would not, the longest item texts are shortened (never the instruction, never
# dropping an item) and counted. This notebook shows the blocks of a few test users and their
# token counts against the budget. Needs the summarizer's tokenizer only, not the model.

# %% tags=["parameters"]
# Parameters: papermill injects its values in a cell after this one.
params_file = "params/default.yaml"
# key=value strings applied on top of the params file: a list, or one string holding several
# separated by commas or newlines. From a shell, either form:
#   papermill NB.ipynb out.ipynb -p params_file params/smoke.yaml -p overrides "work_dir=work/x"
#   papermill NB.ipynb out.ipynb -y '{"overrides": ["work_dir=work/x", "data.n_test_users=8"]}'
overrides = []
n_users_shown = 3

# %%
from llmtrsr_utils import plots
from llmtrsr_utils.config import load_config, use_project_root
from llmtrsr_utils.summarize import Summarizer, segmentation_table, split_histories

use_project_root()  # params paths are relative to the kit's checkout
cfg = load_config(params_file, overrides)

users, domain = split_histories(cfg, "test")
summarizer = Summarizer(cfg, domain)  # the model itself is not loaded here
shown = users[:n_users_shown]
table = segmentation_table(summarizer, shown)
table

# %%
saved = plots.plot_segmentation(table, cfg.figures_path)

# %% [markdown]
# ## The first block prompt, exactly as the summarizer reads it

# %%
print(summarizer.segment(shown[0])[0].fitted.prompt)

# %% [markdown]
# ## Shortening over all test users

# %%
every_block = segmentation_table(summarizer, users)
every_block[["prompt_tokens", "items_shortened"]].describe()
