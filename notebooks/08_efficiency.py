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
# # 08 · Efficiency: what summarization buys
#
# The paper's motivation, measured: TALLRec puts the whole history in the prompt, LLM-TRSR a
# summary and a few recent items. For each system, on the same test users: prompt tokens per
# example, SFT seconds per optimizer step (a few steps of the real trainer), scoring candidates
# per second (fast scorer) and peak memory, each system in its own process. Then the prompt length
# against history length, against the context limit. Writes `figures/efficiency.png` and
# `figures/efficiency_prompt_growth.png`.

# %% tags=["parameters"]
# Parameters: papermill injects its values in a cell after this one.
params_file = "params/default.yaml"
# key=value strings applied on top of the params file: a list, or one string holding several
# separated by commas or newlines. From a shell, either form:
#   papermill NB.ipynb out.ipynb -p params_file params/smoke.yaml -p overrides "work_dir=work/x"
#   papermill NB.ipynb out.ipynb -y '{"overrides": ["work_dir=work/x", "data.n_test_users=8"]}'
overrides = []
systems = ["llmtrsr-hierarchical", "tallrec"]
n_users = 2  # test users scored per system
sft_steps = 2  # optimizer steps timed per system (after one warm-up step)

# %%
from llmtrsr_utils import efficiency, plots
from llmtrsr_utils.config import load_config, use_project_root

use_project_root()  # params paths are relative to the kit's checkout
cfg = load_config(params_file, overrides)

table = efficiency.measure(cfg, params_file, overrides, systems, n_users=n_users,
                           sft_steps=sft_steps)
table[["system", "device", "prompt_tokens_mean", "prompt_tokens_max", "sft_seconds_per_step",
       "candidates_per_second", "scoring_peak_memory_gib", "peak_memory_gib"]]

# %%
saved = plots.plot_efficiency(table, cfg.figures_path)

# %% [markdown]
# ## Prompt length against history length

# %%
curve = efficiency.prompt_growth(cfg)
saved = plots.plot_prompt_growth(curve, int(curve["limit"].iloc[0]), cfg.figures_path)
curve.pivot(index="history_length", columns="system", values="tokens")
