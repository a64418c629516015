"""`llmcf retrieve`: build the CoT bank and one index per label, precompute in-context ids for every sample row.

Reads ``data/{train,valid,test}.parquet``, ``embed/items.npy`` + ``embed/item_ids.json``, ``cot/selected.parquet``
and ``embed/cot.npy``. Writes to ``run_dir/retrieval/``:
    bank.parquet, bank_hist.npy, bank_target.npy     the bank (see ``retrieval.bank``)
    index_pos.faiss, index_neg.faiss                  inner-product index over the positive / negative rows' keys
    {train,valid,test}_ctx.npy                        int64 [N_split, k]: bank rows per sample row (file row order),
                                                      -1 = missing (short bucket), always at the end of a row
    {train,valid,test}_sim.npy                        float32 [N_split, k]: each selected row's retrieval score
                                                      (key inner product; 0 for a missing slot)
    meta.json                                         counts, config, timing, queries/s, leakage post-check
A split whose ctx file was written under the same inputs and config is not recomputed (resumable).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from llmcf.config import Config
from llmcf.data.schema import SPLITS
from llmcf.errors import DataError, RunError
from llmcf.fingerprint import retrieval_fingerprint
from llmcf.io import atomic_write_json, load_npy, save_npy
from llmcf.retrieval.bank import ItemVectors, build_bank, query_keys
from llmcf.retrieval.index import build_index, kind, save_index
from llmcf.retrieval.retriever import Retriever  # noqa: F401  (public API: online retrieval)
from llmcf.retrieval.select import Selector, check_config

from llmcf.rundir import INDEX_FILES, RunDir


def leakage_violations(ctx: np.ndarray, bank: pd.DataFrame, users: Sequence[str], pos: np.ndarray,
                       rule: str) -> int:
    """Independent post-check on strings: selected rows of the query's user at a forbidden position."""
    valid = ctx >= 0
    safe = np.where(valid, ctx, 0)
    bu = bank["user_id"].to_numpy(dtype=object)[safe]
    bp = bank["pos"].to_numpy(np.int64)[safe]
    same = valid & (bu == np.asarray(users, dtype=object)[:, None])
    q = np.asarray(pos, np.int64)[:, None]
    return int((same & ((bp >= q) if rule == "same_or_later" else (bp > q))).sum())


def _read_split(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise RunError(f"{path}: missing; run `llmcf data build` first")
    df = pd.read_parquet(path, columns=None)
    missing = [c for c in ("user_id", "pos", "item_id", "history") if c not in df.columns]
    if missing:
        raise DataError(f"missing column(s) {missing}", file=str(path))
    return df


def run_retrieve(run_dir: Path, cfg: Config, progress: bool = True) -> dict:
    """Build bank + indexes and write ``{split}_ctx.npy`` for every split; returns the meta dict (also meta.json)."""
    run_dir = Path(run_dir)
    rc = cfg.retrieval
    check_config(rc)
    run = RunDir(run_dir)
    out = run.retrieval
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    items = ItemVectors.load(run_dir)
    bank = build_bank(run_dir, items, rc.bank)
    keys = bank.keys(rc)
    labels = bank.labels
    indexes = {}
    for lab, name in INDEX_FILES.items():
        indexes[lab] = build_index(keys[labels == lab], rc)
        save_index(indexes[lab], run.index(lab))
    bank.save(out)
    t_build = time.perf_counter() - t0
    selector = Selector(bank.frame["user_id"].tolist(), bank.frame["pos"].to_numpy(), labels, indexes, rc)

    fp = retrieval_fingerprint(run_dir, asdict(rc))
    state_path = out / "state.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    done = state.get("done", {}) if state.get("fingerprint") == fp else {}
    splits: dict[str, dict] = {}
    for split in SPLITS:
        df = _read_split(run.split(split))
        users, pos = df["user_id"].astype(str).tolist(), df["pos"].to_numpy(np.int64)
        ctx_path, sim_path = run.ctx(split), run.ctx(split).with_name(f"{split}_sim.npy")
        if split in done and ctx_path.exists() and sim_path.exists():
            ctx = load_npy(ctx_path)
            if ctx.shape == (len(df), rc.k):
                print(f"[retrieve] {split}: cached ({len(df)} rows)")
                splits[split] = dict(done[split], cached=True)
                continue
        t1 = time.perf_counter()
        stats0 = dict(selector.stats)
        qkeys = query_keys(items, df["history"].tolist(), df["item_id"].tolist(), rc)
        ctx, sim = selector.select(qkeys, users, pos, df["item_id"].astype(str).tolist(), progress=progress,
                                   desc=f"retrieve {split}", with_scores=True)
        secs = time.perf_counter() - t1
        viol = leakage_violations(ctx, bank.frame, users, pos, rc.leakage)
        if viol:
            raise RunError(f"retrieval post-check: {viol} in-context ids in {split} break the leakage rule "
                           f"'{rc.leakage}' (a bug: please report)")
        save_npy(sim_path, sim)
        save_npy(ctx_path, ctx)
        filled = (ctx >= 0).sum(axis=1)
        ctx_labels = np.where(ctx >= 0, labels[np.maximum(ctx, 0)], -1)
        splits[split] = {"rows": len(df), "seconds": round(secs, 3),
                         "queries_per_s": round(len(df) / secs, 1) if secs > 0 else None,
                         "leakage_violations": viol,
                         "re_searched_queries": selector.stats["re_searched_queries"] - stats0["re_searched_queries"],
                         "same_position_hits": selector.same_position_hits(ctx, users, pos),
                         "full_rows": int((filled == rc.k).sum()), "mean_filled": float(filled.mean()) if len(df) else 0,
                         "positive_share": float((ctx_labels == 1).sum() / max(1, (ctx_labels >= 0).sum())),
                         "same_target_share": _same_target_share(ctx, bank.frame, df)}
        done[split] = splits[split]
        atomic_write_json(state_path, {"fingerprint": fp, "done": done})
    meta = {"bank_rows": len(bank), "positives": int((labels == 1).sum()), "negatives": int((labels == 0).sum()),
            "bank_users": int(bank.frame["user_id"].nunique()), "key_dim": int(keys.shape[1]),
            "index": {"positive": kind(indexes[1]), "negative": kind(indexes[0])},
            "build_seconds": round(t_build, 3), "total_seconds": round(time.perf_counter() - t0, 3),
            "leakage_violations": int(sum(s["leakage_violations"] for s in splits.values())),
            "splits": splits, "fingerprint": fp, "config": asdict(rc)}
    atomic_write_json(run.retrieval_meta, meta)
    seq = _retrieve_seq(run_dir, progress)
    qps = ", ".join(f"{s} {v['rows']} rows" + ("" if v.get("cached") else f" {v['queries_per_s']} q/s")
                    for s, v in splits.items())
    print(f"[retrieve] bank {meta['bank_rows']} rows ({meta['positives']} pos / {meta['negatives']} neg), "
          f"{meta['index']['positive']}, K={rc.k}; {qps}; leakage violations 0 -> {out}" +
          (f" (+ {seq} sequential rows)" if seq else ""))
    return meta


def _retrieve_seq(run_dir: Path, progress: bool) -> int:
    """In-context ids of the sequential rows too, when the run has sequential samples; returns their row count."""
    from llmcf.data.seq_samples import load_seq_frames
    from llmcf.retrieval.seq_context import seq_context_ids
    run = RunDir(run_dir)
    if not run.seq_stats.exists():
        return 0
    frames, _, _ = load_seq_frames(run_dir)
    seq_context_ids(run_dir, frames, run.read_json(run.seq_stats), progress=progress)
    return sum(len(f) for f in frames.values())


def _same_target_share(ctx: np.ndarray, bank: pd.DataFrame, df: pd.DataFrame) -> float:
    """Share of selected examples whose target item equals the query's target (diagnostic)."""
    valid = ctx >= 0
    if not valid.any():
        return 0.0
    bi = bank["item_id"].to_numpy(dtype=object)[np.maximum(ctx, 0)]
    same = valid & (bi == df["item_id"].astype(str).to_numpy(dtype=object)[:, None])
    return float(same.sum() / valid.sum())
