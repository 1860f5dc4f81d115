"""Evaluation: every system ranks the same frozen 1 + 20 candidates; metrics with bootstrap CIs.

For each LLM system every saved epoch is scored on validation and the best by
Recall@3+5+10 (the authors' rule) is reported on test. Baselines: random, popularity (training
counts), text-embedding similarity, and the zero-shot LLM (the untrained recommender's p(yes) on
the hierarchical prompt). Everything lands in one results table, ``<work_dir>/results/
metrics.parquet``: one row per (system, split, epoch) with every metric's mean and 95% CI, the
timings, the prompt shortening counts, and the params, versions and commit that produced it.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import llmtrsr_utils
from llmtrsr_utils import baselines, classical, metrics
from llmtrsr_utils.artifacts import (
    check_writable,
    provenance,
    write_json,
    write_parquet,
)
from llmtrsr_utils.config import Config, RecommenderConfig
from llmtrsr_utils.datasets.base import USER_ID
from llmtrsr_utils.datasets.splits import NEGATIVES, load_items, load_split, prepare_dataset
from llmtrsr_utils.models import load_model
from llmtrsr_utils.recommend import (
    SYSTEMS,
    UserPrompts,
    adapter_dir,
    answer_token_ids,
    is_system,
    is_trained,
    list_checkpoints,
    split_prompts,
    system_config,
    training_record,
)
from llmtrsr_utils.records import ResultRow
from llmtrsr_utils.results import (
    LABELS,
    load_results,
    results_dir,
    upsert_results,
    write_table2,
)
from llmtrsr_utils.scoring import score_fast, score_tree

log = logging.getLogger("llmtrsr")

BASELINES = ("random", "popularity", "embedding", "zero-shot")
# Table 2's classical recommenders over frozen text embeddings (llmtrsr_utils.classical).
CLASSICAL = tuple(classical.MODELS)
ALL_BASELINES = (*BASELINES, *CLASSICAL)
DISPLAY_NAMES = {**LABELS, **classical.DISPLAY_NAMES,
                 **{b.name: b.display_name for b in baselines.REGISTRY.values()}}


class UserScores:
    """Scores of one system on one split, column 0 the positive."""

    def __init__(self, user_ids: list[str], candidates: list[list[str]], scores: np.ndarray,
                 seconds: float):
        self.user_ids = user_ids
        self.candidates = candidates
        self.scores = scores
        self.seconds = seconds

    def per_user(self) -> pd.DataFrame:
        return metrics.per_user_metrics(self.scores, user_ids=self.user_ids)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({USER_ID: self.user_ids, "candidates": self.candidates,
                             "scores": [list(map(float, row)) for row in self.scores]})


def score_llm(model, tokenizer, users: list[UserPrompts], yes_id: int, no_id: int,
              rec: RecommenderConfig) -> UserScores:
    """p(yes) of every user's candidates with the configured scorer (``recommender.scorer``)."""
    began = time.perf_counter()
    ids = [[tokenizer(p)["input_ids"] for p in user.prompts] for user in users]
    if rec.scorer == "tree":
        per_batch = max(1, rec.score_batch_size // max(1, len(ids[0]) if ids else 1))
        rows = score_tree(model, ids, yes_id, no_id, tokenizer.pad_token_id, per_batch)
    else:
        rows = [score_fast(model, user, yes_id, no_id, tokenizer.pad_token_id,
                           batch_size=rec.score_batch_size) for user in ids]
    return UserScores([u.user_id for u in users], [u.candidates for u in users],
                      np.vstack(rows), time.perf_counter() - began)


def _row(cfg: Config, system: str, split: str, scores: UserScores, *, epoch: float | None,
         selected: bool, extra: dict[str, Any], run_hash: str) -> dict[str, Any]:
    """One results row; ``cfg`` is the system's config, ``run_hash`` the run's params hash."""
    per_user = scores.per_user()  # ties at their expected value: the headline
    pessimistic = metrics.per_user_metrics(scores.scores, ties="pessimistic")
    ci = metrics.bootstrap_ci(per_user, seed=cfg.seed, metrics=metrics.METRICS)
    values: dict[str, float] = {}
    for name in metrics.METRICS:
        values[name] = float(ci.loc[name, "mean"])
        values[f"{name}_ci_low"] = float(ci.loc[name, "ci_low"])
        values[f"{name}_ci_high"] = float(ci.loc[name, "ci_high"])
        values[f"{name}_pessimistic"] = float(pessimistic[name].mean())
    n_candidates = scores.scores.size
    stamp = provenance()  # the same versions and commit as every other record the run writes
    return ResultRow(
        system=system, split=split, epoch=epoch, selected=selected, n_users=len(per_user),
        selection_score=metrics.selection_score(per_user),
        tied_positive_share=float(per_user["tied"].mean()), metrics=values,
        display_name=DISPLAY_NAMES.get(system, system),
        scoring_seconds=round(scores.seconds, 3),
        candidates_per_second=round(n_candidates / scores.seconds, 2) if scores.seconds
        else None,
        dataset=cfg.data.name, recommender=cfg.recommender.model,
        summarizer=cfg.summarizer.model, summary=cfg.recommender.summary,
        summarizer_prompt_format=cfg.summarizer.prompt_format,
        recommender_prompt_format=cfg.recommender.prompt_format,
        item_num=cfg.recommender.item_num, seed=cfg.seed,
        params_hash=run_hash, system_params_hash=cfg.fingerprint(),
        kit_version=llmtrsr_utils.__version__, git_commit=stamp["git_commit"],
        library_versions=json.dumps(stamp["library_versions"]), extra=extra).to_dict()


def evaluate_llm_system(cfg: Config, system: str, *, progress: bool = True
                        ) -> tuple[list[dict[str, Any]], dict[str, UserScores]]:
    """Score every epoch on validation, the best on test."""
    scfg = system_config(cfg, system)
    rec = scfg.recommender
    require_trained(cfg, system)
    checkpoints = list_checkpoints(adapter_dir(scfg, system))
    base, tokenizer = load_model(rec, cache_dir=cfg.cache_dir)
    test_users, test_counts = split_prompts(scfg, "test", tokenizer)
    yes_id, no_id = answer_token_ids(tokenizer, test_users[0].prompts[0], rec.answer_words)
    rows, kept = [], {}
    best: tuple[float, float, Path] | None = None
    if len(checkpoints) == 1:  # nothing to select: validation would only cost time
        log.info("%s: one checkpoint, no selection; validation users not scored", system)
        best = (float("nan"), *checkpoints[0])
    else:
        rows, valid_scores, base = validation_rows(cfg, system, base, tokenizer,
                                                   progress=progress)
        for row in rows:
            if row["checkpoint"] == UNTRAINED:  # a point of the learning curve, not a candidate
                continue
            log.info("%s epoch %.2f: valid Recall@3+5+10 = %.4f", system, row["epoch"],
                     row["selection_score"])
            if best is None or row["selection_score"] > best[0]:  # ties: the earlier epoch
                best = (row["selection_score"], row["epoch"], Path(row["checkpoint"]))
                kept["valid"] = valid_scores[row["checkpoint"]]
    assert best is not None
    _, best_epoch, best_checkpoint = best
    for row in rows:
        row["selected"] = row["epoch"] == best_epoch
    model = with_adapter(base, best_checkpoint, rec.merge_adapter, keep_base=False)
    kept["test"] = score_llm(model, tokenizer, test_users, yes_id, no_id, rec)
    rows.append(_row(scfg, system, "test", kept["test"], epoch=best_epoch, selected=True,
                     extra={"checkpoint": str(best_checkpoint), **_prefixed(test_counts)},
                     run_hash=cfg.fingerprint()))
    return rows, kept


UNTRAINED = "untrained"  # the checkpoint column of a learning curve's first point


def validation_rows(cfg: Config, system: str, base, tokenizer, *, progress: bool = True
                    ) -> tuple[list[dict[str, Any]], dict[str, UserScores], Any]:
    """Validation rows of one system: the untrained model (epoch 0, the learning curve's first
    point) and every saved checkpoint, each with ``train_examples`` (examples seen = epoch x
    train_examples). Scores are cached beside each checkpoint (``valid_scores.parquet``; the
    untrained model's in the adapter folder), so the learning curve (notebook 03) and checkpoint
    selection (notebook 04) score each checkpoint once.

    Args:
        cfg: the run's config.
        system: an LLM system of :data:`SYSTEMS`, trained (every checkpoint listed).
        base: its recommender, without adapter; returned again, adapters unloaded.
        tokenizer: the recommender's tokenizer.

    Returns:
        (rows, scores by checkpoint folder (or ``"untrained"``), base).
    """
    scfg = system_config(cfg, system)
    rec = scfg.recommender
    folder = adapter_dir(scfg, system)
    users, counts = split_prompts(scfg, "valid", tokenizer)
    yes_id, no_id = answer_token_ids(tokenizer, users[0].prompts[0], rec.answer_words)
    extra = {**_prefixed(counts), "train_examples": training_record(cfg, system)["examples"]}
    rows, scores = [], {}
    for epoch, checkpoint in [(0.0, None), *list_checkpoints(folder)]:
        name = str(checkpoint) if checkpoint else UNTRAINED
        cache = (checkpoint or folder) / ("valid_scores.parquet" if checkpoint
                                          else "untrained_valid_scores.parquet")
        found = _cached_scores(cache, users)
        if found is None:
            model = (with_adapter(base, checkpoint, rec.merge_adapter, keep_base=True)
                     if checkpoint else base.eval())
            found = score_llm(model, tokenizer, users, yes_id, no_id, rec)
            if checkpoint and not rec.merge_adapter:
                base = model.unload()  # the next checkpoint starts from the clean base
            write_parquet(found.frame().assign(seconds=found.seconds), cache)
        scores[name] = found
        rows.append(_row(scfg, system, "valid", found, epoch=epoch, selected=False,
                         extra={"checkpoint": name, **extra}, run_hash=cfg.fingerprint()))
    return rows, scores, base


class AdapterMissingError(FileNotFoundError):
    """An LLM system is evaluated before its training finished; ``llmtrsr train`` or
    ``llmtrsr_utils.pipeline.ensure_adapter`` trains it."""


def require_trained(cfg: Config, system: str) -> None:
    """Raise :class:`AdapterMissingError` unless the system's training finished."""
    if not is_trained(cfg, system):
        raise AdapterMissingError(f"{adapter_dir(cfg, system)}: {system} has no finished "
                                  f"adapter for these params; run `llmtrsr train --systems "
                                  f"{system}` (or llmtrsr evaluate, which trains first)")


def with_adapter(base, checkpoint: Path, merge: bool, *, keep_base: bool):
    """``base`` with the LoRA adapter saved at ``checkpoint``, in eval mode.

    Args:
        base: the recommender without adapter.
        checkpoint: a folder peft saved (adapter_config.json, adapter_model.safetensors).
        merge: fold the adapter into the base weights (``merge_and_unload``); faster scoring.
        keep_base: merge into a copy, so ``base`` stays clean for the next checkpoint (merging
            in place and subtracting again would leave rounding in the weights, and a later
            checkpoint's scores would depend on whether an earlier one was cached).

    Returns:
        A model to score with: a merged plain model, or the peft model (``unload()`` gives the
        clean base back).
    """
    from peft import PeftModel

    if merge and keep_base:
        base = copy.deepcopy(base)
    model = PeftModel.from_pretrained(base, str(checkpoint)).eval()
    return model.merge_and_unload().eval() if merge else model


def _cached_scores(path: Path, users: list[UserPrompts]) -> UserScores | None:
    """Scores read back from ``path`` when it holds exactly these users and candidates."""
    if not path.is_file():
        return None
    frame = pd.read_parquet(path)
    same = (frame[USER_ID].tolist() == [u.user_id for u in users]
            and [list(c) for c in frame["candidates"]] == [list(u.candidates) for u in users])
    if not same:
        log.info("%s: cached for other users or candidates; scoring again", path)
        return None
    return UserScores(frame[USER_ID].tolist(), [list(c) for c in frame["candidates"]],
                      np.vstack(frame["scores"].map(np.asarray)), float(frame["seconds"].iloc[0]))


def learning_curve(cfg: Config, systems: Sequence[str] = tuple(SYSTEMS), *,
                   progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Validation Recall@k against training examples seen, for each trained LLM system, and
    the levels to draw beside it (Random, Popularity and the zero-shot LLM on validation).

    Needs more than one checkpoint (``recommender.checkpoints_per_epoch`` or ``epochs``).
    Every system must be trained (``pipeline.learning_curve`` trains first). Writes
    ``<work_dir>/results/learning_curve.csv``.

    Returns:
        (curve: one row per system and checkpoint with ``examples_seen``; levels: one row per
        baseline), both with every metric's mean and 95% CI.
    """
    out = check_writable(results_dir(cfg))
    rows = []
    for system in systems:
        require_trained(cfg, system)
        rec = system_config(cfg, system).recommender
        base, tokenizer = load_model(rec, cache_dir=cfg.cache_dir)
        rows += validation_rows(cfg, system, base, tokenizer, progress=progress)[0]
    curve = pd.DataFrame(rows)
    if curve["epoch"].nunique() < 3:
        raise ValueError("a learning curve needs at least two checkpoints: set "
                         "recommender.checkpoints_per_epoch or recommender.epochs above 1")
    curve["examples_seen"] = (curve["epoch"] * curve["train_examples"]).round().astype(int)
    levels = [evaluate_baseline(cfg, name, progress=progress)[0][0]
              for name in ("random", "popularity")]
    untrained = curve[(curve["system"] == ZERO_SHOT_PROMPTS)
                      & (curve["checkpoint"] == UNTRAINED)]
    levels += [{**row, "system": "zero-shot", "display_name": DISPLAY_NAMES["zero-shot"]}
               for row in untrained.to_dict("records")]
    levels = pd.DataFrame(levels)
    columns = ["system", "epoch", "examples_seen", "checkpoint", "n_users",
               *[c for c in curve.columns if c.split("_ci_")[0] in metrics.METRICS]]
    curve = curve[columns]
    curve.to_csv(out / "learning_curve.csv", index=False)
    return curve, levels[[c for c in [*columns, "display_name"]
                          if c in levels.columns and c != "examples_seen"]]


def _prefixed(counts: dict[str, int]) -> dict[str, int]:
    return {f"prompt_{k}": v for k, v in counts.items() if k != "users"}


# The zero-shot LLM reads this system's prompts (its summaries, recent items, candidate).
ZERO_SHOT_PROMPTS = "llmtrsr-hierarchical"


def evaluate_zero_shot(cfg: Config) -> tuple[list[dict[str, Any]], dict[str, UserScores]]:
    """The untrained recommender on test users (nothing to select, so no validation)."""
    scfg = system_config(cfg, ZERO_SHOT_PROMPTS)
    rec = scfg.recommender
    model, tokenizer = load_model(rec, cache_dir=cfg.cache_dir)
    rows, kept = [], {}
    for split in ("test",):
        users, counts = split_prompts(scfg, split, tokenizer)
        yes_id, no_id = answer_token_ids(tokenizer, users[0].prompts[0], rec.answer_words)
        kept[split] = score_llm(model, tokenizer, users, yes_id, no_id, rec)
        rows.append(_row(scfg, "zero-shot", split, kept[split], epoch=None, selected=True,
                         extra=_prefixed(counts), run_hash=cfg.fingerprint()))
    return rows, kept


def evaluate_baseline(cfg: Config, name: str, *, progress: bool = True
                      ) -> tuple[list[dict[str, Any]], dict[str, UserScores]]:
    if name == "zero-shot":
        return evaluate_zero_shot(cfg)
    if name in CLASSICAL:
        return evaluate_classical(cfg, name, progress=progress)
    spec = baselines.find(name)  # registered, or a module path that registers one
    data_dir = prepare_dataset(cfg)
    context = baselines.BaselineContext(cfg=cfg, train=load_split(data_dir, "train"),
                                        items=load_items(data_dir),
                                        embedding_dir=cfg.cache_path / "embeddings")
    rows, kept = [], {}
    for split in ("valid", "test"):
        frame = load_split(data_dir, split)
        began = time.perf_counter()
        scores = np.asarray(spec.score(frame, split, context), dtype=np.float64)
        expected = (len(frame), 1 + len(frame[NEGATIVES].iloc[0]))
        if scores.shape != expected:
            raise ValueError(f"baseline {name!r} scored {split} as an array of shape "
                             f"{scores.shape}; expected {expected} (users, 1 + negatives), "
                             f"the positive in column 0")
        kept[split] = UserScores(frame[USER_ID].tolist(), baselines.candidate_ids(frame), scores,
                                 time.perf_counter() - began)
        rows.append(_row(cfg, name, split, kept[split], epoch=None, selected=True,
                         extra={"display_name": spec.display_name},  # a module's own
                         run_hash=cfg.fingerprint()))
    return rows, kept


def evaluate_classical(cfg: Config, name: str, *, progress: bool = True
                       ) -> tuple[list[dict[str, Any]], dict[str, UserScores]]:
    """Train one classical model on the training users (early stopping on validation), score
    validation and test users' frozen candidates."""
    settings = cfg.classical
    data_dir = prepare_dataset(cfg)
    item_ids, vectors = baselines.item_embeddings(load_items(data_dir), settings.encoder,
                                                  cfg.cache_path / "embeddings")
    table = classical.ItemTable(item_ids, vectors)
    frames = {split: load_split(data_dir, split) for split in ("train", "valid", "test")}
    model, record = classical.train_model(name, table, frames["train"], frames["valid"],
                                          settings, seed=cfg.seed, progress=progress)
    write_json({**record, **provenance(cfg)},
               results_dir(cfg) / "classical" / f"{name}.json")
    rows, kept = [], {}
    for split in ("valid", "test"):
        frame = frames[split]
        began = time.perf_counter()
        scores = classical.score_frame(model, table, frame)
        kept[split] = UserScores(frame[USER_ID].tolist(), baselines.candidate_ids(frame), scores,
                                 time.perf_counter() - began)
        rows.append(_row(cfg, name, split, kept[split], epoch=float(record["best_epoch"]),
                         selected=True, run_hash=cfg.fingerprint(), extra={
                             "train_seconds": record["train_seconds"],
                             "epochs_run": record["epochs_run"],
                             "train_examples": record["train_examples"],
                             "encoder": settings.encoder, "loss": record["loss"],
                             "item_representation": settings.item_representation,
                             "train_negatives": settings.train_negatives}))
    return rows, kept


def evaluate(cfg: Config, systems: Sequence[str] = tuple(SYSTEMS),
             baseline_names: Sequence[str] = BASELINES, *, progress: bool = True,
             reuse: bool = False, write_tables: bool = True) -> pd.DataFrame:
    """Evaluate systems and baselines; write the results table, per-user scores, Table 2 and
    paired bootstrap tests against TALLRec. Returns the rows of the systems asked for.

    With ``reuse``, a system already evaluated with these params (rows in the table and its
    score files present) is read back instead of scored again. ``write_tables=False`` (grid
    points) adds rows to the results table but leaves the run's Table 2 files alone.
    """
    out = check_writable(results_dir(cfg))  # before scoring anything
    rows: list[dict[str, Any]] = []
    test_per_user: dict[str, pd.DataFrame] = {}
    previous = load_results(cfg) if reuse and (out / "metrics.parquet").is_file() else None
    for name in [*systems, *baseline_names]:
        done = _previous_rows(previous, name, cfg.fingerprint(), out)
        if done is not None:
            log.info("%s: already evaluated with these params; reusing", name)
            rows += done.to_dict("records")
            test_per_user[name] = _stored_per_user(out / "scores" / f"{name}_test.parquet")
            continue
        log.info("evaluating %s", name)
        if is_system(name):
            new_rows, scores = evaluate_llm_system(cfg, name, progress=progress)
        else:
            new_rows, scores = evaluate_baseline(cfg, name, progress=progress)
        rows += new_rows
        for split, user_scores in scores.items():
            write_parquet(user_scores.frame(), out / "scores" / f"{name}_{split}.parquet")
        test_per_user[name] = scores["test"].per_user()
    frame = pd.DataFrame(rows)
    table = upsert_results(out / "metrics.parquet", frame)
    if not write_tables:
        return frame
    write_table2(table[table["params_hash"] == cfg.fingerprint()], out)
    tests = paired_tests(test_per_user, seed=cfg.seed)
    if not tests.empty:
        tests.to_csv(out / "paired_tests.csv", index=False)
    write_json({**provenance(cfg), "systems": list(systems), "baselines": list(baseline_names)},
               out / "evaluate.json")
    return frame


# What every other system is compared with (paired bootstrap over the same test users): the
# paper's LLM baseline, the untrained recommender, and chance.
REFERENCES = ("tallrec", "zero-shot", "random")


def paired_tests(test_per_user: dict[str, pd.DataFrame], seed: int = 0) -> pd.DataFrame:
    """Paired bootstrap of every system against each of :data:`REFERENCES` it was evaluated
    beside, per metric: columns system, versus, metric, diff, ci_low, ci_high, p_value."""
    tests = [{"system": name, "versus": reference, "metric": metric,
              **metrics.paired_bootstrap(per_user, test_per_user[reference], metric, seed=seed)}
             for reference in REFERENCES if reference in test_per_user
             for name, per_user in test_per_user.items() if name != reference
             for metric in metrics.METRICS]
    return pd.DataFrame(tests)


def _previous_rows(previous: pd.DataFrame | None, name: str, run_hash: str, out: Path
                   ) -> pd.DataFrame | None:
    if previous is None:
        return None
    rows = previous[(previous["system"] == name) & (previous["params_hash"] == run_hash)]
    complete = "test" in set(rows["split"]) and all(
        (out / "scores" / f"{name}_{split}.parquet").is_file() for split in set(rows["split"]))
    return rows if complete else None


def _stored_per_user(path: Path) -> pd.DataFrame:
    frame = pd.read_parquet(path)
    return metrics.per_user_metrics(np.vstack(frame["scores"].map(np.asarray)),
                                    user_ids=frame[USER_ID].tolist())


def point_result(cfg: Config, system: str) -> dict[str, Any]:
    """One grid point's outcome: the system's selected test row (every metric with its CI, the
    scoring speed) plus its training cost, for the grid's results table."""
    results = load_results(cfg)
    rows = results[(results["system"] == system) & (results["params_hash"] == cfg.fingerprint())
                   & (results["split"] == "test") & results["selected"]]
    if rows.empty:
        raise LookupError(f"{results_dir(cfg)}: no selected test row for {system} with these "
                          f"params; evaluate it first")
    row = rows.iloc[-1].to_dict()
    keep = ["system", "epoch", "n_users", "scoring_seconds", "candidates_per_second",
            "params_hash", "kit_version", "git_commit",
            *[c for c in row if c.split("_ci_")[0].removesuffix("_pessimistic")
              in metrics.METRICS], "tied_positive_share",
            *[c for c in row if c.startswith("prompt_")]]  # shortening is never silent
    result = {k: _plain(row[k]) for k in keep if k in row}
    if is_system(system):
        record = training_record(cfg, system)
        result.update({"train_seconds": record["train_seconds"],
                       "seconds_per_step": record["seconds_per_step"],
                       "train_steps": record["global_step"],
                       "train_examples": record["examples"]})
    return result


def _plain(value: Any) -> Any:
    """numpy scalars to Python ones, so the result is JSON."""
    return value.item() if hasattr(value, "item") else value
