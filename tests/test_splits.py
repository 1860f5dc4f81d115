from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from llmtrsr_utils.artifacts import sha256_of
from llmtrsr_utils.config import ConfigError, load_config
from llmtrsr_utils.datasets.splits import (
    SPLITS,
    DataNotFoundError,
    load_split,
    locate_raw_dir,
    prepare_dataset,
    read_manifest,
)
from tests.conftest import smoke_config


def config(work_dir, data_dir, *extra):
    return load_config(None, [f"work_dir={work_dir}", f"data.dir={data_dir}",
                              "data.n_train_users=12", "data.n_valid_users=5",
                              "data.n_test_users=6", "data.history_policy=truncate", *extra])


def parquet_hashes(out_dir):
    return {p.name: sha256_of(p) for p in sorted(out_dir.glob("*.parquet"))}


def test_same_seed_gives_byte_identical_files(tmp_path, movielens_dir):
    first = prepare_dataset(config(tmp_path / "a", movielens_dir))
    second = prepare_dataset(config(tmp_path / "b", movielens_dir))
    hashes = parquet_hashes(first)
    assert set(hashes) == {"items.parquet", "train.parquet", "valid.parquet", "test.parquet"}
    assert hashes == parquet_hashes(second)
    manifest = read_manifest(first)
    assert {n: f["sha256"] for n, f in manifest["files"].items()} == hashes
    other = prepare_dataset(config(tmp_path / "c", movielens_dir, "seed=1"))
    assert parquet_hashes(other)["test.parquet"] != hashes["test.parquet"]


def test_negatives_exclude_positive_and_history(tmp_path, movielens_dir):
    out = prepare_dataset(config(tmp_path, movielens_dir))
    items = set(pd.read_parquet(out / "items.parquet")["item_id"])
    for split, k in (("train", 1), ("valid", 20), ("test", 20)):
        frame = load_split(out, split)
        for row in frame.itertuples():
            assert len(row.negatives) == k == len(set(row.negatives))
            assert row.target not in row.negatives
            assert not set(row.negatives) & set(row.history)
            assert set(row.negatives) <= items


def test_split_sizes_disjoint_users_and_stable_test_set(tmp_path, movielens_dir):
    out = prepare_dataset(config(tmp_path / "a", movielens_dir, "data.max_history=12"))
    users = {split: set(load_split(out, split)["user_id"]) for split in SPLITS}
    assert [len(users[s]) for s in SPLITS] == [12, 5, 6]
    assert not (users["train"] & users["valid"] or users["train"] & users["test"]
                or users["valid"] & users["test"])
    # A smaller training set leaves the test users and their candidates untouched.
    smaller = prepare_dataset(config(tmp_path / "b", movielens_dir, "data.max_history=12",
                                     "data.n_train_users=3"))
    assert parquet_hashes(smaller)["test.parquet"] == parquet_hashes(out)["test.parquet"]
    manifest = read_manifest(out)
    assert manifest["params"]["seed"] == 42
    assert manifest["params"]["data"]["n_test_users"] == 6
    # What made it: versions and the kit's commit, like every other record (one helper).
    assert manifest["library_versions"]["pandas"] and "git_commit" in manifest
    assert manifest["counts"]["users_history_truncated"] == 30  # 15 history items, cap 12
    assert all(len(h) == 12 for h in load_split(out, "test")["history"])


def test_too_many_users_requested(tmp_path, movielens_dir):
    with pytest.raises(ConfigError, match=r"= 41, but only 30 users of movielens remain"):
        prepare_dataset(config(tmp_path, movielens_dir, "data.n_train_users=30"))


def test_filter_policy_drops_long_histories(tmp_path, movielens_dir):
    cfg = config(tmp_path, movielens_dir, "data.history_policy=filter", "data.max_history=14",
                 "data.n_train_users=1", "data.n_valid_users=1", "data.n_test_users=1")
    with pytest.raises(ConfigError, match="only 0 users"):
        prepare_dataset(cfg)


def write_generic(folder, missing_in_history: bool):
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["item_id,title,color"] + [f"i{n},Thing {n},red" for n in range(60)]
    (folder / "items.csv").write_text("\n".join(rows) + "\n")
    lines = ["user_id,item_id,timestamp"]
    for user in range(8):
        for step in range(12):
            item = "ghost" if (missing_in_history and user == 0 and step == 2) else \
                f"i{(user * 7 + step) % 60}"
            lines.append(f"u{user},{item},{step}")
    (folder / "interactions.csv").write_text("\n".join(lines) + "\n")
    return folder


@pytest.mark.parametrize("policy, users_left", [("drop_item", 8), ("drop_user", 7)])
def test_missing_history_items_follow_the_policy(tmp_path, policy, users_left):
    raw = write_generic(tmp_path / "raw", missing_in_history=True)
    cfg = load_config(None, [f"work_dir={tmp_path / 'w'}", f"data.dir={raw}",
                             "data.name=generic", "data.min_history=5",
                             f"data.missing_item_policy={policy}", "data.n_train_users=2",
                             "data.n_valid_users=2", "data.n_test_users=2"])
    manifest = read_manifest(prepare_dataset(cfg))
    assert manifest["counts"]["history_items_missing_from_catalogue"] == 1
    assert manifest["counts"]["users_kept"] == users_left
    assert manifest["attributes"] == ["title", "color"]


def test_reuse_and_rebuild_after_corruption(tmp_path, movielens_dir):
    cfg = config(tmp_path, movielens_dir)
    out = prepare_dataset(cfg)
    stamp = os.stat(out / "test.parquet").st_mtime_ns
    prepare_dataset(cfg)
    assert os.stat(out / "test.parquet").st_mtime_ns == stamp  # reused, not rewritten
    (out / "test.parquet").write_bytes(b"truncated")
    prepare_dataset(cfg)
    assert sha256_of(out / "test.parquet") == read_manifest(out)["files"]["test.parquet"]["sha256"]


def test_locate_raw_dir_sources(tmp_path, movielens_dir, monkeypatch):
    cfg = config(tmp_path, movielens_dir)
    assert locate_raw_dir(cfg.data, tmp_path / "cache") == movielens_dir
    monkeypatch.setenv("LLMTRSR_DATA_DIR", str(movielens_dir.parent))
    from_env = load_config(None, ["data.download=false"])
    assert locate_raw_dir(from_env.data, tmp_path / "cache") == movielens_dir
    monkeypatch.setenv("LLMTRSR_DATA_DIR", str(tmp_path / "empty"))
    with pytest.raises(DataNotFoundError, match="data.download is false; set data.dir"):
        locate_raw_dir(from_env.data, tmp_path / "cache")
    with pytest.raises(DataNotFoundError, match="no ratings.csv, movies.csv, tags.csv there"):
        locate_raw_dir(load_config(None, [f"data.dir={tmp_path}"]).data, tmp_path / "cache")


def test_mind_impression_negatives(tmp_path):
    raw = tmp_path / "MINDsmall_train"
    raw.mkdir()
    news = [f"N{n}\tnews\tsub{n % 3}\tTitle {n}\tAbstract {n}\thttps://x/{n}.html\t[]\t[]"
            for n in range(80)]
    (raw / "news.tsv").write_text("\n".join(news) + "\n")
    behaviors = []
    for user in range(10):
        history = " ".join(f"N{(user + k) % 80}" for k in range(12))
        shown = " ".join([f"N{40 + user}-1", *(f"N{50 + k}-0" for k in range(5))])
        behaviors.append(f"{user + 1}\tU{user}\t11/15/2019 8:55:22 AM\t{history}\t{shown}")
    (raw / "behaviors.tsv").write_text("\n".join(behaviors) + "\n")
    cfg = load_config(None, [f"work_dir={tmp_path / 'w'}", f"data.dir={raw}", "data.name=mind",
                             "data.negative_source=impressions", "data.n_train_users=4",
                             "data.n_valid_users=3", "data.n_test_users=3"])
    out = prepare_dataset(cfg)
    train = load_split(out, "train")
    shown_negatives = {f"N{50 + k}" for k in range(5)}
    assert all(set(row.negatives) <= shown_negatives for row in train.itertuples())
    test = load_split(out, "test")
    # Five shown negatives, 20 wanted: the rest comes from the catalogue, counted.
    assert all(shown_negatives <= set(row.negatives) for row in test.itertuples())
    counts = read_manifest(out)["counts"]
    assert counts["test_users_negatives_topped_up_from_catalogue"] == 3
    assert json.loads((out / "manifest.json").read_text())["domain"] == "news"


def test_training_windows_add_earlier_targets_of_training_users_only(tmp_path, movielens_dir):
    from llmtrsr_utils.datasets.splits import WINDOW

    cfg = smoke_config(tmp_path, movielens_dir, "data.train_windows=3", "data.train_negatives=2")
    data_dir = prepare_dataset(cfg)
    train = load_split(data_dir, "train", windows=True)
    users = load_split(data_dir, "train")
    assert len(users) == 6 and (users[WINDOW] == 0).all()
    assert len(train) == 18 and sorted(train[WINDOW].unique()) == [0, 1, 2]
    for window in train[train[WINDOW] > 0].to_dict("records"):
        user, _, j = window["user_id"].partition("#w")
        own = users.set_index("user_id").loc[user]
        sequence_end = [*own["history"], own["target"]]
        # Window j's target is the item j places before the user's target; with
        # history_policy truncate its history is the max_history items before it.
        assert window["target"] == sequence_end[-1 - int(j)]
        assert len(window["history"]) == cfg.data.max_history
        assert len(window["negatives"]) == 2 and window["target"] not in window["negatives"]
        assert not set(window["negatives"]) & set(window["history"])
    for split in ("valid", "test"):
        assert (load_split(data_dir, split, windows=True)[WINDOW] == 0).all()
    manifest = read_manifest(data_dir)
    assert manifest["counts"]["train_window_rows"] == 12


@pytest.mark.parametrize(("policy", "history", "target", "dropped"), [
    ("keep", ["i1", "i2", "i2", "i3"], "i1", 0),
    ("drop_consecutive", ["i1", "i2", "i3"], "i1", 1),
    ("drop_all", ["i1", "i2"], "i3", 2),
])
def test_repeated_interactions_follow_data_repeats_and_are_counted(tmp_path, policy, history,
                                                                   target, dropped):
    """Issue 23: repeated rows were kept silently, so a target could also sit in the history
    (TALLRec's prompt shows it). keep is the default (stated in the config); both drops apply
    to the whole sequence, target included; the manifest counts what each did."""
    from llmtrsr_utils.config import DataConfig
    from llmtrsr_utils.datasets.loaders import generic
    from llmtrsr_utils.datasets.splits import clean_sequences
    from tests.test_loaders_generic import write_generic

    assert DataConfig().repeats == "keep"
    root = write_generic(tmp_path / "g", interactions=(
        "user_id,item_id,timestamp\n"
        "u1,i1,1\nu1,i2,2\nu1,i2,3\nu1,i3,4\nu1,i1,5\n"    # i2 twice in a row, i1 again last
        "u2,i4,1\nu2,i4,2\n"))                           # one item, twice
    data = DataConfig(name="generic", min_history=1, max_history=10, repeats=policy)
    frame, counts = clean_sequences(generic.load(data, root), data)
    u1 = frame.set_index("user_id").loc["u1"]
    assert list(u1["history"]) == history and u1["target"] == target
    assert counts["users_with_repeats"] == 2
    assert counts["repeated_interactions_dropped"] == dropped + (0 if policy == "keep" else 1)
    assert counts["users_dropped_one_item_after_repeats"] == (0 if policy == "keep" else 1)
    assert counts["users_target_in_history"] == (2 if policy == "keep" else
                                                 1 if policy == "drop_consecutive" else 0)
    with pytest.raises(ConfigError, match="data.repeats"):
        load_config(None, ["data.repeats=drop"])
