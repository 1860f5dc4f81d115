"""The paper's Table 1 for a prepared dataset: attributes, positives per split, history length,
tokens per item under the recommender's tokenizer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from llmtrsr_utils.datasets.base import HISTORY, ITEM_ID, TARGET
from llmtrsr_utils.datasets.splits import (
    FULL_HISTORY_LENGTH,
    SPLITS,
    load_items,
    load_split,
    read_manifest,
)


@dataclass
class DatasetStatistics:
    table: pd.DataFrame  # Table 1: one row per description, one column for the dataset
    history_lengths: pd.Series  # per user of every split, as kept
    full_history_lengths: pd.Series  # per user, before truncation to max_history
    max_history: int
    item_tokens: pd.Series  # per distinct item seen in the splits (history or target)


def rendered_attribute_count(manifest: dict[str, Any]) -> int:
    """Table 1's "# of different attributes": what the item text renders, i.e. the attributes
    plus the id when ``data.include_item_id`` (the authors' counts, 10 for Amazon-M2 and 4 for
    MIND, include their ``id:`` field)."""
    try:
        attributes = manifest["attributes"]
        include_id = manifest["params"]["data"].get("include_item_id", False)
    except (KeyError, TypeError, AttributeError) as err:
        raise KeyError(f"manifest.json: no {err} (expected keys 'attributes' and "
                       f"'params.data'); rerun `llmtrsr data`") from None
    return len(attributes) + (1 if include_id else 0)


def dataset_statistics(data_dir: Path, tokenizer) -> DatasetStatistics:
    """Table 1 and the distributions behind it for the prepared dataset in ``data_dir``.

    Args:
        data_dir: a folder written by ``prepare_dataset`` (manifest, items and splits).
        tokenizer: a Hugging Face tokenizer (called on a list of texts), the recommender's.

    Returns:
        The table and per-user / per-item series.
    """
    manifest = read_manifest(data_dir)
    if manifest is None:
        raise FileNotFoundError(f"{data_dir}: no manifest.json; run `llmtrsr data` first")
    items = load_items(data_dir).set_index(ITEM_ID)
    splits = {split: load_split(data_dir, split) for split in SPLITS}
    lengths = pd.concat([frame[HISTORY].map(len) for frame in splits.values()], ignore_index=True)
    seen = sorted({item for frame in splits.values()
                   for row in frame.itertuples() for item in (*getattr(row, HISTORY),
                                                               getattr(row, TARGET))})
    texts = items.loc[seen, "text"].tolist()
    token_counts = pd.Series([len(ids) for ids in
                              tokenizer(texts, add_special_tokens=False)["input_ids"]],
                             index=seen, name="tokens")
    name = manifest["dataset"]
    table = pd.DataFrame({"description": [
        "# of different attributes",
        "# of positive samples in the training set",
        "# of positive samples in the validation set",
        "# of positive samples in the test set",
        "Avg. # of historical user behavior sequence",
        "Avg. # of tokens corresponding to an item",
    ], name: pd.Series([
        rendered_attribute_count(manifest),
        # every training window is a positive sample (data.train_windows; 1 window per user
        # by default, as in the paper)
        len(load_split(data_dir, "train", windows=True)), len(splits["valid"]),
        len(splits["test"]),
        round(float(lengths.mean()), 2),
        round(float(token_counts.mean()), 2),
    ], dtype=object)}).set_index("description")  # object: counts print as integers
    full = pd.concat([frame[FULL_HISTORY_LENGTH] for frame in splits.values()],
                     ignore_index=True)
    return DatasetStatistics(table=table, history_lengths=lengths.rename("history_length"),
                             full_history_lengths=full.rename("full_history_length"),
                             max_history=int(manifest["params"]["data"]["max_history"]),
                             item_tokens=token_counts)
