"""Write the notebook series from the cell sources below (outputs empty, one `parameters` cell).

Notebooks stay thin: every cell calls the library. Editing here and rerunning keeps the JSON
clean and reviewable: `python tools/make_notebooks.py`.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]

PARAMETERS = '''# Parameters: papermill injects its values in a cell after this one.
params_file = "params/default.yaml"
# key=value strings applied on top of the params file: a list, or one string holding several
# separated by commas or newlines. From a shell, either form:
#   papermill NB.ipynb out.ipynb -p params_file params/smoke.yaml -p overrides "work_dir=work/x"
#   papermill NB.ipynb out.ipynb -y '{"overrides": ["work_dir=work/x", "data.n_test_users=8"]}'
overrides = []'''

SETUP = '''from llmtrsr_utils.config import load_config, use_project_root

use_project_root()  # params paths are relative to the kit's checkout
cfg = load_config(params_file, overrides)'''

GRID_SETUP = '''axes = grid.profile_axes(cfg, grid_file)  # the params' reduced values, if any
spec = grid.load_grid(grid_file, axes)
print("grid run here:", spec.axes)'''

RUN_GRID = '''report = grid.run_grid(grid_file, params_file, overrides, axes=axes)
grid.summary(report)  # points run now, skipped as already done, failed'''

RAISE_ON_FAILURE = '''grid.raise_on_failure(report)  # after the figure: a failure fails the run'''

NOTEBOOKS = {
    "00_data_exploration": [
        new_markdown_cell(
            "# 00 · Data exploration\n\n"
            "Loads the configured dataset, filters and splits users, draws the frozen negatives "
            "(1 per training user, 20 per validation/test user) and shows the paper's Table 1 "
            "for it: attribute count, positives per split, mean history length and mean tokens "
            "per item under the recommender's tokenizer. Writes `figures/data_overview_*.png`.\n\n"
            "Reuses `<work_dir>/data` when it already holds these params' splits."),
        new_code_cell(PARAMETERS, metadata={"tags": ["parameters"]}),
        new_code_cell(SETUP + '''
from llmtrsr_utils import plots
from llmtrsr_utils.datasets.splits import load_items, load_split, prepare_dataset, read_manifest
from llmtrsr_utils.datasets.stats import dataset_statistics
from llmtrsr_utils.models import load_tokenizer

data_dir = prepare_dataset(cfg)
manifest = read_manifest(data_dir)'''),
        new_markdown_cell("## Table 1"),
        new_code_cell('''rec = cfg.recommender
tokenizer = load_tokenizer(rec.model, revision=rec.revision,
                           trust_remote_code=rec.trust_remote_code, cache_dir=cfg.cache_dir)
stats = dataset_statistics(data_dir, tokenizer)
stats.table.to_csv(cfg.work_path / "table1.csv")
stats.table'''),
        new_markdown_cell("## History length and tokens per item"),
        new_code_cell('''figure_paths = plots.plot_data_overview(
    stats.full_history_lengths, stats.max_history, stats.item_tokens, cfg.data.name,
    cfg.figures_path)
figure_paths'''),
        new_markdown_cell("## What the loader kept and dropped"),
        new_code_cell('''manifest["counts"]'''),
        new_markdown_cell("## One test user as the LLM will read them"),
        new_code_cell('''items = load_items(data_dir).set_index("item_id")
user = load_split(data_dir, "test").iloc[0]
print("history (oldest first):")
for position, item_id in enumerate(user.history, start=1):
    print(f"{position:>3}. {items.loc[item_id, 'text']}")
print("\\ntarget:", items.loc[user.target, "text"])
print("first negative:", items.loc[user.negatives[0], "text"])'''),
    ],
    "01_segmentation": [
        new_markdown_cell(
            "# 01 · Segmentation\n\n"
            "Each history is cut into blocks of `summarizer.block_size` items, oldest first "
            "(paper section 4.1.1). Every block-summary prompt must fit the summarizer's context "
            "minus the room for its answer; when one would not, the longest item texts are "
            "shortened (never the instruction, never dropping an item) and counted. This "
            "notebook shows the blocks of a few test users and their token counts against the "
            "budget. Needs the summarizer's tokenizer only, not the model."),
        new_code_cell(PARAMETERS + "\nn_users_shown = 3", metadata={"tags": ["parameters"]}),
        new_code_cell(SETUP + '''
from llmtrsr_utils import plots
from llmtrsr_utils.summarize import Summarizer, segmentation_table, split_histories

users, domain = split_histories(cfg, "test")
summarizer = Summarizer(cfg, domain)  # the model itself is not loaded here
shown = users[:n_users_shown]
table = segmentation_table(summarizer, shown)
table'''),
        new_code_cell('''plots.plot_segmentation(table, cfg.figures_path)'''),
        new_markdown_cell("## The first block prompt, exactly as the summarizer reads it"),
        new_code_cell('''print(summarizer.segment(shown[0])[0].fitted.prompt)'''),
        new_markdown_cell("## Shortening over all test users"),
        new_code_cell('''every_block = segmentation_table(summarizer, users)
every_block[["prompt_tokens", "items_shortened"]].describe()'''),
    ],
    "02_summarization": [
        new_markdown_cell(
            "# 02 · Summarization\n\n"
            "Hierarchical (summarize blocks, then summarize the summaries) and recurrent "
            "(summarize block 1, then update with each next block) preference summaries for the "
            "test users, side by side, with the summary length distribution, flagged outputs "
            "(empty or repetitive) and the time per user. Summaries are cached: this notebook "
            "only generates what `llmtrsr summarize` has not already written."),
        new_code_cell(PARAMETERS + "\nsplit = \"test\"\nn_users_shown = 3",
                      metadata={"tags": ["parameters"]}),
        new_code_cell(SETUP + '''
import pandas as pd

from llmtrsr_utils import plots
from llmtrsr_utils.models import load_tokenizer
from llmtrsr_utils.summarize import (PARADIGMS, load_summaries, read_record, side_by_side,
                                     summarize_split, summary_lengths)

records = {p: summarize_split(cfg, split, p) for p in PARADIGMS}
frames = {p: load_summaries(cfg, split, p) for p in PARADIGMS}
pd.DataFrame(records).T[["users", "calls_requested", "cache_hits", "model_calls",
                         "tokens_per_second", "seconds_per_user", "items_shortened",
                         "texts_shortened", "flags"]]'''),
        new_markdown_cell("## Side by side"),
        new_code_cell('''with pd.option_context("display.max_colwidth", None):
    display(side_by_side(frames, n_users_shown))'''),
        new_markdown_cell("## Every layer of one user (hierarchical) and every step (recurrent)"),
        new_code_cell('''user = frames["hierarchical"].iloc[0]
for depth, layer in enumerate(user["layers"]):
    for position, text in enumerate(layer, start=1):
        print(f"[layer {depth}, summary {position}] {text}\\n")
for step, text in enumerate(frames["recurrent"].iloc[0]["block_summaries"], start=1):
    print(f"[recurrent step {step}] {text}\\n")'''),
        new_markdown_cell("## Length and time"),
        new_code_cell('''tokenizer = load_tokenizer(cfg.summarizer.model, cache_dir=cfg.cache_dir)
lengths = summary_lengths(frames, tokenizer)
seconds = {p: read_record(cfg, split, p)["seconds_per_user"] for p in PARADIGMS}
plots.plot_summary_lengths(lengths, seconds, cfg.figures_path)'''),
        new_code_cell('''flagged = pd.concat(frames.values())
flagged[flagged["n_flagged_calls"] > 0][["user_id", "paradigm", "flags"]]'''),
    ],
    "03_sft": [
        new_markdown_cell(
            "# 03 · Supervised fine-tuning (LoRA)\n\n"
            "Trains the recommender of each Table-2 system with trl's `SFTTrainer` and a peft "
            "LoRA adapter (r 8, alpha 16, dropout 0.05 on the attention projections): "
            "LLM-TRSR with hierarchical or recurrent summaries and the 3 most recent items, and "
            "TALLRec (no summary, full history). Each training user gives one positive and one "
            "negative example; the answer is `yes` or `no` (paper section 4.3). Adapters are "
            "saved every epoch; a finished system is not trained again, an interrupted one "
            "resumes from its last checkpoint. Writes `figures/sft_loss.png`."),
        new_code_cell(PARAMETERS + '''
systems = ["llmtrsr-hierarchical", "llmtrsr-recurrent", "tallrec"]''',
                      metadata={"tags": ["parameters"]}),
        new_code_cell(SETUP + '''
import pandas as pd

from IPython.display import display

from llmtrsr_utils import plots
from llmtrsr_utils.evaluate import learning_curve
from llmtrsr_utils.recommend import example_prompts, train_system'''),
        new_markdown_cell("## Example prompts with their token counts"),
        new_code_cell('''examples = pd.concat([example_prompts(cfg, system) for system in systems])
examples[["system", "user_id", "answer", "tokens"]]'''),
        new_code_cell('''print(examples.iloc[0]["prompt"] + examples.iloc[0]["answer"])'''),
        new_markdown_cell("## Training"),
        new_code_cell('''records = {system: train_system(cfg, system) for system in systems}
pd.DataFrame(records).T[["examples", "global_step", "train_loss", "seconds_per_step",
                         "train_seconds", "resumed_from"]]'''),
        new_code_cell('''histories = {s: r["log_history"] for s, r in records.items()}
plots.plot_training_curves(histories, cfg.figures_path)'''),
        new_markdown_cell(
            "## Learning curve (validation users)\n\n"
            "Every saved checkpoint (`recommender.checkpoints_per_epoch` per epoch) and the "
            "untrained model are scored on the validation users; the lines are Recall@5 against "
            "training examples seen, with the Random, Popularity and zero-shot LLM levels on the "
            "same users. Notebook 04 reuses these scores to select the checkpoint it reports on "
            "test. Writes `figures/learning_curve.png` and `results/learning_curve.csv`."),
        new_code_cell('''if cfg.recommender.epochs * cfg.recommender.checkpoints_per_epoch > 1:
    curve, levels = learning_curve(cfg, systems)
    plots.plot_learning_curve(curve, levels, cfg.figures_path)
    display(curve[["system", "epoch", "examples_seen", "recall@5", "recall@5_ci_low",
                   "recall@5_ci_high", "mrr@5"]])
    display(levels[["system", "recall@5", "recall@5_ci_low", "recall@5_ci_high"]])
else:
    print("one checkpoint per system: no learning curve (recommender.checkpoints_per_epoch)")'''),
    ],
    "04_evaluation": [
        new_markdown_cell(
            "# 04 · Evaluation (Table 2)\n\n"
            "Every system ranks the same frozen candidates: 1 positive and 20 sampled negatives "
            "per test user. LLM systems score p = softmax(logit yes, logit no)[yes]; each saved "
            "epoch is scored on validation and the best by Recall@3+5+10 is reported on test. "
            "Baselines: random, popularity (training counts), MiniLM text-embedding similarity, "
            "the zero-shot LLM, and the paper's classical recommenders (NCF, DIN, DIEN, "
            "GRU4Rec, NARM, SASRec, CORE) over frozen MiniLM embeddings of the items, trained on "
            "the same training users with early stopping on validation. A positive tied with "
            "negatives counts at its expected rank under random tie-breaking (the share of tied "
            "positives and Recall@5 with every tie lost are shown beside it). Intervals are 95% "
            "bootstrap intervals over users. Writes `figures/table2.png`, `figures/table2.md` "
            "and `figures/results.csv` (every row of this run's results table), with the "
            "paired tests and the learning curve when there are some."),
        new_code_cell(PARAMETERS + '''
systems = ["llmtrsr-hierarchical", "llmtrsr-recurrent", "tallrec"]
baselines = ["random", "popularity", "embedding", "zero-shot",
             "ncf", "din", "dien", "gru4rec", "narm", "sasrec", "core"]''',
                      metadata={"tags": ["parameters"]}),
        new_code_cell(SETUP + '''
import pandas as pd

from llmtrsr_utils import plots
from llmtrsr_utils.evaluate import (evaluate, load_results, results_dir, selected_test_rows,
                                    table2, write_report)

evaluate(cfg, systems, baselines, reuse=True)  # scores only what is not evaluated yet
results = load_results(cfg, current=True)  # the rows these params made'''),
        new_markdown_cell("## Table 2 (test users, mean and 95% CI)"),
        new_code_cell('''write_report(cfg)  # table2.md, results.csv, paired tests, learning curve
table2(results)'''),
        new_code_cell('''plots.plot_table2(selected_test_rows(results), cfg.figures_path)'''),
        new_markdown_cell("## Checkpoint selection on validation"),
        new_code_cell('''valid = results[results["split"] == "valid"]
valid[["system", "epoch", "selection_score", "selected", "recall@5", "mrr@5"]]'''),
        new_markdown_cell("## Paired bootstrap tests against TALLRec, the zero-shot LLM and Random "
                          "(test users)"),
        new_code_cell('''paired = results_dir(cfg) / "paired_tests.csv"
pd.read_csv(paired).query("metric in ['recall@5', 'mrr@5']") if paired.is_file() else None'''),
        new_markdown_cell("## Scoring speed and prompt shortening"),
        new_code_cell('''columns = ["system", "split", "candidates_per_second", "scoring_seconds",
           "prompt_summaries_shortened", "prompt_recent_items_dropped"]
results[[c for c in columns if c in results.columns]]'''),
    ],
    "05_ablation_item_count": [
        new_markdown_cell(
            "# 05 · Ablation: recent items in the prompt (Figure 9)\n\n"
            "The recommendation prompt carries the preference summary and the `item_num` most "
            "recent items. The paper varies `item_num` from 0 to 5 for both paradigms "
            "(Figure 9). Each grid point trains what it lacks and evaluates one system through "
            "`notebooks/grid_point.ipynb` (papermill), into `<runs_dir>/item_count/<point>/`; "
            "points already in `results.parquet` are skipped. Adapters and summaries are shared "
            "with notebooks 03 and 04, so the point equal to the main run costs nothing.\n\n"
            "**Grid run here:** `ablations.item_nums` of the params (the CPU default runs a "
            "reduced grid; `params/paper_*.yaml` and the grid file have all six values)."),
        new_code_cell(PARAMETERS + '''
grid_file = "params/ablations/item_count.yaml"''', metadata={"tags": ["parameters"]}),
        new_code_cell(SETUP + '''
from llmtrsr_utils import grid, plots

''' + GRID_SETUP),
        new_code_cell(RUN_GRID),
        new_markdown_cell("## Results (test users, mean and 95% CI)"),
        new_code_cell('''rows = report.rows(cfg)  # this grid's finished points for these params
grid.metric_table(rows, ["system", "axis.recommender.item_num"])'''),
        new_code_cell('''plots.plot_item_count(rows, cfg.figures_path)'''),
        new_code_cell(RAISE_ON_FAILURE),
    ],
    "06_ablation_recommender_size": [
        new_markdown_cell(
            "# 06 · Ablation: recommender size (Figure 10)\n\n"
            "LLM-TRSR-Hierarchical with recommenders of growing size, everything else fixed. "
            "The paper's ladder is Pythia-1.4b, Pythia-2.8b and Llama-2-7b "
            "(`params/paper_*.yaml`); offline, the ladder is SmolLM2-135M and Gemma-3-270M.\n\n"
            "**Grid run here:** `ablations.recommenders` of the params, else the grid file's "
            "list."),
        new_code_cell(PARAMETERS + '''
grid_file = "params/ablations/recommender_size.yaml"''', metadata={"tags": ["parameters"]}),
        new_code_cell(SETUP + '''
from llmtrsr_utils import grid, plots

''' + GRID_SETUP),
        new_code_cell(RUN_GRID),
        new_markdown_cell("## Results (test users, mean and 95% CI)"),
        new_code_cell('''rows = report.rows(cfg)  # this grid's finished points for these params
grid.metric_table(rows, ["axis.recommender.model", "train_seconds", "seconds_per_step"])'''),
        new_code_cell('''plots.plot_model_size(rows, "recommender.model",
                      "Recommender size (paper Figure 10)", cfg.figures_path,
                      "figure10_recommender_size")'''),
        new_code_cell(RAISE_ON_FAILURE),
    ],
    "07_ablation_summarizer_size": [
        new_markdown_cell(
            "# 07 · Ablation: summarizer size (Figure 11)\n\n"
            "Summaries written by summarizers of different size, read by the same recommender "
            "with no recent item in the prompt (`item_num` 0), so the summary alone describes "
            "the user. The paper compares Llama-2-13b with Llama-30b-instruct and finds the "
            "smaller one's summaries disorganised; offline, SmolLM2-135M and Gemma-3-270M (a "
            "base model without chat template). The same users' summaries from each are shown "
            "below.\n\n"
            "**Grid run here:** `ablations.summarizers` of the params, else the grid file's "
            "list."),
        new_code_cell(PARAMETERS + '''
grid_file = "params/ablations/summarizer_size.yaml"
n_users_shown = 2''', metadata={"tags": ["parameters"]}),
        new_code_cell(SETUP + '''
import pandas as pd

from llmtrsr_utils import grid, plots
from llmtrsr_utils.summarize import summaries_by_model

''' + GRID_SETUP),
        new_code_cell(RUN_GRID),
        new_markdown_cell("## Results (test users, mean and 95% CI)"),
        new_code_cell('''rows = report.rows(cfg)  # this grid's finished points for these params
grid.metric_table(rows, ["axis.summarizer.model"])'''),
        new_code_cell('''plots.plot_model_size(rows, "summarizer.model",
                      "Summarizer size, item_num 0 (paper Figure 11)", cfg.figures_path,
                      "figure11_summarizer_size")'''),
        new_markdown_cell("## The same users' summaries from each summarizer"),
        new_code_cell('''with pd.option_context("display.max_colwidth", None):
    display(summaries_by_model(cfg, spec.axes["summarizer.model"], "test", n_users_shown))'''),
        new_code_cell(RAISE_ON_FAILURE),
    ],
    "08_efficiency": [
        new_markdown_cell(
            "# 08 · Efficiency: what summarization buys\n\n"
            "The paper's motivation, measured: TALLRec puts the whole history in the prompt, "
            "LLM-TRSR a summary and a few recent items. For each system, on the same test "
            "users: prompt tokens per example, SFT seconds per optimizer step (a few steps of "
            "the real trainer), scoring candidates per second (fast scorer) and peak memory, "
            "each system in its own process. Then the prompt length against history length, "
            "against the context limit. Writes `figures/efficiency.png` and "
            "`figures/efficiency_prompt_growth.png`."),
        new_code_cell(PARAMETERS + '''
systems = ["llmtrsr-hierarchical", "tallrec"]
n_users = 2  # test users scored per system
sft_steps = 2  # optimizer steps timed per system (after one warm-up step)''',
                      metadata={"tags": ["parameters"]}),
        new_code_cell(SETUP + '''
from llmtrsr_utils import efficiency, plots

table = efficiency.measure(cfg, params_file, overrides, systems, n_users=n_users,
                           sft_steps=sft_steps)
table[["system", "device", "prompt_tokens_mean", "prompt_tokens_max", "sft_seconds_per_step",
       "candidates_per_second", "scoring_peak_memory_gib", "peak_memory_gib"]]'''),
        new_code_cell('''plots.plot_efficiency(table, cfg.figures_path)'''),
        new_markdown_cell("## Prompt length against history length"),
        new_code_cell('''curve = efficiency.prompt_growth(cfg)
plots.plot_prompt_growth(curve, int(curve["limit"].iloc[0]), cfg.figures_path)
curve.pivot(index="history_length", columns="system", values="tokens")'''),
    ],
}

# Not part of the numbered series: what `llmtrsr run-grid` executes for each grid point.
GRID_POINT = [
    new_markdown_cell(
        "# Grid point: train what is missing, evaluate one system\n\n"
        "Executed by `llmtrsr run-grid` for each point of a grid (or directly: `papermill "
        "notebooks/grid_point.ipynb OUT.ipynb -p params_file P -p system S -p output_dir D`). "
        "Writes `result.json` into `output_dir`: the system's selected test row (every metric "
        "with its 95% CI) and its training cost."),
    new_code_cell(PARAMETERS + '''
system = "llmtrsr-hierarchical"
output_dir = "."''', metadata={"tags": ["parameters"]}),
    new_code_cell(SETUP + '''
from pathlib import Path

from llmtrsr_utils.artifacts import write_json
from llmtrsr_utils.evaluate import evaluate, point_result

evaluate(cfg, [system], [], reuse=True, write_tables=False)  # trains first when needed
result = point_result(cfg, system)
write_json(result, Path(output_dir) / "result.json")
result'''),
]


def main() -> None:
    for name, cells in {**NOTEBOOKS, "grid_point": GRID_POINT}.items():
        notebook = new_notebook(cells=cells, metadata={
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"}})
        for index, cell in enumerate(notebook.cells):
            cell["id"] = f"{name[:2]}-{index:02d}"  # stable ids: no churn in git diffs
        path = ROOT / "notebooks" / f"{name}.ipynb"
        nbformat.write(notebook, path)
        print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
