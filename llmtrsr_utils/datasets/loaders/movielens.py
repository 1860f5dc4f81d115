"""MovieLens ml-latest-small: ratings, movies and tags as a text-rich movie dataset.

Item text: title, year (parsed from the title), genres, and the movie's most common tags.
A user's sequence is their ratings at or above ``min_rating`` in time order; the last one is the
target. The raw files are used in place from ``data.dir`` / ``$LLMTRSR_DATA_DIR`` or downloaded
once from GroupLens. GroupLens publishes no sha256 for the zip, so the extracted files are
checked against pinned hashes of the 2018 release instead.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from llmtrsr_utils.artifacts import sha256_of
from llmtrsr_utils.config import DataConfig
from llmtrsr_utils.datasets.base import (
    HISTORY,
    ITEM_ID,
    TARGET,
    USER_ID,
    DataFormatError,
    RawDataset,
    check_unique_items,
    numeric_column,
    read_records,
)

DOMAIN = "movies"
DEFAULT_ATTRIBUTES = ["title", "year", "genres", "tags"]
FOLDER_NAMES = ("movielens-latest-small", "ml-latest-small")
REQUIRED_FILES = ("ratings.csv", "movies.csv", "tags.csv")

URL = "https://files.grouplens.org/datasets/movielens/ml-latest-small.zip"
# sha256 of the files in the release generated on 2018-09-26.
FILE_SHA256 = {
    "ratings.csv": "aa289ca83157595d0df6aea1be6a4ded676ddc4385472e8313a8ed9805352646",
    "movies.csv": "5a5f32dd9bb3797b8e728a1b98958789d2b13f294a69fdfbc5727f8a9611aa07",
    "tags.csv": "92a9f8bb7916dceef6151209845788c3643f794dfa79d1feaec7121b5960399d",
    "links.csv": "97ad18e4e56a09363c65676b6cb3482ce3e2cea2372a24620c1599c843325f31",
}
_YEAR = re.compile(r"\s*\((\d{4})(?:[-–]\d{0,4})?\)\s*$")


def download(data: DataConfig, dest_root: Path) -> Path:
    from llmtrsr_utils.datasets.download import fetch_and_extract

    expected = {f"ml-latest-small/{name}": sha for name, sha in FILE_SHA256.items()}
    fetch_and_extract(URL, dest_root, sha256=None, expected_files=expected)
    return dest_root / "ml-latest-small"


def split_title(title: str) -> tuple[str, str]:
    """'Toy Story (1995)' -> ('Toy Story', '1995'); titles without a year keep year ''."""
    match = _YEAR.search(title)
    if not match:
        return title.strip(), ""
    return title[:match.start()].strip(), match.group(1)


def load(data: DataConfig, raw_dir: Path) -> RawDataset:
    raw_dir = Path(raw_dir)
    ratings_path, movies_path, tags_path = (raw_dir / name for name in REQUIRED_FILES)
    ratings = read_records(ratings_path, ["userId", "movieId", "rating", "timestamp"])
    movies = read_records(movies_path, ["movieId", "title", "genres"])
    tags = read_records(tags_path, ["userId", "movieId", "tag", "timestamp"])

    for column in ("userId", "movieId", "timestamp"):
        ratings[column] = numeric_column(ratings, column, ratings_path, header=True, kind="int")
    ratings["rating"] = numeric_column(ratings, "rating", ratings_path, header=True)
    movies["movieId"] = numeric_column(movies, "movieId", movies_path, header=True, kind="int")
    tags["movieId"] = numeric_column(tags, "movieId", tags_path, header=True, kind="int")

    titles = movies["title"].map(split_title)
    genres = movies["genres"].map(
        lambda g: "" if g == "(no genres listed)" else ", ".join(p for p in g.split("|") if p))
    items = pd.DataFrame({
        ITEM_ID: movies["movieId"].astype(str),
        "title": [t for t, _ in titles],
        "year": [y for _, y in titles],
        "genres": genres,
        "tags": movies["movieId"].map(_top_tags(tags, data.n_tags)).fillna(""),
    })
    items = check_unique_items(items, movies_path, DEFAULT_ATTRIBUTES)
    empty_titles = items.index[items["title"] == ""]
    if len(empty_titles):
        raise DataFormatError(movies_path, int(empty_titles[0]) + 2, "a non-empty movie title",
                              "''")

    kept = ratings[ratings["rating"] >= data.min_rating]
    # Stable sort: equal timestamps keep the file's order, so sequences are reproducible.
    kept = kept.sort_values(["userId", "timestamp"], kind="stable")
    sequences = []
    for user, group in kept.groupby("userId", sort=True):
        movie_ids = group["movieId"].astype(str).tolist()
        if len(movie_ids) < 2:
            continue
        sequences.append({USER_ID: str(user), HISTORY: movie_ids[:-1], TARGET: movie_ids[-1]})
    frame = pd.DataFrame(sequences, columns=[USER_ID, HISTORY, TARGET])
    frame = frame.sort_values(USER_ID, kind="stable").reset_index(drop=True)
    return RawDataset(
        name=data.name, domain=DOMAIN, items=items, sequences=frame,
        attributes=list(DEFAULT_ATTRIBUTES),
        source_files={p.name: sha256_of(p) for p in (ratings_path, movies_path, tags_path)},
        counts={"ratings_read": len(ratings), "ratings_below_min_rating": len(ratings) - len(kept),
                "movies_read": len(movies), "tags_read": len(tags),
                "users_with_fewer_than_2_ratings": int(kept["userId"].nunique() - len(frame))},
    )


def _top_tags(tags: pd.DataFrame, n_tags: int) -> dict[int, str]:
    """The n most applied tags per movie (case-folded; ties broken alphabetically)."""
    if n_tags == 0 or tags.empty:
        return {}
    cleaned = tags.assign(tag=tags["tag"].str.strip().str.lower())
    cleaned = cleaned[cleaned["tag"] != ""]
    counts = cleaned.groupby(["movieId", "tag"]).size().reset_index(name="n")
    counts = counts.sort_values(["movieId", "n", "tag"], ascending=[True, False, True])
    top = counts.groupby("movieId").head(n_tags)
    return top.groupby("movieId")["tag"].agg(", ".join).to_dict()
