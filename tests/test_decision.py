"""The decision table (issue 22, item 6) on a results store built here: every claim judged
from the pooled paired bootstrap, a missing system marked, the shuffle rows read back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llmtrsr_utils import decision, metrics, results
from llmtrsr_utils.metrics import UserScores
from tests.conftest import smoke_config

N_USERS = 80


def store(cfg, system: str, seed: int, rank_of_positive: np.ndarray) -> None:
    """One selected test row of ``system`` under ``seed`` whose positive sits at the given
    rank (0: first) among 21 candidates, user by user."""
    users = [f"u{i}" for i in range(N_USERS)]
    scores = np.tile(np.linspace(1.0, 0.0, 21), (N_USERS, 1))
    for row, rank in enumerate(rank_of_positive):  # column 0 is the positive
        scores[row, 0], scores[row, rank] = scores[row, rank], scores[row, 0]
    stored = UserScores(users, [[f"i{j}" for j in range(21)]] * N_USERS, scores, 1.0)
    file = results.write_scores(cfg, system, "test", cfg.fingerprint(), seed, stored)
    ci = metrics.bootstrap_ci(stored.per_user(), metrics=metrics.METRICS)
    row = {"system": system, "split": "test", "selected": True, "seed": seed,
           "params_hash": cfg.fingerprint(), "scores_file": file, "display_name": system,
           "n_users": N_USERS, "tied_positive_share": 0.0,
           **{f"{m}{suffix}": ci.loc[m, column] for m in metrics.METRICS
              for suffix, column in (("", "mean"), ("_ci_low", "ci_low"),
                                     ("_ci_high", "ci_high"), ("_pessimistic", "mean"))}}
    results.upsert(results.results_dir(cfg) / "metrics.parquet", pd.DataFrame([row]))


def test_the_decision_table_judges_each_claim_from_pooled_seeds(tmp_path, movielens_dir):
    cfg = smoke_config(tmp_path, movielens_dir)
    rng = np.random.default_rng(0)
    for seed in (1, 2, 3):
        store(cfg, "oracle-older", seed, rng.integers(0, 4, N_USERS))  # mostly in the top 5
        store(cfg, "null-summary", seed, rng.integers(0, 21, N_USERS))  # chance
        store(cfg, "tallrec", seed, rng.integers(0, 4, N_USERS))
    store(cfg, "zero-shot", 42, rng.integers(0, 21, N_USERS))
    pd.DataFrame([{"system": "oracle-older", "metric": "recall@5", "seeds": 3, "diff": -0.2,
                   "ci_low": -0.3, "ci_high": -0.1, "p_value": 0.001}]).to_csv(
        results.results_dir(cfg) / "history_shuffle.csv", index=False)
    table = decision.decide(cfg)
    assert (results.results_dir(cfg) / decision.TABLE).is_file()
    rows = {(r.question, r.system, r.versus): r for r in table.itertuples()}
    # smoke's item_num is 3: beside recent titles oracle-older vs NULL is no gate.
    assert cfg.recommender.item_num == 3
    gate = rows[("control", "oracle-older", "null-summary")]
    assert "beside 3 recent titles" in gate.claim
    assert gate.verdict == "yes" and gate.diff > 0.5 and gate.p_value < 0.05
    assert (gate.seeds, gate.versus_seeds) == (3, 3)
    shuffled = rows[("gate", "oracle-older", "itself, shuffled")]
    assert shuffled.verdict == "yes" and shuffled.diff == pytest.approx(-0.2)
    assert rows[("gate", "tallrec", "itself, shuffled")].verdict == "not measured"
    assert rows[("i", "tallrec", "zero-shot")].verdict == "yes"
    within = rows[("ii", "oracle-older", "tallrec")]
    assert within.verdict == "yes" and within.ci_low > -decision.MARGIN
    assert rows[("iii", "llmtrsr-hierarchical", "null-summary")].verdict == "not measured"
    # The same claims the other way round do not hold.
    assert decision.verdict("beats", -0.3, -0.4, 0.001) == "no"
    assert decision.verdict("shuffle", 0.1, -0.1, 0.5) == "no"
    assert decision.verdict("within", -0.05, -0.12, 0.3) == "no"
    text = decision.markdown(table)
    assert "| control | the older titles" in text and "not measured" not in text
    first = decision.claims(0)[0]
    assert (first.question, first.claim, first.system, first.versus) == (
        "gate", "the older titles in the summary slot beat NULL there", "oracle-older",
        "null-summary")
    assert [c.question for c in decision.claims(0)].count("gate") == \
        [c.question for c in decision.claims(3)].count("gate") + 1


def test_every_report_is_written_atomically(tmp_path, movielens_dir, monkeypatch):
    """Issue 23: table2.csv/.md, results.csv, paired_tests.csv and the rest were written in
    place, so a failure half-way left a torn file. A write that fails now leaves the earlier
    report whole, and no temporary file behind."""
    cfg = smoke_config(tmp_path, movielens_dir, f"figures_dir={tmp_path / 'figures'}")
    rng = np.random.default_rng(1)
    for system in ("null-summary", "oracle-older"):
        store(cfg, system, 42, rng.integers(0, 21, N_USERS))
    cfg_results = results.results_dir(cfg)
    decision.decide(cfg)
    stored = results.load_results(cfg)
    stored["params_hash"] = cfg.fingerprint()
    results.save_evaluation(cfg, stored, {s: results.seed_tables(stored, cfg_results, s)
                                          for s in ("null-summary", "oracle-older")}, {})
    written = results.write_report(cfg)
    folder = tmp_path / "figures"
    before = {p: p.read_bytes() for p in folder.iterdir()}
    assert {p.name for p in written} >= {"table2.md", "table2_values.csv", "results.csv",
                                         "paired_tests.csv", "decision.csv"}

    def torn(self, path, *args, **kwargs):
        Path(path).write_text("half a tab")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", torn)
    with pytest.raises(OSError, match="disk full"):
        results.write_report(cfg)
    assert {p: p.read_bytes() for p in folder.iterdir()} == before  # no temporary file left
