"""CTR samples from a RawDataset: labels, sampled negatives and per-position histories (``SAMPLE_COLUMNS``).

Rules (also recorded in the split protocol of stats.json):
- Each user's interactions are ordered by (timestamp, original row order), stably; ``pos`` = 0..n-1 in that order.
- ``history`` = the last ``history_len`` item ids at positions strictly before ``pos``, oldest first. It holds every
  earlier interaction whatever its label or rating (an explicit rating is still evidence of what the user consumed).
- Labels (``data.label``): ``rating`` → rating >= rating_threshold; ``column`` → the 0/1 ``label`` column;
  ``implicit`` → every interaction is a positive, followed by ``num_negatives`` negatives drawn uniformly (independently,
  with replacement) from the catalogue items the user never interacted with. The catalogue is the set of items that
  occur in the interactions kept (after ``max_users``), so negatives are items that real users consumed. A negative
  shares user_id, pos, history and timestamp with its positive; its rating is NaN. ``auto`` → ``ds.label_hint``, else
  the ``label`` column if present, else ``rating`` if present, else implicit.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from llmcf.config import DataConfig
from llmcf.data.schema import INTERACTION_COLUMNS, SAMPLE_COLUMNS, RawDataset
from llmcf.errors import DataError

LABEL_RULES = ("implicit", "rating", "column")


def _where(ds: RawDataset) -> str:
    return ds.source or ds.name


def resolve_label_rule(ds: RawDataset, cfg: DataConfig) -> str:
    """The label rule actually used: ``cfg.label`` with ``auto`` resolved from the dataset."""
    cols = set(ds.interactions.columns)
    rule = cfg.label
    if rule == "auto":
        rule = ds.label_hint or ("column" if "label" in cols else "rating" if "rating" in cols else "implicit")
    if rule not in LABEL_RULES:
        raise DataError(f"unknown label rule {rule!r}; expected auto | implicit | rating | column", field="data.label")
    needed = {"rating": "rating", "column": "label"}.get(rule)
    if needed and needed not in cols:
        raise DataError(f"label rule '{rule}' needs a '{needed}' column in the interactions; found "
                        f"{sorted(cols)}", file=_where(ds), field=needed)
    return rule


def select_users(users: np.ndarray, max_users: int | None, seed: int) -> np.ndarray:
    """A seeded random subset of ``max_users`` users (from the sorted ids), or all users when None."""
    users = np.sort(users)
    if max_users is None or max_users >= len(users):
        return users
    if max_users <= 0:
        raise DataError(f"expected a positive number of users, got {max_users}", field="data.max_users")
    rng = np.random.default_rng([seed, 0])
    return np.sort(users[rng.permutation(len(users))[:max_users]])


def interaction_columns(ds: RawDataset) -> dict:
    """The validated interaction columns: user_id / item_id as str Series, timestamp (and rating, label when
    present) as float64 arrays, in input order. Raises DataError naming the first bad row."""
    inter = ds.interactions
    missing = [c for c in INTERACTION_COLUMNS if c not in inter.columns]
    if missing:
        raise DataError(f"interactions lack the columns {missing} (have {list(inter.columns)})", file=_where(ds))
    if len(inter) == 0:
        raise DataError("no interactions", file=_where(ds))
    for col in ("user_id", "item_id"):
        if inter[col].isna().any():
            row = int(np.flatnonzero(inter[col].isna().to_numpy())[0])
            raise DataError(f"missing {col} in interaction row {row}", file=_where(ds), field=col)
    out = {"user_id": inter["user_id"].astype(str), "item_id": inter["item_id"].astype(str)}
    ts = pd.to_numeric(inter["timestamp"], errors="coerce").to_numpy(dtype=np.float64)
    if np.isnan(ts).any():
        row = int(np.flatnonzero(np.isnan(ts))[0])
        raise DataError(f"interaction row {row}: timestamp {inter['timestamp'].iloc[row]!r} is not a number",
                        file=_where(ds), field="timestamp")
    out["timestamp"] = ts
    for col in ("rating", "label"):
        if col in inter.columns:
            out[col] = pd.to_numeric(inter[col], errors="coerce").to_numpy(dtype=np.float64)
    return out


def ordered_interactions(ds: RawDataset, cfg: DataConfig) -> tuple[pd.DataFrame, np.ndarray]:
    """Validated interactions of the kept users, sorted by (user, timestamp, original order), with ``pos``;
    also the user code of each row (codes follow the sorted user ids)."""
    cols = interaction_columns(ds)
    df = pd.DataFrame({c: (v.to_numpy(dtype=object) if c in ("user_id", "item_id") else v) for c, v in cols.items()})
    del cols
    if cfg.max_users is not None:
        keep = select_users(df["user_id"].unique(), cfg.max_users, cfg.seed)
        df = df[df["user_id"].isin(keep)]
    ucode, _ = pd.factorize(df["user_id"], sort=True)
    order = np.lexsort((np.arange(len(df)), df["timestamp"].to_numpy(), ucode))
    df = df.iloc[order].reset_index(drop=True)
    ucode = ucode[order]
    starts = np.r_[0, np.flatnonzero(np.diff(ucode)) + 1]
    counts = np.diff(np.r_[starts, len(df)])
    df["pos"] = np.arange(len(df)) - np.repeat(starts, counts)
    return df, ucode


def history_lists(items: np.ndarray, pos: np.ndarray, hist_len: int) -> pa.ListArray:
    """For rows sorted by (user, pos): the last ``hist_len`` items strictly before each row, oldest first."""
    n = len(items)
    h = np.minimum(pos, hist_len).astype(np.int64)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(h, out=offsets[1:])
    row = np.repeat(np.arange(n, dtype=np.int64), h)
    flat = row - h[row] + (np.arange(offsets[-1], dtype=np.int64) - offsets[row])
    values = pa.array(items[flat], type=pa.string())
    return pa.LargeListArray.from_arrays(pa.array(offsets, type=pa.int64()), values)


def flatten_lists(col, arrow: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(flat values, length of each row) of a column of lists / arrays (None = empty): a Series, a sequence or an
    Arrow list array. Flat values are an object array, or with ``arrow`` an Arrow array when that is cheaper
    (Arrow input: no Python string objects are made)."""
    if isinstance(col, pd.Series) and isinstance(col.dtype, pd.ArrowDtype):
        col = pa.array(col)
    if not isinstance(col, (pa.Array, pa.ChunkedArray)):
        vals = col.to_numpy() if isinstance(col, pd.Series) else list(col)
        try:  # fast path: every row is a numpy array (as read from Parquet)
            lens = np.fromiter(map(len, vals), dtype=np.int64, count=len(vals))
            if len(vals) and isinstance(vals[0], np.ndarray) and vals[0].dtype == object:
                flat = np.concatenate(list(vals)) if lens.sum() else np.zeros(0, dtype=object)
                if flat.dtype == object:  # rows of plain lists of str would give a fixed-width str array
                    return flat, lens
        except TypeError:
            pass
        col = pa.array([[] if v is None else [str(x) for x in v] for v in vals], type=pa.large_list(pa.string()))
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    col = col.fill_null([]) if col.null_count else col
    lens = pc.list_value_length(col).to_numpy(zero_copy_only=False).astype(np.int64)
    if arrow:
        return col.flatten(), lens
    flat = col.flatten().to_numpy(zero_copy_only=False)
    return flat.astype(object, copy=False), lens


def sample_negatives(user_code: np.ndarray, item_code: np.ndarray, rows_user: np.ndarray, n_items: int, k: int,
                     rng: np.random.Generator, user_names=None) -> np.ndarray:
    """[len(rows_user), k] item codes, uniform over the items each row's user never interacted with.

    user_code/item_code: every interaction (codes); rows_user: the user code of each positive row.
    Vectorised rejection sampling against the sorted (user, item) keys; rare stragglers (users who consumed almost
    the whole catalogue) are drawn exactly from their complement.
    """
    keys = np.unique(user_code.astype(np.int64) * n_items + item_code)
    distinct = np.bincount(keys // n_items, minlength=int(rows_user.max(initial=0)) + 1)
    full = distinct[rows_user] >= n_items
    if full.any():
        u = int(rows_user[np.flatnonzero(full)[0]])
        who = f"user {user_names[u]!r}" if user_names is not None else f"user #{u}"
        raise DataError(f"{who} interacted with every one of the {n_items} items: no negative can be sampled "
                        "for them (use data.label: rating/column, or drop such users)", field="data.num_negatives")
    users = np.repeat(rows_user.astype(np.int64), k)
    out = rng.integers(0, n_items, size=len(users))

    def seen(idx):
        q = users[idx] * n_items + out[idx]
        j = np.minimum(np.searchsorted(keys, q), len(keys) - 1)
        return keys[j] == q

    todo = np.flatnonzero(seen(np.arange(len(users))))
    for _ in range(30):
        if len(todo) == 0:
            break
        out[todo] = rng.integers(0, n_items, size=len(todo))
        todo = todo[seen(todo)]
    for u in np.unique(users[todo]):
        rows = todo[users[todo] == u]
        own = keys[(keys >= u * n_items) & (keys < (u + 1) * n_items)] - u * n_items
        out[rows] = rng.choice(np.setdiff1d(np.arange(n_items), own), size=len(rows))
    return out.reshape(-1, k)


def build_samples(ds: RawDataset, cfg: DataConfig) -> pd.DataFrame:
    """All CTR rows (SAMPLE_COLUMNS), sorted by (user, pos) with each positive followed by its negatives."""
    if cfg.history_len < 0:
        raise DataError(f"expected history_len >= 0, got {cfg.history_len}", field="data.history_len")
    rule = resolve_label_rule(ds, cfg)
    df, ucode = ordered_interactions(ds, cfg)
    items = df["item_id"].to_numpy(dtype=object)
    pos = df["pos"].to_numpy(dtype=np.int64)
    rating = df["rating"].to_numpy(dtype=np.float64) if "rating" in df else np.full(len(df), np.nan)
    if rule == "rating":
        if np.isnan(rating).any():
            row = int(np.flatnonzero(np.isnan(rating))[0])
            raise DataError(f"missing or non-numeric rating (sorted row {row}, user {df['user_id'].iloc[row]!r})",
                            file=_where(ds), field="rating")
        label = (rating >= cfg.rating_threshold).astype(np.int8)
    elif rule == "column":
        lab = df["label"].to_numpy(dtype=np.float64)
        bad = ~np.isin(lab, (0.0, 1.0))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(f"expected 0/1 labels, found {df['label'].iloc[row]!r} (user {df['user_id'].iloc[row]!r})",
                            file=_where(ds), field="label")
        label = lab.astype(np.int8)
    else:
        label = np.ones(len(df), dtype=np.int8)
    hist = history_lists(items, pos, cfg.history_len)
    if rule != "implicit" or cfg.num_negatives <= 0:
        return _frame(df["user_id"].to_numpy(dtype=object), pos, items, label, rating,
                      df["timestamp"].to_numpy(), hist)
    k = cfg.num_negatives
    icode, catalogue = pd.factorize(items, sort=True)
    names = df["user_id"].to_numpy(dtype=object)[np.r_[0, np.flatnonzero(np.diff(ucode)) + 1]]
    neg = sample_negatives(ucode, icode, ucode, len(catalogue), k, np.random.default_rng([cfg.seed, 1]), names)
    rep = np.repeat(np.arange(len(df)), k + 1)
    is_neg = np.tile(np.arange(k + 1) > 0, len(df))
    all_items = np.empty(len(rep), dtype=object)
    all_items[~is_neg] = items
    all_items[is_neg] = np.asarray(catalogue, dtype=object)[neg.ravel()]
    return _frame(df["user_id"].to_numpy(dtype=object)[rep], pos[rep], all_items, (~is_neg).astype(np.int8),
                  np.where(is_neg, np.nan, rating[rep]), df["timestamp"].to_numpy()[rep],
                  hist.take(pa.array(rep)))


def _frame(user, pos, item, label, rating, ts, hist: pa.Array) -> pd.DataFrame:
    out = pd.DataFrame({"user_id": user, "pos": pos.astype(np.int64), "item_id": item,
                        "label": label.astype(np.int8), "rating": rating.astype(np.float64),
                        "timestamp": ts.astype(np.float64), "history": hist.to_pandas().to_numpy()})
    return out[list(SAMPLE_COLUMNS)]
