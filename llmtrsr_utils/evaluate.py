"""Evaluation: every system ranks the same frozen 1 + 20 candidates; metrics with bootstrap CIs.

Each system is resolved once (:func:`llmtrsr_utils.recommend.resolve`) and scored by its kind
(:data:`EVALUATORS`, the kinds of :mod:`llmtrsr_utils.systems`). A trained LLM system has every
saved checkpoint scored on validation and the best by Recall@3+5+10 (the authors' rule) scored
on test; a single checkpoint is scored on test directly. Rows and per-user scores go to the
results store (:mod:`llmtrsr_utils.results`), which also writes Table 2 and the paired tests.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

import llmtrsr_utils
from llmtrsr_utils import baselines, classical, metrics, results, systems
from llmtrsr_utils.artifacts import check_writable, provenance, write_parquet
from llmtrsr_utils.config import Config
from llmtrsr_utils.datasets.splits import load_split, prepared_dir
from llmtrsr_utils.metrics import UserScores
from llmtrsr_utils.models import load_model
from llmtrsr_utils.recommend import (
    SystemRun,
    answer_token_ids,
    list_checkpoints,
    require_trained,
    resolve,
    split_prompts,
    training_record,
)
from llmtrsr_utils.records import ResultRow
from llmtrsr_utils.scoring import score_llm, with_adapter

log = logging.getLogger("llmtrsr")

UNTRAINED = "untrained"  # the checkpoint column of a learning curve's first point
Evaluation = tuple[list[dict[str, Any]], dict[str, UserScores]]  # rows, scores by split


def result_row(run: SystemRun, split: str, scores: UserScores, *, epoch: float | None,
               selected: bool, extra: dict[str, Any]) -> dict[str, Any]:
    """One results row: every metric's mean and 95% CI on ``scores``, and what made them."""
    cfg = run.cfg
    per_user = scores.per_user()  # ties at their expected value: the headline
    pessimistic = metrics.per_user_metrics(scores.scores, ties="pessimistic")
    ci = metrics.bootstrap_ci(per_user, seed=cfg.seed, metrics=metrics.METRICS)
    values = {f"{name}{suffix}": float(value) for name in metrics.METRICS for suffix, value in (
        ("", ci.loc[name, "mean"]), ("_ci_low", ci.loc[name, "ci_low"]),
        ("_ci_high", ci.loc[name, "ci_high"]), ("_pessimistic", pessimistic[name].mean()))}
    stamp = provenance()  # the same versions and commit as every other record the run writes
    return ResultRow(
        system=run.name, split=split, epoch=epoch, selected=selected, n_users=len(per_user),
        selection_score=metrics.selection_score(per_user),
        tied_positive_share=float(per_user["tied"].mean()), metrics=values,
        display_name=run.spec.label, scoring_seconds=round(scores.seconds, 3),
        candidates_per_second=round(scores.scores.size / scores.seconds, 2) if scores.seconds
        else None,
        dataset=cfg.data.name, recommender=cfg.recommender.model,
        summarizer=cfg.summarizer.model, summary=cfg.recommender.summary,
        summarizer_prompt_format=cfg.summarizer.prompt_format,
        recommender_prompt_format=cfg.recommender.prompt_format,
        item_num=cfg.recommender.item_num, seed=run.seed, params_hash=run.params_hash,
        system_params_hash=run.fingerprint, kit_version=llmtrsr_utils.__version__,
        git_commit=stamp["git_commit"], library_versions=json.dumps(stamp["library_versions"]),
        hardware=stamp["hardware"],
        extra=extra).to_dict()


def evaluate_trained(run: SystemRun, *, progress: bool = True) -> Evaluation:
    """A trained system: the checkpoint ``recommender.select`` picks, scored on test."""
    require_trained(run)
    rec = run.cfg.recommender
    checkpoints = list_checkpoints(run.adapter_dir)
    base, tokenizer = load_model(rec, cache_dir=run.cfg.cache_dir)
    rows, kept = [], {}
    rule = "only checkpoint" if len(checkpoints) == 1 else rec.select
    if rule != "best_valid":  # nothing to select, or the last: validation would only cost time
        log.info("%s: %s scored on test; validation users not scored", run.name, rule)
        best_epoch, best_checkpoint = checkpoints[-1]
    else:
        rows, valid_scores, base = validation_rows(run, base, tokenizer, progress=progress)
        candidates = [row for row in rows if row["checkpoint"] != UNTRAINED]
        best = max(candidates, key=lambda row: row["selection_score"])  # ties: the earlier
        _warn_within_noise(run.name, candidates)
        best_epoch, best_checkpoint = best["epoch"], Path(best["checkpoint"])
        kept["valid"] = valid_scores[best["checkpoint"]]
    for row in rows:
        row.update(selected=row["epoch"] == best_epoch, selection_rule=rule)
    users, counts = split_prompts(run, "test", tokenizer)
    yes_id, no_id = answer_token_ids(tokenizer, users[0].prompts[0], rec.answer_words)
    model = with_adapter(base, best_checkpoint, rec.merge_adapter, keep_base=False)
    kept["test"] = score_llm(model, tokenizer, users, yes_id, no_id, rec)
    rows.append(result_row(run, "test", kept["test"], epoch=best_epoch, selected=True,
                           extra={"checkpoint": str(best_checkpoint), "selection_rule": rule,
                                  **_prefixed(counts)}))
    return rows, kept


def _warn_within_noise(name: str, rows: list[dict[str, Any]]) -> None:
    """Log the checkpoints' validation Recall@5 spread and interval; warn when it is noise."""
    spread = max(r["recall@5"] for r in rows) - min(r["recall@5"] for r in rows)
    width = max(r["recall@5_ci_high"] - r["recall@5_ci_low"] for r in rows)
    noise = " (within noise: recommender.select final, or more validation users)"
    log.log(logging.WARNING if spread < width / 2 else logging.INFO, "%s: best_valid chose "
            "among %d checkpoints on %d validation users: Recall@5 spread %.3f, its 95%% "
            "interval %.3f wide%s", name, len(rows), rows[0]["n_users"], spread, width,
            noise if spread < width / 2 else "")


def validation_rows(run: SystemRun, base, tokenizer, *, progress: bool = True
                    ) -> tuple[list[dict[str, Any]], dict[str, UserScores], Any]:
    """Validation rows of one trained system: the untrained model (epoch 0) and every saved
    checkpoint, each with ``train_examples`` (examples seen = epoch x train_examples). Scores
    are cached beside each checkpoint, so the learning curve and checkpoint selection score
    each checkpoint once.

    Args:
        run: a trained system (every checkpoint listed).
        base: its recommender, without adapter; returned again, adapters unloaded.
        tokenizer: the recommender's tokenizer.

    Returns:
        (rows, scores by checkpoint folder (or ``"untrained"``), base).
    """
    rec = run.cfg.recommender
    folder = run.adapter_dir
    users, counts = split_prompts(run, "valid", tokenizer)
    yes_id, no_id = answer_token_ids(tokenizer, users[0].prompts[0], rec.answer_words)
    extra = {**_prefixed(counts), "train_examples": training_record(run)["examples"]}
    rows, scores = [], {}
    for epoch, checkpoint in [(0.0, None), *list_checkpoints(folder)]:
        name = str(checkpoint) if checkpoint else UNTRAINED
        cache = (checkpoint or folder) / ("valid_scores.parquet" if checkpoint
                                          else "untrained_valid_scores.parquet")
        found = UserScores.read_matching(cache, [u.user_id for u in users],
                                         [list(u.candidates) for u in users])
        if found is None:
            model = with_adapter(base, checkpoint, rec.merge_adapter, keep_base=True) \
                if checkpoint else base
            found = score_llm(model, tokenizer, users, yes_id, no_id, rec)
            if checkpoint and not rec.merge_adapter:
                base = model.unload()
            write_parquet(found.frame(), cache)
        scores[name] = found
        rows.append(result_row(run, "valid", found, epoch=epoch, selected=False,
                               extra={"checkpoint": name, **extra}))
    return rows, scores, base


def _prefixed(counts: dict[str, int]) -> dict[str, int]:  # prompt shortening, in the row
    return {f"prompt_{k}": v for k, v in counts.items() if k != "users"}


def evaluate_zero_shot(run: SystemRun, *, progress: bool = True) -> Evaluation:
    """The untrained recommender on test users (nothing to select, so no validation)."""
    rec = run.cfg.recommender
    model, tokenizer = load_model(rec, cache_dir=run.cfg.cache_dir)
    users, counts = split_prompts(run, "test", tokenizer)
    yes_id, no_id = answer_token_ids(tokenizer, users[0].prompts[0], rec.answer_words)
    scores = score_llm(model, tokenizer, users, yes_id, no_id, rec)
    return [result_row(run, "test", scores, epoch=None, selected=True,
                       extra=_prefixed(counts))], {"test": scores}


def evaluate_reference(run: SystemRun, *, progress: bool = True) -> Evaluation:
    """A reference scorer (no training) on validation and test users."""
    data_dir = prepared_dir(run.cfg)
    kept = {split: baselines.score_split(run.cfg, run.name, data_dir, split,
                                         load_split(data_dir, split))
            for split in ("valid", "test")}
    return [result_row(run, split, scores, epoch=None, selected=True, extra={})
            for split, scores in kept.items()], kept


def evaluate_classical(run: SystemRun, *, progress: bool = True) -> Evaluation:
    """A classical model trained on the training users, scored on validation and test."""
    settings = run.cfg.classical
    record, kept = classical.train_and_score(run.cfg, run.name, prepared_dir(run.cfg),
                                             progress=progress)
    extra = {"train_seconds": record["train_seconds"], "epochs_run": record["epochs_run"],
             "train_examples": record["train_examples"], "encoder": settings.encoder,
             "loss": record["loss"], "item_representation": settings.item_representation,
             "train_negatives": settings.train_negatives}
    return [result_row(run, split, scores, epoch=float(record["best_epoch"]), selected=True,
                       extra=extra) for split, scores in kept.items()], kept


# How each kind of system (llmtrsr_utils.systems.KINDS) is scored.
EVALUATORS: dict[str, Callable[..., Evaluation]] = {
    "untrained": evaluate_zero_shot, "reference": evaluate_reference,
    "classical": evaluate_classical, "llm": evaluate_trained, "variant": evaluate_trained,
    "control": evaluate_trained}


def evaluate_system(cfg: Config, name: str, *, progress: bool = True) -> Evaluation:
    """Rows and per-user scores of one system under ``cfg`` and its training seed
    (``cfg.training_seed``; its inputs made beforehand)."""
    run = resolve(cfg, name)
    return EVALUATORS[run.spec.kind](run, progress=progress)


def seed_configs(cfg: Config, name: str) -> list[Config]:
    """``cfg`` once per training seed for a system trained per seed (an LLM system, a control,
    a classical model), else ``cfg`` alone (an untrained system or a reference scorer)."""
    if systems.find(name).kind in systems.SEEDED_KINDS:
        return [cfg.for_seed(seed) for seed in cfg.training_seeds]
    return [cfg]


def evaluate(cfg: Config, system_names: Sequence[str] = (),
             baseline_names: Sequence[str] = (), *, progress: bool = True,
             reuse: bool = False, write_tables: bool = True) -> pd.DataFrame:
    """Evaluate systems and baselines into the results store, which writes the per-user
    scores, Table 2 and the paired tests. A system trained per seed is evaluated once per
    training seed (``cfg.seeds``); Table 2 and the paired tests pool the seeds. Returns the
    rows of the systems asked for.

    With ``reuse``, a system evaluated with these params (rows and score files stored) is read
    back, not scored again. ``write_tables=False`` (grid points) leaves Table 2 files alone.
    """
    check_writable(results.results_dir(cfg))  # before scoring anything
    params_hash = cfg.fingerprint()
    frames, per_user = [], {}
    for name in [*system_names, *baseline_names]:
        per_user[name] = []
        for scfg in seed_configs(cfg, name):
            seed = resolve(scfg, name).seed
            done = results.stored_rows(cfg, name, params_hash, seed) if reuse else None
            if done is not None:
                log.info("%s (seed %d): already evaluated with these params; reusing", name,
                         seed)
            else:
                log.info("evaluating %s (seed %d)", name, seed)
                rows, scores = evaluate_system(scfg, name, progress=progress)
                for row in rows:
                    if row["selected"]:
                        row["scores_file"] = results.write_scores(
                            cfg, name, row["split"], params_hash, seed, scores[row["split"]])
                done = pd.DataFrame(rows)
            frames.append(done)
            per_user[name].append(results.test_per_user(cfg, done))
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    results.save_evaluation(cfg, frame, per_user, {"systems": list(system_names),
                                                   "baselines": list(baseline_names)},
                            write_tables=write_tables)
    return frame
