"""The in-context CoT bank and its retrieval keys.

Bank = every row of ``cot/selected.parquet`` (train rows with a kept CoT), or with ``retrieval.bank: hybrid`` every
row of ``data/train.parquet`` (cot_row -1 where the row has no kept CoT). Each row has two unit keys:
``h`` = re-normalised mean text embedding of its history items (zero if none) and ``t`` = its target item's text
embedding. The score of a bank row r for a query q is ``wh·cos(h_q, h_r) + wt·cos(t_q, t_r)``, computed as ONE inner
product of ``[sqrt(wh)·h ; sqrt(wt)·t]`` (a part whose weight is 0 is left out: ``target_weight: 0`` gives the
history-only keys of the sequential task). Items without a text embedding (unknown at serving time, or without text)
are zero vectors: they add nothing to a mean and give a 0 target similarity.

Files (``run_dir/retrieval/``): ``bank.parquet`` (user_id, pos, item_id, label, history, cot_row; cot_row = row of
``embed/cot.npy``), ``bank_hist.npy`` and ``bank_target.npy`` (the unscaled unit keys, float32 [n_bank, D]).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from llmcf.config import ConfigError, RetrievalConfig
from llmcf.errors import DataError, RunError
from llmcf.io import load_npy, save_npy, write_parquet
from llmcf.lookup import IdIndex
from llmcf.rundir import BANK_FILE_COLUMNS, RunDir



class ItemVectors:
    """Item text embeddings by item id (``embed/items.npy`` + ``embed/item_ids.json``); unknown ids map to zeros."""

    def __init__(self, item_ids: Sequence[str], vectors: np.ndarray, source: str = "item vectors"):
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[0] != len(item_ids):
            raise DataError(f"expected a float array [{len(item_ids)}, D] aligned to item_ids, got shape "
                            f"{vectors.shape}", file=source)
        if not np.isfinite(vectors).all():
            raise DataError("holds NaN or infinite values", file=source)
        self.index = IdIndex(item_ids)
        if not self.index.is_unique:
            raise DataError("item ids are not unique", file=source)
        # one extra zero row at the end: the target of every unknown id
        self.table = np.vstack([vectors.astype(np.float32, copy=False), np.zeros((1, vectors.shape[1]), np.float32)])

    @property
    def dim(self) -> int:
        return self.table.shape[1]

    @classmethod
    def load(cls, run_dir: Path) -> "ItemVectors":
        """embed/items.npy + embed/item_ids.json of a run (read by ``llmcf.rundir``)."""
        run = RunDir(run_dir)
        item_ids, vecs = run.read_item_vectors()
        if not np.issubdtype(vecs.dtype, np.floating):
            raise DataError(f"expected float32 values, got {vecs.dtype}", file=str(run.item_emb))
        return cls(item_ids, vecs, source=str(run.item_emb))

    def rows(self, item_ids: Sequence[str | None]) -> np.ndarray:
        """Row of each id in ``table`` (the zero row for None / unknown ids)."""
        r = self.index.positions(["" if i is None else str(i) for i in item_ids])
        r[r < 0] = len(self.index)
        return r

    def targets(self, item_ids: Sequence[str | None]) -> np.ndarray:
        """[N, D] target keys (already unit or zero)."""
        return self.table[self.rows(item_ids)]

    def history_means(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        """[N, D] re-normalised mean of each history's item vectors (zero for an empty / all-unknown history)."""
        n = len(histories)
        lens = np.fromiter((0 if h is None else len(h) for h in histories), dtype=np.int64, count=n)
        out = np.zeros((n, self.dim), np.float32)
        if lens.sum() == 0:
            return out
        flat = [i for h in histories if h is not None for i in h]
        vecs = self.table[self.rows(flat)]
        starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
        nz = lens > 0
        out[nz] = np.add.reduceat(vecs, starts[nz], axis=0)  # the mean's direction = the sum's direction
        return normalise(out)


def normalise(x: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation; zero rows stay zero."""
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(norm > 0, norm, 1.0)).astype(np.float32, copy=False)


def weights(cfg: RetrievalConfig) -> tuple[float, float]:
    wh, wt = float(cfg.history_weight), float(cfg.target_weight)
    if wh < 0 or wt < 0 or wh + wt <= 0:
        raise ConfigError(f"retrieval.history_weight={wh}, retrieval.target_weight={wt}: expected non-negative "
                          "weights, not both zero")
    return wh, wt


def compose_keys(hist: np.ndarray, target: np.ndarray | None, cfg: RetrievalConfig) -> np.ndarray:
    """``[sqrt(wh)·h ; sqrt(wt)·t]`` (parts with weight 0 left out), float32 C-contiguous: the index vectors."""
    wh, wt = weights(cfg)
    parts = []
    if wh > 0:
        parts.append(np.sqrt(wh, dtype=np.float32) * hist)
    if wt > 0:
        if target is None:
            raise ConfigError("retrieval.target_weight > 0 needs target keys")
        parts.append(np.sqrt(wt, dtype=np.float32) * target)
    return np.ascontiguousarray(np.concatenate(parts, axis=1), dtype=np.float32)


def query_keys(items: "ItemVectors", histories: Sequence[Sequence[str]], targets: Sequence[str | None] | None,
               cfg: RetrievalConfig, repeat: int | None = None) -> np.ndarray:
    """Query keys of (history, target) pairs, composed like the bank's: the one place queries become index vectors.

    ``targets`` None (or a target weight of 0) leaves the target part out or zero, as ``compose_keys`` does;
    ``repeat``: ``histories`` holds ONE history shared by ``repeat`` targets (its mean is computed once)."""
    hm = items.history_means(list(histories))
    if repeat is not None:
        hm = np.repeat(hm, repeat, 0)
    t = None
    if cfg.target_weight > 0:
        t = items.targets(list(targets) if targets is not None else [None] * len(hm))
    return compose_keys(hm, t, cfg)


@dataclass
class CoTBank:
    """Bank rows (``BANK_FILE_COLUMNS``) and their unit keys; bank row i = row i of every array here."""

    frame: pd.DataFrame
    hist: np.ndarray  # [n, D] float32
    target: np.ndarray  # [n, D] float32

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def labels(self) -> np.ndarray:
        return self.frame["label"].to_numpy(np.int8)

    def keys(self, cfg: RetrievalConfig, rows: np.ndarray | None = None) -> np.ndarray:
        """Index vectors of every bank row (or of ``rows``), composed as the query keys are."""
        if rows is None:
            return compose_keys(self.hist, self.target, cfg)
        rows = np.asarray(rows, np.int64)
        return compose_keys(self.hist[rows], self.target[rows], cfg)

    def save(self, out_dir: Path) -> None:
        out_dir = Path(out_dir)
        write_parquet(self.frame, out_dir / "bank.parquet")
        save_npy(out_dir / "bank_hist.npy", self.hist)
        save_npy(out_dir / "bank_target.npy", self.target)

    @classmethod
    def load(cls, out_dir: Path) -> "CoTBank":
        out_dir = Path(out_dir)
        p = out_dir / "bank.parquet"
        if not p.exists():
            raise RunError(f"{p}: missing; run `llmcf retrieve` first")
        frame = pd.read_parquet(p)
        hist, target = load_npy(out_dir / "bank_hist.npy"), load_npy(out_dir / "bank_target.npy")
        if len(hist) != len(frame) or len(target) != len(frame):
            raise DataError(f"bank keys have {len(hist)}/{len(target)} rows, bank.parquet {len(frame)}: rerun "
                            "`llmcf retrieve`", file=str(out_dir))
        return cls(frame, hist, target)


def _check_columns(df: pd.DataFrame, cols: Sequence[str], where: Path) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise DataError(f"missing column(s) {missing}; has {list(df.columns)}", file=str(where))


def build_bank(run_dir: Path, items: ItemVectors, mode: str = "cot") -> CoTBank:
    """Bank from ``cot/selected.parquet``; histories come from it or, if absent there, from ``data/train.parquet``.
    ``mode="hybrid"``: every train row, each carrying its CoT row when it has one (-1 otherwise)."""
    if mode not in ("cot", "hybrid"):
        raise ConfigError(f"retrieval.bank='{mode}': expected cot or hybrid")
    run_dir = Path(run_dir)
    run = RunDir(run_dir)
    sel_path, cot_path = run.cot_selected, run.cot_emb
    for p in (sel_path, cot_path):
        if not p.exists():
            raise RunError(f"{p}: missing; run `llmcf cot score` and `llmcf embed` first")
    sel = pd.read_parquet(sel_path)
    _check_columns(sel, ("user_id", "pos", "item_id", "label"), sel_path)
    n_cot = np.load(cot_path, mmap_mode="r", allow_pickle=False).shape[0]
    if n_cot != len(sel):
        raise DataError(f"has {n_cot} rows but {sel_path} has {len(sel)}: they must be aligned; rerun `llmcf embed`",
                        file=str(cot_path))
    labels = pd.to_numeric(sel["label"], errors="coerce")
    bad = ~labels.isin([0, 1])
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"expected label 0 or 1, got {sel['label'].iloc[i]!r}", file=str(sel_path), line=i,
                        field="label")
    frame = pd.DataFrame({"user_id": sel["user_id"].astype(str).to_numpy(),
                          "pos": sel["pos"].astype(np.int64).to_numpy(),
                          "item_id": sel["item_id"].astype(str).to_numpy(),
                          "label": labels.astype(np.int8).to_numpy()})
    if "history" in sel.columns:
        frame["history"] = [list(h) if h is not None else [] for h in sel["history"]]
    else:
        train_path = run.split("train")
        train = pd.read_parquet(train_path, columns=["user_id", "pos", "history"])
        train = train.assign(user_id=train["user_id"].astype(str)).drop_duplicates(["user_id", "pos"])
        merged = frame[["user_id", "pos"]].merge(train, on=["user_id", "pos"], how="left")
        lost = merged["history"].isna()
        if lost.any():
            r = frame.iloc[int(np.flatnonzero(lost.to_numpy())[0])]
            raise DataError(f"row (user {r.user_id}, pos {r.pos}) of {sel_path} is not in {train_path}",
                            file=str(sel_path))
        frame["history"] = [list(h) for h in merged["history"]]
    frame["cot_row"] = np.arange(len(frame), dtype=np.int64)
    if mode == "hybrid":
        frame = _hybrid(run_dir, frame)
    hist = items.history_means(frame["history"].tolist())
    target = items.targets(frame["item_id"].tolist())
    return CoTBank(frame[list(BANK_FILE_COLUMNS)], hist, target)


def _hybrid(run_dir: Path, cot_frame: pd.DataFrame) -> pd.DataFrame:
    """Every train row as a bank row, with the cot_row of the CoT bank row of the same (user, pos, item, label),
    else -1."""
    train_path = run_dir / "data" / "train.parquet"
    train = pd.read_parquet(train_path, columns=["user_id", "pos", "item_id", "label", "history"])
    _check_columns(train, ("user_id", "pos", "item_id", "label", "history"), train_path)
    frame = pd.DataFrame({"user_id": train["user_id"].astype(str).to_numpy(),
                          "pos": train["pos"].astype(np.int64).to_numpy(),
                          "item_id": train["item_id"].astype(str).to_numpy(),
                          "label": pd.to_numeric(train["label"]).astype(np.int8).to_numpy(),
                          "history": [list(h) if h is not None else [] for h in train["history"]]})
    keys = ["user_id", "pos", "item_id", "label"]  # the label too: a CoT is written for its row's label
    cot = cot_frame[keys + ["cot_row"]].drop_duplicates(keys)
    merged = frame[keys].merge(cot, on=keys, how="left")
    frame["cot_row"] = merged["cot_row"].fillna(-1).astype(np.int64).to_numpy()
    lost = len(cot) - len(np.unique(frame["cot_row"][frame["cot_row"] >= 0]))
    if lost:
        raise DataError(f"{lost} CoT bank row(s) are not rows of {train_path}: rerun `llmcf cot score`",
                        file=str(run_dir / "cot" / "selected.parquet"))
    return frame
