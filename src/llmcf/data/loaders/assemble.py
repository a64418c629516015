"""Common last step of every loader: cross-table checks, item text, time semantics → ``RawDataset``."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from llmcf.data.schema import ITEM_COLUMNS, Duplicates, RawDataset, item_text

from . import validate as V
from .table import Table

log = logging.getLogger(__name__)


@dataclass
class Part:
    """A normalised frame plus the table it came from (for line numbers in messages)."""

    frame: pd.DataFrame
    table: Table


def empty_items(item_ids) -> pd.DataFrame:
    ids = pd.Series(pd.unique(np.asarray(item_ids, dtype=object)), dtype=object)
    n = len(ids)
    return pd.DataFrame({"item_id": ids, "title": [""] * n, "brand": [""] * n, "categories": [[] for _ in range(n)]})


def positional(inter: pd.DataFrame) -> bool:
    """True when each user's timestamps are exactly 0..n-1 (or all 1..n): a per-user position, not a time."""
    d = inter[["user_id", "timestamp"]].sort_values(["user_id", "timestamp"], kind="stable")
    pos = d.groupby("user_id", sort=False).cumcount().to_numpy().astype(np.float64)
    ts = d["timestamp"].to_numpy(np.float64)
    return bool(np.array_equal(pos, ts) or np.array_equal(pos + 1, ts))


def finish(name: str, source: str, inter: Part, items: Part | None, users: Part | None, label_hint: str | None,
           *, strict_items: bool = True) -> RawDataset:
    """Check ids across tables, build item text and return the dataset.

    ``strict_items``: interactions naming items absent from the item table are an error; otherwise (Amazon, where the
    meta file may lack products) such items get empty text fields.
    """
    df, dups = drop_duplicates(inter)
    if "timestamp" not in df.columns:
        log.warning("%s has no timestamp: using each user's order in the file", inter.table.file)
        df = df.assign(timestamp=df.groupby("user_id", sort=False).cumcount().astype("float64"))
    if items is None:
        it = empty_items(df["item_id"])
    else:
        it = items.frame
        V.unique(items.table, it["item_id"], "item_id", "item id")
        if strict_items:
            V.known(inter.table, df["item_id"], it["item_id"], "item_id", items.table.file)
        else:
            used = pd.Series(pd.unique(df["item_id"].to_numpy(dtype=object)), dtype=object)
            extra = empty_items(used[~used.isin(it["item_id"])])
            if len(extra):
                log.warning("%d items have no metadata in %s: their text is empty", len(extra), items.table.file)
                it = pd.concat([it, extra], ignore_index=True) if len(it) else extra
    it = it.reset_index(drop=True)
    for c in ("title", "brand"):
        it[c] = it[c].astype(object)
    it["text"] = [item_text(t, b, c) for t, b, c in zip(it["title"], it["brand"], it["categories"])]
    it = it[list(ITEM_COLUMNS) + [c for c in it.columns if c not in ITEM_COLUMNS]]
    us = None
    if users is not None:
        us = users.frame.reset_index(drop=True)
        V.unique(users.table, us["user_id"], "user_id", "user id")
    order = ["user_id", "item_id", "timestamp"] + [c for c in ("rating", "label") if c in df.columns]
    df = df[order].reset_index(drop=True)
    real_time = not positional(df)
    hint = "column" if "label" in df.columns else label_hint
    return RawDataset(name=name, interactions=df, items=it, users=us, real_time=real_time, source=source,
                      label_hint=hint, duplicates=dups)


def drop_duplicates(inter: Part) -> tuple[pd.DataFrame, Duplicates | None]:
    """The interactions without exact duplicate rows (every field equal; the first is kept), and what was dropped."""
    df = inter.frame
    dup = df.duplicated(keep="first").to_numpy()
    if not dup.any():
        return df, None
    i = int(np.flatnonzero(dup)[0])
    h = pd.util.hash_pandas_object(df, index=False).to_numpy()
    j = int(np.flatnonzero(h == h[i])[0])
    info = Duplicates(file=inter.table.file, count=int(dup.sum()), line=inter.table.line(i),
                      first_line=inter.table.line(j))
    log.warning("%s: %d exact duplicate interactions dropped (the first on line %d repeats line %d)", info.file,
                info.count, info.line, info.first_line)
    return df[~dup].reset_index(drop=True), info
