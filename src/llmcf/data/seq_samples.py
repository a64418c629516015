"""Sequential (next-item) samples: each user's positives in time order, per-user leave-one-out.

For every user the positive interactions (explicit data: rating >= threshold; implicit: all; labelled logs:
label == 1) are ordered by time (stable: ties keep the input order). Each positive at sequence index k >= 1 is one
row: target = that item, history = the last ``history_len`` positives before it (oldest first). The last row of a
user is test, the second-to-last valid, the rest train (a user with 2 positives has only a test row).

Files (``run_dir/data/``):
    seq_{train,valid,test}.parquet   user_id str, pos int64, item_id str, timestamp float64, history list<str>
        pos = the interaction's position in the user's full time-ordered sequence (the CTR samples' ``pos``), so
        the retrieval leakage rule (same user, same or later pos) means the same thing in both tasks.
    seq_stats.json                   users, rows, OOV targets per split, the vocabulary used and the protocol
    seq_vocab.json                   only when the run has no CTR vocab.json: {"user": [...], "item": [...],
                                     "brand": [], "category": []} built from the seq train split (id = index + 2)
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from llmcf.config import DataConfig
from llmcf.data.features import encode_history
from llmcf.data.samples import ordered_interactions, resolve_label_rule
from llmcf.data.schema import OOV, SPLITS, RawDataset
from llmcf.data.vocab import Vocab
from llmcf.errors import DataError, RunError
from llmcf.fingerprint import file_sha, seq_data_stamp
from llmcf.io import atomic_write_json, write_parquet

SEQ_COLUMNS = ("user_id", "pos", "item_id", "timestamp", "history")


def positive_sequences(ds: RawDataset, data_cfg: DataConfig) -> tuple[pd.DataFrame, str]:
    """(user_id, pos, item_id, timestamp of every positive, sorted by user then pos; the label rule used).

    Ordering, ``pos``, the label rule and ``max_users`` are those of the CTR samples (llmcf.data.samples)."""
    rule = resolve_label_rule(ds, data_cfg)
    df, _ = ordered_interactions(ds, data_cfg)
    if rule == "rating":
        rating = df["rating"].to_numpy(dtype=np.float64)
        if np.isnan(rating).any():
            row = int(np.flatnonzero(np.isnan(rating))[0])
            raise DataError(f"missing or non-numeric rating (user {df['user_id'].iloc[row]!r})",
                            file=ds.source or ds.name, field="rating")
        keep = rating >= data_cfg.rating_threshold
    elif rule == "column":
        keep = df["label"].to_numpy(dtype=np.float64) == 1.0
    else:
        keep = np.ones(len(df), dtype=bool)
    out = df.loc[keep, ["user_id", "pos", "item_id", "timestamp"]].reset_index(drop=True)
    return out.astype({"pos": np.int64, "timestamp": np.float64}), rule


def leave_one_out(positives: pd.DataFrame, history_len: int = 20) -> dict[str, pd.DataFrame]:
    """Rows for sequence index >= 1 with the last ``history_len`` earlier items; last → test, second-to-last → valid."""
    if history_len < 1:
        raise DataError(f"history_len must be >= 1, got {history_len}", field="seq.history_len")
    out: dict[str, list] = {s: [] for s in SPLITS}
    users = positives["user_id"].to_numpy()
    items = positives["item_id"].to_numpy()
    pos = positives["pos"].to_numpy()
    ts = positives["timestamp"].to_numpy()
    bounds = np.flatnonzero(np.r_[True, users[1:] != users[:-1], True]) if len(users) else np.array([0])
    for a, b in zip(bounds[:-1], bounds[1:]):
        seq = items[a:b].tolist()
        n = b - a
        for k in range(1, n):
            split = "test" if k == n - 1 else "valid" if k == n - 2 else "train"
            out[split].append((users[a], int(pos[a + k]), seq[k], float(ts[a + k]), seq[max(0, k - history_len):k]))
    return {s: pd.DataFrame(rows, columns=list(SEQ_COLUMNS)).astype({"pos": np.int64, "timestamp": np.float64})
            for s, rows in out.items()}


def _vocab_from_train(train: pd.DataFrame) -> dict:
    items = set(train["item_id"])
    for h in train["history"]:
        items.update(h)
    return {"user": sorted(set(train["user_id"])), "item": sorted(items), "brand": [], "category": []}


def build_seq_data(ds: RawDataset, run_dir: str | Path, data_cfg: DataConfig, history_len: int = 20) -> dict:
    """Write seq_{train,valid,test}.parquet, seq_stats.json (and seq_vocab.json if the run has no vocab.json)."""
    data = Path(run_dir) / "data"
    positives, rule = positive_sequences(ds, data_cfg)
    if positives.empty:
        raise DataError(f"dataset {ds.name}: no positive interactions (label rule '{rule}')")
    splits = leave_one_out(positives, history_len)
    if len(splits["train"]) == 0:
        raise DataError(f"dataset {ds.name}: no user has 3 or more positives, so the seq train split is empty")
    vocab_file = "vocab.json" if (data / "vocab.json").exists() else "seq_vocab.json"
    if vocab_file == "seq_vocab.json":
        Vocab.from_train(splits["train"]).save(data / vocab_file)
    vocab = Vocab.load(data / vocab_file)
    for s, df in splits.items():
        write_parquet(df, data / f"seq_{s}.parquet")
    stats = {
        "users": int(positives["user_id"].nunique()), "items_in_vocab": len(vocab.item),
        "positives": int(len(positives)), "vocab": vocab_file, "vocab_sha": file_sha(data / vocab_file),
        "rows": {s: int(len(df)) for s, df in splits.items()},
        "oov_targets": {s: int((vocab.encode_items(df["item_id"].to_numpy(dtype=object)) <= OOV).sum())
                        for s, df in splits.items()},
        "protocol": {"task": "sequential", "source": ds.source or ds.name, "positives": _rule_text(rule, data_cfg),
                     "order": "per user by (timestamp, original row order); pos as in the CTR samples",
                     "history_len": history_len, "max_users": data_cfg.max_users,
                     "split": "per-user leave-one-out: last positive → test, second-to-last → valid, rest → train",
                     "oov_targets": "train rows with an out-of-vocabulary target are skipped; valid/test ones "
                                    "count as misses"},
    }
    atomic_write_json(data / "seq_stats.json", stats)
    return stats


def _rule_text(rule: str, data_cfg: DataConfig) -> str:
    return {"rating": f"rating >= {data_cfg.rating_threshold:g}", "column": "label == 1",
            "implicit": "every interaction"}[rule]


def ensure_seq_data(run_dir: str | Path, cfg, ds: RawDataset | None = None) -> dict:
    """Build the seq samples unless seq_stats.json matches this config and vocabulary; returns the stats."""
    run_dir = Path(run_dir)
    data = run_dir / "data"
    d = cfg.data
    stamp = seq_data_stamp(cfg)
    stats_path = data / "seq_stats.json"
    if stats_path.exists() and all((data / f"seq_{s}.parquet").exists() for s in SPLITS):
        stats = json.loads(stats_path.read_text())
        vpath = data / stats.get("vocab", "-")
        vocab_now = "vocab.json" if (data / "vocab.json").exists() else "seq_vocab.json"
        if (stats.get("stamp") == stamp and stats.get("vocab") == vocab_now and vpath.is_file()
                and file_sha(vpath) == stats.get("vocab_sha")):
            return stats
    if ds is None:
        from llmcf.data.loaders import load_dataset

        ds = load_dataset(d.dataset, d.format)
    stats = build_seq_data(ds, run_dir, d, cfg.seq.history_len)
    stats["stamp"] = stamp
    atomic_write_json(stats_path, stats)
    return stats


def seq_vocab(run_dir: str | Path) -> Vocab:
    """The vocabulary the seq samples were encoded with (recorded in seq_stats.json)."""
    data = Path(run_dir) / "data"
    stats_path = data / "seq_stats.json"
    if not stats_path.exists():
        raise RunError(f"{stats_path}: missing; the sequential samples are built by `llmcf train --task sequential`")
    return Vocab.load(data / json.loads(stats_path.read_text())["vocab"])


def encode_seq(df: pd.DataFrame, vocab: Vocab, history_len: int) -> dict[str, np.ndarray]:
    """A seq split -> user [N], item [N], hist [N, L] (left-padded 0, most recent last), hist_len [N] int64."""
    hist, hlen = encode_history(df["history"], vocab, history_len)
    return {"user": vocab.encode_users(df["user_id"].to_numpy(dtype=object)),
            "item": vocab.encode_items(df["item_id"].to_numpy(dtype=object)), "hist": hist, "hist_len": hlen}


def load_seq_split(run_dir: str | Path, split: str) -> pd.DataFrame:
    p = Path(run_dir) / "data" / f"seq_{split}.parquet"
    if not p.exists():
        raise RunError(f"{p}: missing; the sequential samples are built by `llmcf train --task sequential`")
    return pd.read_parquet(p)


def load_seq_frames(run_dir: str | Path) -> tuple[dict[str, pd.DataFrame], np.ndarray, Vocab]:
    """(frames per split, train_rows, vocab): the seq samples as the sequential task uses them — the train split
    keeps only its rows with a rankable target (an item in the vocabulary); ``train_rows`` are their row numbers in
    data/seq_train.parquet."""
    vocab = seq_vocab(run_dir)
    frames = {s: load_seq_split(run_dir, s) for s in SPLITS}
    train_rows = np.flatnonzero(vocab.encode_items(frames["train"]["item_id"].to_numpy(dtype=object)) > OOV)
    frames["train"] = frames["train"].iloc[train_rows].reset_index(drop=True)
    return frames, train_rows, vocab
