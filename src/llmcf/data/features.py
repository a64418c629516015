"""Encoded features: the FeatureSchema side tables and the numpy arrays of the batch contract (llmcf.data.schema)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from llmcf.data.samples import flatten_lists
from llmcf.data.schema import SAMPLE_COLUMNS, SPLITS, FeatureSchema
from llmcf.data.vocab import Vocab
from llmcf.errors import DataError
from llmcf.rundir import RunDir


def make_schema(vocab: Vocab, items_df: pd.DataFrame, hist_len: int, max_cats: int = 8) -> FeatureSchema:
    """Side tables indexed by item id: item_brand [n_items] (the item's brand id, 0 if none) and item_cats
    [n_items, max_cats] (its first ``max_cats`` category ids, 0-padded). Rows 0 (padding), 1 (OOV) and vocabulary
    items missing from ``items_df`` are all 0."""
    n_items = vocab.n_items
    item_brand = np.zeros(n_items, dtype=np.int64)
    item_cats = np.zeros((n_items, max_cats), dtype=np.int64)
    if items_df is not None and len(items_df):
        items = items_df.drop_duplicates("item_id")
        ids = vocab.encode_items(items["item_id"].astype(str))
        known = ids >= 2
        items, ids = items[known], ids[known]
        if "brand" in items:
            brand = items["brand"].fillna("").astype(str).to_numpy(dtype=object)
            b = vocab.encode("brand", brand)
            b[brand == ""] = 0
            item_brand[ids] = b
        if "categories" in items and max_cats > 0:
            flat, lens = flatten_lists(items["categories"])
            c = vocab.encode("category", flat)
            c[flat == ""] = 0
            row = np.repeat(np.arange(len(lens)), lens)
            col = np.arange(len(flat)) - np.repeat(np.cumsum(lens) - lens, lens)
            keep = col < max_cats
            item_cats[ids[row[keep]], col[keep]] = c[keep]
    return FeatureSchema(n_users=vocab.n_users, n_items=n_items, n_brands=vocab.size("brand"),
                         n_cats=vocab.size("category"), hist_len=hist_len, item_brand=item_brand, item_cats=item_cats)


def encode_history(history, vocab: Vocab, hist_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(hist [N, L] int64 left-padded with 0, most recent at L-1; hist_len [N] int64) keeping the last L items."""
    flat, lens = flatten_lists(history, arrow=True)
    n = len(lens)
    out = np.zeros((n, hist_len), dtype=np.int64)
    if hist_len > 0 and len(flat):
        ids = vocab.encode_items(flat)
        end = np.cumsum(lens)
        k = np.arange(len(ids), dtype=np.int64)
        # flat element k of row r goes to cell r*L + L - (end_r - k), kept when it is among the last L of its row
        cell = np.repeat((np.arange(1, n + 1, dtype=np.int64)) * hist_len - end, lens) + k
        keep = k >= np.repeat(end - hist_len, lens)
        out.ravel()[cell[keep]] = ids[keep]
    return out, np.minimum(lens, hist_len).astype(np.int64)


def encode(df: pd.DataFrame | pa.Table, vocab: Vocab, hist_len: int) -> dict[str, np.ndarray]:
    """Arrays of the batch contract: user, item, hist, hist_len (int64) and label (float32).

    ``df``: sample rows as a DataFrame or an Arrow table (the faster path: no Python string objects)."""
    cols = df.column_names if isinstance(df, pa.Table) else list(df.columns)
    missing = [c for c in ("user_id", "item_id", "history", "label") if c not in cols]
    if missing:
        raise DataError(f"samples lack the columns {missing} (have {cols})")
    if isinstance(df, pa.Table):
        user, item, history = df.column("user_id"), df.column("item_id"), df.column("history")
        label = df.column("label").to_numpy().astype(np.float32)
    else:
        user, item, history = df["user_id"], df["item_id"], df["history"]
        label = df["label"].to_numpy(dtype=np.float32)
    hist, hlen = encode_history(history, vocab, hist_len)
    return {"user": vocab.encode_users(user), "item": vocab.encode_items(item), "hist": hist, "hist_len": hlen,
            "label": label}


def _split_path(run_dir: str | Path, split: str) -> Path:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    run = RunDir(run_dir)
    return run.need(run.split(split))


def load_split(run_dir: str | Path, split: str) -> pd.DataFrame:
    """The CTR rows of one split from ``run_dir/data/<split>.parquet``."""
    path = _split_path(run_dir, split)
    df = pd.read_parquet(path)
    missing = [c for c in SAMPLE_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"expected the sample columns {list(SAMPLE_COLUMNS)}, missing {missing}", file=str(path))
    return df


ENCODE_BATCH_ROWS = 1 << 17
"""Rows read and encoded at a time by ``load_encoded`` (a split is never held whole as Arrow strings)."""


def load_encoded(run_dir: str | Path, split: str, vocab: Vocab | None = None,
                 hist_len: int | None = None) -> dict[str, np.ndarray]:
    """Encoded arrays of one split (read as Arrow: faster than ``encode(load_split(...))``, same values);
    vocab defaults to run_dir/data/vocab.json, hist_len to the build's history_len.

    The file is read in batches of ``ENCODE_BATCH_ROWS`` rows (its row groups streamed), each encoded into
    preallocated arrays: memory is the encoded arrays plus one batch of strings, not the whole split's strings."""
    path = _split_path(run_dir, split)
    pf = pq.ParquetFile(path)
    names = pf.schema_arrow.names
    missing = [c for c in SAMPLE_COLUMNS if c not in names]
    if missing:
        raise DataError(f"expected the sample columns {list(SAMPLE_COLUMNS)}, missing {missing}", file=str(path))
    run = RunDir(run_dir)
    vocab = vocab or Vocab.load(run.need(run.vocab))
    cols = ["user_id", "item_id", "history", "label"]
    if hist_len is None:
        hist_len = run.read_stats().get("protocol", {}).get("history_len")
        if hist_len is None:
            hist_len = max((int(pc.max(pc.list_value_length(b.column("history"))).as_py() or 0)
                            for b in pf.iter_batches(batch_size=ENCODE_BATCH_ROWS, columns=["history"])), default=0)
    n = pf.metadata.num_rows
    out = {"user": np.zeros(n, np.int64), "item": np.zeros(n, np.int64), "hist": np.zeros((n, hist_len), np.int64),
           "hist_len": np.zeros(n, np.int64), "label": np.zeros(n, np.float32)}
    at = 0
    for batch in pf.iter_batches(batch_size=ENCODE_BATCH_ROWS, columns=cols):
        part = encode(pa.Table.from_batches([batch]), vocab, hist_len)
        for k, v in part.items():
            out[k][at:at + len(v)] = v
        at += batch.num_rows
    if at != n:
        raise DataError(f"read {at} rows, the file's metadata says {n}", file=str(path))
    return out
