"""In-context examples of the sequential task's rows, retrieved by their HISTORY only.

The Retriever is queried with no target (a zero target key, so the score is history_weight·cos(history means)
whatever the saved index weights), under the same leakage rule as the CTR rows (no bank row of the same user at the
same or a later position). Written to ``retrieval/seq/{split}_ctx.npy`` and ``retrieval/seq/meta.json`` (with the
stamp of the bank and samples they were built from), by ``llmcf retrieve`` when the run has sequential samples and
on first use by the sequential task otherwise.
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd

from llmcf.data.schema import SPLITS
from llmcf.errors import RunError
from llmcf.fingerprint import seq_context_stamp
from llmcf.io import atomic_write_json, load_npy, save_npy
from llmcf.rundir import RunDir


def seq_context_ids(run_dir, frames: dict[str, pd.DataFrame], seq_stats: dict,
                    progress: bool = True) -> tuple[dict[str, np.ndarray], str]:
    """({split: [N, k] bank rows}, stamp) for the sequential rows ``frames`` (train: the rows with a rankable
    target); cached in retrieval/seq/ under the stamp of the retrieval stage and the samples."""
    from llmcf.retrieval.stage import Retriever, leakage_violations

    run = RunDir(run_dir)
    meta = run.read_json(run.need(run.retrieval_meta, "retrieve"))
    stamp = seq_context_stamp(meta.get("fingerprint"), seq_stats.get("stamp"), seq_stats.get("vocab_sha"),
                              len(frames["train"]))
    own_meta = run.seq_retrieval / "meta.json"
    if own_meta.exists() and run.read_json(own_meta).get("stamp") == stamp and \
            all(run.seq_ctx(s).exists() for s in SPLITS):
        idx = {s: load_npy(run.seq_ctx(s)) for s in SPLITS}
        if all(len(idx[s]) == len(frames[s]) for s in SPLITS):
            return idx, stamp
    retriever = Retriever.load(run.root)
    idx, info = {}, {}
    for s in SPLITS:
        df = frames[s]
        t0 = time.perf_counter()
        users, pos = df["user_id"].astype(str).tolist(), df["pos"].to_numpy(np.int64)
        ctx = retriever.query(users, pos, df["history"].map(list).tolist(), [None] * len(df))
        viol = leakage_violations(ctx, retriever.bank.frame, users, pos, retriever.cfg.leakage)
        if viol:
            raise RunError(f"seq retrieval post-check: {viol} in-context ids in {s} break the leakage rule "
                           f"'{retriever.cfg.leakage}' (a bug: please report)")
        save_npy(run.seq_ctx(s), ctx)
        idx[s] = ctx
        info[s] = {"rows": len(df), "seconds": round(time.perf_counter() - t0, 2), "leakage_violations": viol,
                   "mean_filled": float((ctx >= 0).sum(1).mean()) if len(df) else 0.0}
        if progress:
            print(f"[seq retrieve] {s}: {len(df)} rows in {info[s]['seconds']}s, 0 leakage violations")
    atomic_write_json(own_meta, {"stamp": stamp, "key": "history only (query target left out)",
                                 "leakage": retriever.cfg.leakage, "splits": info})
    return idx, stamp
