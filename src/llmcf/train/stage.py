"""`llmcf train`: train and evaluate one ranking backbone (± the ICT module) over seeds in a run directory.

Outputs, per variant tag (``DIN``, ``DIN+llmcf``, ``DIN+llmcf-no_cot``, ...):
    run_dir/models/<tag>/seed_<s>/model.safetensors   best weights (safetensors, no pickle)
    run_dir/models/<tag>/seed_<s>/result.json          valid/test metrics, curve, seconds/epoch, peak memory
    run_dir/models/<tag>/summary.json                  mean ± std over seeds, with the evaluation protocol
A seed whose result.json exists with the same config hash is not trained again (resumable).
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from llmcf.config import Config, save_config
from llmcf.errors import RunError
from llmcf.io import atomic_write_json
from llmcf.train.batches import ArrayBatches
from llmcf.train.metrics import mean_std
from llmcf.fingerprint import ctr_config_hash, model_cache_key
from llmcf.train.seeds import train_seeds
from llmcf.train.trainer import fit


def variant_tag(model_name: str, cfg: Config) -> str:
    if not cfg.ict.enabled:
        return model_name
    return f"{model_name}+llmcf" if cfg.ict.variant == "full" else f"{model_name}+llmcf-{cfg.ict.variant}"


class RunData:
    """Everything the trainer needs from a run directory, loaded once and shared by seeds and variants."""

    def __init__(self, run_dir: Path, cfg: Config):
        data = run_dir / "data"
        if not (data / "vocab.json").exists():
            raise RunError(f"{data}: no samples here; run `llmcf data build --out {run_dir}` first")
        from llmcf.data.features import load_encoded, make_schema
        from llmcf.data.vocab import Vocab

        self.run_dir = run_dir
        self.vocab = Vocab.load(data / "vocab.json")
        self.items = pd.read_parquet(data / "items.parquet")
        self.hist_len = cfg.data.history_len
        self.schema = make_schema(self.vocab, self.items, self.hist_len)
        # Arrow fast path (no Python string objects); the pandas frames are read only if someone asks for them
        self.arrays = {s: load_encoded(run_dir, s, self.vocab, self.hist_len) for s in ("train", "valid", "test")}
        self._frames: dict[str, pd.DataFrame] | None = None
        self._ctx = None

    @property
    def frames(self) -> dict[str, pd.DataFrame]:
        """The sample rows of each split as DataFrames (read from data/<split>.parquet on first access)."""
        if self._frames is None:
            from llmcf.data.features import load_split

            self._frames = {s: load_split(self.run_dir, s) for s in ("train", "valid", "test")}
        return self._frames

    def context(self):
        """(ContextBank, {split: ctx_idx}, item_text matrix, cot_dim) — requires `llmcf retrieve` to have run."""
        if self._ctx is None:
            from llmcf.models.context import ContextBank, item_text_matrix

            rdir = self.run_dir / "retrieval"
            missing = [s for s in ("train", "valid", "test") if not (rdir / f"{s}_ctx.npy").exists()]
            if missing:
                raise RunError(f"{rdir}: no in-context ids for {missing}; run `llmcf retrieve --run {self.run_dir}`")
            bank = ContextBank.from_run(self.run_dir, self.vocab, self.hist_len)
            idx = {s: np.load(rdir / f"{s}_ctx.npy", allow_pickle=False) for s in ("train", "valid", "test")}
            for s, a in idx.items():
                n = len(self.arrays[s]["label"])
                if len(a) != n:
                    raise RunError(f"{rdir}/{s}_ctx.npy has {len(a)} rows but data/{s}.parquet has "
                                   f"{n}: rerun `llmcf retrieve`")
            text = torch.from_numpy(item_text_matrix(self.run_dir, self.vocab))
            self._ctx = (bank, idx, text, int(bank.cot_dim))
        return self._ctx

    def batches(self, split: str, cfg: Config, seed: int, train: bool) -> ArrayBatches:
        ctx = None
        if cfg.ict.enabled:
            bank, idx, _, _ = self.context()
            ctx = (idx[split], bank)
        bs = cfg.train.batch_size if train else cfg.train.eval_batch_size
        return ArrayBatches(self.arrays[split], bs, shuffle=train, seed=seed, ctx=ctx,
                            max_batches=cfg.train.max_steps_per_epoch if train else None)


def make_model(run: RunData, model_name: str, cfg: Config) -> torch.nn.Module:
    from llmcf.models.llmcf_model import build_model

    m = cfg.model
    if cfg.ict.enabled:
        _, _, text, cot_dim = run.context()
        return build_model(model_name, run.schema, m, cfg.ict, item_text=text, cot_dim=cot_dim)
    return build_model(model_name, run.schema, m, None)


def protocol(run_dir: Path, cfg: Config) -> dict:
    stats_path = run_dir / "data" / "stats.json"
    stats = json.loads(stats_path.read_text()) if stats_path.exists() else {}
    return {"task": "ctr", "split": stats.get("protocol", {}), "metrics": ["auc", "logloss", "gauc"],
            "early_stopping": f"valid AUC, patience {cfg.train.patience}, max {cfg.train.max_epochs} epochs",
            "batch_size": cfg.train.batch_size, "lr": cfg.train.lr, "weight_decay": cfg.train.weight_decay,
            "ict_weight_decay": cfg.train.ict_weight_decay if cfg.ict.enabled else None,
            "retrieval": asdict(cfg.retrieval) if cfg.ict.enabled else None,
            "ict": asdict(cfg.ict) if cfg.ict.enabled else None}


def config_hash(cfg: Config, model_name: str | None = None) -> str:
    """Hash of what one seed of a CTR model reads (``llmcf.fingerprint.ctr_config_hash``)."""
    return ctr_config_hash(cfg, model_name)


def run_train(run_dir: Path, cfg: Config, model_name: str, *, run: RunData | None = None,
              progress: bool = True, upstream: str = "") -> dict:
    """Train ``model_name`` for cfg.train.seeds seeds; returns the summary (also written to summary.json)."""
    run_dir = Path(run_dir)
    run = run or RunData(run_dir, cfg)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    tag = variant_tag(model_name, cfg)
    out_dir = run_dir / "models" / tag
    out_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out_dir / "config.yaml")
    # upstream: hash of the artifacts this model reads (e.g. the retrieval stamp), so new CoTs retrain LLM-CF
    chash = model_cache_key(ctr_config_hash(cfg, model_name), model_name, upstream)
    labels = {s: run.arrays[s]["label"] for s in ("valid", "test")}
    users = {s: run.arrays[s]["user"] for s in ("valid", "test")}

    def train_one(seed: int):
        model = make_model(run, model_name, cfg)
        res = fit(model, run.batches("train", cfg, seed, True), run.batches("valid", cfg, seed, False),
                  labels["valid"], cfg.train, valid_users=users["valid"], test=run.batches("test", cfg, seed, False),
                  test_labels=labels["test"], test_users=users["test"], progress=progress, desc=f"{tag} s{seed}")
        return model, res

    results = train_seeds(
        out_dir, tag, model_name, chash, range(cfg.train.seed, cfg.train.seed + cfg.train.seeds), train_one,
        cached_line=lambda r: f"test auc {r['test']['auc']:.4f}",
        done_line=lambda res: f"valid auc {res.valid['auc']:.4f}  test auc {res.test['auc']:.4f}  "
                              f"logloss {res.test['logloss']:.4f}")
    summary = {"model": model_name, "tag": tag, "seeds": [r["seed"] for r in results],
               "protocol": protocol(run_dir, cfg),
               "test": {m: mean_std([r["test"][m] for r in results]) for m in ("auc", "logloss", "gauc")},
               "valid": {m: mean_std([r["valid"][m] for r in results]) for m in ("auc", "logloss")},
               "seconds_per_epoch": mean_std([r["seconds_per_epoch"] for r in results]),
               "peak_rss_mb": max(r["peak_rss_mb"] for r in results)}
    atomic_write_json(out_dir / "summary.json", summary)
    return summary


def format_summary(s: dict) -> str:
    t = s["test"]
    from llmcf.report import fmt_mean_std

    return (f"{s['tag']:<24} test AUC {fmt_mean_std(t['auc'])}   LogLoss {fmt_mean_std(t['logloss'])}   "
            f"gAUC {t['gauc']['mean']:.4f}   ({len(s['seeds'])} seed(s), {s['seconds_per_epoch']['mean']:.1f}s/epoch)")
