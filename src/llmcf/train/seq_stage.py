"""`llmcf train --task sequential`: train and evaluate one sequential backbone (± the ICT) over seeds in a run dir.

Inputs: the run's raw dataset (via cfg.data) for the seq samples (built on first use, see llmcf.data.seq_samples);
with the ICT also ``llmcf retrieve``'s bank and indexes, ``embed/`` and ``data/items.parquet``.
Outputs, per variant tag (``seq-SASRec``, ``seq-SASRec+llmcf``, ``seq-SASRec+llmcf-no_cot``, ...):
    run_dir/models/<tag>/seed_<s>/model.safetensors   best weights (safetensors, no pickle)
    run_dir/models/<tag>/seed_<s>/result.json          valid/test metrics, curve, seconds/epoch, peak memory
    run_dir/models/<tag>/summary.json                  mean ± std over seeds, with the evaluation protocol
    run_dir/retrieval/seq/{split}_ctx.npy, meta.json   in-context bank rows of the seq rows (ICT only)
A seed whose result.json exists with the same config hash is not trained again (resumable).

In-context examples of a seq row are retrieved by its HISTORY only: the Retriever is queried with no target (a
zero target key, so the score is history_weight·cos(history means) whatever the saved index weights), under the
same leakage rule as the CTR rows (no bank row of the same user at the same or a later position).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from llmcf.config import Config, save_config
from llmcf.data.schema import OOV, SPLITS
from llmcf.errors import RunError
from llmcf.io import atomic_write_json, load_npy, save_npy
from llmcf.train.batches import ArrayBatches
from llmcf.train.metrics import mean_std
from llmcf.train.seq_metrics import protocol_line
from llmcf.fingerprint import model_cache_key, seq_config_hash, seq_context_stamp
from llmcf.train.seeds import train_seeds
from llmcf.train.seq_trainer import fit_seq

REPORTED = ("recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20", "mrr")


def seq_tag(model_name: str, cfg: Config, ict: bool) -> str:
    if not ict:
        return f"seq-{model_name}"
    return f"seq-{model_name}+llmcf" if cfg.ict.variant == "full" else f"seq-{model_name}+llmcf-{cfg.ict.variant}"


class SeqRunData:
    """The seq samples of a run, encoded once and shared by seeds, backbones and variants."""

    def __init__(self, run_dir: str | Path, cfg: Config, ds=None):
        from llmcf.data.seq_samples import encode_seq, ensure_seq_data, load_seq_split, seq_vocab

        self.run_dir = Path(run_dir)
        self.stats = ensure_seq_data(self.run_dir, cfg, ds)
        self.vocab = seq_vocab(self.run_dir)
        self.hist_len = cfg.seq.history_len
        self.frames = {s: load_seq_split(self.run_dir, s) for s in SPLITS}
        train = encode_seq(self.frames["train"], self.vocab, self.hist_len)
        self.train_rows = np.flatnonzero(train["item"] > OOV)  # rows with a rankable target
        self.frames["train"] = self.frames["train"].iloc[self.train_rows].reset_index(drop=True)
        self.arrays = {"train": {k: v[self.train_rows] for k, v in train.items()},
                       **{s: encode_seq(self.frames[s], self.vocab, self.hist_len) for s in ("valid", "test")}}
        self._ctx = None

    @property
    def n_items(self) -> int:
        return self.vocab.n_items

    def context(self, cfg: Config, progress: bool = True):
        """(ContextBank, {split: ctx_idx}, item text matrix, cot_dim, FeatureSchema, stamp) for the ICT."""
        if self._ctx is None:
            from llmcf.data.features import make_schema
            from llmcf.models.context import ContextBank, item_text_matrix

            idx, stamp = seq_context_ids(self, progress=progress)
            bank = ContextBank.from_run(self.run_dir, self.vocab, self.hist_len)
            text = torch.from_numpy(item_text_matrix(self.run_dir, self.vocab))
            items_path = self.run_dir / "data" / "items.parquet"
            items = pd.read_parquet(items_path) if items_path.exists() else None
            schema = make_schema(self.vocab, items, self.hist_len)
            self._ctx = (bank, idx, text, int(bank.cot_dim), schema, stamp)
        return self._ctx

    def batches(self, split: str, cfg: Config, seed: int, train: bool, ict: bool) -> ArrayBatches:
        ctx = None
        if ict:
            bank, idx, *_ = self.context(cfg)
            ctx = (idx[split], bank)
        bs = cfg.train.batch_size if train else cfg.train.eval_batch_size
        return ArrayBatches(self.arrays[split], bs, shuffle=train, seed=seed, ctx=ctx,
                            max_batches=cfg.train.max_steps_per_epoch if train else None)


def seq_context_ids(run: SeqRunData, progress: bool = True) -> tuple[dict[str, np.ndarray], str]:
    """In-context bank rows [N, k] per seq split (cached in retrieval/seq/), retrieved by the history key only."""
    from llmcf.retrieval.stage import Retriever, leakage_violations

    rdir = run.run_dir / "retrieval"
    meta_path = rdir / "meta.json"
    if not meta_path.exists():
        raise RunError(f"{meta_path}: missing; the ICT needs `llmcf retrieve --run {run.run_dir}` first")
    meta = json.loads(meta_path.read_text())
    stamp = seq_context_stamp(meta.get("fingerprint"), run.stats.get("stamp"), run.stats.get("vocab_sha"),
                              len(run.train_rows))
    out = rdir / "seq"
    own_meta = out / "meta.json"
    if own_meta.exists() and json.loads(own_meta.read_text()).get("stamp") == stamp and \
            all((out / f"{s}_ctx.npy").exists() for s in SPLITS):
        idx = {s: load_npy(out / f"{s}_ctx.npy") for s in SPLITS}
        if all(len(idx[s]) == len(run.frames[s]) for s in SPLITS):
            return idx, stamp
    retriever = Retriever.load(run.run_dir)
    idx, info = {}, {}
    for s in SPLITS:
        df = run.frames[s]
        t0 = time.perf_counter()
        users, pos = df["user_id"].astype(str).tolist(), df["pos"].to_numpy(np.int64)
        ctx = retriever.query(users, pos, df["history"].map(list).tolist(), [None] * len(df))
        viol = leakage_violations(ctx, retriever.bank.frame, users, pos, retriever.cfg.leakage)
        if viol:
            raise RunError(f"seq retrieval post-check: {viol} in-context ids in {s} break the leakage rule "
                           f"'{retriever.cfg.leakage}' (a bug: please report)")
        save_npy(out / f"{s}_ctx.npy", ctx)
        idx[s] = ctx
        info[s] = {"rows": len(df), "seconds": round(time.perf_counter() - t0, 2), "leakage_violations": viol,
                   "mean_filled": float((ctx >= 0).sum(1).mean()) if len(df) else 0.0}
        if progress:
            print(f"[seq retrieve] {s}: {len(df)} rows in {info[s]['seconds']}s, 0 leakage violations")
    atomic_write_json(own_meta, {"stamp": stamp, "key": "history only (query target left out)",
                                 "leakage": retriever.cfg.leakage, "splits": info})
    return idx, stamp


def make_seq_model(run: SeqRunData, model_name: str, cfg: Config, ict: bool) -> torch.nn.Module:
    from llmcf.models.sequential import build_seq_model

    n_users = run.vocab.n_users
    if not ict:
        return build_seq_model(model_name, run.n_items, n_users, run.hist_len, cfg.seq)
    from llmcf.models.ict import ICT

    _, _, text, cot_dim, schema, _ = run.context(cfg)
    c = cfg.ict
    module = ICT(schema, text, cot_dim, dim=c.dim, layers=c.layers, heads=c.heads, variant=c.variant,
                 dropout=c.dropout, field_dim=c.field_dim, recon_weight=c.recon_weight)
    return build_seq_model(model_name, run.n_items, n_users, run.hist_len, cfg.seq, ict=module)


def seq_protocol(run: SeqRunData, cfg: Config, ict: bool) -> dict:
    s = cfg.seq
    return {"task": "sequential", "split": run.stats.get("protocol", {}),
            "ranking": protocol_line(s.remove_history, run.n_items - 2, s.ks),
            "remove_history": s.remove_history, "metrics": list(REPORTED),
            "loss": (f"sampled softmax, {s.num_negatives} uniform negatives shared per batch, target masked"
                     if s.num_negatives > 0 else "full softmax"),
            "early_stopping": f"valid NDCG@10, patience {cfg.train.patience}, max {s.max_epochs} epochs",
            "batch_size": cfg.train.batch_size, "lr": s.lr, "weight_decay": s.weight_decay,
            "rows": {"train": len(run.train_rows), "valid": len(run.frames["valid"]), "test": len(run.frames["test"])},
            "retrieval": ({**asdict(cfg.retrieval), "key": "history only"} if ict else None),
            "ict": ({**asdict(cfg.ict), "fusion_alpha": s.fusion_alpha, "query_target": "hidden (OOV)"}
                    if ict else None)}


def run_seq_train(run_dir: str | Path, cfg: Config, model_name: str, ict: bool = False, *,
                  run: SeqRunData | None = None, progress: bool = True) -> dict:
    """Train ``model_name`` (a SEQ_BACKBONES name) for cfg.train.seeds seeds; returns the summary (summary.json)."""
    run_dir = Path(run_dir)
    run = run or SeqRunData(run_dir, cfg)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    tag = seq_tag(model_name, cfg, ict)
    out_dir = run_dir / "models" / tag
    out_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out_dir / "config.yaml")
    upstream = run.context(cfg, progress)[5] if ict else ""
    chash = model_cache_key(seq_config_hash(cfg, model_name, ict), model_name, run.stats.get("stamp"),
                            run.stats.get("vocab_sha"), upstream)
    protocol = seq_protocol(run, cfg, ict)
    print(f"[train] {tag}: {protocol['ranking']}")
    s = cfg.seq

    def train_one(seed: int):
        model = make_seq_model(run, model_name, cfg, ict)
        res = fit_seq(model, run.batches("train", cfg, seed, True, ict), run.batches("valid", cfg, seed, False, ict),
                      lr=s.lr, weight_decay=s.weight_decay, max_epochs=s.max_epochs, patience=cfg.train.patience,
                      num_negatives=s.num_negatives, remove_history=s.remove_history, ks=tuple(s.ks),
                      test=run.batches("test", cfg, seed, False, ict), seed=seed, progress=progress,
                      desc=f"{tag} s{seed}")
        return model, res

    results = train_seeds(
        out_dir, tag, model_name, chash, range(cfg.train.seed, cfg.train.seed + cfg.train.seeds), train_one,
        cached_line=lambda r: f"test ndcg@10 {r['test']['ndcg@10']:.4f}",
        done_line=lambda res: "  ".join(f"test {m} {res.test[m]:.4f}"
                                        for m in ("recall@10", "ndcg@10", "recall@20", "ndcg@20")),
)
    summary = {"model": model_name, "tag": tag, "task": "sequential", "seeds": [r["seed"] for r in results],
               "protocol": protocol,
               "test": {m: mean_std([r["test"][m] for r in results]) for m in REPORTED if m in results[0]["test"]},
               "valid": {m: mean_std([r["valid"][m] for r in results]) for m in REPORTED if m in results[0]["valid"]},
               "best_epoch": mean_std([r["best_epoch"] for r in results]),
               "seconds_per_epoch": mean_std([r["seconds_per_epoch"] for r in results]),
               "peak_rss_mb": max(r["peak_rss_mb"] for r in results)}
    atomic_write_json(out_dir / "summary.json", summary)
    print(format_seq_summary(summary))
    return summary


def format_seq_summary(s: dict) -> str:
    t = s["test"]
    from llmcf.report import fmt_mean_std

    shown = "  ".join(f"{m.replace('recall', 'Recall').replace('ndcg', 'NDCG')} {fmt_mean_std(t[m])}"
                      for m in ("recall@10", "ndcg@10", "recall@20", "ndcg@20") if m in t)
    return (f"{s['tag']:<26} test {shown}  ({len(s['seeds'])} seed(s), {s['seconds_per_epoch']['mean']:.1f}s/epoch)\n"
            f"  protocol: {s['protocol']['ranking']}")
