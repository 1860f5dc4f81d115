"""RecBole atomic files (<name>.inter, <name>.item) written here in the exact format."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from llmtrsr_utils.config import ConfigError, DataConfig
from llmtrsr_utils.datasets.base import DataFormatError
from llmtrsr_utils.datasets.loaders import recbole

ROOT = Path(__file__).resolve().parents[1]

ITEM = (
    "item_id:token\tmovie_title:token_seq\trelease_year:token\tgenre:token_seq\tprice:float\n"
    "1\tToy  Story\t1995\tAnimation Children's Comedy\t3.5\n"
    "2\tJumanji\t1995\tAdventure Children's Fantasy\t2\n"
    "3\t\t\t\t1\n"                                          # an item without text
    "4\tHeat\t1995\tAction Crime Thriller\t4\n"
)
INTER = (
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    "u1\t2\t4\t20\n"
    "u1\t1\t5\t10\n"
    "u1\t4\t1\t15\n"     # below min_rating 2 when asked
    "u1\t3\t3\t30\n"
    "u2\t4\t5\t7\n"       # one interaction: no sequence
)


def write(folder: Path, name: str = "toy", item: str = ITEM, inter: str = INTER) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.item").write_text(item, encoding="utf-8")
    (folder / f"{name}.inter").write_text(inter, encoding="utf-8")
    return folder


def test_atomic_files_load_in_canonical_form(tmp_path):
    raw = recbole.load(DataConfig(name="recbole", variant="toy"), write(tmp_path))
    # token_seq fields are rendered as their tokens; float fields are not text by default.
    assert raw.attributes == ["movie_title", "release_year", "genre"]
    first = raw.items.set_index("item_id").loc["1"]
    assert first["movie_title"] == "Toy Story" and first["price"] == "3.5"
    assert raw.counts["items_without_text"] == 1 and raw.counts["items_read"] == 4
    # Ordered by timestamp, not file order; the last is the target.
    assert raw.sequences.to_dict("records") == [
        {"user_id": "u1", "history": ["1", "4", "2"], "target": "3"}]
    assert raw.counts["users_with_one_interaction"] == 1
    assert set(raw.source_files) == {"toy.item", "toy.inter"}


def test_rating_filter_and_missing_timestamp(tmp_path):
    raw = recbole.load(DataConfig(name="recbole", variant="toy", min_rating=2.0),
                       write(tmp_path / "a"))
    assert raw.sequences["history"].iloc[0] == ["1", "2"]
    assert raw.counts["interactions_below_min_rating"] == 1
    # No timestamp field: the file's order is the sequence, as RecBole reads it.
    untimed = "user_id:token\titem_id:token\n" + "".join(
        f"{u}\t{i}\n" for u, i in [("u1", "2"), ("u1", "1"), ("u1", "4"), ("u2", "1"),
                                   ("u2", "3")])
    raw = recbole.load(DataConfig(name="recbole", variant="toy"),
                       write(tmp_path / "b", inter=untimed))
    assert raw.sequences["history"].tolist() == [["2", "1"], ["1"]]
    assert raw.sequences["target"].tolist() == ["4", "3"]
    assert raw.counts["interactions_ordered_by"] == "file order"


@pytest.mark.parametrize("item, inter, line, expected", [
    ("item_id:token\ttitle:text\n1\tx\n", INTER, 1, "type one of token"),
    ("item_id\ttitle:token_seq\n1\tx\n", INTER, 1, "name:type"),
    ("id:token\ttitle:token_seq\n1\tx\n", INTER, 1, "a field item_id:token"),
    (ITEM, "user_id:token\titem_id:token\ttimestamp:float\nu1\t1\tyesterday\n", 2,
     "a number in column 'timestamp'"),
    (ITEM, "user_id:token\titem_id:token\nu1\t1\t9\n", 2, "2 tab-separated fields"),
    (ITEM, "user_id:token\titem_id:token\n\t1\n", 2, "a non-empty value in column 'user_id'"),
])
def test_bad_files_are_named_with_line(tmp_path, item, inter, line, expected):
    with pytest.raises(DataFormatError, match=expected) as caught:
        recbole.load(DataConfig(name="recbole", variant="toy"),
                     write(tmp_path, item=item, inter=inter))
    assert caught.value.line == line and caught.value.path.endswith((".item", ".inter"))


def test_the_dataset_name_is_required():
    with pytest.raises(ConfigError, match="data.variant"):
        recbole.required_files(DataConfig(name="recbole"))


def test_llmtrsr_data_reads_a_recbole_folder(tmp_path):
    """Through the command line as a user would: data.name recbole, data.variant its name,
    data.attributes choosing the item text."""
    users = [f"u{n:02d}" for n in range(14)]
    items = "item_id:token\ttitle:token_seq\tgenre:token_seq\tprice:float\n" + "".join(
        f"{i}\tFilm number {i}\t{'Drama' if i % 2 else 'Comedy'}\t{i}.5\n" for i in range(40))
    inter = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + "".join(
        f"{u}\t{(n * 7 + k) % 40}\t4\t{k}\n" for n, u in enumerate(users) for k in range(12))
    folder = write(tmp_path / "raw" / "toy-movies", name="toy-movies", item=items, inter=inter)
    work = tmp_path / "work"
    done = subprocess.run(
        [sys.executable, "-m", "llmtrsr_utils.cli", "data", "--params",
         str(ROOT / "params" / "smoke.yaml"), "--set", f"work_dir={work}",
         "--set", "data.name=recbole", "--set", "data.variant=toy-movies",
         "--set", f"data.dir={folder.parent}", "--set", "data.attributes=[title, genre]"],
        capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    data = work / "data"
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["dataset"] == "recbole" and manifest["attributes"] == ["title", "genre"]
    texts = pd.read_parquet(data / "items.parquet").set_index("item_id")["text"]
    assert texts["3"] == "Title: Film number 3; Genre: Drama"
    splits = {s: pd.read_parquet(data / f"{s}.parquet") for s in ("train", "valid", "test")}
    assert [len(f) for f in splits.values()] == [6, 3, 3]
    assert all(len(h) == 10 for f in splits.values() for h in f["history"])
