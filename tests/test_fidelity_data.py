"""The data stage against the authors' preprocessing: negative_exclusion, Amazon-M2 item text
and Table 1's attribute count, on raw files written in the datasets' exact formats."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llmtrsr_utils.config import load_config
from llmtrsr_utils.datasets.base import DataFormatError
from llmtrsr_utils.datasets.splits import (
    SPLITS,
    check_candidates,
    load_items,
    load_split,
    prepare_dataset,
    read_manifest,
)
from llmtrsr_utils.datasets.stats import dataset_statistics, rendered_attribute_count


# --- the rule before data.negative_exclusion existed, copied verbatim: the default must draw
# --- exactly these negatives (same generator, same draws), so its files are unchanged.
def old_user_rng(seed: int, split: str, user_id: str) -> np.random.Generator:
    user_key = int.from_bytes(hashlib.sha256(user_id.encode()).digest()[:8], "big")
    return np.random.default_rng([seed, {"train": 1, "valid": 2, "test": 3}[split], user_key])


def old_sample_negatives(catalogue: np.ndarray, excluded: set[str], k: int,
                         rng: np.random.Generator) -> list[str]:
    chosen: list[str] = []
    seen = set(excluded)
    while len(chosen) < k:
        for index in rng.integers(0, len(catalogue), size=2 * (k - len(chosen)) + 4):
            item = str(catalogue[index])
            if item not in seen:
                seen.add(item)
                chosen.append(item)
                if len(chosen) == k:
                    break
    return chosen


def old_negatives(record: dict, split: str, catalogue: np.ndarray, seed: int, k: int,
                  impressions: list[str] | None) -> list[str]:
    rng = old_user_rng(seed, split, record["user_id"])
    excluded = {record["target"], *record["history"]}
    chosen: list[str] = []
    if impressions is not None:
        pool = list(dict.fromkeys(i for i in impressions if i not in excluded))
        chosen = [pool[i] for i in rng.permutation(len(pool))[:k]]
    if len(chosen) < k:
        chosen += old_sample_negatives(catalogue, excluded | set(chosen), k - len(chosen), rng)
    return chosen


def base_overrides(work_dir: Path, data_dir: Path, *extra: str) -> list[str]:
    return [f"work_dir={work_dir}", f"data.dir={data_dir}", *extra]


def write_generic(folder: Path, n_items: int = 10, n_users: int = 12,
                  length: int = 4) -> Path:
    """A tiny catalogue: with 5 negatives out of 10 items the positive is often drawn."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["item_id,title"] + [f"i{n},Thing {n}" for n in range(n_items)]
    (folder / "items.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    lines = ["user_id,item_id,timestamp"]
    for user in range(n_users):
        for step in range(length):
            lines.append(f"u{user:02d},i{(user * 3 + step) % n_items},{step}")
    (folder / "interactions.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def generic_config(tmp_path: Path, raw: Path, name: str, *extra: str):
    return load_config(None, base_overrides(
        tmp_path / name, raw, "data.name=generic", "data.min_history=2", "data.max_history=5",
        "data.n_train_users=4", "data.n_valid_users=4", "data.n_test_users=4",
        "data.train_negatives=1", "data.eval_negatives=5", *extra))


def test_default_exclusion_draws_the_old_negatives(tmp_path: Path, movielens_dir: Path) -> None:
    cfg = load_config(None, base_overrides(
        tmp_path / "w", movielens_dir, "data.n_train_users=12", "data.n_valid_users=5",
        "data.n_test_users=6", "data.history_policy=truncate"))
    assert cfg.data.negative_exclusion == "history_and_target"
    out = prepare_dataset(cfg)
    catalogue = load_items(out)["item_id"].to_numpy()
    for split in SPLITS:
        frame = load_split(out, split)
        k = 1 if split == "train" else 20
        for record in frame.to_dict("records"):
            assert record["negatives"] == old_negatives(record, split, catalogue, 42, k, None)
    counts = read_manifest(out)["counts"]
    assert not [name for name in counts if name.endswith("_among_negatives")]


def test_default_exclusion_draws_the_old_mind_impression_negatives(tmp_path: Path) -> None:
    raw = tmp_path / "MINDsmall_train"
    raw.mkdir()
    news = [f"N{n}\tnews\tsub{n % 3}\tTitle {n}\tAbstract {n}\thttps://x/{n}.html\t[]\t[]"
            for n in range(80)]
    (raw / "news.tsv").write_text("\n".join(news) + "\n", encoding="utf-8")
    behaviors = []
    for user in range(10):
        history = " ".join(f"N{(user + k) % 80}" for k in range(12))
        # Shown negatives include a history item (N{user}) that the default must skip.
        shown = " ".join([f"N{40 + user}-1", f"N{user}-0", *(f"N{50 + k}-0" for k in range(5))])
        behaviors.append(f"{user + 1}\tU{user}\t11/15/2019 8:55:22 AM\t{history}\t{shown}")
    (raw / "behaviors.tsv").write_text("\n".join(behaviors) + "\n", encoding="utf-8")
    for target_rule in ("history_last", "latest_impression_click"):
        cfg = load_config(None, base_overrides(
            tmp_path / target_rule, raw, "data.name=mind", "data.negative_source=impressions",
            f"data.mind_target={target_rule}", "data.n_train_users=4", "data.n_valid_users=3",
            "data.n_test_users=3"))
        out = prepare_dataset(cfg)
        catalogue = load_items(out)["item_id"].to_numpy()
        for split in SPLITS:
            k = 1 if split == "train" else 20
            for record in load_split(out, split).to_dict("records"):
                user = int(record["user_id"][1:])
                shown = [f"N{user}", *(f"N{50 + n}" for n in range(5))]
                assert record["negatives"] == old_negatives(record, split, catalogue, 42, k,
                                                            shown)
                assert f"N{user}" not in record["negatives"]


def test_exclusion_modes_on_a_tiny_catalogue(tmp_path: Path) -> None:
    raw = write_generic(tmp_path / "raw")
    frames = {}
    for mode in ("history_and_target", "target", "none"):
        out = prepare_dataset(generic_config(tmp_path, raw, mode,
                                             f"data.negative_exclusion={mode}"))
        # load_split accepts every mode's files, including "none" with its positive drawn.
        frames[mode] = {split: load_split(out, split) for split in SPLITS}
        counts = read_manifest(out)["counts"]
        for split, frame in frames[mode].items():
            target_drawn = sum(r.target in r.negatives for r in frame.itertuples())
            history_drawn = sum(bool(set(r.negatives) & set(r.history))
                                for r in frame.itertuples())
            for row in frame.itertuples():
                assert len(set(row.negatives)) == len(row.negatives)
                assert set(row.negatives) <= {f"i{n}" for n in range(10)}
            if mode == "history_and_target":
                assert target_drawn == history_drawn == 0
                assert f"{split}_users_target_among_negatives" not in counts
            else:
                assert counts[f"{split}_users_target_among_negatives"] == target_drawn
                assert counts[f"{split}_users_history_item_among_negatives"] == history_drawn
            if mode == "target":
                assert target_drawn == 0
    evaluated = [*frames["none"]["valid"].itertuples(), *frames["none"]["test"].itertuples()]
    assert any(row.target in row.negatives for row in evaluated)  # the authors' .sample()
    assert any(set(row.negatives) & set(row.history)
               for split in ("valid", "test") for row in frames["target"][split].itertuples())
    # The users and their targets do not depend on the exclusion rule.
    for split in SPLITS:
        assert (frames["none"][split][["user_id", "target"]]
                .equals(frames["history_and_target"][split][["user_id", "target"]]))


def test_target_among_negatives_refused_unless_drawn_with_exclusion_none(tmp_path: Path) -> None:
    raw = write_generic(tmp_path / "raw")
    none_out = prepare_dataset(generic_config(tmp_path, raw, "none",
                                              "data.negative_exclusion=none"))
    frame = load_split(none_out, "test")
    row = next(i for i, r in enumerate(frame.itertuples()) if r.target in r.negatives)
    with pytest.raises(DataFormatError) as caught:
        check_candidates(frame, "test.parquet")
    user, target, negatives = frame.loc[row, ["user_id", "target", "negatives"]]
    assert str(caught.value) == (
        "test.parquet: expected exactly one positive per candidate set (the target, not "
        f"repeated among the negatives); got record {row} (user {user!r}): target {target!r} "
        f"is also negative #{negatives.index(target) + 1}")
    check_candidates(frame, "test.parquet", allow_target_negative=True)

    for mode in ("history_and_target", "target"):
        out = prepare_dataset(generic_config(tmp_path, raw, mode,
                                             f"data.negative_exclusion={mode}"))
        edited = pd.read_parquet(out / "test.parquet")
        edited.at[0, "negatives"] = [edited.at[0, "target"], *list(edited.at[0, "negatives"])[1:]]
        edited.to_parquet(out / "test.parquet")
        with pytest.raises(DataFormatError, match=r"record 0 \(user 'u\d+'\): target 'i\d+' is "
                                                  r"also negative #1"):
            load_split(out, "test")


def fake_tokenizer(texts: list[str], add_special_tokens: bool = False) -> dict:
    return {"input_ids": [text.split() for text in texts]}


AMAZON_HEADER = "id,locale,title,price,brand,color,size,model,material,author,desc\n"


def write_amazon_m2(folder: Path, n_products: int = 30, n_sessions: int = 12) -> Path:
    """products_train.csv (each id in UK and DE) and sessions_train.csv, exact layout."""
    folder.mkdir(parents=True, exist_ok=True)
    ids = [f"B0{n:08d}" for n in range(n_products)]
    products = [AMAZON_HEADER]
    for n, item in enumerate(ids):
        products.append(f"{item},UK,\"Bath mat {n}, non slip\",{n + 0.99},Acme,Grey,50 x 80 cm,,"
                        f"Cotton,,\"Soft and\nabsorbent\"\n")
        products.append(f"{item},DE,Badematte {n},{n + 1.49},Acme,Grau,,,,,Weich\n")
    (folder / "products_train.csv").write_text("".join(products), encoding="utf-8")
    sessions = ["prev_items,next_item,locale\n"]
    for n in range(n_sessions):
        prev = " ".join(f"'{ids[(n + k) % n_products]}'" for k in range(3))
        sessions.append(f"\"[{prev}]\",{ids[(n + 5) % n_products]},UK\n")
    sessions.append(f"\"['{ids[0]}' '{ids[1]}' '{ids[2]}']\",{ids[3]},DE\n")
    (folder / "sessions_train.csv").write_text("".join(sessions), encoding="utf-8")
    return folder


@pytest.mark.parametrize("include_id, expected", [(False, 9), (True, 10)])
def test_amazon_m2_text_and_table1_attribute_count(tmp_path: Path, include_id: bool,
                                                   expected: int) -> None:
    raw = write_amazon_m2(tmp_path / "amazon-m2")
    cfg = load_config(None, base_overrides(
        tmp_path / "w", raw, "data.name=amazon-m2", "data.min_history=2",
        "data.n_train_users=4", "data.n_valid_users=3", "data.n_test_users=3",
        f"data.include_item_id={str(include_id).lower()}"))
    out = prepare_dataset(cfg)
    items = load_items(out)
    assert list(items["locale"].unique()) == ["UK"]
    first = items.iloc[0]["text"]
    prefix = "ID: B000000000; " if include_id else ""
    assert first == (f"{prefix}Title: Bath mat 0, non slip; Price: 0.99; Brand: Acme; "
                     "Color: Grey; Size: 50 x 80 cm; Material: Cotton; Description: Soft and "
                     "absorbent")
    assert all(text.startswith(f"{'ID: ' if include_id else 'Title: '}")
               and "Locale" not in text and "UK" not in text for text in items["text"])
    manifest = read_manifest(out)
    assert manifest["attributes"] == ["title", "price", "brand", "color", "size", "model",
                                      "material", "author", "desc"]
    assert rendered_attribute_count(manifest) == expected
    table = dataset_statistics(out, fake_tokenizer).table
    assert table.loc["# of different attributes", "amazon-m2"] == expected


def test_mind_table1_attribute_count_with_id_is_the_papers_four(tmp_path: Path) -> None:
    raw = tmp_path / "MINDlarge_train"
    raw.mkdir()
    news = [f"N{n}\tnews\tsub{n % 3}\tTitle {n}\tAbstract {n}\thttps://x/{n}.html\t[]\t[]"
            for n in range(60)]
    (raw / "news.tsv").write_text("\n".join(news) + "\n", encoding="utf-8")
    behaviors = [f"{u + 1}\tU{u}\t11/15/2019 8:55:22 AM\t"
                 f"{' '.join(f'N{(u + k) % 60}' for k in range(11))}\tN59-1 N58-0"
                 for u in range(10)]
    (raw / "behaviors.tsv").write_text("\n".join(behaviors) + "\n", encoding="utf-8")
    cfg = load_config(None, base_overrides(
        tmp_path / "w", raw, "data.name=mind", "data.include_item_id=true",
        "data.n_train_users=4", "data.n_valid_users=3", "data.n_test_users=3"))
    out = prepare_dataset(cfg)
    # history_last: History has 11 news, so the history is 10 and the target the 11th.
    test = load_split(out, "test")
    assert all(len(h) == 10 for h in test["history"])
    assert all(t == f"N{(int(u[1:]) + 10) % 60}" for u, t in zip(test["user_id"],
                                                                  test["target"], strict=True))
    assert load_items(out).iloc[0]["text"] == ("ID: N0; Category: news; SubCategory: sub0; "
                                               "Title: Title 0")
    assert dataset_statistics(out, fake_tokenizer).table.loc[
        "# of different attributes", "mind"] == 4
