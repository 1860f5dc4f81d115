from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llmtrsr_utils import baselines, systems
from llmtrsr_utils.baselines import (
    candidate_ids,
    embedding_scores,
    item_embeddings,
    popularity_counts,
    popularity_scores,
    random_scores,
)
from llmtrsr_utils.config import load_config
from llmtrsr_utils.datasets.splits import load_items, load_split, prepare_dataset, user_rng
from tests.conftest import smoke_overrides

ROOT = Path(__file__).resolve().parents[1]


def frame(rows: list[tuple[str, list[str], str, list[str]]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "history", "target", "negatives"])


@pytest.fixture()
def small() -> pd.DataFrame:
    return frame([
        ("u1", ["a", "b"], "c", ["d", "e", "f", "g"]),
        ("u2", ["c"], "a", ["b", "d", "e", "f"]),
        ("u3", ["d", "e", "f"], "g", ["a", "b", "c", "d"]),
    ])


def hand_vectors() -> tuple[list[str], np.ndarray]:
    ids = list("abcdefg")
    return ids, np.random.default_rng(0).normal(size=(len(ids), 5))


def test_candidate_ids_and_every_scorer_shape(small):
    assert candidate_ids(small) == [["c", "d", "e", "f", "g"], ["a", "b", "d", "e", "f"],
                                    ["g", "a", "b", "c", "d"]]
    counts = popularity_counts(small)
    ids, vectors = hand_vectors()
    for scores in (random_scores(small, 0, "test"), popularity_scores(small, counts),
                   embedding_scores(small, ids, vectors)):
        assert scores.shape == (3, 5)
        assert scores.dtype.kind == "f"
    # Column 0 is the target: u2's target "a" is counted in u1's history and as u2's target.
    assert popularity_scores(small, counts)[1].tolist() == [2, 1, 1, 1, 1]


def test_ragged_candidates_are_refused():
    ragged = frame([("u1", ["a"], "b", ["c"]), ("u2", ["a"], "b", ["c", "d"])])
    with pytest.raises(ValueError, match="different numbers of candidates"):
        random_scores(ragged, 0, "test")


def test_random_scores_deterministic_and_seeded_by_seed_and_split(small):
    first = random_scores(small, 7, "test")
    assert np.array_equal(first, random_scores(small, 7, "test"))
    assert ((first >= 0) & (first < 1)).all()
    assert not np.array_equal(first, random_scores(small, 8, "test"))
    assert not np.array_equal(first, random_scores(small, 7, "valid"))
    # A user's scores depend on that user only, and not on the stream that drew the negatives.
    assert np.array_equal(first[1:], random_scores(small.iloc[1:], 7, "test"))
    assert not np.allclose(first[0], user_rng(7, "test", "u1").random(5))


def test_popularity_counts_training_only():
    train = frame([
        ("t1", ["a", "b"], "a", ["z"]),
        ("t2", ["c", "a"], "b", ["z"]),
    ])
    valid = frame([("v1", ["a", "only_valid"], "only_valid", ["a", "b", "c"])])
    counts = popularity_counts(train)
    assert counts.to_dict() == {"a": 3, "b": 2, "c": 1}  # negatives "z" are not interactions
    scores = popularity_scores(valid, counts)
    assert scores.tolist() == [[0.0, 3.0, 2.0, 1.0]]  # the valid-only item scores 0: no leakage


def test_embedding_scores_prefer_the_history_direction():
    rng = np.random.default_rng(1)
    e1, e2, e3 = np.eye(3)
    ids = ["h1", "h2", "h3", "pos", "n1", "n2"]
    vectors = np.stack([e1 + 0.05 * rng.normal(size=3) for _ in range(3)]
                       + [e1 + 0.1 * e2, e2, e3])
    data = frame([("u", ["h1", "h2", "h3"], "pos", ["n1", "n2"])])
    scores = embedding_scores(data, ids, vectors)
    assert scores[0].argmax() == 0
    assert scores[0, 0] > 0.9 and abs(scores[0, 1]) < 0.2 and abs(scores[0, 2]) < 0.2


def test_embedding_scores_exact_cosine_in_2d():
    # History vectors are unit-normalised before averaging: (2,0) and (0,1) give profile (1,1).
    ids = ["x", "y", "pos", "neg"]
    vectors = np.array([[2.0, 0.0], [0.0, 1.0], [3.0, 4.0], [1.0, 0.0]])
    data = frame([("u", ["x", "y"], "pos", ["neg"])])
    scores = embedding_scores(data, ids, vectors)
    assert scores[0, 0] == pytest.approx(7 / (5 * math.sqrt(2)), abs=1e-12)
    assert scores[0, 1] == pytest.approx(1 / math.sqrt(2), abs=1e-12)


def test_embedding_scores_missing_ids_name_item_and_user(small):
    ids, vectors = hand_vectors()
    with pytest.raises(KeyError, match=r"candidate item 'g' of user 'u1'"):
        embedding_scores(small, ids[:-1], vectors[:-1])
    only_history = frame([("u9", ["b", "zz"], "c", ["d"])])
    with pytest.raises(KeyError, match=r"history item 'zz' of user 'u9'"):
        embedding_scores(only_history, ids, vectors)


def prepared(tmp_path, movielens_dir):
    cfg = load_config(None, [f"work_dir={tmp_path}", f"data.dir={movielens_dir}",
                             "data.n_train_users=12", "data.n_valid_users=5",
                             "data.n_test_users=6", "data.history_policy=truncate"])
    return prepare_dataset(cfg)


class FakeEncoder:
    def encode(self, texts, **_):
        return np.ones((len(texts), 4), dtype=np.float32)


@pytest.mark.slow  # loads MiniLM twice and encodes the catalogue twice: about 20 s on CPU
def test_item_embeddings_real_model_and_cache(tmp_path, movielens_dir, monkeypatch):
    out = prepared(tmp_path / "work", movielens_dir)
    items = load_items(out)
    cache = tmp_path / "cache"
    ids, vectors = item_embeddings(items, "minilm-l6", cache, device="cpu")
    assert ids == items["item_id"].tolist()
    assert vectors.shape == (len(items), 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert len(list(cache.glob("*.npy"))) == len(list(cache.glob("*.json"))) == 1

    # Scores on the fixture's splits are deterministic: a second, independent encode gives the
    # same scores (no claim that they beat random: on random fixture data they need not).
    _, fresh = item_embeddings(items, "minilm-l6", tmp_path / "other-cache", device="cpu")
    test = load_split(out, "test")
    first = embedding_scores(test, ids, vectors)
    assert first.shape == (6, 21) and np.isfinite(first).all()
    np.testing.assert_allclose(embedding_scores(test, ids, fresh), first, rtol=0, atol=1e-6)
    assert np.array_equal(first, embedding_scores(test, ids, vectors))
    counts = popularity_counts(load_split(out, "train"))
    assert np.array_equal(popularity_scores(test, counts), popularity_scores(test, counts))
    assert np.array_equal(random_scores(test, 42, "test"), random_scores(test, 42, "test"))

    def refuse(*_, **__):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(baselines, "load_embedding_model", refuse)
    again_ids, again = item_embeddings(items, "minilm-l6", cache, device="cpu")
    assert again_ids == ids and np.array_equal(again, vectors)

    # An edited text, or another model, is a cache miss with its own file.
    monkeypatch.setattr(baselines, "load_embedding_model", lambda *_, **__: FakeEncoder())
    edited = items.copy()
    edited.loc[0, "text"] = edited.loc[0, "text"] + " (director's cut)"
    item_embeddings(edited, "minilm-l6", cache)
    assert len(list(cache.glob("*.npy"))) == 2
    monkeypatch.setattr(baselines, "model_identity", lambda name: {"name": name, "rev": "x"})
    _, fake = item_embeddings(items, "minilm-l6", cache)
    assert len(list(cache.glob("*.npy"))) == 3
    np.testing.assert_allclose(fake, 0.5)  # (1,1,1,1) normalised



def test_plain_bert_folder_is_mean_pooled_and_frozen(tmp_path):
    """The paper profiles' encoder is a plain BERT (google-bert/bert-base-uncased, no
    sentence-transformers head): loaded from a folder or hub id it must give the attention-mask
    mean of its last hidden states, L2-normalised, the same on a second call (cached, frozen).
    A tiny random BERT written here stands in for the hub model."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    words = ["action", "comedy", "drama", "space", "love", "war", "story", "title", ":", ";"]
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True)
    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=len(words) + 5, hidden_size=16, num_hidden_layers=2,
                                num_attention_heads=2, intermediate_size=32)).eval()
    folder = tmp_path / "tiny-bert"
    bert.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    assert not list(folder.glob("*.bin"))  # safetensors only

    texts = ["Title: space war", "Title: love story; drama", "comedy"]
    items = pd.DataFrame({"item_id": ["a", "b", "c"], "text": texts})
    ids, vectors = item_embeddings(items, str(folder), tmp_path / "cache")
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        states = bert(**encoded).last_hidden_state
    mask = encoded["attention_mask"][..., None].float()
    expected = ((states * mask).sum(1) / mask.sum(1)).numpy()
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert ids == ["a", "b", "c"] and vectors.shape == (3, 16)
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    again = item_embeddings(items, str(folder), tmp_path / "cache")[1]
    assert np.array_equal(vectors, again)


TOY_BASELINE = '''
import numpy as np

from llmtrsr_utils.systems import baseline


@baseline("most-recent-overlap", "Most recent item overlap")
def score(frame, split, context):
    """Word overlap (Jaccard) of each candidate's text with the user's most recent item."""
    words = {i: set(t.lower().split()) for i, t in zip(context.items["item_id"],
                                                        context.items["text"])}
    def overlap(a, b):
        return len(words[a] & words[b]) / max(1, len(words[a] | words[b]))
    return np.array([[overlap(history[-1], c) for c in [target, *negatives]]
                     for history, target, negatives in
                     zip(frame["history"], frame["target"], frame["negatives"])])
'''


def test_recipe_add_a_baseline_in_one_file(tmp_path, movielens_dir):
    """The README's recipe: a baseline is one file that registers a scorer; `llmtrsr evaluate
    --baselines package.module` scores it beside the others and Table 2 shows its name."""
    package = tmp_path / "plugins" / "my_baselines"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "recent_overlap.py").write_text(TOY_BASELINE)
    root = ROOT
    command = [sys.executable, "-m", "llmtrsr_utils.cli", "evaluate", "--params",
               str(root / "params" / "smoke.yaml"), "--systems", "", "--no-progress",
               "--baselines", "random,my_baselines.recent_overlap"]
    for override in smoke_overrides(tmp_path, movielens_dir):
        command += ["--set", override]
    done = subprocess.run(command, capture_output=True, text=True, cwd=root,
                          env={**os.environ,
                               "PYTHONPATH": f"{tmp_path / 'plugins'}:{root}"})
    assert done.returncode == 0, done.stderr[-3000:]
    table = (tmp_path / "results" / "table2.md").read_text()
    assert "Most recent item overlap" in table and "Random" in table
    results = pd.read_parquet(tmp_path / "results" / "metrics.parquet")
    assert set(results["system"]) == {"random", "my_baselines.recent_overlap"}
    assert len(results) == 4  # valid and test for each


def test_a_baseline_of_the_wrong_shape_is_refused(tmp_path, movielens_dir):
    from llmtrsr_utils.evaluate import evaluate_system
    from llmtrsr_utils.pipeline import ensure_splits
    from tests.conftest import smoke_config

    @baselines.register("wrong-shape", "Wrong shape")
    def _wrong(frame, split, context):
        return np.zeros((len(frame), 3))

    try:
        cfg = smoke_config(tmp_path, movielens_dir)
        ensure_splits(cfg)
        with pytest.raises(ValueError, match=r"expected \(3, 21\)"):
            evaluate_system(cfg, "wrong-shape")
    finally:
        systems.SYSTEMS.pop("wrong-shape")
    with pytest.raises(ValueError, match="--systems/--baselines='nope': unknown system"):
        baselines.find("nope")
    with pytest.raises(ValueError, match="is a classical system, not a reference scorer"):
        baselines.find("core")
