"""The history shuffle: does a system read the user it scores?

Every evaluated system is scored again on the same test users and the same candidates, but each
user is given another user's history (and, for a system with a summary, that user's summary):
one random cycle through the users (:func:`llmtrsr_utils.datasets.splits.derangement`, seeded by
``seed``), so no one keeps their own. A system that reads the history must lose accuracy; one
whose scores do not depend on the user (Random, Popularity: the negative controls) is unchanged
to the last digit. Paired bootstrap over users, per metric, against the system's stored test
scores (the run's selected checkpoint). Writes ``<work_dir>/results/history_shuffle.csv`` and
the shuffled scores (``scores/<system>_test-history-shuffle_<params hash>_seed<seed>.parquet``);
the report puts the table beside Table 2.

A classical model is trained and scored in one step and its weights are not kept, so it cannot
be rescored here: it is refused with that reason.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from llmtrsr_utils import baselines, metrics, results
from llmtrsr_utils.config import Config
from llmtrsr_utils.datasets.base import USER_ID
from llmtrsr_utils.datasets.splits import (
    derangement,
    load_split,
    prepared_dir,
    with_donor_histories,
)
from llmtrsr_utils.evaluate import seed_configs
from llmtrsr_utils.metrics import UserScores
from llmtrsr_utils.models import load_model
from llmtrsr_utils.recommend import answer_token_ids, resolve, split_prompts
from llmtrsr_utils.scoring import score_llm, with_adapter

log = logging.getLogger("llmtrsr")

MODE = "history-shuffle"  # the split name its score files carry: test-history-shuffle
TABLE = "history_shuffle.csv"


def shuffled_scores(cfg: Config, name: str, stored: pd.DataFrame, donors: dict[str, str]
                    ) -> UserScores:
    """One system's test scores with every user given the history of ``donors[user]``.

    Args:
        cfg: the run's config.
        name: an evaluated system.
        stored: its rows under these params (the selected test row names its checkpoint).
        donors: user -> the user whose history (and summary) it is given.

    Raises:
        ValueError: a classical model (not kept after evaluation).
    """
    run = resolve(cfg, name)
    kind = run.spec.kind
    if kind == "reference":
        data_dir = prepared_dir(cfg)
        shuffled = with_donor_histories(load_split(data_dir, "test"), donors)
        return baselines.score_split(cfg, name, data_dir, "test", shuffled)
    if kind == "classical":
        raise ValueError(f"{name}: a classical model is trained and scored in one step and its "
                         f"weights are not kept, so the history shuffle cannot rescore it")
    rec = run.cfg.recommender
    model, tokenizer = load_model(rec, cache_dir=cfg.cache_dir)
    if run.spec.trained:
        row = stored[(stored["split"] == "test") & stored["selected"]].iloc[-1]
        model = with_adapter(model, Path(row["checkpoint"]), rec.merge_adapter, keep_base=False)
    users, _ = split_prompts(run, "test", tokenizer, donors=donors)
    yes_id, no_id = answer_token_ids(tokenizer, users[0].prompts[0], rec.answer_words)
    return score_llm(model, tokenizer, users, yes_id, no_id, rec)


def stored_shuffle(cfg: Config, name: str, stored: pd.DataFrame, seed: int
                   ) -> UserScores | None:
    """The shuffled scores of an earlier run when they are of this evaluation (written after
    its test scores, the same users and candidates), else None: a run resumed seed by seed
    does not score a seed twice."""
    test = stored[(stored["split"] == "test") & stored["selected"]].iloc[-1]
    folder = results.results_dir(cfg)
    path = folder / results.scores_file(name, f"test-{MODE}", cfg.fingerprint(), seed)
    normal = folder / test["scores_file"]
    if not path.is_file() or path.stat().st_mtime_ns < normal.stat().st_mtime_ns:
        return None
    reference = results.read_scores(cfg, test)
    return UserScores.read_matching(path, reference.user_ids, reference.candidates)


def history_shuffle(cfg: Config, names: Sequence[str]) -> pd.DataFrame:
    """Score every named (already evaluated) system with shuffled histories and compare with
    its stored test scores: one row per system and metric with the normal and shuffled means,
    their paired difference (shuffled - normal), its 95% CI and p-value. A system trained per
    seed is shuffled under each training seed and the test pools them (the same adapters
    scored two ways: seeds resampled jointly, :func:`llmtrsr_utils.metrics.paired_bootstrap`).

    Raises:
        LookupError: a system not evaluated under these params (``llmtrsr evaluate`` first).
    """
    params_hash = cfg.fingerprint()
    test_users = load_split(prepared_dir(cfg), "test")[USER_ID].tolist()
    donors = derangement(test_users, cfg.seed)
    rows = []
    for name in names:
        normal, shuffled, label = [], [], None
        for scfg in seed_configs(cfg, name):
            seed = resolve(scfg, name).seed
            stored = results.stored_rows(cfg, name, params_hash, seed)
            if stored is None:
                raise LookupError(f"{name} (seed {seed}): not evaluated with these params; run "
                                  f"`llmtrsr evaluate --systems/--baselines {name}` first")
            log.info("history shuffle: scoring %s (seed %d) with other users' histories", name,
                     seed)
            normal.append(results.test_per_user(cfg, stored))
            scores = stored_shuffle(cfg, name, stored, seed)
            if scores is None:
                scores = shuffled_scores(scfg, name, stored, donors)
                results.write_scores(cfg, name, f"test-{MODE}", params_hash, seed, scores)
            else:
                log.info("history shuffle: %s (seed %d) already scored; reusing", name, seed)
            shuffled.append(scores.per_user())
            label = stored["display_name"].iloc[0]
        for metric in metrics.METRICS:
            rows.append({"system": name, "display_name": label, "metric": metric,
                         "seeds": len(normal),
                         "normal": float(np.mean([t[metric].mean() for t in normal])),
                         "shuffled": float(np.mean([t[metric].mean() for t in shuffled])),
                         **metrics.paired_bootstrap(shuffled, normal, metric, seed=cfg.seed,
                                                    paired_seeds=True)})
    table = pd.DataFrame(rows)
    results.write_csv(table, results.results_dir(cfg) / TABLE, index=False)
    return table
