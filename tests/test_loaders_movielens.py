from __future__ import annotations

import pytest

from llmtrsr_utils.artifacts import sha256_of
from llmtrsr_utils.config import DataConfig
from llmtrsr_utils.datasets.base import DataFormatError
from llmtrsr_utils.datasets.loaders import movielens
from tests.conftest import write_movielens


def test_fixture_loads_items_and_chronological_sequences(movielens_dir):
    data = movielens.load(DataConfig(), movielens_dir)
    items = data.items.set_index("item_id")
    assert len(items) == 120
    assert items.loc["1", "title"] == "American President, The"
    assert items.loc["1", "year"] == "1995"
    assert items.loc["1", "genres"] == "Comedy, Drama, Romance"
    # 'funny' twice (case-folded) and 'politics' twice outrank single tags; ties alphabetical.
    assert items.loc["1", "tags"] == "funny, politics, aaron sorkin"
    assert items.loc["2", "year"] == "" and items.loc["2", "genres"] == ""
    assert items.loc["3", "title"] == 'Brother "Bear"'
    assert len(data.sequences) == 30
    first = data.sequences.iloc[0]
    assert len(first["history"]) == 15 and isinstance(first["target"], str)
    assert data.domain == "movies"
    assert data.source_files["ratings.csv"] == sha256_of(movielens_dir / "ratings.csv")


def test_sequences_follow_timestamps_and_min_rating(tmp_path):
    folder = write_movielens(tmp_path / "ml", n_users=2, n_movies=10, ratings_per_user=4)
    (folder / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n"
        "1,5,4.0,300\n1,3,5.0,100\n1,7,1.0,200\n1,9,4.5,400\n1,2,4.0,400\n")
    everything = movielens.load(DataConfig(), folder).sequences.iloc[0]
    # Stable on ties: movie 9 then 2 (file order) at timestamp 400.
    assert everything["history"] == ["3", "7", "5", "9"] and everything["target"] == "2"
    liked = movielens.load(DataConfig(min_rating=4.0), folder).sequences.iloc[0]
    assert liked["history"] == ["3", "5", "9"] and liked["target"] == "2"


@pytest.mark.parametrize("line, expected", [
    ("1,5,4.0\n", "4 ','-separated fields"),
    ("1,5,great,300\n", "a number in column 'rating'"),
    ("1,5,4.0,yesterday\n", "a number in column 'timestamp'"),
])
def test_malformed_rating_row_names_file_and_line(tmp_path, line, expected):
    folder = write_movielens(tmp_path / "ml", n_users=2, n_movies=10, ratings_per_user=4)
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,3,5.0,100\n" + line)
    with pytest.raises(DataFormatError) as err:
        movielens.load(DataConfig(), folder)
    assert f"ratings.csv:3: expected {expected}" in str(err.value)


def test_split_title_variants():
    assert movielens.split_title("Toy Story (1995)") == ("Toy Story", "1995")
    assert movielens.split_title("Babylon 5") == ("Babylon 5", "")
    assert movielens.split_title("Fawlty Towers (1975-1979)") == ("Fawlty Towers", "1975")
    assert movielens.split_title("Big Heat, The (1953) ") == ("Big Heat, The", "1953")


def test_real_movielens_matches_the_pinned_release(real_movielens_root):
    folder = real_movielens_root / "movielens-latest-small"
    for name, sha in movielens.FILE_SHA256.items():
        assert sha256_of(folder / name) == sha, name
    data = movielens.load(DataConfig(), folder)
    assert len(data.items) == 9742
    assert len(data.sequences) == 610
    assert data.counts["ratings_read"] == 100836
    toy_story = data.items.set_index("item_id").loc["1"]
    assert (toy_story["title"], toy_story["year"]) == ("Toy Story", "1995")
