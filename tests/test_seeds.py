"""Training seeds (issue 22, item 1): each trained system once per seed, shared splits,
candidates and summaries, and statistics pooled over seeds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from llmtrsr_utils import metrics
from tests.conftest import smoke_config


def per_user_table(values: np.ndarray) -> pd.DataFrame:
    """A per-user metrics table whose every metric column holds ``values``."""
    users = pd.Index([f"u{i}" for i in range(values.size)], name="user_id")
    return pd.DataFrame({name: values for name in metrics.METRICS}, index=users)


def test_one_seed_pools_to_exactly_the_user_bootstrap():
    rng = np.random.default_rng(0)
    table = per_user_table(rng.random(50))
    pooled = metrics.pooled_ci([table], seed=3, metrics=["recall@5"])
    plain = metrics.bootstrap_ci(table, seed=3, metrics=["recall@5"])
    for column in ("mean", "ci_low", "ci_high"):
        assert pooled.loc["recall@5", column] == pytest.approx(plain.loc["recall@5", column])
    assert pooled.loc["recall@5", "n_seeds"] == 1 and pooled.loc["recall@5", "seed_sd"] == 0.0
    other = per_user_table(rng.random(50))
    as_list = metrics.paired_bootstrap([table], [other], "recall@5", seed=3)
    as_frames = metrics.paired_bootstrap(table, other, "recall@5", seed=3)
    assert as_list == pytest.approx(as_frames)


def test_the_pooled_interval_carries_the_seed_variance():
    """Three seeds that disagree by a constant per seed: averaging users per seed first and
    bootstrapping users alone would miss that spread; the two-level interval is wider, and
    the spread across seeds is reported."""
    rng = np.random.default_rng(1)
    base = rng.random(100)
    tables = [per_user_table(np.clip(base + shift, 0, 1)) for shift in (-0.15, 0.0, 0.15)]
    pooled = metrics.pooled_ci(tables, metrics=["mrr@5"]).loc["mrr@5"]
    averaged = per_user_table(np.mean([t["mrr@5"].to_numpy() for t in tables], axis=0))
    users_only = metrics.bootstrap_ci(averaged, metrics=["mrr@5"]).loc["mrr@5"]
    assert pooled["mean"] == pytest.approx(users_only["mean"])
    assert pooled["ci_high"] - pooled["ci_low"] > 1.3 * (users_only["ci_high"]
                                                         - users_only["ci_low"])
    assert pooled["n_seeds"] == 3 and pooled["seed_max"] - pooled["seed_min"] > 0.25
    # Paired over users, pooled over seeds: a real difference separates, none does not.
    better = [per_user_table(np.clip(t["mrr@5"].to_numpy() + 0.2, 0, 1)) for t in tables]
    assert metrics.paired_bootstrap(better, tables, "mrr@5", paired_seeds=True)["p_value"] < 0.05
    same = metrics.paired_bootstrap(tables, tables, "mrr@5", paired_seeds=True)
    assert same["diff"] == 0.0 and same["p_value"] == 1.0
    with pytest.raises(ValueError, match="as many seeds"):
        metrics.paired_bootstrap(tables, tables[:1], "mrr@5", paired_seeds=True)
    with pytest.raises(ValueError, match="same users"):
        metrics.paired_bootstrap(tables, [per_user_table(base[:99])], "mrr@5")


def test_seeds_change_the_adapter_but_not_the_splits_candidates_or_summaries(
        tmp_path, movielens_dir):
    from safetensors.numpy import load_file

    from llmtrsr_utils import summarize
    from llmtrsr_utils.datasets.splits import prepared_dir, read_manifest
    from llmtrsr_utils.pipeline import run_evaluation
    from llmtrsr_utils.recommend import list_checkpoints, resolve
    from llmtrsr_utils.results import load_results, read_scores, results_dir, table2

    cfg = smoke_config(tmp_path, movielens_dir, "seeds=[7, 8]",
                       "recommender.select=final")
    assert cfg.seed == 7 and cfg.training_seeds == [7, 8]
    run_evaluation(cfg, ["llmtrsr-hierarchical"], ["random"], progress=False)
    runs = [resolve(cfg.for_seed(seed), "llmtrsr-hierarchical") for seed in (7, 8)]
    # One adapter per seed, and the weights differ.
    assert runs[0].adapter_dir != runs[1].adapter_dir
    weights = [load_file(list_checkpoints(run.adapter_dir)[-1][1] / "adapter_model.safetensors")
               for run in runs]
    assert weights[0].keys() == weights[1].keys()
    assert any(not np.array_equal(weights[0][k], weights[1][k]) for k in weights[0])
    # The first seed equal to the data seed keeps the adapter folder of a one-seed run.
    one_seed = resolve(smoke_config(tmp_path, movielens_dir), "llmtrsr-hierarchical")
    assert one_seed.adapter_dir == runs[0].adapter_dir
    # Splits and summaries are shared: the same prepared folder and summary files.
    assert prepared_dir(runs[1].cfg) == prepared_dir(cfg)
    assert read_manifest(prepared_dir(runs[1].cfg)) == read_manifest(prepared_dir(cfg))
    for split in ("train", "valid", "test"):
        assert summarize.summaries_path(runs[1].cfg, split, "hierarchical") == \
            summarize.summaries_path(cfg, split, "hierarchical")
    assert len(list((tmp_path / "summaries").glob("*_test_*.parquet"))) == 1
    # Every row records its seed; the candidates scored are the same under both seeds.
    results = load_results(cfg, current=True)
    test = results[(results["split"] == "test") & results["selected"]]
    seeds = test.groupby("system")["seed"].apply(sorted).to_dict()
    assert seeds == {"llmtrsr-hierarchical": [7, 8], "random": [7]}
    files = test[test["system"] == "llmtrsr-hierarchical"]
    scored = [read_scores(cfg, row) for _, row in files.iterrows()]
    assert scored[0].candidates == scored[1].candidates
    assert scored[0].user_ids == scored[1].user_ids
    assert not np.allclose(scored[0].scores, scored[1].scores)
    # Table 2 pools the seeds; the paired tests say how many each side had.
    table = table2(results, results_dir(cfg))
    assert table.loc["LLM-TRSR-Hierarchical", "seeds"] == 2
    assert table.loc["Random", "seeds"] == 1
    means = [s.per_user()["recall@5"].mean() for s in scored]
    assert float(table.loc["LLM-TRSR-Hierarchical", "recall@5"].split()[0]) == pytest.approx(
        np.mean(means), abs=1e-4)
    tests = pd.read_csv(results_dir(cfg) / "paired_tests.csv")
    assert set(tests["seeds"]) == {2} and set(tests["versus_seeds"]) == {1}
    with pytest.raises(ValueError, match="pass the results folder"):
        table2(results)
