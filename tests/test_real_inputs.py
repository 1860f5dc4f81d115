"""Inputs real users bring (issue 23: ten more than the audit listed), each with what it gets:
loaded as meant, or one line naming the file, line and what was expected. Generic-format files
written here; the README lists the same cases."""

from __future__ import annotations

import gzip
import zipfile
from pathlib import Path

import pytest

from llmtrsr_utils.config import DataConfig
from llmtrsr_utils.datasets.base import DataFormatError
from llmtrsr_utils.datasets.loaders import generic
from llmtrsr_utils.datasets.splits import clean_sequences
from tests.test_loaders_generic import INTERACTIONS, ITEMS, write_generic

DATA = DataConfig(name="generic")


def loaded(folder: Path):
    raw = generic.load(DATA, folder)
    return raw.items.to_dict("records"), raw.sequences.to_dict("records")


@pytest.fixture
def reference(tmp_path):
    return loaded(write_generic(tmp_path / "reference"))


def test_a_byte_order_mark_is_ignored(tmp_path, reference):
    folder = write_generic(tmp_path / "bom")
    for name in ("items.csv", "interactions.csv"):
        (folder / name).write_bytes(b"\xef\xbb\xbf" + (folder / name).read_bytes())
    assert loaded(folder) == reference


def test_windows_line_endings_read_as_unix_ones(tmp_path, reference):
    """Quoted multi-line titles included: no stray carriage return reaches an item's text."""
    folder = write_generic(tmp_path / "crlf", ITEMS.replace("\n", "\r\n"),
                           INTERACTIONS.replace("\n", "\r\n"))
    assert loaded(folder) == reference


def test_blank_lines_at_the_end_are_skipped(tmp_path, reference):
    folder = write_generic(tmp_path / "blank", ITEMS + "\n\n", INTERACTIONS + "\n\n\n")
    assert loaded(folder) == reference


@pytest.mark.parametrize(("kind", "pack"), [
    ("gzip", lambda data, path: path.write_bytes(gzip.compress(data))),
    ("zip", lambda data, path: zipfile.ZipFile(path, "w").writestr("items.csv", data)),
])
def test_a_compressed_file_is_named_as_such(tmp_path, kind, pack):
    folder = write_generic(tmp_path / kind)
    pack(ITEMS.encode(), folder / "items.csv")
    with pytest.raises(DataFormatError) as caught:
        generic.load(DATA, folder)
    assert str(caught.value) == (f"{folder / 'items.csv'}: expected plain UTF-8 delimited text; "
                                 f"got a {kind}-compressed file; decompress it first "
                                 f"({'gunzip' if kind == 'gzip' else 'unzip'})")


def test_latin_1_bytes_are_named_with_their_line(tmp_path):
    folder = write_generic(tmp_path / "latin")
    (folder / "items.csv").write_bytes(ITEMS.replace("Hobbit", "Hobbît").encode("latin-1"))
    with pytest.raises(DataFormatError, match=r"items.csv:2: expected UTF-8 text; got byte "
                                              r"0xee at column 12"):
        generic.load(DATA, folder)


def test_semicolons_for_commas_are_a_header_error(tmp_path):
    folder = write_generic(tmp_path / "semicolon", ITEMS.replace(",", ";"))
    with pytest.raises(DataFormatError, match="items.csv:1: expected a header row "
                                              "'item_id,<attribute>,...'.*got item_id;title"):
        generic.load(DATA, folder)


def test_iso_8601_timestamps_order_the_history(tmp_path):
    folder = write_generic(tmp_path / "iso", interactions=(
        "user_id,item_id,timestamp\n"
        "u1,i1,2024-01-02\n"
        "u1,i2,2024-01-01T23:00:00Z\n"
        "u1,i3,2024-01-03T00:00:00+02:00\n"      # 2024-01-02T22:00Z: after i1
        "u2,i1,2023-05-01\nu2,i4,2023-05-02\n"))
    _, sequences = loaded(folder)
    assert sequences[0] == {"user_id": "u1", "history": ["i2", "i1"], "target": "i3"}
    mixed = write_generic(tmp_path / "mixed", interactions=INTERACTIONS.replace(
        "u1,i3,30.5", "u1,i3,yesterday"))
    with pytest.raises(DataFormatError, match=r"interactions.csv:6: expected a number or an ISO "
                                              r"8601 date in column 'timestamp'; got 'yesterday'"):
        generic.load(DATA, mixed)


def test_an_empty_title_and_a_100k_character_description_load(tmp_path):
    items = ITEMS.replace("i4,Desk lamp,", "i4,,").replace("The Hobbit", "x" * 100_000)
    rows, _ = loaded(write_generic(tmp_path / "text", items))
    by_id = {row["item_id"]: row for row in rows}
    assert by_id["i4"]["title"] == "" and len(by_id["i1"]["title"]) == 100_000


def test_a_user_with_5000_interactions_is_truncated_and_counted(tmp_path):
    lines = [f"u9,i{1 + n % 4},{n}" for n in range(5000)]
    folder = write_generic(tmp_path / "heavy", interactions=INTERACTIONS + "\n".join(lines) + "\n")
    data = DataConfig(name="generic", min_history=1, max_history=25, history_policy="truncate")
    frame, counts = clean_sequences(generic.load(data, folder), data)
    heavy = frame.set_index("user_id").loc["u9"]
    assert len(heavy["history"]) == 25 and heavy["full_history_length"] == 4999
    assert counts["users_history_truncated"] >= 1
    filtered = DataConfig(name="generic", min_history=1, max_history=25)
    frame, counts = clean_sequences(generic.load(filtered, folder), filtered)
    assert "u9" not in set(frame["user_id"]) and counts["users_dropped_history_too_long"] >= 1


def test_an_extra_column_and_a_file_of_headers_only_are_named(tmp_path):
    extra = write_generic(tmp_path / "extra", interactions=INTERACTIONS.replace(
        "timestamp\n", "timestamp,rating\n"))
    with pytest.raises(DataFormatError, match="interactions.csv:1: expected header "
                                              "user_id,item_id,timestamp; got user_id,item_id,"
                                              "timestamp,rating"):
        generic.load(DATA, extra)
    empty = write_generic(tmp_path / "empty", interactions="user_id,item_id,timestamp\n")
    with pytest.raises(DataFormatError, match="interactions.csv: expected at least one data "
                                              "row; got none"):
        generic.load(DATA, empty)
