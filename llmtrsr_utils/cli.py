"""The `llmtrsr` command: one subcommand per pipeline stage, all driven by a params file."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from llmtrsr_utils import systems
from llmtrsr_utils.config import Config, ConfigError, load_config, override_list

DEFAULT_PARAMS = "params/default.yaml"


def _add_params(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default=DEFAULT_PARAMS,
                        help=f"params YAML file (default: {DEFAULT_PARAMS})")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="override one parameter, e.g. --set data.n_test_users=8 "
                             "(repeatable; the value is read as YAML)")
    parser.add_argument("--seeds", default=None, metavar="S1,S2,...",
                        help="training seeds: each trained system is trained and evaluated "
                             "once per seed (same as --set 'seeds=[S1,S2]')")


def _config(args: argparse.Namespace) -> Config:
    seeds = [f"seeds=[{args.seeds}]"] if getattr(args, "seeds", None) else []
    return load_config(args.params, [*override_list(args.overrides), *seeds])


def cmd_data(args: argparse.Namespace) -> int:
    from llmtrsr_utils.datasets.splits import read_manifest
    from llmtrsr_utils.pipeline import ensure_splits

    cfg = _config(args)
    out_dir = ensure_splits(cfg, force=args.force)
    manifest = read_manifest(out_dir)
    print(f"wrote {out_dir}")
    for name, info in manifest["files"].items():
        print(f"  {name:<15} {info['rows']:>7} rows  sha256 {info['sha256']}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from llmtrsr_utils.models import list_models

    rows = list_models()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = f"{'name':<20} {'kind':<10} {'params':>6}  {'offline':<8} {'licence':<22} source"
    print(header)
    print("-" * len(header))
    for row in rows:
        offline = "yes" if row["offline"] else "no"
        print(f"{row['name']:<20} {row['kind']:<10} {row['parameters']:>6}  {offline:<8} "
              f"{row['licence']:<22} {row['source']}")
    print("\nAlso accepted: any local folder or GGUF file, or a Hugging Face hub id (org/name).")
    return 0


def cmd_systems(args: argparse.Namespace) -> int:
    rows = [{"name": s.name, "label": s.label, "kind": s.kind,
             "settings": dict(s.recommender) or None, "prompts_of": s.prompts_of}
            for s in systems.all_systems()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':<22} {'kind':<10} {'Table 2 label':<30} recommender settings")
    for row in rows:
        settings = ", ".join(f"{k}={v}" for k, v in (row["settings"] or {}).items())
        if row["prompts_of"]:
            settings = f"the prompts of {row['prompts_of']}"
        print(f"{row['name']:<22} {row['kind']:<10} {row['label']:<30} {settings}".rstrip())
    print(f"\nparadigms: {', '.join(systems.paradigm_names())}")
    return 0


def _paradigms(value: str) -> list[str]:
    """--paradigm's paradigms: all (or both), or a comma list; an unknown name fails here,
    before any model is loaded."""
    from llmtrsr_utils.summarize import find_paradigm

    every = value in ("all", "both")  # both: the name before paradigms were a registry
    paradigms = systems.paradigm_names() if every else override_list(value.replace(",", "\n"))
    for paradigm in paradigms:
        find_paradigm(paradigm)
    return paradigms


def cmd_summarize(args: argparse.Namespace) -> int:
    from llmtrsr_utils.datasets.splits import SPLITS
    from llmtrsr_utils.pipeline import ensure_splits
    from llmtrsr_utils.summarize import summarize_split

    cfg = _config(args)
    splits = SPLITS if args.split == "all" else (args.split,)
    paradigms = _paradigms(args.paradigm)
    ensure_splits(cfg)
    for split in splits:
        for paradigm in paradigms:
            record = summarize_split(cfg, split, paradigm, progress=not args.no_progress)
            if record is None:  # a non-main process of `accelerate launch`
                continue
            print(f"{paradigm:<12} {split:<5} {record['users']:>4} users  "
                  f"{record['calls_requested']:>5} calls  {record['cache_hits']:>5} cached  "
                  f"model calls: {record['model_calls']}  "
                  f"{record['tokens_per_second']:.1f} tok/s  -> {record['output']}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from llmtrsr_utils.pipeline import system_names, train_seeds

    cfg = _config(args)
    for system in system_names(args.system):
        for seed, record in train_seeds(cfg, system, progress=not args.no_progress).items():
            print(f"{system:<22} seed {seed:<6} {record['global_step']:>5} steps  "
                  f"{record['examples']:>5} examples  loss {record['train_loss']:.4f}  "
                  f"{record['seconds_per_step']:.2f} s/step  -> {record['output_dir']}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from llmtrsr_utils.pipeline import run_evaluation
    from llmtrsr_utils.results import results_dir, table2

    cfg = _config(args)
    rows = run_evaluation(cfg, args.systems, args.baselines, progress=not args.no_progress,
                          reuse=args.reuse)
    print(table2(rows, results_dir(cfg)).to_string())
    print(f"\nresults: {results_dir(cfg) / 'metrics.parquet'} (and table2.md, scores/)")
    return 0


def cmd_history_shuffle(args: argparse.Namespace) -> int:
    from llmtrsr_utils.pipeline import shuffle_histories
    from llmtrsr_utils.results import results_dir

    cfg = _config(args)
    table = shuffle_histories(cfg, args.systems, args.baselines)
    shown = table[table["metric"] == "recall@5"]
    print(shown[["display_name", "normal", "shuffled", "diff", "ci_low", "ci_high",
                 "p_value"]].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"\nevery metric: {results_dir(cfg) / 'history_shuffle.csv'}")
    return 0


def cmd_decide(args: argparse.Namespace) -> int:
    from llmtrsr_utils.decision import TABLE, decide
    from llmtrsr_utils.results import results_dir

    cfg = _config(args)
    table = decide(cfg, args.metric)
    print(table.drop(columns=["metric"]).to_string(
        index=False, float_format=lambda v: f"{v:+.3f}", na_rep=""))
    print(f"\nwritten: {results_dir(cfg) / TABLE}")
    return 0


def cmd_summary_probe(args: argparse.Namespace) -> int:
    from llmtrsr_utils.results import results_dir
    from llmtrsr_utils.summary_probe import TABLE, probe

    cfg = _config(args)
    table = probe(cfg, args.split, _paradigms(args.paradigm), metric=args.metric,
                  progress=not args.no_progress)
    shown = ["split", "paradigm", "summary_style", "max_new_tokens", "no_repeat_ngram_size",
             "repetition_penalty", "n_users", "summary", "another user's summary", "history",
             "own_minus_another", "p_value", "labels_named", "calls_cut_share"]
    print(f"{args.metric} of a label ranker reading each text (chance: every candidate tied)")
    print(table[shown].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"\nwritten: {results_dir(cfg) / TABLE}")
    return 0


def cmd_baselines(args: argparse.Namespace) -> int:
    from llmtrsr_utils.pipeline import classical_names, run_evaluation
    from llmtrsr_utils.results import results_dir

    cfg = _config(args)
    names = classical_names(args.models)
    run_evaluation(cfg, [], names, progress=not args.no_progress, reuse=not args.force)
    out = results_dir(cfg)
    print((out / "table2.md").read_text())
    for name in names:
        record_file = out / "classical" / f"{name}.json"
        if record_file.is_file():
            record = json.loads(record_file.read_text())
            print(f"{name:<8} {record['train_seconds']:>8.1f} s  best epoch "
                  f"{record['best_epoch']:>3} of {record['epochs_run']}")
    print(f"\nresults: {out / 'metrics.parquet'}")
    return 0


def cmd_notebooks(args: argparse.Namespace) -> int:
    from llmtrsr_utils.notebooks import run_series

    executed = run_series(args.params, args.overrides, only=args.only,
                          output_dir=args.output_dir)
    for path in executed:
        print(f"executed {path}")
    return 0


def cmd_run_grid(args: argparse.Namespace) -> int:
    from llmtrsr_utils.grid import run_grid, summary

    axes = dict(_axis(text) for text in args.axis)
    report = run_grid(args.grid, args.params, args.overrides, axes=axes or None,
                      runs_dir=args.runs_dir,
                      executor="inprocess" if args.in_process else "papermill")
    print(summary(report).to_string(index=False))
    print(f"\n{len(report.ran)} ran, {len(report.skipped)} skipped (done), "
          f"{len(report.failed)} failed; results: {report.results_path}")
    return 1 if report.failed else 0


def _axis(text: str) -> tuple[str, list]:
    import yaml

    key, sep, values = text.partition("=")
    if not sep or not values:
        raise ConfigError(f"--axis {text!r}: expected key=v1,v2, e.g. recommender.item_num=0,3")
    return key.strip(), [yaml.safe_load(v) for v in values.split(",")]


def cmd_figures(args: argparse.Namespace) -> int:
    from llmtrsr_utils.report import redraw

    cfg = _config(args)
    written, missing = redraw(cfg)
    for path in written:
        print(f"wrote {path}")
    for line in missing:
        print(f"not drawn: {line}", file=sys.stderr)
    return 0 if written else 2


def cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from llmtrsr_utils.config import project_root
    from llmtrsr_utils.readme import render, stale_blocks

    path = Path(args.readme)
    path = path if path.is_absolute() else project_root() / path
    text = path.read_text(encoding="utf-8")
    if args.check:
        stale = stale_blocks(text, path.parent)
        for spec in stale:
            print(f"{path.name}: block '{spec}' differs from its CSV", file=sys.stderr)
        return 1 if stale else 0
    new = render(text, path.parent)
    if new != text:
        path.write_text(new, encoding="utf-8")
        print(f"rewrote the generated blocks of {path}")
    else:
        print(f"{path}: every generated block is current")
    return 0


def _command(commands, name: str, func, *, params: bool = True, progress: bool = False,
             **texts: str) -> argparse.ArgumentParser:
    """A subcommand running ``func``: with --params/--set unless ``params`` is false, and
    --no-progress with ``progress``; ``texts``: argparse's help and description."""
    parser = commands.add_parser(name, **texts)
    if params:
        _add_params(parser)
    if progress:
        parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=func)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmtrsr", description="LLM-TRSR research kit: data, summaries, LoRA recommender, "
                                    "evaluation and figures from one params file.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = _command(
        commands, "data", cmd_data,
        help="load, filter and split a dataset; draw negatives",
        description="Write <work_dir>/data/{items,train,valid,test}.parquet and manifest.json. "
                    "Reuses an existing result made with the same params unless --force.")
    data.add_argument("--force", action="store_true", help="rebuild even if up to date")

    models = _command(
        commands, "models", cmd_models, params=False,
        help="list the named models and whether they load offline",
        description="List registry models: kind, size, licence, source, offline availability.")
    models.add_argument("--json", action="store_true", help="print JSON instead of a table")

    listed = _command(
        commands, "systems", cmd_systems, params=False,
        help="list every scored system and paradigm, in Table 2's order",
        description="The registry of scored systems (llmtrsr_utils.systems): name, kind (how "
                    "it is trained and scored), Table 2 label and recommender settings, "
                    "extensions in llmtrsr_utils/extensions/ included.")
    listed.add_argument("--json", action="store_true", help="print JSON instead of a table")

    summarize = _command(
        commands, "summarize", cmd_summarize, progress=True,
        help="write hierarchical and/or recurrent preference summaries",
        description="Summarize each user's history with the summarizer LLM. Generations are "
                    "cached (SQLite) and a rerun, or a run after a crash, skips what is done. "
                    "Runs under `accelerate launch` too, splitting users between processes.")
    summarize.add_argument("--paradigm", default="all",
                           help=f"a paradigm ({', '.join(systems.paradigm_names())}), a comma "
                                f"list, all (default: every registered one), or a paradigm's "
                                f"module path package.module (README: add a paradigm)")
    summarize.add_argument("--split", choices=["train", "valid", "test", "all"], default="all")

    probe = _command(
        commands, "summary-probe", cmd_summary_probe, progress=True,
        help="does a summary describe its user? screen summarizer settings without training",
        description="Rank each user's candidates by the item labels (MovieLens genres, MIND "
                    "categories) their own final summary names, another user's summary names "
                    "(the negative control) and their history's items carry (the positive "
                    "control), summarizing first what is missing; paired bootstrap of own vs "
                    "another user's. One row per paradigm and summarizer settings, gathered "
                    "in <work_dir>/results/summary_probe.csv across runs with other --set "
                    "summarizer.* values.")
    probe.add_argument("--paradigm", default="all",
                       help="a paradigm, a comma list, or all (default)")
    probe.add_argument("--split", choices=["train", "valid", "test"], default="valid",
                       help="the users probed (default: valid; settings are chosen there)")
    probe.add_argument("--metric", default="recall@5", help="the metric reported (recall@5)")

    train = _command(
        commands, "train", cmd_train, progress=True,
        help="LoRA SFT of the recommender (LLM-TRSR and TALLRec systems)",
        description="Fine-tune the recommender with trl's SFTTrainer and a peft LoRA adapter on "
                    "the training users; saves the adapter every epoch and resumes from the "
                    "last checkpoint. Runs under `accelerate launch` too.")
    trained = ", ".join(systems.names(systems.TRAINED_KINDS))
    train.add_argument("--system", default="all",
                       help=f"a system ({trained}), a comma list, or all (default: every "
                            f"registered one); llmtrsr-<paradigm module path> for a paradigm "
                            f"outside the kit")

    evaluate = _command(
        commands, "evaluate", cmd_evaluate, progress=True,
        help="score every system and baseline; metrics with CIs; Table 2",
        description="Select each LLM system's best epoch on validation (Recall@3+5+10), score "
                    "it on test, add the baselines, and write <work_dir>/results/metrics.parquet, "
                    "per-user scores, table2.md and paired bootstrap tests against TALLRec, "
                    "the zero-shot LLM and Random.")
    evaluate.add_argument("--systems", default="all",
                          help=f"comma list of LLM systems ({trained}, or llmtrsr-<paradigm "
                               f"module path>: README, add a paradigm); 'all' (default: the "
                               f"paper's), 'variants', 'controls' (words that combine: "
                               f"all,controls) or '' for none")
    evaluate.add_argument("--baselines", default="all",
                          help=f"comma list of baselines "
                               f"({', '.join(systems.names(systems.BASELINE_KINDS))}), or a "
                               f"module path (package.module) that registers one (README: add "
                               f"a baseline); 'all' (default: every registered one) or '' for "
                               f"none")
    evaluate.add_argument("--reuse", action="store_true",
                          help="read back every system (and seed) already evaluated with these "
                               "params instead of scoring it again: resume a run seed by seed")

    shuffle = _command(
        commands, "history-shuffle", cmd_history_shuffle,
        help="does a system read the user? score evaluated systems with other users' histories",
        description="Score each evaluated system again on the same test users and candidates, "
                    "every user given another user's history (and summary), and compare with "
                    "its stored scores (paired bootstrap). A system that reads the history "
                    "loses accuracy; Random and Popularity (the default baselines) must not "
                    "change. Writes <work_dir>/results/history_shuffle.csv.")
    shuffle.add_argument("--systems", default="all",
                         help="comma list of LLM systems, 'all' (default), 'variants', "
                              "'controls' or ''")
    negative_controls = ",".join((systems.RANDOM, systems.POPULARITY))
    shuffle.add_argument("--baselines", default=negative_controls,
                         help=f"comma list of reference scorers or zero-shot (default: "
                              f"{negative_controls}, the negative controls); classical models "
                              f"are refused (their weights are not kept)")

    decide = _command(
        commands, "decide", cmd_decide,
        help="the decision table: does the recommender read the user, does a summary help",
        description="Answer the questions of issue 22 from the stored results, pooled over "
                    "every training seed stored under these params (paired bootstrap over the "
                    "same test users, seeds resampled): oracle-older vs null-summary, the "
                    "history shuffle, fine-tuning vs zero-shot, LLM-TRSR vs the controls. "
                    "Writes <work_dir>/results/decision.csv; a comparison whose systems were "
                    "not evaluated is marked 'not measured'.")
    decide.add_argument("--metric", default="recall@5", help="the metric judged (recall@5)")

    classical_models = _command(
        commands, "baselines", cmd_baselines, progress=True,
        help="train and evaluate Table 2's classical recommenders",
        description=f"{', '.join(systems.label(n) for n in systems.names('classical'))} "
                    "over frozen text embeddings of the items (classical.encoder, MiniLM by "
                    "default), trained on the LLM recommender's training users with early "
                    "stopping on validation, scored on the same 1 + 20 candidates; rows go "
                    "into the results table and Table 2. Models already evaluated with these "
                    "params are reused.")
    classical_models.add_argument("--models", default="all",
                                  help="comma list of the classical models named above; "
                                       "'all' (default)")
    classical_models.add_argument("--force", action="store_true",
                                  help="train again even if evaluated with these params")

    notebooks = _command(
        commands, "notebooks", cmd_notebooks,
        help="run the notebook series with papermill",
        description="Execute notebooks/NN_*.ipynb in order with the params injected; executed "
                    "copies go to <work_dir>/notebooks.")
    notebooks.add_argument("--only", action="append", default=[], metavar="PREFIX",
                           help="run only notebooks whose name starts with PREFIX (repeatable)")
    notebooks.add_argument("--output-dir", default=None, help="where executed notebooks go")

    grid = _command(
        commands, "run-grid", cmd_run_grid,
        help="run a notebook for every point of a grid (ablations)",
        description="Execute the grid file's notebook with papermill for every combination of "
                    "its axes into <runs_dir>/<grid>/<point>/ and append a row per finished "
                    "point to <runs_dir>/<grid>/results.parquet. Points already there are "
                    "skipped; a failed point is reported at the end (exit 1) and the others "
                    "still run.")
    grid.add_argument("grid", help="grid YAML, e.g. params/ablations/item_count.yaml")
    grid.add_argument("--axis", action="append", default=[], metavar="KEY=V1,V2",
                      help="run only these values of one axis (repeatable), e.g. "
                           "--axis recommender.item_num=0,3")
    grid.add_argument("--runs-dir", default=None, help="default: the params' runs_dir")
    grid.add_argument("--in-process", action="store_true",
                      help="run each point's calls in this process instead of a papermill "
                           "notebook (no Jupyter kernel needed, e.g. on a GPU node)")

    _command(
        commands, "figures", cmd_figures,
        help="redraw every results figure from the saved tables",
        description="Draw Table 2, Figures 9 to 11 and the efficiency charts into figures_dir "
                    "from the results tables a run left; nothing is recomputed.")

    report = _command(
        commands, "report", cmd_report, params=False,
        help="regenerate the README's result tables from the committed CSVs",
        description="Rewrite every block of README.md between '<!-- generated: <kind> <csv> "
                    "...' and '<!-- end generated -->' from its CSV (llmtrsr_utils.readme); "
                    "with --check, change nothing and fail when a block differs.")
    report.add_argument("--readme", default="README.md", help="the file (README.md)")
    report.add_argument("--check", action="store_true",
                        help="fail (exit 1) when a block differs from its CSV")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("llmtrsr").setLevel(logging.INFO)
    from llmtrsr_utils.environment import check_versions

    check_versions()  # warns when torch/transformers/peft/trl drifted from the tested versions
    from llmtrsr_utils.datasets.base import DataFormatError
    from llmtrsr_utils.datasets.download import DownloadError
    from llmtrsr_utils.datasets.splits import DataNotFoundError
    from llmtrsr_utils.grid import GridFailedError
    from llmtrsr_utils.models import ModelLoadError
    from llmtrsr_utils.prompts import ChatTemplateMissingError
    from llmtrsr_utils.recommend import AnswerTokenError
    from llmtrsr_utils.segmentation import PromptTooLongError

    # Errors about the user's input or environment: one clear line, no traceback.
    expected = (ConfigError, DataFormatError, DataNotFoundError, ModelLoadError, DownloadError,
                PermissionError, PromptTooLongError, AnswerTokenError, FileNotFoundError,
                GridFailedError, ChatTemplateMissingError)
    try:
        return args.func(args)
    except expected as err:
        print(f"llmtrsr {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
