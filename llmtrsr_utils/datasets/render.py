"""Item text rendering: one line per item, "Label: value; Label: value", as in the paper's figures.

The same renderer serves the summarizer and the recommender prompts, so an item reads the same
everywhere. Item ids stay out of the text unless asked: an id is noise to an LLM and can leak
identity across splits. With ``data.include_item_id`` the id comes first, ``ID: <id>``, as the
authors' preprocessing wrote ``id: <id>`` before the other attributes (the paper's figures show
no id).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from llmtrsr_utils.datasets.base import ITEM_ID

# Labels as the paper writes them (Figure 6: "Category: ...; SubCategory: ...; Title: ...").
ATTRIBUTE_LABELS: dict[str, str] = {
    "category": "Category",
    "subcategory": "SubCategory",
    "title": "Title",
    "abstract": "Abstract",
    "year": "Year",
    "genres": "Genres",
    "tags": "Tags",
    "locale": "Locale",
    "price": "Price",
    "brand": "Brand",
    "color": "Color",
    "size": "Size",
    "model": "Model",
    "material": "Material",
    "author": "Author",
    "desc": "Description",  # Amazon-M2's column; the authors renamed it "description"
    "description": "Description",
}
ID_LABEL = "ID"


def attribute_label(attribute: str) -> str:
    return ATTRIBUTE_LABELS.get(attribute, attribute.replace("_", " ").capitalize())


def _one_line(value: Any) -> str:
    """A value as one line of text: missing values are "", newlines and tabs become spaces."""
    text = "" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)
    return " ".join(text.split())


def render_item(record: Mapping[str, Any], attributes: Sequence[str],
                include_item_id: bool = False) -> str:
    """Render one item; empty attributes are skipped rather than printed as 'Label: '.

    Args:
        record: the item's ``item_id`` and attribute values.
        attributes: the attributes to render, in order.
        include_item_id: put ``ID: <item_id>`` first (an attribute named ``item_id`` is then
            not repeated).

    Returns:
        ``"Label: value; Label: value"`` on one line.
    """
    parts = []
    if include_item_id:
        item_id = _one_line(record[ITEM_ID])
        if not item_id:
            raise ValueError(f"include_item_id: item has an empty {ITEM_ID} ({dict(record)!r})")
        parts.append(f"{ID_LABEL}: {item_id}")
    for attribute in attributes:
        if include_item_id and attribute == ITEM_ID:
            continue
        text = _one_line(record.get(attribute))
        if text:
            parts.append(f"{attribute_label(attribute)}: {text}")
    return "; ".join(parts)


def render_items(items: pd.DataFrame, attributes: Sequence[str],
                 include_item_id: bool = False) -> pd.Series:
    missing = [a for a in attributes if a not in items.columns]
    if missing:
        raise KeyError(f"unknown item attribute(s) {', '.join(missing)}; this dataset has "
                       f"{', '.join(c for c in items.columns if c != ITEM_ID)}")
    return pd.Series([render_item(r, attributes, include_item_id)
                      for r in items.to_dict("records")], index=items.index, dtype=object)
