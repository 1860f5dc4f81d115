"""Generic loader: attributes from the items header, time-ordered sequences, strict errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmtrsr_utils.artifacts import sha256_of
from llmtrsr_utils.config import DataConfig
from llmtrsr_utils.datasets.base import DataFormatError
from llmtrsr_utils.datasets.loaders import generic

ITEMS = (
    "item_id,title,category\n"
    "i1,The Hobbit,Books\n"                                   # line 2
    "i2,\"Tea, green\",Groceries\n"                           # line 3
    "i3,\"A title\nspanning two lines\",Books\n"               # lines 4-5
    "i4,Desk lamp,\n"                                         # line 6
    "i1,The Hobbit,Books\n"                                   # line 7: identical repeat
)

INTERACTIONS = (
    "user_id,item_id,timestamp\n"
    "u2,i3,300\n"
    "u1,i2,20\n"
    "u1,i1,10\n"
    "u1,i4,20\n"        # ties with i2 at 20: file order kept (i2 before i4)
    "u1,i3,30.5\n"
    "u10,i4,5\n"        # single interaction: dropped
    "u2,i1,100\n"
)


def write_generic(folder: Path, items: str = ITEMS, interactions: str = INTERACTIONS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "items.csv").write_text(items, encoding="utf-8")
    (folder / "interactions.csv").write_text(interactions, encoding="utf-8")
    return folder


def load_error(folder: Path) -> DataFormatError:
    with pytest.raises(DataFormatError) as caught:
        generic.load(DataConfig(name="generic"), folder)
    return caught.value


def test_load_good_fixture(tmp_path: Path) -> None:
    folder = write_generic(tmp_path / "generic")
    assert generic.attributes_from_header(folder) == ["title", "category"]
    data = generic.load(DataConfig(name="generic"), folder)

    assert data.name == "generic" and data.domain == "generic"
    assert data.attributes == ["title", "category"]
    assert list(data.items.columns) == ["item_id", "title", "category"]
    assert data.items["item_id"].tolist() == ["i1", "i2", "i3", "i4"]
    assert data.items["title"].tolist() == ["The Hobbit", "Tea, green",
                                            "A title\nspanning two lines", "Desk lamp"]
    assert data.items["category"].tolist() == ["Books", "Groceries", "Books", ""]

    seqs = data.sequences
    assert list(seqs.columns) == ["user_id", "history", "target"]
    assert seqs["user_id"].tolist() == ["u1", "u2"]
    assert seqs["history"].tolist() == [["i1", "i2", "i4"], ["i1"]]
    assert seqs["target"].tolist() == ["i3", "i3"]

    assert data.counts == {"items_read": 5, "items_duplicate_rows": 1, "interactions_read": 7,
                           "users_read": 3, "users_with_one_interaction": 1, "sequences": 2}
    assert data.source_files == {"items.csv": sha256_of(folder / "items.csv"),
                                 "interactions.csv": sha256_of(folder / "interactions.csv")}


def test_non_numeric_timestamp(tmp_path: Path) -> None:
    interactions = INTERACTIONS.replace("u1,i3,30.5", "u1,i3,2019-11-15")
    err = load_error(write_generic(tmp_path, interactions=interactions))
    assert err.path.endswith("interactions.csv") and err.line == 6
    assert "interactions.csv:6:" in str(err) and "'timestamp'" in str(err)


def test_interactions_missing_header_column(tmp_path: Path) -> None:
    interactions = "user_id,item_id\nu1,i1\nu1,i2\n"
    err = load_error(write_generic(tmp_path, interactions=interactions))
    assert err.path.endswith("interactions.csv") and err.line == 1
    assert "user_id,item_id,timestamp" in str(err)


def test_items_header_without_item_id(tmp_path: Path) -> None:
    items = ITEMS.replace("item_id,title,category", "title,category")
    err = load_error(write_generic(tmp_path, items=items))
    assert err.path.endswith("items.csv") and err.line == 1


def test_items_header_with_repeated_column(tmp_path: Path) -> None:
    items = ITEMS.replace("item_id,title,category", "item_id,title,title")
    err = load_error(write_generic(tmp_path, items=items))
    assert err.path.endswith("items.csv") and err.line == 1 and "each named once" in str(err)


def test_empty_items_file(tmp_path: Path) -> None:
    err = load_error(write_generic(tmp_path, items=""))
    assert err.path.endswith("items.csv") and err.line == 1 and "empty file" in str(err)


def test_items_file_with_header_only(tmp_path: Path) -> None:
    err = load_error(write_generic(tmp_path, items="item_id,title\n"))
    assert err.path.endswith("items.csv") and "at least one data row" in str(err)


def test_duplicate_item_with_different_text(tmp_path: Path) -> None:
    items = ITEMS + "i3,Another title,Books\n"
    err = load_error(write_generic(tmp_path, items=items))
    assert err.path.endswith("items.csv") and err.line == 8
    assert "'i3'" in str(err) and "first at line 4" in str(err)


def test_row_with_too_many_fields(tmp_path: Path) -> None:
    items = ITEMS.replace("i4,Desk lamp,", "i4,Desk lamp,Home,extra")
    err = load_error(write_generic(tmp_path, items=items))
    assert err.path.endswith("items.csv") and err.line == 6 and "4 fields" in str(err)


def test_download_explains_the_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as caught:
        generic.download(DataConfig(name="generic"), tmp_path)
    message = str(caught.value)
    assert "items.csv" in message and "item_id" in message
    assert "interactions.csv" in message and "user_id,item_id,timestamp" in message
