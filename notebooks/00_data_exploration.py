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
# # 00 · Data exploration
#
# Loads the configured dataset, filters and splits users, draws the frozen negatives (1 per
# training user, 20 per validation/test user) and shows the paper's Table 1 for it: attribute
# count, positives per split, mean history length and mean tokens per item under the recommender's
# tokenizer. Writes `figures/data_overview_*.png`.
#
# Reuses `<work_dir>/data` when it already holds these params' splits.

# %% tags=["parameters"]
# Parameters: papermill injects its values in a cell after this one.
params_file = "params/default.yaml"
# key=value strings applied on top of the params file: a list, or one string holding several
# separated by commas or newlines. From a shell, either form:
#   papermill NB.ipynb out.ipynb -p params_file params/smoke.yaml -p overrides "work_dir=work/x"
#   papermill NB.ipynb out.ipynb -y '{"overrides": ["work_dir=work/x", "data.n_test_users=8"]}'
overrides = []

# %%
from llmtrsr_utils import plots
from llmtrsr_utils.config import load_config, use_project_root
from llmtrsr_utils.datasets.splits import load_items, load_split, read_manifest
from llmtrsr_utils.datasets.stats import dataset_statistics
from llmtrsr_utils.models import load_model_tokenizer
from llmtrsr_utils.pipeline import ensure_splits

use_project_root()  # params paths are relative to the kit's checkout
cfg = load_config(params_file, overrides)

data_dir = ensure_splits(cfg)
manifest = read_manifest(data_dir)

# %% [markdown]
# ## Table 1

# %%
tokenizer = load_model_tokenizer(cfg.recommender, cache_dir=cfg.cache_dir)
stats = dataset_statistics(data_dir, tokenizer)
stats.table.to_csv(cfg.work_path / "table1.csv")
stats.table

# %% [markdown]
# ## History length and tokens per item

# %%
figure_paths = plots.plot_data_overview(
    stats.full_history_lengths, stats.max_history, stats.item_tokens, cfg.data.name,
    cfg.figures_path)  # shown below, and saved as PNG and PDF

# %% [markdown]
# ## What the loader kept and dropped

# %%
manifest["counts"]

# %% [markdown]
# ## One test user as the LLM will read them

# %%
items = load_items(data_dir).set_index("item_id")
user = load_split(data_dir, "test").iloc[0]
print("history (oldest first):")
for position, item_id in enumerate(user.history, start=1):
    print(f"{position:>3}. {items.loc[item_id, 'text']}")
print("\ntarget:", items.loc[user.target, "text"])
print("first negative:", items.loc[user.negatives[0], "text"])
