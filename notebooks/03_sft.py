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
# # 03 · Supervised fine-tuning (LoRA)
#
# Trains the recommender of each Table-2 system with trl's `SFTTrainer` and a peft LoRA adapter (r
# 8, alpha 16, dropout 0.05 on the attention projections): LLM-TRSR with hierarchical or recurrent
# summaries and the 3 most recent items, and TALLRec (no summary, full history). Each training
# user gives one positive and one negative example; the answer is `yes` or `no` (paper section
# 4.3). Adapters are saved every epoch; a finished system is not trained again, an interrupted one
# resumes from its last checkpoint. Writes `figures/sft_loss.png`.

# %% tags=["parameters"]
# Parameters: papermill injects its values in a cell after this one.
params_file = "params/default.yaml"
# key=value strings applied on top of the params file: a list, or one string holding several
# separated by commas or newlines. From a shell, either form:
#   papermill NB.ipynb out.ipynb -p params_file params/smoke.yaml -p overrides "work_dir=work/x"
#   papermill NB.ipynb out.ipynb -y '{"overrides": ["work_dir=work/x", "data.n_test_users=8"]}'
overrides = []
systems = "all"  # as the CLI takes them: "all", a comma string or a list

# %%
import pandas as pd
from IPython.display import display

from llmtrsr_utils import plots
from llmtrsr_utils.config import load_config, use_project_root
from llmtrsr_utils.pipeline import example_prompts, learning_curve, system_names, train

use_project_root()  # params paths are relative to the kit's checkout
cfg = load_config(params_file, overrides)
systems = system_names(systems)

# %% [markdown]
# ## Example prompts with their token counts

# %%
examples = pd.concat([example_prompts(cfg, system) for system in systems])
examples[["system", "user_id", "answer", "tokens"]]

# %%
print(examples.iloc[0]["prompt"] + examples.iloc[0]["answer"])

# %% [markdown]
# ## Training

# %%
records = {system: train(cfg, system) for system in systems}
pd.DataFrame(records).T[["examples", "global_step", "train_loss", "seconds_per_step",
                         "train_seconds", "resumed_from"]]

# %%
histories = {s: r["log_history"] for s, r in records.items()}
saved = plots.plot_training_curves(histories, cfg.figures_path)

# %% [markdown]
# ## Learning curve (validation users)
#
# Every saved checkpoint (`recommender.checkpoints_per_epoch` per epoch) and the untrained model
# are scored on the validation users; the lines are Recall@5 against training examples seen, with
# the Random, Popularity and zero-shot LLM levels on the same users. Notebook 04 reuses these
# scores to select the checkpoint it reports on test. Writes `figures/learning_curve.png` and
# `results/learning_curve.csv`.

# %%
if cfg.recommender.epochs * cfg.recommender.checkpoints_per_epoch > 1:
    curve, levels = learning_curve(cfg, systems)
    saved = plots.plot_learning_curve(curve, levels, cfg.figures_path)
    display(curve[["system", "epoch", "examples_seen", "recall@5", "recall@5_ci_low",
                   "recall@5_ci_high", "mrr@5"]])
    display(levels[["system", "recall@5", "recall@5_ci_low", "recall@5_ci_high"]])
else:
    print("one checkpoint per system: no learning curve (recommender.checkpoints_per_epoch)")
