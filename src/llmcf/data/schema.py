"""The contracts between stages: what data looks like at each boundary.

RawDataset (loaders → sample builder)
    interactions: DataFrame
        user_id: str, item_id: str, timestamp: float (order within a user; comparable across users iff real_time),
        rating: float (optional, explicit data), label: int 0/1 (optional, pre-labelled CTR logs)
    items: DataFrame
        item_id: str (unique), title: str ("" if missing), brand: str ("" if missing),
        categories: list[str] (possibly empty), text: str (``item_text(...)``)
    users: DataFrame | None   (user_id: str, other columns kept as str)

Run directory (``runs/<name>/``), written by ``llmcf data build``:
    config.yaml                       resolved config of the last stage run
    data/items.parquet                the items table above
    data/{train,valid,test}.parquet   CTR samples, one row per (user, position[, sampled negative]):
        user_id: str, pos: int64 (position of the interaction in the user's time-ordered sequence),
        item_id: str (target), label: int8, rating: float64 (NaN if none), timestamp: float64,
        history: list<str> (the last ≤ history_len item ids strictly before pos, oldest first)
      Negatives sampled for implicit data share the (user_id, pos, history) of their positive.
    data/vocab.json                   {"user": [...], "item": [...], "brand": [...], "category": [...]};
                                      id = index + 2 (0 = padding, 1 = out-of-vocabulary)
    data/stats.json                   users, items, rows, positive rate per split, and the split protocol

Encoded batch (features → models): a dict of tensors
    user [B] int64, item [B] int64, hist [B, L] int64 (left-padded with 0: most recent item at index L-1),
    hist_len [B] int64, label [B] float32.
    Brands and categories are not in the batch: models look them up through FeatureSchema.item_brand / item_cats,
    so target and history items share the same tables.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

PAD = 0
OOV = 1
INTERACTION_COLUMNS = ("user_id", "item_id", "timestamp")
ITEM_COLUMNS = ("item_id", "title", "brand", "categories", "text")
SAMPLE_COLUMNS = ("user_id", "pos", "item_id", "label", "rating", "timestamp", "history")
SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class Duplicates:
    """Exact duplicate interaction rows a loader dropped: how many, and where the first one is."""

    file: str
    count: int
    line: int
    first_line: int
    """The line the first dropped row repeats."""


@dataclass
class RawDataset:
    name: str
    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame | None = None
    real_time: bool = True
    """True when timestamps are comparable across users (a global time split is then meaningful)."""
    source: str = ""
    label_hint: str | None = None
    """What the loader knows of the labels: "implicit" (e.g. Amazon reviews = purchases), "rating", "column" or None.
    Used when the config says ``data.label: auto``."""
    duplicates: Duplicates | None = None
    """Exact duplicate interactions the loader dropped (``data.on_duplicate: error`` turns them into an error)."""


@dataclass
class FeatureSchema:
    """Sizes of the id spaces (padding and OOV included) and the item side tables shared by target and history."""

    n_users: int
    n_items: int
    n_brands: int
    n_cats: int
    hist_len: int
    item_brand: np.ndarray  # [n_items] int64
    item_cats: np.ndarray  # [n_items, C] int64, 0-padded


def item_text(title: str = "", brand: str = "", categories: list[str] | None = None) -> str:
    """``title: ...; brand: ...; category: a, b, c`` with missing fields left out."""
    parts = []
    if title:
        parts.append(f"title: {title}")
    if brand:
        parts.append(f"brand: {brand}")
    if categories:
        parts.append(f"category: {', '.join(categories)}")
    return "; ".join(parts)
