"""The pipeline's order, and "make it if missing": the one module that chains the stages.

    data (datasets.splits) -> summaries (summarize) -> adapter (recommend) -> results
    (evaluate, learning); then grids (grid), efficiency, and figures from the saved tables
    (report)

Each stage module computes from what it is given and imports only the stages below it; a stage
that finds its input missing says so (``DataMissingError``, ``SummariesMissingError``,
``AdapterMissingError``) instead of running an earlier stage itself: only
:func:`ensure_splits` builds the data. This module makes what is missing, in order, and is
what the CLI, the notebooks, the grids and the benchmarks call. Every ``ensure_*`` is cheap when
its output is already there and current (same data and model settings), so calling it again
costs nothing; each stage's own caches (generation cache, checkpoints) make an interrupted run
resume.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from llmtrsr_utils import (
    evaluate,
    history_shuffle,
    learning,
    recommend,
    results,
    summarize,
    systems,
)
from llmtrsr_utils.config import Config, ConfigError, override_list
from llmtrsr_utils.datasets.base import USER_ID
from llmtrsr_utils.datasets.splits import prepare_dataset

log = logging.getLogger("llmtrsr")

TRAINING_SPLITS = ("train",)
EVALUATION_SPLITS = ("valid", "test")


def names(value: str | Sequence[str], every: Sequence[str], setting: str,
          known: Callable[[str], bool], groups: dict[str, list[str]] | None = None
          ) -> list[str]:
    """Names chosen by a setting as people write it: ``"all"`` (``every``), ``""`` (none), a
    comma-separated string, or a list; a word of ``groups`` (``controls``) stands for its
    names, ``all`` inside a list for ``every``. A name with a dot is a module written outside
    the kit (a baseline module, ``llmtrsr-<paradigm module>``), checked when it is used.

    Raises:
        ConfigError: naming the setting, the unknown names and the built-in ones.
    """
    if isinstance(value, str) and value.strip() in ("all", ""):
        return list(every) if value.strip() == "all" else []
    chosen = override_list(value) if isinstance(value, str) else [str(v) for v in value]
    chosen = [name.strip() for text in chosen for name in text.split(",") if name.strip()]
    groups = {"all": list(every), **(groups or {})}
    chosen = list(dict.fromkeys(n for name in chosen for n in groups.get(name, [name])))
    unknown = [name for name in chosen if not known(name) and "." not in name]
    if unknown:
        raise ConfigError(f"{setting}: unknown {', '.join(unknown)}; choose from "
                          f"{', '.join(every)}, 'all' or ''")
    return chosen


def system_names(value: str | Sequence[str] = "all") -> list[str]:
    """Trained LLM systems, from the registry of systems; "all": the paper's (LLM-TRSR with
    each registered paradigm, TALLRec); "variants": every variant (LLM-TRSR under a setting
    of the kit's); "controls": every control (null-summary, oracle-older)."""
    return names(value, systems.names("llm"), "systems", recommend.is_llm_system,
                 groups={"variants": systems.names("variant"),
                         "controls": systems.names("control")})


def baseline_names(value: str | Sequence[str] = "all") -> list[str]:
    """Baselines; "all": every registered one (the zero-shot LLM, the reference scorers and
    the classical models), from the registry of systems."""
    every = systems.names(systems.BASELINE_KINDS)
    return names(value, every, "baselines", lambda name: name in every)


def classical_names(value: str | Sequence[str] = "all") -> list[str]:
    """Table 2's classical recommenders; "all": every one."""
    every = systems.names("classical")
    return names(value, every, "models", lambda name: name in every)


def ensure_splits(cfg: Config, *, force: bool = False) -> Path:
    """The prepared dataset folder (splits, items, manifest), built from the raw files when
    missing, made with other data settings, or ``force``d. Returns the folder. The one place
    the data stage runs: every other stage reads the folder or names this."""
    return prepare_dataset(cfg, force=force)


def ensure_summaries(cfg: Config, split: str, paradigm: str, *, progress: bool = True
                     ) -> pd.DataFrame:
    """A split's summaries (user, final summary, whether it was cut, ...), summarizing first
    when they are missing or were made with other data or summarizer settings."""
    ensure_splits(cfg)
    if not summarize.summaries_current(cfg, split, paradigm):
        summarize.summarize_split(cfg, split, paradigm, progress=progress)
    return summarize.load_summaries(cfg, split, paradigm)


def summaries_for(cfg: Config, split: str, paradigm: str, *, progress: bool = True
                  ) -> dict[str, str]:
    """Final summaries of a split by user (summarizing first what is missing)."""
    frame = ensure_summaries(cfg, split, paradigm, progress=progress)
    return dict(zip(frame[USER_ID], frame["final_summary"], strict=True))


def ensure_system_inputs(cfg: Config, system: str, splits: Sequence[str], *,
                         progress: bool = True) -> None:
    """Everything a system's prompts need on these splits: the prepared data and, for a system
    with a summary (``llmtrsr-<paradigm>``; TALLRec has none), that paradigm's summaries."""
    ensure_splits(cfg)
    run = recommend.resolve(cfg, system)
    paradigm = run.cfg.recommender.summary
    if run.spec.kind in (*systems.TRAINED_KINDS, "untrained") and paradigm != systems.NO_SUMMARY:
        for split in splits:  # under the system's own summarizer settings (a variant's)
            ensure_summaries(run.cfg, split, paradigm, progress=progress)


def train(cfg: Config, system: str, *, progress: bool = True) -> dict[str, Any]:
    """Train (or resume training) one system's adapter under ``cfg``'s training seed (the
    first of ``seeds``; :func:`train_seeds` trains every one); returns its training record."""
    ensure_system_inputs(cfg, system, TRAINING_SPLITS, progress=progress)
    return recommend.train_system(recommend.resolve(cfg, system), progress=progress)


def train_seeds(cfg: Config, system: str, *, progress: bool = True) -> dict[int, dict[str, Any]]:
    """Train (or resume) one system's adapter for every training seed; records by seed."""
    return {seed: train(cfg.for_seed(seed), system, progress=progress)
            for seed in cfg.training_seeds}


def ensure_adapter(cfg: Config, system: str, *, progress: bool = True) -> list[Path]:
    """A system's finished adapter folders, one per training seed, training first those that
    are missing for these params (an interrupted training resumes from its last checkpoint)."""
    folders = []
    for seed in cfg.training_seeds:
        run = recommend.resolve(cfg.for_seed(seed), system)
        if not recommend.is_trained(run):
            log.info("%s (seed %d): no finished adapter at %s; training it first", system, seed,
                     run.adapter_dir)
            train(cfg.for_seed(seed), system, progress=progress)
        folders.append(run.adapter_dir)
    return folders


def example_prompts(cfg: Config, system: str, n_users: int = 1) -> pd.DataFrame:
    """Training prompts of the first users with their answers (notebook 03)."""
    ensure_system_inputs(cfg, system, TRAINING_SPLITS)
    return recommend.example_prompts(recommend.resolve(cfg, system), n_users)


# The baselines a run evaluates unless told otherwise: the zero-shot LLM and the reference
# scorers (the classical models train for minutes: asked for by name or "all").
DEFAULT_BASELINES = ",".join(systems.names(("untrained", "reference")))


def run_evaluation(cfg: Config, system_list: str | Sequence[str] = "all",
                   baseline_list: str | Sequence[str] = DEFAULT_BASELINES, *,
                   progress: bool = True, reuse: bool = False, write_tables: bool = True
                   ) -> pd.DataFrame:
    """:func:`llmtrsr_utils.evaluate.evaluate` after making what it needs: the prepared data,
    each LLM system's adapter and the validation and test summaries (the zero-shot LLM reads
    those of the system its registry entry names). ``system_list`` and ``baseline_list`` as
    :func:`names` reads them ("all", "", a comma string or a list)."""
    chosen_systems, chosen_baselines = system_names(system_list), baseline_names(baseline_list)
    ensure_splits(cfg)
    for system in chosen_systems:
        ensure_adapter(cfg, system, progress=progress)
        ensure_system_inputs(cfg, system, EVALUATION_SPLITS, progress=progress)
    for baseline in chosen_baselines:
        ensure_system_inputs(cfg, baseline, ("test",), progress=progress)
    return evaluate.evaluate(cfg, chosen_systems, chosen_baselines, progress=progress,
                             reuse=reuse, write_tables=write_tables)


def learning_curve(cfg: Config, system_list: str | Sequence[str] = "all", *,
                   progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`llmtrsr_utils.learning.learning_curve` after training what is not trained."""
    chosen = system_names(system_list)
    for system in chosen:
        ensure_adapter(cfg, system, progress=progress)
        ensure_system_inputs(cfg, system, ("valid",), progress=progress)
    ensure_system_inputs(cfg, systems.ZERO_SHOT, ("valid",), progress=progress)
    return learning.learning_curve(cfg, chosen, progress=progress)


def shuffle_histories(cfg: Config, system_list: str | Sequence[str] = "all",
                      baseline_list: str | Sequence[str] = (systems.RANDOM, systems.POPULARITY),
                      ) -> pd.DataFrame:
    """:func:`llmtrsr_utils.history_shuffle.history_shuffle` on systems already evaluated with
    these params (their inputs made first); the default baselines are the negative controls,
    whose scores do not depend on the user."""
    chosen = [*system_names(system_list), *baseline_names(baseline_list)]
    for name in chosen:
        ensure_system_inputs(cfg, name, ("test",))
    return history_shuffle.history_shuffle(cfg, chosen)


def point_result(cfg: Config, system: str) -> dict[str, Any]:
    """One grid point's outcome (:func:`llmtrsr_utils.results.point_result`), with the
    training cost of a trained system."""
    run = recommend.resolve(cfg, system)
    return results.point_result(cfg, system, recommend.training_record(run)
                                if run.spec.trained else None)


def summaries_by_model(cfg: Config, models: list[str], split: str, n_users: int = 2,
                       paradigm: str = systems.HIERARCHICAL) -> pd.DataFrame:
    """The first users' final summaries from each summarizer, one column per model (notebook
    07); summarizes what is missing."""
    columns = {}
    for model in models:
        mcfg = dataclasses.replace(cfg, summarizer=dataclasses.replace(cfg.summarizer,
                                                                       model=model))
        summaries = summaries_for(mcfg, split, paradigm, progress=False)
        columns[model] = dict(list(summaries.items())[:n_users])
    return pd.DataFrame(columns).rename_axis(USER_ID)
