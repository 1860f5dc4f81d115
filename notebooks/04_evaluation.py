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
# # 04 · Evaluation (Table 2)
#
# Every system ranks the same frozen candidates: 1 positive and 20 sampled negatives per test
# user. LLM systems score p = softmax(logit yes, logit no)[yes]; each saved epoch is scored on
# validation and the best by Recall@3+5+10 is reported on test. Baselines: random, popularity
# (training counts), MiniLM text-embedding similarity, the zero-shot LLM, and the paper's
# classical recommenders (NCF, DIN, DIEN, GRU4Rec, NARM, SASRec, CORE) over frozen MiniLM
# embeddings of the items, trained on the same training users with early stopping on validation. A
# positive tied with negatives counts at its expected rank under random tie-breaking (the share of
# tied positives and Recall@5 with every tie lost are shown beside it). Intervals are 95%
# bootstrap intervals over users. Writes `figures/table2.png`, `figures/table2.md` and
# `figures/results.csv` (every row of this run's results table), with the paired tests and the
# learning curve when there are some.

# %% tags=["parameters"]
# Parameters: papermill injects its values in a cell after this one.
params_file = "params/default.yaml"
# key=value strings applied on top of the params file: a list, or one string holding several
# separated by commas or newlines. From a shell, either form:
#   papermill NB.ipynb out.ipynb -p params_file params/smoke.yaml -p overrides "work_dir=work/x"
#   papermill NB.ipynb out.ipynb -y '{"overrides": ["work_dir=work/x", "data.n_test_users=8"]}'
overrides = []
# Names as the CLI takes them: "all" (every built-in one), "" (none), a comma string or a list;
# a baseline or paradigm of your own by its module path (README: Extending the kit).
systems = "all"  # LLM-TRSR's two paradigms and TALLRec
baselines = "all"  # random, popularity, MiniLM, zero-shot and the seven classical models

# %%
import pandas as pd

from llmtrsr_utils import plots
from llmtrsr_utils.config import load_config, use_project_root
from llmtrsr_utils.pipeline import run_evaluation
from llmtrsr_utils.results import (
    load_results,
    results_dir,
    selected_test_rows,
    table2,
    write_report,
)

use_project_root()  # params paths are relative to the kit's checkout
cfg = load_config(params_file, overrides)

run_evaluation(cfg, systems, baselines, reuse=True)  # scores only what is not evaluated yet
results = load_results(cfg, current=True)  # the rows these params made

# %% [markdown]
# ## Table 2 (test users, mean and 95% CI)

# %%
write_report(cfg)  # table2.md, results.csv, paired tests, learning curve
table2(results, results_dir(cfg))  # the mean over training seeds (`seeds`)

# %%
saved = plots.plot_table2(selected_test_rows(results, results_dir(cfg)), cfg.figures_path)

# %% [markdown]
# ## Checkpoint selection on validation

# %%
valid = results[results["split"] == "valid"]
valid[["system", "epoch", "selection_score", "selected", "recall@5", "mrr@5"]]

# %% [markdown]
# ## Paired bootstrap tests against TALLRec, the zero-shot LLM and Random (test users)

# %%
paired = results_dir(cfg) / "paired_tests.csv"
pd.read_csv(paired).query("metric in ['recall@5', 'mrr@5']") if paired.is_file() else None

# %% [markdown]
# ## Scoring speed and prompt shortening

# %%
columns = ["system", "split", "candidates_per_second", "scoring_seconds",
           "prompt_summaries_shortened", "prompt_recent_items_dropped"]
results[[c for c in columns if c in results.columns]]
