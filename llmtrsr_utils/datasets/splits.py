"""The data stage: locate raw files, load, clean, split by user, draw negatives, write parquet.

Written once for every dataset so that the paper's protocol (section 5.1) is applied alike:
users with ``min_history``..``max_history`` history items, a split by user, 1 negative per
training user and 20 per validation/test user, distinct and drawn uniformly from the catalogue.
``data.negative_exclusion`` says what a negative may not be:

- ``history_and_target`` (default, the kit's rule): neither the positive nor a history item;
- ``target``: not the positive (history items may be drawn);
- ``none``: anything, as the authors' ``products['id'].sample(n=20, random_state=i)`` over the
  whole catalogue: the positive itself may be drawn, and such a split is accepted by
  :func:`load_split` (its manifest says so) while any other split holding its positive among the
  negatives is refused.

Negatives come from a generator seeded per (seed, split, user), so a user's candidates do not
change when other users are added or removed.

Outputs (``<work_dir>/data``): ``items.parquet`` (item_id, attributes, rendered ``text``),
``train/valid/test.parquet`` (user_id, history, target, negatives, full_history_length) and
``manifest.json`` (params, counts, sha256 of every file). Same seed and params give
byte-identical parquet files. The later stages read them through :func:`prepared_dir`, which
refuses a folder that is missing, incomplete or made with other data settings.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import llmtrsr_utils
from llmtrsr_utils.artifacts import (
    check_writable,
    provenance,
    sha256_of,
    write_json,
    write_parquet,
)
from llmtrsr_utils.config import (
    ADDED_KEYS,
    ENV_DATA_DIR,
    NEGATIVE_EXCLUSIONS,
    Config,
    ConfigError,
    DataConfig,
)
from llmtrsr_utils.datasets.base import (
    HISTORY,
    IMPRESSION_NEGATIVES,
    ITEM_ID,
    TARGET,
    USER_ID,
    DataFormatError,
    RawDataset,
)
from llmtrsr_utils.datasets.loaders import loader_module
from llmtrsr_utils.datasets.render import render_items

log = logging.getLogger("llmtrsr")

SPLITS = ("train", "valid", "test")
NEGATIVES = "negatives"
# History length before `truncate` kept the most recent max_history items (equal otherwise).
FULL_HISTORY_LENGTH = "full_history_length"
FORMAT_VERSION = 2  # bump when the files' layout or sampling changes (2: the window column)
# 0 for a user's own (history, target); j for a training window ending j items earlier
# (data.train_windows), whose user_id is "<user>#w<j>".
WINDOW = "window"
_FULL_HISTORY = "_full_history"  # the history before truncation, for the windows
_SPLIT_CODES = {"train": 1, "valid": 2, "test": 3}
# How the prepared data is made, named in DataMissingError.
PREPARE_COMMAND = ("run `llmtrsr data --params <your params>` "
                   "(or llmtrsr_utils.pipeline.ensure_splits)")


class DataNotFoundError(FileNotFoundError):
    """The raw files are neither configured, nor under $LLMTRSR_DATA_DIR, nor downloadable."""


class DataMissingError(FileNotFoundError):
    """The prepared data (``<work_dir>/data``) is missing, incomplete, or was made with other
    data settings: the stages that read it do not make it (see :func:`prepared_dir`)."""


def _holds(folder: Path, files: tuple[str, ...]) -> bool:
    return folder.is_dir() and all((folder / f).is_file() for f in files)


def locate_raw_dir(data: DataConfig, cache_dir: Path) -> Path:
    """Find the raw files: ``data.dir``, then ``$LLMTRSR_DATA_DIR``, then the download cache,
    then download (when ``data.download`` allows)."""
    module = loader_module(data.name)
    required: tuple[str, ...] = tuple(module.required_files(data)  # named by data.variant
                                      if hasattr(module, "required_files")
                                      else module.REQUIRED_FILES)
    looked: list[str] = []
    roots: list[Path] = []
    if data.dir:
        roots.append(Path(data.dir).expanduser())
    elif os.environ.get(ENV_DATA_DIR):
        roots.append(Path(os.environ[ENV_DATA_DIR]).expanduser())
    download_root = cache_dir / "data" / data.name
    roots.append(download_root)
    folder_names = (module.folder_names(data) if hasattr(module, "folder_names")
                    else module.FOLDER_NAMES)  # MIND orders its folders by data.variant
    for root in roots:
        for folder in (root, *(root / name for name in folder_names)):
            if _holds(folder, required):
                return folder
            looked.append(str(folder))
    if data.dir:
        raise DataNotFoundError(
            f"data.dir={data.dir}: no {', '.join(required)} there or in a subfolder named "
            f"{' or '.join(folder_names)}")
    if not data.download:
        raise DataNotFoundError(
            f"{data.name}: raw files {', '.join(required)} not found (looked in "
            f"{'; '.join(looked)}) and data.download is false; set data.dir or {ENV_DATA_DIR}")
    log.info("downloading %s into %s", data.name, download_root)
    folder = module.download(data, download_root)
    if not _holds(folder, required):
        raise DataNotFoundError(f"{folder}: download finished but {', '.join(required)} are "
                                f"not all there")
    return folder


def without_repeats(sequence: list[str], policy: str) -> list[str]:
    """A user's items, oldest first, under ``data.repeats``: ``keep`` them all,
    ``drop_consecutive`` (an item right after itself counts once) or ``drop_all`` (each item's
    first interaction only)."""
    if policy == "keep":
        return list(sequence)
    if policy == "drop_consecutive":
        return [item for i, item in enumerate(sequence) if i == 0 or item != sequence[i - 1]]
    if policy == "drop_all":
        return list(dict.fromkeys(sequence))
    raise ConfigError(f"data.repeats={policy!r}: expected keep, drop_consecutive or drop_all")


def clean_sequences(raw: RawDataset, data: DataConfig) -> tuple[pd.DataFrame, dict[str, int]]:
    """Apply the repeats rule, the missing-item policy and the history-length rule; count
    everything dropped."""
    catalogue = set(raw.items[ITEM_ID])
    counts = {"users_loaded": len(raw.sequences), "repeated_interactions_dropped": 0,
              "users_with_repeats": 0, "users_target_in_history": 0,
              "users_dropped_one_item_after_repeats": 0,
              "history_items_missing_from_catalogue": 0,
              "users_dropped_missing_history_item": 0, "users_dropped_missing_target": 0,
              "users_dropped_history_too_short": 0, "users_dropped_history_too_long": 0,
              "users_history_truncated": 0}
    rows = []
    for record in raw.sequences.to_dict("records"):
        sequence = [*record[HISTORY], record[TARGET]]
        kept = without_repeats(sequence, data.repeats)
        if len(set(sequence)) < len(sequence):
            counts["users_with_repeats"] += 1
            counts["repeated_interactions_dropped"] += len(sequence) - len(kept)
        if len(kept) < 2:
            counts["users_dropped_one_item_after_repeats"] += 1
            continue
        record[HISTORY], record[TARGET] = kept[:-1], kept[-1]
        counts["users_target_in_history"] += int(record[TARGET] in record[HISTORY])
        if record[TARGET] not in catalogue:
            if data.missing_item_policy == "error":
                raise DataFormatError(
                    ", ".join(raw.source_files) or raw.name, None,
                    "every target item in the items catalogue (data.missing_item_policy: "
                    "error; drop_item or drop_user drop the user and count it instead)",
                    f"user {record[USER_ID]!r}: target item {record[TARGET]!r} is not in the "
                    f"catalogue")
            counts["users_dropped_missing_target"] += 1
            continue
        history = list(record[HISTORY])
        present = [item for item in history if item in catalogue]
        missing = len(history) - len(present)
        if missing:
            if data.missing_item_policy == "error":
                item = next(i for i in history if i not in catalogue)
                raise DataFormatError(
                    ", ".join(raw.source_files) or raw.name, None,
                    "every history item in the items catalogue (data.missing_item_policy: "
                    "error; drop_item or drop_user drop and count it instead)",
                    f"user {record[USER_ID]!r}: history item {item!r} is not in the catalogue")
            counts["history_items_missing_from_catalogue"] += missing
            if data.missing_item_policy == "drop_user":
                counts["users_dropped_missing_history_item"] += 1
                continue
            history = present
        if len(history) < data.min_history:
            counts["users_dropped_history_too_short"] += 1
            continue
        record[FULL_HISTORY_LENGTH] = len(history)
        record[_FULL_HISTORY] = history
        if len(history) > data.max_history:
            if data.history_policy == "filter":
                counts["users_dropped_history_too_long"] += 1
                continue
            history = history[-data.max_history:]
            counts["users_history_truncated"] += 1
        record[HISTORY] = history
        rows.append(record)
    counts["users_kept"] = len(rows)
    columns = [*raw.sequences.columns, FULL_HISTORY_LENGTH, _FULL_HISTORY]
    return pd.DataFrame(rows, columns=columns), counts


def training_windows(frame: pd.DataFrame, data: DataConfig, counts: dict[str, int]
                     ) -> pd.DataFrame:
    """Each training user's own row (window 0), then up to ``data.train_windows - 1`` earlier
    windows: window j's target is the item j places before the user's target, its history the
    items before that (the most recent ``max_history`` with ``history_policy: truncate``), kept
    while it has at least ``min_history`` items. Counted in the manifest."""
    rows = []
    counts["train_window_rows"] = 0
    counts["train_windows_too_short"] = 0
    for record in frame.to_dict("records"):
        rows.append({**record, WINDOW: 0})
        sequence = [*record[_FULL_HISTORY], record[TARGET]]
        for j in range(1, data.train_windows):
            end = len(sequence) - 1 - j  # this window's target
            history = sequence[:end]
            if data.history_policy == "truncate":
                history = history[-data.max_history:]
            if len(history) < data.min_history:
                counts["train_windows_too_short"] += 1
                break
            rows.append({USER_ID: f"{record[USER_ID]}#w{j}", HISTORY: history,
                         TARGET: sequence[end], FULL_HISTORY_LENGTH: end,
                         _FULL_HISTORY: sequence[:end], WINDOW: j})
            counts["train_window_rows"] += 1
    return pd.DataFrame(rows)


def assign_users(users: list[str], cfg: Config, source: str = "params") -> dict[str, list[str]]:
    """Split users at random (seeded). Test is drawn first, then valid, then train, so
    growing the training set never changes who is in the test set."""
    data = cfg.data
    wanted = {"test": data.n_test_users, "valid": data.n_valid_users, "train": data.n_train_users}
    total = sum(wanted.values())
    if total > len(users):
        raise ConfigError(
            f"{source}: data.n_train_users + data.n_valid_users + data.n_test_users = "
            f"{data.n_train_users} + {data.n_valid_users} + {data.n_test_users} = {total}, but "
            f"only {len(users)} users of {data.name} remain after filtering (history "
            f"{data.min_history}..{data.max_history}, policy {data.history_policy})")
    order = np.random.default_rng(cfg.seed).permutation(len(users))
    ordered = [sorted(users)[i] for i in order]
    out, start = {}, 0
    for split in ("test", "valid", "train"):
        out[split] = sorted(ordered[start:start + wanted[split]])
        start += wanted[split]
    return out


def user_rng(seed: int, split: str, user_id: str) -> np.random.Generator:
    """A generator that depends only on (seed, split, user): candidates are stable per user."""
    user_key = int.from_bytes(hashlib.sha256(user_id.encode()).digest()[:8], "big")
    return np.random.default_rng([seed, _SPLIT_CODES[split], user_key])


def derangement(user_ids: list[str], seed: int) -> dict[str, str]:
    """Each user -> another user, no one kept (one random cycle through every user, seeded):
    whose history each user is given in the history shuffle.

    Raises:
        ValueError: fewer than two users.
    """
    if len(user_ids) < 2:
        raise ValueError(f"a history shuffle needs at least 2 users; got {len(user_ids)}")
    order = np.random.default_rng([seed, _SHUFFLE_STREAM]).permutation(len(user_ids))
    return {user_ids[order[i]]: user_ids[order[(i + 1) % len(order)]] for i in range(len(order))}


_SHUFFLE_STREAM = 0x5A1F  # mixed into the seed: the shuffle never reuses the negatives' stream


def with_donor_histories(frame: pd.DataFrame, donors: dict[str, str]) -> pd.DataFrame:
    """``frame`` (one row per user) with each user's history replaced by ``donors[user]``'s;
    targets and negatives stay the user's own.

    Raises:
        ValueError: a user with more than one row (training windows).
    """
    if frame[USER_ID].duplicated().any():
        raise ValueError("the history shuffle needs one row per user (no training windows)")
    histories = dict(zip(frame[USER_ID], frame[HISTORY], strict=True))
    return frame.assign(**{HISTORY: [histories[donors[u]] for u in frame[USER_ID]]})


def sample_negatives(catalogue: np.ndarray, excluded: set[str], k: int,
                     rng: np.random.Generator) -> list[str]:
    """k distinct items drawn uniformly from ``catalogue`` minus ``excluded`` (rejection sampling,
    so a user costs O(k) and not O(catalogue))."""
    if len(catalogue) - len(excluded) < k:  # cleaned histories hold catalogue items only
        raise ValueError(f"cannot draw {k} negatives from a catalogue of {len(catalogue)} items "
                         f"excluding {len(excluded)}")
    chosen: list[str] = []
    seen = set(excluded)
    attempts = 0
    while len(chosen) < k:
        attempts += 1
        if attempts > 1000:
            raise ValueError(f"cannot draw {k} distinct negatives from a catalogue of "
                             f"{len(catalogue)} items excluding {len(excluded)}")
        for index in rng.integers(0, len(catalogue), size=2 * (k - len(chosen)) + 4):
            item = str(catalogue[index])
            if item not in seen:
                seen.add(item)
                chosen.append(item)
                if len(chosen) == k:
                    break
    return chosen


def excluded_items(record: dict[str, Any], negative_exclusion: str) -> set[str]:
    """What a negative of this user may not be under ``data.negative_exclusion``."""
    if negative_exclusion == "history_and_target":
        return {record[TARGET], *record[HISTORY]}
    if negative_exclusion == "target":
        return {record[TARGET]}
    if negative_exclusion == "none":
        return set()
    raise ConfigError(f"data.negative_exclusion={negative_exclusion!r}: expected one of "
                      f"{', '.join(NEGATIVE_EXCLUSIONS)}")


def draw_negatives(frame: pd.DataFrame, split: str, catalogue: np.ndarray, cfg: Config,
                   counts: dict[str, int]) -> list[list[str]]:
    """Each user's negatives: from MIND's impressions first when asked, then the catalogue.

    Args:
        frame: one split's users (user_id, history, target, optional impression_negatives).
        split: "train", "valid" or "test" (selects k and seeds the generator).
        catalogue: every item id, sorted.
        cfg: the config (seed, data.*_negatives, negative_source, negative_exclusion).
        counts: updated with the split's top-up count and, when the exclusion rule lets the
            positive or history items be drawn, how many users got them.

    Returns:
        One list of k distinct item ids per user, in frame order.
    """
    data = cfg.data
    k = data.train_negatives if split == "train" else data.eval_negatives
    negatives = []
    for record in frame.to_dict("records"):
        rng = user_rng(cfg.seed, split, record[USER_ID])
        excluded = excluded_items(record, data.negative_exclusion)
        chosen: list[str] = []
        if data.negative_source == "impressions":
            pool = [i for i in record.get(IMPRESSION_NEGATIVES) or [] if i not in excluded]
            pool = list(dict.fromkeys(pool))
            chosen = [pool[i] for i in rng.permutation(len(pool))[:k]]
            if len(chosen) < k:
                counts[f"{split}_users_negatives_topped_up_from_catalogue"] += 1
        if len(chosen) < k:
            if len(catalogue) - len(excluded | set(chosen)) < k - len(chosen):
                key = "train_negatives" if split == "train" else "eval_negatives"
                raise ConfigError(
                    f"data.{key}: {k} negatives per {split} user, but the items catalogue of "
                    f"{data.name} holds {len(catalogue)} items and user {record[USER_ID]!r} "
                    f"may not be given {len(excluded)} of them (data.negative_exclusion: "
                    f"{data.negative_exclusion}); lower data.{key} or use a larger catalogue")
            chosen += sample_negatives(catalogue, excluded | set(chosen), k - len(chosen), rng)
        if data.negative_exclusion != "history_and_target":
            for key, drawn in (("target", record[TARGET] in chosen),
                               ("history_item", bool(set(chosen) & set(record[HISTORY])))):
                name = f"{split}_users_{key}_among_negatives"
                counts[name] = counts.get(name, 0) + int(drawn)
        negatives.append(chosen)
    return negatives


def data_fingerprint(cfg: Config) -> str:
    data = {k: v for k, v in asdict(cfg.data).items()  # a key added later, at its default,
            if f"data.{k}" not in ADDED_KEYS or ADDED_KEYS[f"data.{k}"] != v}  # keeps splits
    payload = {"seed": cfg.seed, "data": data, "format_version": FORMAT_VERSION}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def read_manifest(out_dir: Path) -> dict[str, Any] | None:
    path = Path(out_dir) / "manifest.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def is_complete(out_dir: Path, cfg: Config) -> bool:
    """True when out_dir holds this config's splits, every file intact (hash checked)."""
    manifest = read_manifest(out_dir)
    if not manifest or manifest.get("fingerprint") != data_fingerprint(cfg):
        return False
    for name, info in manifest["files"].items():
        path = Path(out_dir) / name
        if not path.is_file() or sha256_of(path) != info["sha256"]:
            return False
    return True


def prepared_dir(cfg: Config) -> Path:
    """The prepared data folder (``cfg.data_output_dir``) when it holds these data settings'
    splits, every file intact (:func:`is_complete`, the check :func:`prepare_dataset` makes
    before reusing it). The stages that read the splits call this; they never make them.

    Raises:
        DataMissingError: the folder is missing, incomplete, or was made with other data
            settings; the message names the folder and the command that makes it.
    """
    out_dir = cfg.data_output_dir
    if is_complete(out_dir, cfg):
        return out_dir
    manifest = read_manifest(out_dir)
    if manifest is None:
        why = "no prepared data (no manifest.json)"
    elif manifest.get("fingerprint") != data_fingerprint(cfg):
        why = "data prepared with other settings (seed or data.*)"
    else:
        why = "prepared data with a missing or modified file"
    raise DataMissingError(f"{out_dir}: {why} for data.name={cfg.data.name}; {PREPARE_COMMAND} "
                           "to prepare it")


def prepare_dataset(cfg: Config, *, force: bool = False) -> Path:
    """Run the data stage into ``<work_dir>/data`` unless it already holds this config's result.

    Under a multi-process launch (torchrun / accelerate launch: ``WORLD_SIZE`` > 1) the main
    process prepares the splits while the others wait, then they read its files (otherwise
    every process would write the same files at once, and one could read a manifest another
    had just removed).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from llmtrsr_utils.environment import process_state

        state = process_state()
        with state.main_process_first():
            return _prepare_dataset(cfg, force=force)
    return _prepare_dataset(cfg, force=force)


def _prepare_dataset(cfg: Config, *, force: bool) -> Path:
    out_dir = cfg.data_output_dir
    if not force and is_complete(out_dir, cfg):
        log.info("data: %s already holds these splits; reusing them", out_dir)
        return out_dir
    check_writable(out_dir)
    module = loader_module(cfg.data.name)
    raw_dir = locate_raw_dir(cfg.data, cfg.cache_path)
    raw = module.load(cfg.data, raw_dir)
    attributes = list(cfg.data.attributes or raw.attributes)

    items = raw.items.sort_values(ITEM_ID, kind="stable").reset_index(drop=True)
    items["text"] = render_items(items, attributes, cfg.data.include_item_id)
    sequences, counts = clean_sequences(raw, cfg.data)
    assignment = assign_users(sequences[USER_ID].tolist(), cfg)
    catalogue = items[ITEM_ID].to_numpy()
    for split in SPLITS:
        counts[f"{split}_users_negatives_topped_up_from_catalogue"] = 0
        if cfg.data.negative_exclusion != "history_and_target":  # the default cannot draw them
            counts[f"{split}_users_target_among_negatives"] = 0
            counts[f"{split}_users_history_item_among_negatives"] = 0

    by_user = sequences.set_index(USER_ID, drop=False)
    files: dict[str, dict[str, Any]] = {}
    # Remove the old manifest first: a crash below must not leave old hashes describing new files.
    (out_dir / "manifest.json").unlink(missing_ok=True)
    for split in SPLITS:
        frame = by_user.loc[assignment[split]].reset_index(drop=True)
        if split == "train":
            frame = training_windows(frame, cfg.data, counts)
        else:
            frame[WINDOW] = 0
        frame[NEGATIVES] = draw_negatives(frame, split, catalogue, cfg, counts)
        frame = frame[[USER_ID, HISTORY, TARGET, NEGATIVES, FULL_HISTORY_LENGTH, WINDOW]]
        path = write_parquet(frame, out_dir / f"{split}.parquet")
        files[path.name] = {"sha256": sha256_of(path), "rows": len(frame)}
    path = write_parquet(items, out_dir / "items.parquet")
    files[path.name] = {"sha256": sha256_of(path), "rows": len(items)}

    manifest = {
        "kit_version": llmtrsr_utils.__version__,
        "format_version": FORMAT_VERSION,
        "fingerprint": data_fingerprint(cfg),
        "dataset": cfg.data.name,
        "domain": raw.domain,
        "attributes": attributes,
        **provenance({"seed": cfg.seed, "data": asdict(cfg.data)}),
        "raw_dir": str(raw_dir),
        "source_files": raw.source_files,
        "counts": {**raw.counts, **counts},
        "files": files,
    }
    write_json(manifest, out_dir / "manifest.json")
    log.info("data: wrote %s (%s)", out_dir,
             ", ".join(f"{name} {info['rows']} rows" for name, info in files.items()))
    return out_dir


def negative_exclusion_of(out_dir: Path) -> str:
    """The ``data.negative_exclusion`` a prepared split was drawn with, from its manifest.

    A missing manifest, or one without the key, means the default rule.
    """
    manifest = read_manifest(out_dir) or {}
    data = manifest.get("params", {}).get("data", {})
    return str(data.get("negative_exclusion", NEGATIVE_EXCLUSIONS[0]))


def load_split(out_dir: Path, split: str, *, windows: bool = False) -> pd.DataFrame:
    """One split's users (user_id, history, target, negatives, ...), checked.

    ``windows``: also the earlier training windows (``data.train_windows``), which only the
    recommender's training and its summaries use; everything else (baselines, statistics) reads
    each user once.
    """
    path = Path(out_dir) / f"{split}.parquet"
    frame = pd.read_parquet(path)
    if not windows and WINDOW in frame.columns:
        frame = frame[frame[WINDOW] == 0].reset_index(drop=True)
    for column in (HISTORY, NEGATIVES):
        frame[column] = frame[column].map(list)
    check_candidates(frame, path,
                     allow_target_negative=negative_exclusion_of(out_dir) == "none")
    return frame


def check_candidates(frame: pd.DataFrame, path: Path | str, *,
                     allow_target_negative: bool = False) -> None:
    """Every user's candidates must hold exactly one positive: the target, absent from its
    negatives, which are distinct. A split edited by hand (or by another tool) that breaks this
    would make every metric wrong, so it is refused, naming the record.

    Args:
        frame: a split (user_id, target, negatives).
        path: the file it came from, named in errors.
        allow_target_negative: accept the target among the negatives: only for a split drawn
            with ``data.negative_exclusion: none`` (the authors' sampling), where it may happen.
    """
    for row, (user, target, negatives) in enumerate(zip(frame[USER_ID], frame[TARGET],
                                                         frame[NEGATIVES], strict=True)):
        if target in negatives and not allow_target_negative:
            raise DataFormatError(path, None, "exactly one positive per candidate set (the "
                                  "target, not repeated among the negatives)",
                                  f"record {row} (user {user!r}): target {target!r} is also "
                                  f"negative #{negatives.index(target) + 1}")
        if len(set(negatives)) != len(negatives):
            raise DataFormatError(path, None, "distinct negatives per candidate set",
                                  f"record {row} (user {user!r}): a negative appears twice")
        if not negatives:
            raise DataFormatError(path, None, "at least one negative per candidate set",
                                  f"record {row} (user {user!r}): none")


def load_items(out_dir: Path) -> pd.DataFrame:
    return pd.read_parquet(Path(out_dir) / "items.parquet")
