"""The summary probe (issue 22, item 5): label matching, the three readers, the table it keeps."""

import numpy as np
import pandas as pd
import pytest
from conftest import smoke_config

from llmtrsr_utils import summary_probe as sp

GENRES = ("Comedy", "Horror", "Sci-Fi", "Western")


def test_labels_are_matched_as_the_words_a_summary_uses():
    patterns = {label: sp._pattern(label) for label in (*GENRES, "Film-Noir", "Romance",
                                                         "Mystery", "Politics")}
    text = "Enjoys comedies, science fiction and noir; romantic films. Reads about politics."
    assert sp.named_labels(text, patterns) == {"Comedy", "Sci-Fi", "Film-Noir", "Romance",
                                               "Politics"}
    assert sp.named_labels("", patterns) == frozenset()
    # a label is a word: "western" inside "northwestern" is not the genre
    assert sp.named_labels("a northwestern town", patterns) == frozenset()
    assert sp.item_labels("Comedy, Drama") == {"Comedy", "Drama"}
    assert sp.item_labels("Comedy|Drama") == {"Comedy", "Drama"}
    assert sp.item_labels(sp.NO_LABEL) == frozenset()


def _world(n_users: int = 4):
    """Users alternate between liking Comedy and Horror: history and target of their genre,
    20 negatives: 10 of the other liked genre, 10 Sci-Fi or Western."""
    items, rows = [], []
    for u in range(n_users):
        own, other = ("Comedy", "Horror") if u % 2 == 0 else ("Horror", "Comedy")
        history = [f"u{u}h{i}" for i in range(5)]
        items += [(i, own, f"Title {i}") for i in history]
        target = f"u{u}t"
        items.append((target, own, f"Title {target}"))
        negatives = [f"u{u}n{i}" for i in range(20)]
        items += [(n, other if i < 10 else GENRES[2 + i % 2], f"Title {n}")
                  for i, n in enumerate(negatives)]
        rows.append({"user_id": str(u), "history": history, "target": target,
                     "negatives": negatives})
    frame = pd.DataFrame(rows)
    item_table = pd.DataFrame(items, columns=["item_id", "genres", "title"])
    return frame, item_table


def test_a_summary_naming_its_users_genre_ranks_the_positive_first_and_another_users_does_not():
    frame, items = _world()
    summaries = {u: ("loves comedies" if int(u) % 2 == 0 else "a horror fan") + f", {u}"
                 for u in frame["user_id"]}
    # seed 0 pairs users of the same parity or not; check against the derangement used
    per = sp.probe_frame(frame, items, summaries, seed=0)
    donors = sp.derangement(list(frame["user_id"]), 0)
    assert per["summary"]["recall@5"].tolist() == [1.0] * 4
    assert per["history"]["recall@5"].tolist() == [1.0] * 4
    for user, value in per["another user's summary"]["recall@5"].items():
        same_taste = int(user) % 2 == int(donors[user]) % 2
        # another taste: the positive scores 0 behind 10 negatives of that taste
        assert value == (1.0 if same_taste else 0.0)
    row = sp.probe_row(per, seed=0)
    assert row["summary"] == 1.0 and row["labels_named"] == 1.0
    assert row["own_minus_another"] == pytest.approx(
        1.0 - per["another user's summary"]["recall@5"].mean())


def test_a_summary_naming_nothing_scores_chance_exactly():
    frame, items = _world()
    per = sp.probe_frame(frame, items, dict.fromkeys(frame["user_id"], "NULL"), seed=0)
    assert np.allclose(per["summary"]["recall@5"], 5 / 21)
    assert np.allclose(per["another user's summary"]["recall@5"], 5 / 21)
    row = sp.probe_row(per)
    assert row["own_minus_another"] == 0.0 and row["p_value"] == 1.0


def test_titles_repeated_counts_the_historys_titles_in_the_summary():
    frame, items = _world(2)
    summaries = {"0": "Title u0h0 and Title u0h1", "1": "nothing"}
    texts = sp.probe_frame(frame, items, summaries, seed=0)["texts"]
    assert texts.loc["0", "titles_repeated"] == pytest.approx(2 / 5)
    assert texts.loc["1", "titles_repeated"] == 0.0


def test_bad_input_names_what_is_missing():
    frame, items = _world(2)
    with pytest.raises(ValueError, match="no summary for 1 of 2 users"):
        sp.probe_frame(frame, items, {"0": "comedy"}, seed=0)
    with pytest.raises(ValueError, match="items.parquet: the summary probe needs an item "
                                         "label column, one of genres, category"):
        sp.probe_frame(frame, items.drop(columns="genres"), {"0": "a", "1": "b"}, seed=0)


def test_probe_gathers_one_row_per_setting_and_replaces_a_rerun(tmp_path, movielens_dir):
    cfg = smoke_config(tmp_path, movielens_dir)
    table = sp.probe(cfg, "test", ["hierarchical"], progress=False)
    assert len(table) == 1 and table["summary_style"].tolist() == ["paper"]
    fields = smoke_config(tmp_path, movielens_dir, "summarizer.summary_style=fields")
    table = sp.probe(fields, "test", ["hierarchical"], progress=False)
    assert sorted(table["summary_style"]) == ["fields", "paper"]
    again = sp.probe(fields, "test", ["hierarchical"], progress=False)
    assert len(again) == 2
    stored = pd.read_csv(tmp_path / "results" / sp.TABLE)
    assert len(stored) == 2 and stored["n_users"].gt(0).all()
    assert set(sp.READERS) <= set(stored.columns)
    with pytest.raises(ValueError, match="metric must be one of"):
        sp.probe(cfg, "test", ["hierarchical"], metric="recall@7", progress=False)


def test_the_readme_block_shows_each_setting_and_the_positive_control():
    from llmtrsr_utils import readme

    frame, items = _world()
    per = sp.probe_frame(frame, items, {u: "comedy" for u in frame["user_id"]}, seed=0)
    base = {"split": "valid", "metric": "recall@5", "model": "smollm2-135m",
            "max_new_tokens": 32, "repetition_penalty": 1.0, "paradigm": "hierarchical",
            "n_users": 4, "calls_cut_share": 0.5, **sp.probe_row(per)}
    table = pd.DataFrame([{**base, "summary_style": "paper", "no_repeat_ngram_size": 0},
                          {**base, "summary_style": "fields", "no_repeat_ngram_size": 3},
                          {**base, "split": "test", "summary_style": "x",
                           "no_repeat_ngram_size": 0}])
    text = readme.probe(table)
    lines = text.splitlines()
    assert len(lines) == 2 + 3  # header, rule, 2 settings of the valid split, the control
    assert lines[2].startswith("| smollm2-135m, paper, 32 tokens ")
    assert "fields, 32 tokens, no repeated 3-grams" in lines[3]
    assert lines[4].startswith("| the history's own labels (positive control)")
    assert f"{base['history']:.2f} [" in lines[4]
    assert "50%" in lines[2]
