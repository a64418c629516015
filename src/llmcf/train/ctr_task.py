"""The CTR (ranking) task of the training stage: samples, model builder, fit, protocol and summary of a backbone ± ICT.

Inputs (``llmcf.rundir``): data/{train,valid,test}.parquet, vocab.json, items.parquet, stats.json; with the ICT also
``llmcf retrieve``'s retrieval/{split}_ctx.npy and bank, and embed/. Metrics: AUC, LogLoss, user-grouped AUC; early
stopping on valid AUC (``train.patience``, ``train.max_epochs``); Adam with ``train.lr``, ``train.weight_decay`` and
``train.ict_weight_decay`` on the ICT's parameters.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from llmcf.config import Config, baseline_tag, model_tag
from llmcf.data.schema import SPLITS
from llmcf.errors import RunError
from llmcf.fingerprint import ctr_config_hash, file_sha, model_cache_key
from llmcf.publish import verify
from llmcf.rundir import RunDir
from llmcf.train.batches import make_batches
from llmcf.train.inputs import ContextInputs, load_context, load_model_inputs
from llmcf.train.loop import FitResult



def lr_rule(train) -> str:
    """The learning-rate schedule in words, for the protocol's early-stopping line ('' for a constant rate)."""
    f, m = train.plateau_lr_factor, getattr(train, "min_epochs", 0)
    rule = "" if f is None else f"; learning rate x{f:g} after every epoch without a better valid AUC"
    return rule + (f"; early stopping{' and decay' if f is not None else ''} only from epoch {m} on" if m else "")

class RunData:
    """Everything the CTR trainer needs from a run directory, loaded once and shared by seeds and variants."""

    def __init__(self, run_dir: Path, cfg: Config):
        from llmcf.data.features import load_encoded

        self.rd = RunDir(run_dir)
        self.rd.verify_data()  # never train on an unfinished or mixed data build
        self.run_dir = self.rd.root
        self.hist_len = cfg.data.history_len
        inputs = load_model_inputs(self.rd, self.hist_len)
        self.vocab, self.items, self.schema = inputs.vocab, inputs.items, inputs.schema
        # Arrow fast path (no Python string objects); the pandas frames are read only if someone asks for them
        self.arrays = {s: load_encoded(self.run_dir, s, self.vocab, self.hist_len) for s in SPLITS}
        self._frames: dict[str, pd.DataFrame] | None = None
        self._ctx: tuple[ContextInputs, dict] | None = None

    @property
    def frames(self) -> dict[str, pd.DataFrame]:
        """The sample rows of each split as DataFrames (read from data/<split>.parquet on first access)."""
        if self._frames is None:
            from llmcf.data.features import load_split

            self._frames = {s: load_split(self.run_dir, s) for s in SPLITS}
        return self._frames

    def context(self):
        """(ContextBank, {split: ctx_idx}, item_text matrix, cot_dim) — requires `llmcf retrieve` to have run."""
        if self._ctx is None:
            verify(self.run_dir, "retrieve")  # the bank, the ids and what they were built from (llmcf.publish)
            idx = {s: self.rd.read_ctx(s, len(self.arrays[s]["label"])) for s in SPLITS}
            self._ctx = (load_context(self.rd, self.vocab, self.hist_len), idx)
        inputs, idx = self._ctx
        return inputs.bank, idx, inputs.item_text_tensor, inputs.cot_dim

    def similarities(self, split: str) -> np.ndarray:
        """retrieval/<split>_sim.npy: the retrieval score of each in-context example (ict.sim_input)."""
        path = self.run_dir / "retrieval" / f"{split}_sim.npy"
        if not path.exists():
            raise RunError(f"{path}: missing (ict.sim_input needs it); rerun `llmcf retrieve --run {self.run_dir}`")
        sim = np.load(path, allow_pickle=False)
        want = self.context()[1][split].shape
        if sim.shape != want:
            raise RunError(f"{path} has shape {sim.shape}, the in-context ids {want}: rerun `llmcf retrieve --run "
                           f"{self.run_dir}`")
        return sim

    def batches(self, split: str, cfg: Config, seed: int, train: bool, extra: dict | None = None):
        """``extra``: more per-row arrays for this split (a baseline's, e.g. the KD teacher's scores)."""
        ctx = None
        arrays = {**self.arrays[split], **(extra or {})}
        if cfg.ict.enabled:
            bank, idx, _, _ = self.context()
            ctx = (idx[split], bank)
            if cfg.ict.sim_input:
                arrays = {**arrays, "ctx_sim": self.similarities(split)}
        return make_batches(arrays, cfg.train, seed, train, ctx)


def variant_tag(model_name: str, cfg: Config) -> str:
    return model_tag(model_name, cfg.ict.enabled, cfg.ict.variant, baseline=baseline_tag(cfg.baseline))


def _baseline(cfg: Config):
    """The ``llmcf.train.baselines`` method of ``cfg.baseline.name`` (None without a baseline)."""
    if not cfg.baseline.name:
        return None
    from llmcf.train.baselines import get_baseline

    return get_baseline(cfg.baseline.name)


class CTRTask:
    """The ranking task over a ``RunData`` (see the module docstring). ``upstream``: stamp of the artifacts an
    LLM-CF model reads (e.g. the retrieval stage's), so new CoTs retrain it."""

    name = "ctr"
    test_metrics = ("auc", "logloss", "gauc")
    valid_metrics = ("auc", "logloss")

    def __init__(self, run: RunData, upstream: str = ""):
        self.run, self.upstream = run, upstream
        self.model_name: str | None = None

    def tag(self, model_name: str, cfg: Config) -> str:
        return variant_tag(model_name, cfg)

    def cache_key(self, model_name: str, cfg: Config) -> str:
        method = _baseline(cfg)
        if method is not None:  # its LLM stage first (resumable; a no-op once done): the key hashes what it wrote
            method.residual(cfg)  # a bad combination is refused before any LLM work
            method.prepare(self.run, cfg)
            return model_cache_key(ctr_config_hash(cfg, model_name), model_name, self.upstream,
                                   method.stamp(self.run, cfg))
        return model_cache_key(ctr_config_hash(cfg, model_name), model_name, self.upstream)

    def build(self, model_name: str, cfg: Config) -> torch.nn.Module:
        from llmcf.models.llmcf_model import build_model

        self.model_name = model_name  # fit() of the model built here finds the base weights and its folder by it
        method = _baseline(cfg)
        if method is not None:
            return method.build(model_name, self.run, cfg)
        if cfg.ict.enabled:
            bank, _, text, cot_dim = self.run.context()
            return build_model(model_name, self.run.schema, cfg.model, cfg.ict, item_text=text, cot_dim=cot_dim,
                               cot_gaps=bank.cot_gaps)
        return build_model(model_name, self.run.schema, cfg.model, None)

    def _warm(self, cfg: Config) -> tuple[bool, bool]:
        """(starts from the trained base model of the seed, is a residual baseline)."""
        method = _baseline(cfg)
        residual = method is not None and method.residual(cfg)
        return bool(cfg.ict.enabled and cfg.ict.warm_start) or residual, residual

    def base_weights(self, model_name: str, seed: int) -> Path:
        """The trained base model a warm-started seed loads."""
        return self.run.rd.model(model_name) / f"seed_{seed}" / "model.safetensors"

    def seed_stamp(self, model_name: str, cfg: Config, seed: int) -> dict:
        """A warm-started seed (``ict.warm_start``, residual baselines) is also stamped with the content hash of the
        base weights it loads, so a base model retrained or replaced retrains it instead of leaving it cached."""
        path = self.base_weights(model_name, seed)
        if not self._warm(cfg)[0] or not path.exists():  # no base yet: fit() says "train it first"
            return {}
        return {"base_weights": file_sha(path)}

    def fit(self, model: torch.nn.Module, cfg: Config, seed: int, progress: bool, desc: str) -> FitResult:
        from llmcf.train.trainer import fit, predict

        run, a = self.run, self.run.arrays
        method = _baseline(cfg)
        # the residual baselines start from the trained base model of this seed and keep it frozen
        warm, residual = self._warm(cfg)
        if cfg.ict.enabled:
            from llmcf.config import check_sim_input

            check_sim_input(cfg.retrieval, cfg.ict)  # before any training, once
        if warm:
            from llmcf.models.llmcf_model import warm_start_backbone

            warm_start_backbone(model, self.base_weights(self.model_name, seed))
            if cfg.ict.freeze_backbone or residual:
                model.freeze_backbone()
        elif cfg.ict.enabled:
            from llmcf.config import check_frozen_backbone

            check_frozen_backbone(cfg.ict)
        extra = method.train_arrays(run, cfg) if method is not None else None
        res = fit(model, run.batches("train", cfg, seed, True, extra), run.batches("valid", cfg, seed, False),
                  a["valid"]["label"], cfg.train, valid_users=a["valid"]["user"],
                  test=run.batches("test", cfg, seed, False), test_labels=a["test"]["label"],
                  test_users=a["test"]["user"], progress=progress, desc=desc, validate_start=warm)
        # per-row test probabilities of the best weights, for the slice tables: the stage writes them into the seed's
        # folder with its weights (``seed_files``), so a seed with a result always has them
        self._test_pred = {seed: predict(model, run.batches("test", cfg, seed, False))}
        return res

    def seed_files(self, seed: int) -> dict:
        """test_pred.npy: per-row test probabilities of the seed just fitted, for the slice tables (llmcf.slices)."""
        pred = getattr(self, "_test_pred", {}).get(seed)
        return {} if pred is None else {"test_pred.npy": pred}

    def protocol(self, cfg: Config) -> dict:
        """What a reader needs to repeat the training (recorded in every summary.json and shown by the report)."""
        self._cfg = cfg  # the stage asks for the protocol once per training; summary_head reports for this config
        stats = self.run.rd.read_stats()
        ict = cfg.ict.enabled
        return {"task": "ctr", "split": stats.get("protocol", {}), "metrics": ["auc", "logloss", "gauc"],
                "early_stopping": f"valid AUC, patience {cfg.train.patience}, max {cfg.train.max_epochs} epochs"
                                  + lr_rule(cfg.train),
                "batch_size": cfg.train.batch_size, "lr": cfg.train.lr, "weight_decay": cfg.train.weight_decay,
                "ict_weight_decay": cfg.train.ict_weight_decay if ict else None,
                "retrieval": asdict(cfg.retrieval) if ict else None, "ict": asdict(cfg.ict) if ict else None,
                **({"baseline": asdict(cfg.baseline)} if cfg.baseline.name else {})}

    def summary_head(self) -> dict:
        cfg = getattr(self, "_cfg", None)
        method = _baseline(cfg) if cfg is not None else None
        if method is None:
            return {}
        return {"baseline": method.name, "llm_stage": method.llm_stage(self.run, cfg)}

    def summary_tail(self, results: list[dict]) -> dict:
        return {}

    @staticmethod
    def cached_line(r: dict) -> str:
        return f"test auc {r['test']['auc']:.4f}"

    @staticmethod
    def done_line(res: FitResult) -> str:
        return f"valid auc {res.valid['auc']:.4f}  test auc {res.test['auc']:.4f}  logloss {res.test['logloss']:.4f}"

    @staticmethod
    def format_summary(s: dict) -> str:
        from llmcf.train.metrics import fmt_mean_std

        t = s["test"]
        return (f"{s['tag']:<24} test AUC {fmt_mean_std(t['auc'])}   LogLoss {fmt_mean_std(t['logloss'])}   "
                f"gAUC {t['gauc']['mean']:.4f}   ({len(s['seeds'])} seed(s), "
                f"{s['seconds_per_epoch']['mean']:.1f}s/epoch)")
