"""Shared fixtures: small raw files in the datasets' exact formats, the real MovieLens folder."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

# Nothing in the test suite may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
GENRES = ["Action", "Adventure", "Animation", "Children", "Comedy", "Drama", "Horror", "Sci-Fi"]


def write_movielens(folder: Path, n_users: int = 30, n_movies: int = 120,
                    ratings_per_user: int = 16, seed: int = 0) -> Path:
    """ml-latest-small's four CSV files (same headers, quoting and value formats), small."""
    import random

    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "movies.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["movieId", "title", "genres"])
        for movie in range(1, n_movies + 1):
            if movie == 1:
                title, genres = "American President, The (1995)", "Comedy|Drama|Romance"
            elif movie == 2:
                title, genres = "Babylon 5", "(no genres listed)"  # no year, no genres
            elif movie == 3:
                title, genres = 'Brother "Bear" (2003)', "Animation|Children"
            else:
                title = f"Movie {movie} ({1950 + movie % 70})"
                genres = "|".join(rng.sample(GENRES, k=1 + movie % 3))
            writer.writerow([movie, title, genres])
    timestamp = 964982000
    with open(folder / "ratings.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["userId", "movieId", "rating", "timestamp"])
        for user in range(1, n_users + 1):
            for movie in rng.sample(range(1, n_movies + 1), k=ratings_per_user):
                timestamp += rng.randint(1, 500)
                writer.writerow([user, movie, rng.choice(["1.0", "2.5", "3.0", "4.0", "5.0"]),
                                 timestamp])
    with open(folder / "tags.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["userId", "movieId", "tag", "timestamp"])
        for user, tag in [(1, "funny"), (2, "Funny"), (3, "politics"), (4, "politics"),
                          (5, "aaron sorkin"), (6, "zany")]:
            writer.writerow([user, 1, tag, 1445714994 + user])
        writer.writerow([7, 3, "bears", 1445715000])
    with open(folder / "links.csv", "w", newline="", encoding="utf-8") as handle:
        handle.write("movieId,imdbId,tmdbId\n1,0112346,9087\n")
    return folder


@pytest.fixture(scope="session")
def movielens_dir(tmp_path_factory) -> Path:
    return write_movielens(tmp_path_factory.mktemp("raw") / "movielens-latest-small")


def real_data_root() -> Path | None:
    """$LLMTRSR_DATA_DIR, else ../shared/data beside the checkout, when it holds MovieLens."""
    candidates = [os.environ.get("LLMTRSR_DATA_DIR"), ROOT.parent / "shared" / "data"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "movielens-latest-small" / "ratings.csv").is_file():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def real_movielens_root() -> Path:
    root = real_data_root()
    if root is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have the real MovieLens files: set LLMTRSR_DATA_DIR or put "
                        "them in ../shared/data/movielens-latest-small")
        pytest.skip("real MovieLens not found: set LLMTRSR_DATA_DIR to the folder holding "
                    "movielens-latest-small/")
    return root


def smoke_overrides(work_dir: Path, data_dir: Path, *extra: str) -> list[str]:
    """Overrides that turn params/smoke.yaml into an isolated run in work_dir."""
    return [f"work_dir={work_dir}", f"data.dir={data_dir}", f"figures_dir={work_dir / 'figures'}",
            f"runs_dir={work_dir / 'runs'}", *extra]


def smoke_config(work_dir: Path, data_dir: Path, *extra: str):
    """params/smoke.yaml isolated in work_dir, with its own generation cache."""
    from llmtrsr_utils.config import load_config

    return load_config(ROOT / "params" / "smoke.yaml", smoke_overrides(
        work_dir, data_dir, f"summarizer.cache_file={work_dir / 'gen.sqlite'}", *extra))
