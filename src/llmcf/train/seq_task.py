"""The sequential (next-item retrieval) task of the training stage: a backbone ± ICT, sampled softmax, full ranking.

Inputs: the run's sequential samples (data/seq_*.parquet, built on first use by ``llmcf.data.seq_samples``); with
the ICT also the bank, embed/ and data/items.parquet, and the seq rows' in-context ids (``llmcf.retrieval
.seq_context``); with ``baseline.name: textemb`` the item vectors of embed/ (``models.baselines.SeqTextEmb``). Config read: the ``seq`` section (hidden, lr, weight_decay, max_epochs, num_negatives, ks, ...) and,
of ``train``, only ``fingerprint.SEQ_TRAIN_FIELDS`` (batch sizes, patience, steps per epoch) plus
``ict_weight_decay`` on the ICT's parameters; the cache key hashes exactly these. Early stopping on valid NDCG@10.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from llmcf.config import Config, model_tag
from llmcf.data.schema import SPLITS
from llmcf.fingerprint import files_fingerprint, model_cache_key, seq_config_hash
from llmcf.rundir import RunDir
from llmcf.train.batches import make_batches
from llmcf.train.loop import FitResult

REPORTED = ("recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20", "mrr")


SEQ_BASELINES = ("textemb",)
"""The baselines the sequential task trains (``llmcf train --task sequential --baseline textemb``)."""


def seq_tag(model_name: str, cfg: Config, ict: bool) -> str:
    return model_tag(model_name, ict, cfg.ict.variant, task="sequential", baseline=cfg.baseline.name)


def check_seq_baseline(cfg: Config, ict: bool) -> None:
    from llmcf.config import ConfigError

    name = cfg.baseline.name
    if name and name not in SEQ_BASELINES:
        raise ConfigError(f"baseline '{name}' is for the ctr task; the sequential task trains "
                          f"{', '.join(SEQ_BASELINES)}")
    if name and ict:
        raise ConfigError("--baseline and --ict are separate methods: train one at a time")
    if name and cfg.baseline.residual:
        raise ConfigError("baseline.residual is for the ctr task (a logit to add to); the sequential task trains "
                          "textemb into the backbone")


class SeqRunData:
    """The seq samples of a run, encoded once and shared by seeds, backbones and variants."""

    def __init__(self, run_dir: str | Path, cfg: Config, ds=None):
        from llmcf.data.seq_samples import encode_seq, ensure_seq_data, load_seq_frames

        self.run_dir = Path(run_dir)
        self.stats = ensure_seq_data(self.run_dir, cfg, ds)
        self.frames, self.train_rows, self.vocab = load_seq_frames(self.run_dir)
        self.hist_len = cfg.seq.history_len
        self.arrays = {s: encode_seq(self.frames[s], self.vocab, self.hist_len) for s in SPLITS}
        self._ctx = None

    @property
    def n_items(self) -> int:
        return self.vocab.n_items

    def context(self, cfg: Config, progress: bool = True):
        """(ContextBank, {split: ctx_idx}, item text matrix, cot_dim, FeatureSchema, stamp) for the ICT."""
        if self._ctx is None:
            from llmcf.retrieval.seq_context import seq_context_ids
            from llmcf.train.inputs import load_model_inputs

            idx, stamp = seq_context_ids(self.run_dir, self.frames, self.stats, progress=progress)
            inputs = load_model_inputs(self.run_dir, self.hist_len, ict=True, vocab=self.vocab,
                                       items_required=False)
            c = inputs.context
            self._ctx = (c.bank, idx, c.item_text_tensor, c.cot_dim, inputs.schema, stamp)
        return self._ctx

    def batches(self, split: str, cfg: Config, seed: int, train: bool, ict: bool):
        ctx = None
        if ict:
            bank, idx, *_ = self.context(cfg)
            ctx = (idx[split], bank)
        return make_batches(self.arrays[split], cfg.train, seed, train, ctx)


class SeqTask:
    """The sequential task over a ``SeqRunData`` (see the module docstring); ``ict``: train with the ICT."""

    name = "sequential"
    test_metrics = valid_metrics = REPORTED

    def __init__(self, run: SeqRunData, ict: bool, progress: bool = True):
        self.run, self.ict, self.progress = run, ict, progress

    def tag(self, model_name: str, cfg: Config) -> str:
        return seq_tag(model_name, cfg, self.ict)

    def cache_key(self, model_name: str, cfg: Config) -> str:
        check_seq_baseline(cfg, self.ict)
        upstream = self.run.context(cfg, self.progress)[5] if self.ict else ""
        parts = [self.run.stats.get("stamp"), self.run.stats.get("vocab_sha"), upstream]
        if cfg.baseline.name:  # textemb: the item vectors it reads
            rd = RunDir(self.run.run_dir)
            parts.append(files_fingerprint([rd.item_emb, rd.item_ids]))
        return model_cache_key(seq_config_hash(cfg, model_name, self.ict), model_name, *parts)

    def build(self, model_name: str, cfg: Config) -> torch.nn.Module:
        from llmcf.models.llmcf_model import build_ict
        from llmcf.models.sequential import build_seq_model

        run = self.run
        check_seq_baseline(cfg, self.ict)
        if cfg.baseline.name == "textemb":
            from llmcf.models.baselines import SeqTextEmb
            from llmcf.models.context import item_text_matrix
            from llmcf.models.sequential import SEQ_BACKBONES

            kwargs = dict(hidden=cfg.seq.hidden, alpha=cfg.seq.fusion_alpha, **cfg.seq.params_for(model_name))
            backbone = SEQ_BACKBONES.get(model_name)(run.n_items, run.vocab.n_users, run.hist_len,
                                                     extra_dim=cfg.seq.hidden, **kwargs)
            return SeqTextEmb(backbone, item_text_matrix(run.run_dir, run.vocab), dropout=cfg.baseline.dropout)
        if not self.ict:
            return build_seq_model(model_name, run.n_items, run.vocab.n_users, run.hist_len, cfg.seq)
        if cfg.ict.sim_input or cfg.ict.fusion != "concat":
            from llmcf.config import ConfigError

            raise ConfigError("ict.sim_input and ict.fusion: residual are ranking-task switches; the sequential "
                              "backbones keep their own fusion (seq.fusion_alpha)")
        bank, _, text, cot_dim, schema, _ = run.context(cfg)
        return build_seq_model(model_name, run.n_items, run.vocab.n_users, run.hist_len, cfg.seq,
                               ict=build_ict(schema, text, cot_dim, cfg.ict, cot_gaps=bank.cot_gaps))

    def fit(self, model: torch.nn.Module, cfg: Config, seed: int, progress: bool, desc: str) -> FitResult:
        from llmcf.train.distributed import current
        from llmcf.train.seq_trainer import fit_seq

        if current().active:
            from llmcf.config import ConfigError

            raise ConfigError("the sequential task trains in one process (its loss reads the item table outside the "
                              "model's forward, which DistributedDataParallel does not synchronise); run it without "
                              "torchrun / --nproc")
        s, run, ict = cfg.seq, self.run, self.ict
        return fit_seq(model, run.batches("train", cfg, seed, True, ict), run.batches("valid", cfg, seed, False, ict),
                       lr=s.lr, weight_decay=s.weight_decay, ict_weight_decay=cfg.train.ict_weight_decay,
                       max_epochs=s.max_epochs, patience=cfg.train.patience, num_negatives=s.num_negatives,
                       remove_history=s.remove_history, ks=tuple(s.ks),
                       test=run.batches("test", cfg, seed, False, ict), seed=seed, progress=progress, desc=desc,
                       device=cfg.train.device, grad_clip=cfg.train.grad_clip, amp=cfg.train.amp)

    def protocol(self, cfg: Config) -> dict:
        from llmcf.train.seq_metrics import protocol_line

        s, run, ict = cfg.seq, self.run, self.ict
        return {"task": "sequential", "split": run.stats.get("protocol", {}),
                "ranking": protocol_line(s.remove_history, run.n_items - 2, s.ks),
                "remove_history": s.remove_history, "metrics": list(REPORTED),
                "loss": (f"sampled softmax, {s.num_negatives} uniform negatives shared per batch, target masked"
                         if s.num_negatives > 0 else "full softmax"),
                "early_stopping": f"valid NDCG@10, patience {cfg.train.patience}, max {s.max_epochs} epochs",
                "batch_size": cfg.train.batch_size, "lr": s.lr, "weight_decay": s.weight_decay,
                "ict_weight_decay": cfg.train.ict_weight_decay if ict else None,
                "rows": {"train": len(run.train_rows), "valid": len(run.frames["valid"]),
                         "test": len(run.frames["test"])},
                "retrieval": ({**asdict(cfg.retrieval), "key": "history only"} if ict else None),
                "ict": ({**asdict(cfg.ict), "fusion_alpha": s.fusion_alpha, "query_target": "hidden (OOV)"}
                        if ict else None),
                "baseline": ({"name": cfg.baseline.name, "dropout": cfg.baseline.dropout,
                              "what": "item vector = id embedding + P·text(item); user: P·mean text(history) as the "
                                      "backbone's extra input (fusion_alpha)"} if cfg.baseline.name else None)}

    def summary_head(self) -> dict:
        return {"task": "sequential"}

    def summary_tail(self, results: list[dict]) -> dict:
        return {"best_epoch": _mean_std([r["best_epoch"] for r in results])}

    @staticmethod
    def cached_line(r: dict) -> str:
        return f"test ndcg@10 {r['test']['ndcg@10']:.4f}"

    @staticmethod
    def done_line(res: FitResult) -> str:
        return "  ".join(f"test {m} {res.test[m]:.4f}" for m in ("recall@10", "ndcg@10", "recall@20", "ndcg@20"))

    @staticmethod
    def format_summary(s: dict) -> str:
        from llmcf.train.metrics import fmt_mean_std

        t = s["test"]
        shown = "  ".join(f"{m.replace('recall', 'Recall').replace('ndcg', 'NDCG')} {fmt_mean_std(t[m])}"
                          for m in ("recall@10", "ndcg@10", "recall@20", "ndcg@20") if m in t)
        return (f"{s['tag']:<26} test {shown}  ({len(s['seeds'])} seed(s), "
                f"{s['seconds_per_epoch']['mean']:.1f}s/epoch)\n  protocol: {s['protocol']['ranking']}")


def _mean_std(values):
    from llmcf.train.metrics import mean_std

    return mean_std(values)
