"""Ranking metrics, bootstrap intervals and the paired test, against hand-computed values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from llmtrsr_utils.metrics import (
    KS,
    METRICS,
    bootstrap_ci,
    paired_bootstrap,
    per_user_metrics,
    positive_ranks,
    rank_bounds,
    selection_score,
    summarize,
    tied_share,
)

# Five users, 1 positive (column 0) + 20 negatives each.
SCORES = np.array(
    [
        [0.9] + [0.1] * 20,  # positive best -> rank 1
        [0.5] + [0.9, 0.8, 0.7] + [0.1] * 17,  # three negatives above -> rank 4
        [-1.0] + [0.1 * i for i in range(20)],  # every negative above -> rank 21
        [0.9, 0.9, 0.9] + [0.1] * 18,  # tied with two negatives at the top -> rank 3
        [0.3] * 21,  # all equal -> rank 21
    ]
)
USERS = ["u0", "u1", "u2", "u3", "u4"]
NDCG_RANK_4 = 0.43067655807339306  # 1 / log2(5)

# Hand-computed per-user values for SCORES with every tie counted against the positive.
EXPECTED = {
    "recall@3": [1, 0, 0, 1, 0],
    "recall@5": [1, 1, 0, 1, 0],
    "recall@10": [1, 1, 0, 1, 0],
    "mrr@3": [1, 0, 0, 1 / 3, 0],
    "mrr@5": [1, 0.25, 0, 1 / 3, 0],
    "mrr@10": [1, 0.25, 0, 1 / 3, 0],
    "ndcg@3": [1, 0, 0, 0.5, 0],
    "ndcg@5": [1, NDCG_RANK_4, 0, 0.5, 0],
    "ndcg@10": [1, NDCG_RANK_4, 0, 0.5, 0],
}
EXPECTED_MEANS = {
    "recall@3": 0.4,
    "recall@5": 0.6,
    "recall@10": 0.6,
    "mrr@3": 0.26666666666666666,  # (1 + 1/3) / 5
    "mrr@5": 0.31666666666666665,  # (1 + 0.25 + 1/3) / 5
    "mrr@10": 0.31666666666666665,
    "ndcg@3": 0.3,  # (1 + 0.5) / 5
    "ndcg@5": 0.3861353116146786,  # (1 + 1/log2(5) + 0.5) / 5
    "ndcg@10": 0.3861353116146786,
}


def test_metric_names_and_order():
    assert KS == (3, 5, 10)
    assert METRICS == [
        "recall@3", "recall@5", "recall@10",
        "mrr@3", "mrr@5", "mrr@10",
        "ndcg@3", "ndcg@5", "ndcg@10",
    ]


def test_ranks_hand_computed_with_pessimistic_ties():
    # Ties count against the positive: tied with two negatives -> 3, all equal -> 21.
    assert positive_ranks(SCORES).tolist() == [1, 4, 21, 3, 21]
    assert positive_ranks(np.array([[2, 2], [3, 1]])).tolist() == [2, 1]  # ints accepted


def test_per_user_metrics_hand_computed():
    table = per_user_metrics(SCORES, user_ids=USERS, ties="pessimistic")
    assert list(table.columns) == METRICS + ["rank_best", "rank", "tied"]
    assert list(table.index) == USERS
    assert table["rank"].tolist() == [1, 4, 21, 3, 21]
    for metric, values in EXPECTED.items():
        assert table[metric].tolist() == pytest.approx(values, abs=1e-12), metric
    row = table.loc["u1"]  # positive 4th
    assert (row["recall@3"], row["recall@5"], row["mrr@5"]) == (0.0, 1.0, 0.25)
    assert row["ndcg@5"] == pytest.approx(NDCG_RANK_4, abs=1e-12)
    assert (table.loc["u2", METRICS] == 0).all()  # positive last of 21


def test_means_hand_computed():
    means = per_user_metrics(SCORES, ties="pessimistic").mean()
    for metric, value in EXPECTED_MEANS.items():
        assert means[metric] == pytest.approx(value, abs=1e-12), metric


def test_custom_ks_keep_family_order():
    table = per_user_metrics(SCORES, ks=(1, 4), ties="pessimistic")
    assert list(table.columns) == ["recall@1", "recall@4", "mrr@1", "mrr@4", "ndcg@1", "ndcg@4",
                                   "rank_best", "rank", "tied"]
    assert table["recall@4"].tolist() == [1, 1, 0, 1, 0]
    assert table["mrr@1"].tolist() == [1, 0, 0, 0, 0]
    with pytest.raises(ValueError, match="ks"):
        per_user_metrics(SCORES, ks=(0, 3))


H = [sum(1 / r for r in range(1, k + 1)) for k in range(22)]  # harmonic numbers H[k]
D = [sum(1 / np.log2(r + 1) for r in range(1, k + 1)) for k in range(22)]  # sum of 1/log2(r+1)


def test_expected_ties_hand_computed():
    # u3: tied with two negatives at the top -> ranks 1, 2, 3 equally likely.
    # u4: all 21 equal -> ranks 1..21 equally likely: a constant scorer sits exactly at chance.
    table = per_user_metrics(SCORES, user_ids=USERS)  # ties="expected" is the default
    assert rank_bounds(SCORES)[0].tolist() == [1, 4, 21, 1, 1]
    assert table["rank_best"].tolist() == [1, 4, 21, 1, 1]
    assert table["rank"].tolist() == [1, 4, 21, 3, 21]
    assert table["tied"].tolist() == [False, False, False, True, True]
    u3, u4 = table.loc["u3"], table.loc["u4"]
    assert (u3["recall@3"], u3["recall@5"]) == (1.0, 1.0)
    assert u3["mrr@3"] == pytest.approx((1 + 1 / 2 + 1 / 3) / 3, abs=1e-12)
    assert u3["ndcg@3"] == pytest.approx((1 + 1 / np.log2(3) + 1 / 2) / 3, abs=1e-12)
    for k in (3, 5, 10):
        assert u4[f"recall@{k}"] == pytest.approx(k / 21, abs=1e-12)
        assert u4[f"mrr@{k}"] == pytest.approx(H[k] / 21, abs=1e-12)
        assert u4[f"ndcg@{k}"] == pytest.approx(D[k] / 21, abs=1e-12)
    # Rows without ties are the same under both rules.
    pessimistic = per_user_metrics(SCORES, user_ids=USERS, ties="pessimistic")
    untied = ["u0", "u1", "u2"]
    assert np.allclose(table.loc[untied, METRICS], pessimistic.loc[untied, METRICS])
    assert tied_share(SCORES) == pytest.approx(0.4)


def test_expected_ties_partial_window():
    # Two negatives above, positive tied with four: ranks 3..7 uniform.
    scores = np.array([[0.5, 0.9, 0.8, 0.5, 0.5, 0.5, 0.5] + [0.1] * 14])
    row = per_user_metrics(scores).iloc[0]
    assert row["recall@3"] == pytest.approx(1 / 5)
    assert row["recall@5"] == pytest.approx(3 / 5)
    assert row["recall@10"] == pytest.approx(1.0)
    assert row["mrr@5"] == pytest.approx((1 / 3 + 1 / 4 + 1 / 5) / 5)
    assert row["mrr@10"] == pytest.approx((H[7] - H[2]) / 5)
    assert row["ndcg@5"] == pytest.approx((D[5] - D[2]) / 5)


def test_constant_scorer_is_at_chance_not_below():
    # A scorer that cannot tell candidates apart gets chance, k / 21, rather than 0 (pessimistic)
    # or 1 (the authors' np.argsort, which puts the tied positive first).
    means = per_user_metrics(np.zeros((50, 21))).mean()
    assert means["recall@5"] == pytest.approx(5 / 21)
    assert per_user_metrics(np.zeros((50, 21)), ties="pessimistic").mean()["recall@5"] == 0
    assert np.argsort(-np.zeros(21))[0] == 0  # the authors' rule: the positive ranks first
    with pytest.raises(ValueError, match="ties"):
        per_user_metrics(SCORES, ties="optimistic")


def test_bad_scores_raise():
    scores = SCORES.copy()
    scores[3, 7] = np.nan
    with pytest.raises(ValueError, match="row 3"):
        positive_ranks(scores)
    with pytest.raises(ValueError, match="row 3 \\(user 'u3'\\)"):
        per_user_metrics(scores, user_ids=USERS)
    with pytest.raises(ValueError, match="2-D"):
        positive_ranks(np.array([0.9, 0.1, 0.2]))
    with pytest.raises(ValueError, match="2-D"):
        positive_ranks(np.array([[0.9], [0.1]]))  # no negatives
    with pytest.raises(ValueError, match="user_ids"):
        per_user_metrics(SCORES, user_ids=USERS[:4])
    with pytest.raises(ValueError, match="unique"):
        per_user_metrics(SCORES, user_ids=["a", "a", "b", "c", "d"])


def random_scores(n_users: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n_users, 21))


def test_bootstrap_is_seeded_and_brackets_the_mean():
    users = [f"u{i}" for i in range(300)]
    per_user, ci = summarize(random_scores(300, 1), users, n_boot=500, seed=7)
    _, again = summarize(random_scores(300, 1), users, n_boot=500, seed=7)
    pd.testing.assert_frame_equal(ci, again)
    assert list(ci.index) == METRICS
    assert list(ci.columns) == ["mean", "ci_low", "ci_high", "n_users"]
    assert (ci["n_users"] == 300).all()
    assert np.allclose(ci["mean"], per_user[METRICS].mean())
    assert (ci["ci_low"] <= ci["mean"]).all() and (ci["mean"] <= ci["ci_high"]).all()
    assert (ci["ci_high"] - ci["ci_low"] > 0).all()
    other = bootstrap_ci(per_user, n_boot=500, seed=8)
    assert not other["ci_low"].equals(ci["ci_low"])


def test_constant_metric_has_zero_width_interval():
    scores = SCORES[[0, 1, 3]]  # ranks 1, 4, 3: recall@5 is 1 for everyone
    ci = bootstrap_ci(per_user_metrics(scores), n_boot=200)
    assert ci.loc["recall@5", ["mean", "ci_low", "ci_high"]].tolist() == [1.0, 1.0, 1.0]
    assert ci.loc["recall@3", "ci_high"] > ci.loc["recall@3", "ci_low"]  # this one varies
    with pytest.raises(ValueError, match="hit@1"):
        bootstrap_ci(per_user_metrics(scores), metrics=["hit@1"])


def test_more_users_give_a_narrower_interval():
    # Recall@3 alternating 1, 0: the interval width scales as 1/sqrt(n), so 100x users -> ~10x.
    def width(n_users: int) -> float:
        table = pd.DataFrame({"recall@3": np.tile([1.0, 0.0], n_users // 2)})
        row = bootstrap_ci(table, n_boot=1000, seed=0).loc["recall@3"]
        return row["ci_high"] - row["ci_low"]

    small, large = width(40), width(4000)
    assert 0.2 < small < 0.45  # about 2 * 1.96 * sqrt(0.25 / 40) = 0.31
    assert large < small / 5


def test_paired_identical_systems():
    table = per_user_metrics(random_scores(100, 2), user_ids=[f"u{i}" for i in range(100)])
    result = paired_bootstrap(table, table.copy(), "ndcg@10", n_boot=500)
    assert result == {"diff": 0.0, "ci_low": 0.0, "ci_high": 0.0, "p_value": 1.0}


def test_paired_strictly_better_system():
    users = [f"u{i}" for i in range(50)]
    worse = per_user_metrics(random_scores(50, 3), user_ids=users)
    better = worse.copy()
    better["mrr@10"] = worse["mrr@10"] + 0.05  # better for every single user
    result = paired_bootstrap(better, worse.iloc[::-1], "mrr@10", n_boot=1000, seed=1)
    assert result["diff"] == pytest.approx(0.05)
    assert result["ci_low"] == pytest.approx(0.05) and result["ci_high"] == pytest.approx(0.05)
    assert result["p_value"] < 0.01
    assert paired_bootstrap(worse, better, "mrr@10")["diff"] == pytest.approx(-0.05)


def test_paired_no_difference_on_average_is_not_significant():
    users = [f"u{i}" for i in range(100)]
    a = pd.DataFrame({"recall@5": np.tile([1.0, 0.0], 50)}, index=users)
    b = pd.DataFrame({"recall@5": np.tile([0.0, 1.0], 50)}, index=users)
    result = paired_bootstrap(a, b, "recall@5", n_boot=1000, seed=0)
    assert result["diff"] == 0.0
    assert result["ci_low"] < 0 < result["ci_high"]
    assert result["p_value"] > 0.5


def test_paired_alignment_and_mismatched_users():
    users = [f"u{i}" for i in range(20)]
    a = per_user_metrics(random_scores(20, 4), user_ids=users)
    b = per_user_metrics(random_scores(20, 5), user_ids=users)
    # Alignment is by user id, not by row position.
    assert paired_bootstrap(a, b.sample(frac=1.0, random_state=0), "ndcg@5") == \
        paired_bootstrap(a, b, "ndcg@5")
    renamed = b.rename(index={"u19": "u99"})
    with pytest.raises(ValueError, match="u19.*u99"):
        paired_bootstrap(a, renamed, "ndcg@5")
    with pytest.raises(ValueError, match="same users"):
        paired_bootstrap(a, b.iloc[:10], "ndcg@5")


def test_selection_score_hand_computed():
    # Pessimistic: mean recall@3 + recall@5 + recall@10 = 0.4 + 0.6 + 0.6.
    assert selection_score(per_user_metrics(SCORES, ties="pessimistic")) == pytest.approx(
        1.6, abs=1e-12)
    # Expected ties: u4's all-equal row adds 3/21 + 5/21 + 10/21 over the 5 users.
    assert selection_score(per_user_metrics(SCORES)) == pytest.approx(1.6 + 18 / 21 / 5,
                                                                      abs=1e-12)


def test_a_rerun_replaces_every_earlier_row_of_the_system_and_params(tmp_path):
    """A forced rerun whose best epoch changed must not leave the old selected row beside the
    new one (found: three classical models had two test rows in Table 2's source); another
    training seed's rows are another result and stay."""
    from llmtrsr_utils.results import upsert as upsert_results

    path = tmp_path / "metrics.parquet"

    def rows(system, params, epochs, value, seed=42):
        return pd.DataFrame([{"system": system, "params_hash": params, "split": split,
                              "seed": seed, "epoch": float(e), "recall@5": value}
                             for e in epochs for split in ("valid", "test")])

    upsert_results(path, pd.concat([rows("sasrec", "h1", [3], 0.1), rows("ncf", "h1", [2], 0.2),
                                    rows("sasrec", "h0", [1], 0.3),
                                    rows("sasrec", "h1", [4], 0.5, seed=43)]))
    table = upsert_results(path, rows("sasrec", "h1", [5], 0.4))
    sasrec = table[(table["system"] == "sasrec") & (table["params_hash"] == "h1")
                   & (table["seed"] == 42)]
    assert sasrec["epoch"].tolist() == [5.0, 5.0] and set(sasrec["recall@5"]) == {0.4}
    assert len(table[table["system"] == "ncf"]) == 2  # other systems untouched
    assert len(table[table["params_hash"] == "h0"]) == 2  # other params untouched
    assert table[table["seed"] == 43]["recall@5"].tolist() == [0.5, 0.5]  # other seed kept
    assert upsert_results(path, rows("x", "h", [1], 0.0).iloc[:0]).shape[0] == 8
