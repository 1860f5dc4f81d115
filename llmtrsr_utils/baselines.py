"""Reference scorers that need no LLM: random, popularity and text-embedding similarity.

They give the floor every LLM-TRSR result is read against. All scorers share one convention so
the metrics code treats them alike: a user's candidate list is ``[target, *negatives]`` (the
positive is column 0), and a scorer returns a float array of shape
``(n_users, 1 + n_negatives)`` in that column order, rows in the frame's row order, higher
meaning more likely. Ties are not broken here; the metrics module breaks them against the
positive, so a constant scorer can never look better than chance.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from llmtrsr_utils import systems
from llmtrsr_utils.artifacts import atomic_path
from llmtrsr_utils.datasets.base import HISTORY, ITEM_ID, TARGET, USER_ID
from llmtrsr_utils.datasets.splits import NEGATIVES, load_items, load_split, user_rng
from llmtrsr_utils.metrics import UserScores
from llmtrsr_utils.models import load_embedding_model, model_identity

log = logging.getLogger("llmtrsr")

# Mixed into each user's seed so random scores never reuse the stream that drew the negatives.
_RANDOM_SCORES_OFFSET = 0x5C0E
# Bump when the embedding cache's layout or normalisation changes: old files are then ignored.
_EMBEDDING_CACHE_VERSION = 1


def candidate_ids(frame: pd.DataFrame) -> list[list[str]]:
    """Each user's candidates ``[target, *negatives]``: the column order every scorer uses."""
    return [[target, *negatives] for target, negatives in zip(frame[TARGET], frame[NEGATIVES],
                                                              strict=True)]


def _candidate_matrix(frame: pd.DataFrame) -> np.ndarray:
    """Candidates as a 2-D object array; a ragged frame cannot give one scores matrix."""
    rows = candidate_ids(frame)
    widths = {len(row) for row in rows}
    if len(widths) > 1:
        raise ValueError(f"users have different numbers of candidates ({sorted(widths)}); "
                         f"score each split separately")
    matrix = np.empty((len(rows), widths.pop() if widths else 1), dtype=object)
    for i, row in enumerate(rows):
        matrix[i] = row
    return matrix


def random_scores(frame: pd.DataFrame, seed: int, split: str) -> np.ndarray:
    """Uniform [0, 1) scores, seeded per (seed, split, user) so a user's scores do not change
    when other users are added; offset from the negatives' seed so the two draws are independent.
    """
    width = _candidate_matrix(frame).shape[1]
    scores = np.empty((len(frame), width), dtype=np.float64)
    for row, user_id in enumerate(frame[USER_ID]):
        parent = user_rng(seed, split, user_id).bit_generator.seed_seq
        child = np.random.SeedSequence(parent.entropy,
                                       spawn_key=(*parent.spawn_key, _RANDOM_SCORES_OFFSET))
        scores[row] = np.random.default_rng(child).random(width)
    return scores


def popularity_counts(train: pd.DataFrame) -> pd.Series:
    """Item id -> number of occurrences in the TRAINING users' histories and targets.

    Only the training split is counted: counting valid/test histories or targets would leak the
    evaluated interactions into the scores. Sampled negatives are not interactions and are
    ignored. Items never seen in training are absent (score 0).
    """
    items = [item for history in train[HISTORY] for item in history]
    items.extend(train[TARGET])
    counts = pd.Series(items, dtype=object).value_counts(sort=False)
    counts.index.name = ITEM_ID
    return counts.rename("count").astype(np.int64)


def popularity_scores(frame: pd.DataFrame, counts: pd.Series) -> np.ndarray:
    """Each candidate's training count (0 when unseen); no jitter: the metrics break ties."""
    matrix = _candidate_matrix(frame)
    flat = counts.reindex(pd.Index(matrix.ravel(), dtype=object), fill_value=0)
    return flat.to_numpy(dtype=np.float64).reshape(matrix.shape)


# -- text embeddings -----------------------------------------------------------------------

def _cache_stem(items: pd.DataFrame, model_name: str) -> str:
    """File stem keyed by the model's identity and the ordered (item_id, text) pairs, so another
    model or any edited text gives another file rather than stale vectors."""
    payload = {"version": _EMBEDDING_CACHE_VERSION, "model": model_identity(model_name),
               "items": [[str(i), str(t)] for i, t in zip(items[ITEM_ID], items["text"],
                                                          strict=True)]}
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model_name).strip("._")[-40:] or "model"
    return f"item-embeddings-{slug}-{digest}"


def _normalise_rows(vectors: np.ndarray) -> np.ndarray:
    """Unit rows; an all-zero row stays zero (its cosine with anything is 0, not NaN)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1)


def _read_cache(npy: Path, ids_file: Path, expected: list[str]) -> np.ndarray | None:
    if not (npy.is_file() and ids_file.is_file()):
        return None
    try:
        ids = json.loads(ids_file.read_text(encoding="utf-8"))["item_ids"]
        vectors = np.load(npy, allow_pickle=False)
    except (OSError, ValueError, KeyError) as err:
        log.warning("embedding cache %s unreadable (%s); recomputing", npy, err)
        return None
    if ids != expected or vectors.ndim != 2 or len(vectors) != len(expected):
        log.warning("embedding cache %s does not match the items; recomputing", npy)
        return None
    return vectors


def item_embeddings(items: pd.DataFrame, model_name: str, cache_dir: Path, *,
                    batch_size: int = 64,
                    device: str | None = None) -> tuple[list[str], np.ndarray]:
    """L2-normalised float32 embeddings of ``items["text"]``, one row per item, in table order.

    Encoding a catalogue is the slow part of the embedding baseline, so vectors are cached in
    ``cache_dir`` (``.npy`` plus a ``.json`` of the ordered ids) under a name hashed from the
    model identity and the texts; the model is loaded only on a cache miss.
    """
    item_ids = [str(i) for i in items[ITEM_ID]]
    if not item_ids:
        raise ValueError("items table is empty: nothing to embed")
    if len(set(item_ids)) != len(item_ids):
        raise ValueError("items table has duplicate item_id values")
    stem = _cache_stem(items, model_name)
    npy = Path(cache_dir) / f"{stem}.npy"
    ids_file = Path(cache_dir) / f"{stem}.json"
    cached = _read_cache(npy, ids_file, item_ids)
    if cached is not None:
        return item_ids, cached

    log.info("embedding %d item texts with %s", len(item_ids), model_name)
    encoder = load_embedding_model(model_name, device=device)
    raw = encoder.encode([str(t) for t in items["text"]], batch_size=batch_size,
                         convert_to_numpy=True, normalize_embeddings=True,
                         show_progress_bar=False)
    vectors = _normalise_rows(np.asarray(raw, dtype=np.float32)).astype(np.float32)
    # Vectors first, ids last: the .json's presence is what makes a cache entry readable.
    with atomic_path(npy) as temp, open(temp, "wb") as handle:
        np.save(handle, vectors, allow_pickle=False)  # a handle, so np.save adds no suffix
    with atomic_path(ids_file) as temp:
        temp.write_text(json.dumps({"model": model_name, "dim": int(vectors.shape[1]),
                                    "item_ids": item_ids}) + "\n", encoding="utf-8")
    return item_ids, vectors


def _indices(index: pd.Index, ids: np.ndarray, owners: np.ndarray, role: str) -> np.ndarray:
    """Row numbers of ``ids`` in the embedding table; a missing id names itself and its user."""
    found = index.get_indexer(ids)
    missing = np.flatnonzero(found < 0)
    if len(missing):
        first = missing[0]
        raise KeyError(f"{role} item {ids[first]!r} of user {owners[first]!r} has no embedding "
                       f"({len(missing)} missing id occurrence(s) in all)")
    return found


def embedding_scores(frame: pd.DataFrame, item_ids: list[str],
                     vectors: np.ndarray) -> np.ndarray:
    """Cosine between each candidate and the user's profile: the re-normalised mean of the
    (unit) history vectors. A content-only baseline: no training, text similarity alone."""
    vectors = np.asarray(vectors, dtype=np.float64)
    if vectors.ndim != 2 or len(vectors) != len(item_ids):
        raise ValueError(f"vectors of shape {vectors.shape} do not match {len(item_ids)} ids")
    table = _normalise_rows(vectors)
    index = pd.Index([str(i) for i in item_ids], dtype=object)
    users = frame[USER_ID].to_numpy(dtype=object)

    matrix = _candidate_matrix(frame)
    candidate_rows = _indices(index, matrix.ravel().astype(str).astype(object),
                              np.repeat(users, matrix.shape[1]), "candidate")

    lengths = np.fromiter((len(h) for h in frame[HISTORY]), dtype=np.int64, count=len(frame))
    if (lengths == 0).any():
        user = users[np.flatnonzero(lengths == 0)[0]]
        raise ValueError(f"user {user!r} has an empty history: no profile to compare against")
    flat_history = np.array([str(i) for h in frame[HISTORY] for i in h], dtype=object)
    history_rows = _indices(index, flat_history, np.repeat(users, lengths), "history")

    if not len(frame):
        return np.empty(matrix.shape, dtype=np.float64)
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    profiles = _normalise_rows(np.add.reduceat(table[history_rows], starts, axis=0)
                               / lengths[:, None])
    candidates = table[candidate_rows].reshape(*matrix.shape, table.shape[1])
    return np.einsum("ukd,ud->uk", candidates, profiles)


# -- the registry: a baseline is a name, a display name and a scorer ---------------------------


@dataclass
class BaselineContext:
    """What a baseline may use to score a split, prepared once per evaluation.

    Attributes:
        cfg: the run's config.
        train: the training split (user_id, history, target, negatives).
        items: the catalogue (item_id, attributes, rendered ``text``).
        embedding_dir: where item embeddings are cached.
    """

    cfg: Any
    train: pd.DataFrame
    items: pd.DataFrame
    embedding_dir: Path


def score_split(cfg: Any, name: str, data_dir: Path, split: str, frame: pd.DataFrame
                ) -> UserScores:
    """One reference scorer's scores of ``frame`` (a split's users, or the same users with
    other histories: the history shuffle), timed, its shape checked.

    Raises:
        ValueError: a scorer whose array is not (users, 1 + negatives).
    """
    context = BaselineContext(cfg=cfg, train=load_split(data_dir, "train"),
                              items=load_items(data_dir),
                              embedding_dir=cfg.cache_path / "embeddings")
    began = time.perf_counter()
    matrix = np.asarray(find(name).score(frame, split, context), dtype=np.float64)
    expected = (len(frame), 1 + len(frame[NEGATIVES].iloc[0]))
    if matrix.shape != expected:
        raise ValueError(f"baseline {name!r} scored {split} as an array of shape "
                         f"{matrix.shape}; expected {expected} (users, 1 + negatives), "
                         f"the positive in column 0")
    return UserScores(frame[USER_ID].tolist(), candidate_ids(frame), matrix,
                      time.perf_counter() - began)


# A baseline is a system of kind "reference" in llmtrsr_utils.systems: a name, a label and a
# scorer (frame of one split's users, split name, context) -> (n_users, 1 + n_negatives) floats,
# the positive first. ``register`` adds one; ``--baselines package.module`` imports a module
# that registers one.
register = systems.baseline


def find(name: str) -> systems.System:
    """A reference scorer by name, or by the module path of a file that registers one
    (``--baselines package.module``).

    Raises:
        ValueError: an unknown name, or a system that is not a reference scorer.
    """
    system = systems.find(name)
    if system.kind != "reference" or system.score is None:
        raise ValueError(f"--baselines={name!r} is a {system.kind} system, not a reference "
                         f"scorer with a score function")
    return system


@register(systems.RANDOM)
def _random(frame: pd.DataFrame, split: str, context: BaselineContext) -> np.ndarray:
    return random_scores(frame, context.cfg.seed, split)


@register(systems.POPULARITY)
def _popularity(frame: pd.DataFrame, split: str, context: BaselineContext) -> np.ndarray:
    return popularity_scores(frame, popularity_counts(context.train))


@register(systems.EMBEDDING)
def _embedding(frame: pd.DataFrame, split: str, context: BaselineContext) -> np.ndarray:
    return embedding_scores(frame, *item_embeddings(context.items, "minilm-l6",
                                                    context.embedding_dir))
