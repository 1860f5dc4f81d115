"""Ranking metrics for the LLM-TRSR evaluation protocol, with bootstrap intervals and tests.

The paper ranks, for every test user, one positive item among 20 sampled negatives and reports
Recall@{3,5,10}, MRR@{3,5,10} and NDCG@{3,5,10}. Scores arrive as a float array of shape
``(n_users, n_candidates)``; column 0 is the positive, the other columns are negatives, and a
higher score ranks higher. Other modules rely on this convention.

Ties. When the positive ties with ``e`` negatives and ``g`` negatives score higher, its rank is
any of ``g + 1 .. g + e + 1``. The headline (``ties="expected"``) is each metric's expected value
under uniformly random tie-breaking, in closed form: the mean of the metric over those ranks
(no sampling, so it is deterministic). ``ties="pessimistic"`` counts every tie against the
positive (rank ``g + e + 1``), kept as a column so that a system living on ties is visible;
:func:`tied_share` is the share of users whose positive is tied.

Why not the authors' rule: their test.py ranks with ``np.argsort(-y_score)`` on rows laid out
``[positive, 20 negatives]``. numpy's default sort returns equal values in index order for these
sizes (``np.argsort(-np.zeros(21))`` is ``[0, 1, ..., 20]``), so every tie goes *to* the
positive. That is not a tie rule but an accident of layout and sort algorithm, optimistic exactly
where a model cannot tell candidates apart, and it interacts with their bfloat16 logits, which tie
often (see :mod:`llmtrsr_utils.scoring`). A constant scorer would get Recall@3 = 1 under it.

Written by hand rather than taken from a library: over a fixed candidate set with one positive
these are a few lines of numpy, while the well-known libraries either do not support "one
positive among sampled candidates" with this tie handling (recommenders and ranx rank full item
lists with their own tie handling) or pull heavy dependencies (torchmetrics).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

KS: tuple[int, ...] = (3, 5, 10)
FAMILIES: tuple[str, ...] = ("recall", "mrr", "ndcg")
TIES: tuple[str, ...] = ("expected", "pessimistic")


PerUser = pd.DataFrame | Sequence[pd.DataFrame]  # one table, or one per training seed


def metric_names(ks: Sequence[int] = KS) -> list[str]:
    """Column names for the given cut-offs, in the kit's fixed order (recall, mrr, ndcg)."""
    return [f"{family}@{k}" for family in FAMILIES for k in ks]


METRICS: list[str] = metric_names(KS)


def _check_scores(scores: np.ndarray, user_ids: Sequence[str] | None = None) -> np.ndarray:
    """Return scores as a float array, or raise naming the first bad row (and user, if known)."""
    array = np.asarray(scores, dtype=float)
    if array.ndim != 2 or array.shape[1] < 2:
        raise ValueError(
            "scores must be 2-D (n_users, n_candidates) with the positive in column 0 and at "
            f"least one negative; got shape {array.shape}"
        )
    if user_ids is not None and len(user_ids) != array.shape[0]:
        raise ValueError(f"{len(user_ids)} user_ids for {array.shape[0]} rows of scores")
    bad_rows = np.flatnonzero(np.isnan(array).any(axis=1))
    if bad_rows.size:
        row = int(bad_rows[0])
        who = f" (user {user_ids[row]!r})" if user_ids is not None else ""
        raise ValueError(
            f"scores contain NaN in row {row}{who}; {bad_rows.size} row(s) in all: "
            f"{bad_rows[:5].tolist()}"
        )
    return array


def rank_bounds(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(best, worst) 1-based rank of the positive (column 0) in each row: best = 1 + negatives
    scoring strictly higher, worst = best + negatives tied with it. Equal when nothing ties.

    Raises ValueError naming the row if a score is NaN, or if the array is not 2-D with >= 2
    columns.
    """
    array = _check_scores(scores)
    above = (array[:, 1:] > array[:, :1]).sum(axis=1)
    tied = (array[:, 1:] == array[:, :1]).sum(axis=1)
    return 1 + above, 1 + above + tied


def positive_ranks(scores: np.ndarray) -> np.ndarray:
    """1-based pessimistic rank of the positive (every tie counted against it)."""
    return rank_bounds(scores)[1]


def tied_share(scores: np.ndarray) -> float:
    """Share of rows whose positive ties with at least one negative."""
    best, worst = rank_bounds(scores)
    return float(np.mean(worst > best)) if len(best) else 0.0


def _value_at_rank(family: str, k: int, ranks: np.ndarray) -> np.ndarray:
    """One relevant item, so IDCG = 1: recall@k = [r <= k], mrr@k = 1/r if r <= k,
    ndcg@k = 1/log2(r + 1) if r <= k (0 beyond k)."""
    ranks = np.asarray(ranks, dtype=float)
    if family == "recall":
        values = np.ones_like(ranks)
    elif family == "mrr":
        values = 1.0 / ranks
    else:
        values = 1.0 / np.log2(ranks + 1.0)
    return np.where(ranks <= k, values, 0.0)


def per_user_metrics(
    scores: np.ndarray, ks: Sequence[int] = KS, user_ids: Sequence[str] | None = None,
    ties: str = "expected",
) -> pd.DataFrame:
    """One row per user with every metric, kept per user so intervals and tests can resample.

    Columns are ``metric_names(ks)`` (recall@k..., mrr@k..., ndcg@k...), then ``rank_best``,
    ``rank`` (the pessimistic rank) and ``tied`` (bool); the index is ``user_ids`` when given.
    ``ties="expected"``: each metric is its mean over the ranks ``rank_best..rank`` the positive
    takes under random tie-breaking; ``"pessimistic"``: its value at ``rank``.
    """
    if ties not in TIES:
        raise ValueError(f"ties must be one of {', '.join(TIES)}; got {ties!r}")
    ks = [int(k) for k in ks]
    if not ks or min(ks) < 1 or len(set(ks)) != len(ks):
        raise ValueError(f"ks must be distinct positive integers; got {ks}")
    if user_ids is not None:
        user_ids = list(user_ids)
        if len(set(user_ids)) != len(user_ids):
            raise ValueError("user_ids must be unique (paired tests align users on them)")
    array = _check_scores(scores, user_ids)
    best, worst = rank_bounds(array)
    # Cumulative metric value over ranks 1..n_candidates: the mean over best..worst is
    # (cum[worst] - cum[best - 1]) / (worst - best + 1), exact and vectorised.
    all_ranks = np.arange(1, array.shape[1] + 1)
    columns: dict[str, np.ndarray] = {}
    for family in FAMILIES:
        for k in ks:
            if ties == "pessimistic":
                columns[f"{family}@{k}"] = _value_at_rank(family, k, worst)
                continue
            cum = np.concatenate(([0.0], np.cumsum(_value_at_rank(family, k, all_ranks))))
            columns[f"{family}@{k}"] = (cum[worst] - cum[best - 1]) / (worst - best + 1)
    columns["rank_best"] = best.astype(np.int64)
    columns["rank"] = worst.astype(np.int64)
    columns["tied"] = worst > best
    index = pd.Index(user_ids, name="user_id") if user_ids is not None else None
    return pd.DataFrame(columns, index=index)


NON_METRIC_COLUMNS = ("rank_best", "rank", "tied")


def _metric_values(per_user: pd.DataFrame, metrics: Sequence[str]) -> np.ndarray:
    """Pull metric columns as a float (n_users, n_metrics) array, refusing missing or NaN."""
    missing = [m for m in metrics if m not in per_user.columns]
    if missing:
        raise ValueError(f"metrics not in the per-user table: {missing}")
    values = per_user[list(metrics)].to_numpy(dtype=float)
    if values.shape[0] == 0:
        raise ValueError("per-user table is empty; nothing to bootstrap")
    if np.isnan(values).any():
        raise ValueError("per-user table contains NaN metric values")
    return values


def _boot_indices(n_users: int, n_boot: int, seed: int) -> np.ndarray:
    """One (n_boot, n_users) resampling matrix, drawn once so every statistic shares it."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1; got {n_boot}")
    return np.random.default_rng(seed).integers(0, n_users, size=(n_boot, n_users))


def _check_level(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1); got {level}")
    return (1.0 - level) / 2.0


def bootstrap_ci(
    per_user: pd.DataFrame,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    metrics: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Mean and percentile-bootstrap interval per metric, because test sets here are small.

    Users are resampled with replacement from a seeded numpy Generator; one (n_boot, n_users)
    index matrix is drawn once and reused for every metric, so metrics are resampled jointly.
    Rows are metrics (default: every metric column, not the ranks); columns are
    ``['mean', 'ci_low', 'ci_high', 'n_users']``.
    """
    tail = _check_level(level)
    if metrics is None:
        metrics = [c for c in per_user.columns if c not in NON_METRIC_COLUMNS]
    metrics = list(metrics)
    values = _metric_values(per_user, metrics)
    n_users = values.shape[0]
    idx = _boot_indices(n_users, n_boot, seed)
    rows = []
    for j in range(values.shape[1]):
        column = values[:, j]
        boot_means = column[idx].mean(axis=1)
        low, high = np.quantile(boot_means, [tail, 1.0 - tail])
        rows.append((float(column.mean()), float(low), float(high), n_users))
    return pd.DataFrame(
        rows,
        index=pd.Index(metrics, name="metric"),
        columns=["mean", "ci_low", "ci_high", "n_users"],
    )


def paired_bootstrap(
    per_user_a: PerUser,
    per_user_b: PerUser,
    metric: str,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    paired_seeds: bool = False,
) -> dict[str, float]:
    """Paired bootstrap test of mean(a) - mean(b) over the same users, pooled over seeds.

    Pairing (resampling users, the same users for both) removes between-user variance, which
    dominates with 1-positive-in-21 metrics. Each side is one per-user table or one per
    training seed (:func:`pooled_ci`): then every replicate also resamples each side's seeds
    with replacement, independently (a system's seed 43 has nothing to do with another's), or
    jointly when ``paired_seeds`` (the same adapters scored two ways, as the history shuffle
    does). A side with one table (an untrained system) has nothing to resample. With one table
    each, this is the plain paired bootstrap of per-user differences. The p-value is the
    percentile-bootstrap p-value: ``min(1, 2 * min(share of resampled diffs <= 0, share >=
    0))``; it is 0 when no resampled difference reaches 0, meaning below the 1/n_boot
    resolution, not exactly zero.

    Returns:
        ``{'diff', 'ci_low', 'ci_high', 'p_value'}``.
    """
    tail = _check_level(level)
    users = (per_user_a if isinstance(per_user_a, pd.DataFrame) else per_user_a[0]).index
    a = _seed_stack(per_user_a, metric, users)
    b = _seed_stack(per_user_b, metric, users)
    if paired_seeds and len(a) != len(b):
        raise ValueError(f"paired seeds need as many seeds on each side: {len(a)} and {len(b)}")
    user_idx = _boot_indices(users.size, n_boot, seed)
    seeds_a = _seed_indices(len(a), n_boot, seed)
    seeds_b = seeds_a if paired_seeds else _seed_indices(len(b), n_boot, seed + 1)
    boot = _seed_boot_means(a, user_idx, seeds_a) - _seed_boot_means(b, user_idx, seeds_b)
    low, high = np.quantile(boot, [tail, 1.0 - tail])
    p_value = min(1.0, 2.0 * min(float(np.mean(boot <= 0)), float(np.mean(boot >= 0))))
    return {
        "diff": float(a.mean() - b.mean()),
        "ci_low": float(low),
        "ci_high": float(high),
        "p_value": p_value,
    }


def _seed_stack(tables: PerUser, metric: str, users: pd.Index | None = None) -> np.ndarray:
    """(n_seeds, n_users) values of ``metric``, every seed's table aligned on ``users`` (default:
    the first table's users); the tables must hold the same users."""
    tables = [tables] if isinstance(tables, pd.DataFrame) else list(tables)
    if not tables:
        raise ValueError("no per-user tables (no seed evaluated)")
    users = tables[0].index if users is None else users
    for number, table in enumerate(tables):
        if not table.index.is_unique:
            raise ValueError(f"per-user table {number} has duplicate user ids in its index")
        if len(table.index.symmetric_difference(users)):
            missing = users.difference(table.index)
            extra = table.index.difference(users)
            raise ValueError(
                "paired statistics need the same users in every table: "
                f"{len(missing)} missing from table {number} (e.g. {list(missing[:5])}), "
                f"{len(extra)} only there (e.g. {list(extra[:5])})")
    return np.stack([_metric_values(t.loc[users], [metric])[:, 0] for t in tables])


def _seed_boot_means(values: np.ndarray, user_idx: np.ndarray, seed_idx: np.ndarray
                     ) -> np.ndarray:
    """Two-level bootstrap replicates: for replicate b, the mean over the resampled seeds
    ``seed_idx[b]`` of each seed's mean over the resampled users ``user_idx[b]``."""
    per_seed = values[:, user_idx].mean(axis=2)  # (n_seeds, n_boot)
    return np.take_along_axis(per_seed, seed_idx.T, axis=0).mean(axis=0)


def _seed_indices(n_seeds: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n_seeds) seeds drawn with replacement; a generator apart from the users'."""
    return np.random.default_rng([seed, 1]).integers(0, n_seeds, size=(n_boot, n_seeds))


def pooled_ci(tables: PerUser, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
              metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean over training seeds and users, with a 95% interval for both sources of variance.

    The interval is a two-level (hierarchical) percentile bootstrap: each replicate resamples
    the seeds with replacement and, independently, the users (the same users in every seed:
    splits and candidates do not depend on the training seed), and averages. Resampling users
    alone would ignore how much a rerun with another seed moves the result; resampling seeds
    alone would ignore the 100-odd users. With one seed it is exactly :func:`bootstrap_ci`.
    With 3 seeds the seed level has few distinct resamples and slightly understates the seed
    variance (by (n-1)/n); the per-seed spread is reported beside it (``seed_sd``, ``seed_min``,
    ``seed_max``) for that reason.

    Returns:
        One row per metric: ``mean, ci_low, ci_high, n_users, n_seeds, seed_sd, seed_min,
        seed_max``.
    """
    tail = _check_level(level)
    tables = [tables] if isinstance(tables, pd.DataFrame) else list(tables)
    if metrics is None:
        metrics = [c for c in tables[0].columns if c not in NON_METRIC_COLUMNS]
    n_users = len(tables[0])
    user_idx = _boot_indices(n_users, n_boot, seed)
    seed_idx = _seed_indices(len(tables), n_boot, seed)
    rows = []
    for metric in metrics:
        values = _seed_stack(tables, metric)
        boot = _seed_boot_means(values, user_idx, seed_idx)
        low, high = np.quantile(boot, [tail, 1.0 - tail])
        per_seed = values.mean(axis=1)
        rows.append((float(values.mean()), float(low), float(high), n_users, len(tables),
                     float(per_seed.std(ddof=1)) if len(tables) > 1 else 0.0,
                     float(per_seed.min()), float(per_seed.max())))
    return pd.DataFrame(rows, index=pd.Index(list(metrics), name="metric"),
                        columns=["mean", "ci_low", "ci_high", "n_users", "n_seeds", "seed_sd",
                                 "seed_min", "seed_max"])


def selection_score(per_user: pd.DataFrame) -> float:
    """The authors' checkpoint selection rule: mean recall@3 + recall@5 + recall@10.

    Kept in one place so checkpoint choice matches the paper and never peeks at other metrics.
    """
    values = _metric_values(per_user, ["recall@3", "recall@5", "recall@10"])
    return float(values.mean(axis=0).sum())


def summarize(
    scores: np.ndarray, user_ids: Sequence[str], n_boot: int = 1000, seed: int = 0,
    ties: str = "expected",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Convenience for evaluation scripts: ``(per_user_metrics, bootstrap_ci)`` in one call."""
    per_user = per_user_metrics(scores, KS, user_ids, ties=ties)
    return per_user, bootstrap_ci(per_user, n_boot=n_boot, seed=seed)


class UserScores:
    """Scores of one system on one split: one row per user, column 0 the positive.

    Attributes:
        user_ids: the users, in row order.
        candidates: each user's candidate ids ``[target, *negatives]``.
        scores: (n_users, 1 + n_negatives) floats, higher meaning more likely.
        seconds: how long scoring took.
    """

    def __init__(self, user_ids: list[str], candidates: list[list[str]], scores: np.ndarray,
                 seconds: float):
        self.user_ids = user_ids
        self.candidates = candidates
        self.scores = scores
        self.seconds = seconds

    def per_user(self) -> pd.DataFrame:
        return per_user_metrics(self.scores, user_ids=self.user_ids)

    def frame(self) -> pd.DataFrame:
        """The scores as a table (user_id, candidates, scores, seconds), as score files hold."""
        return pd.DataFrame({"user_id": self.user_ids, "candidates": self.candidates,
                             "scores": [list(map(float, row)) for row in self.scores],
                             "seconds": self.seconds})

    @classmethod
    def read_matching(cls, path, user_ids: list[str], candidates: list[list[str]]
                      ) -> UserScores | None:
        """Scores saved at ``path`` (a parquet of :meth:`frame`) when they are of exactly these
        users and candidates, else None (missing, or made for others: score again)."""
        if not path.is_file():
            return None
        found = cls.from_frame(pd.read_parquet(path))
        return found if (found.user_ids, found.candidates) == (user_ids, candidates) else None

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> UserScores:
        seconds = float(frame["seconds"].iloc[0]) if "seconds" in frame and len(frame) else 0.0
        return cls(frame["user_id"].tolist(), [list(c) for c in frame["candidates"]],
                   np.vstack(frame["scores"].map(np.asarray)), seconds)


def paired_tests(per_user: dict[str, PerUser], references: Sequence[str],
                 seed: int = 0) -> pd.DataFrame:
    """Paired bootstrap of every system against each of ``references`` evaluated beside it,
    per metric, over the same test users, pooled over each system's training seeds.

    Args:
        per_user: per-user metrics of each system (:func:`per_user_metrics`), by system: one
            table, or one per training seed.
        references: the systems every other one is compared with.
        seed: the bootstrap's seed.

    Returns:
        Columns system, versus, metric, diff, ci_low, ci_high, p_value, seeds, versus_seeds.
    """
    def count(tables: PerUser) -> int:
        return 1 if isinstance(tables, pd.DataFrame) else len(tables)

    tests = [{"system": name, "versus": reference, "metric": metric,
              **paired_bootstrap(table, per_user[reference], metric, seed=seed),
              "seeds": count(table), "versus_seeds": count(per_user[reference])}
             for reference in references if reference in per_user
             for name, table in per_user.items() if name != reference
             for metric in METRICS]
    return pd.DataFrame(tests)
