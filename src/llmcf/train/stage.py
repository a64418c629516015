"""`llmcf train`: the one training stage. A task object (``CTRTask`` | ``SeqTask``) supplies the samples, model
builder, fit (loss, metrics, stop metric), tag, cache key and protocol; this module trains it over seeds.

Outputs, per variant tag (``DIN``, ``DIN+llmcf``, ``DIN+llmcf-no_cot``, ``seq-SASRec``, ``seq-SASRec+llmcf``, ...):
    run_dir/models/<tag>/config.yaml                  the config of the last training that finished
    run_dir/models/<tag>/seed_<s>/model.safetensors   best weights (safetensors, no pickle)
    run_dir/models/<tag>/seed_<s>/config.yaml          the config this seed was trained with (what serving loads)
    run_dir/models/<tag>/seed_<s>/result.json          valid/test metrics, curve, seconds/epoch, peak memory
    run_dir/models/<tag>/summary.json                  mean ± std over seeds, with the evaluation protocol
Each seed is swapped in complete (``llmcf.train.seeds``): a killed retrain leaves the previous model loadable.
A seed whose result.json carries the same cache key (``llmcf.fingerprint``) is not trained again (resumable).
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch

from llmcf.config import Config, save_config
from llmcf.fingerprint import ctr_config_hash
from llmcf.io import atomic_write_json
from llmcf.resources import summary_memory
from llmcf.rundir import RunDir
from llmcf.train.ctr_task import CTRTask, RunData, variant_tag  # noqa: F401  (RunData, variant_tag: public API)
from llmcf.train.distributed import current
from llmcf.train.loop import FitResult
from llmcf.train.metrics import mean_std
from llmcf.train.seeds import train_seeds


class Task(Protocol):
    """What the training stage needs from a task (see ``CTRTask`` and ``llmcf.train.seq_task.SeqTask``)."""

    name: str
    test_metrics: tuple[str, ...]
    valid_metrics: tuple[str, ...]

    def tag(self, model_name: str, cfg: Config) -> str: ...
    def cache_key(self, model_name: str, cfg: Config) -> str: ...
    def build(self, model_name: str, cfg: Config) -> torch.nn.Module: ...
    def fit(self, model: torch.nn.Module, cfg: Config, seed: int, progress: bool, desc: str) -> FitResult: ...
    def protocol(self, cfg: Config) -> dict: ...
    def summary_head(self) -> dict: ...
    def summary_tail(self, results: list[dict]) -> dict: ...
    def cached_line(self, record: dict) -> str: ...
    def done_line(self, res: FitResult) -> str: ...
    def format_summary(self, summary: dict) -> str: ...


def train_model(run_dir: str | Path, task: Task, cfg: Config, model_name: str, progress: bool = True) -> dict:
    """Train ``model_name`` for ``task`` over cfg.train.seeds seeds; returns the summary (also summary.json).
    Under torchrun (``llmcf.train.distributed``) every rank trains and returns the summary, rank 0 writes it."""
    d = current()
    progress = progress and d.main
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    tag = task.tag(model_name, cfg)
    out_dir = RunDir(run_dir).model(tag)
    out_dir.mkdir(parents=True, exist_ok=True)  # config.yaml is written after training: each seed carries its own
    protocol = task.protocol(cfg)

    def train_one(seed: int):
        model = task.build(model_name, cfg)
        return model, task.fit(model, cfg, seed, progress, f"{tag} s{seed}")

    results = train_seeds(out_dir, tag, model_name, task.cache_key(model_name, cfg),
                          range(cfg.train.seed, cfg.train.seed + cfg.train.seeds), train_one,
                          cached_line=task.cached_line, done_line=task.done_line, cfg=cfg,
                          seed_files=getattr(task, "seed_files", None),
                          seed_stamp=(lambda s: task.seed_stamp(model_name, cfg, s)) if hasattr(task, "seed_stamp")
                          else None)
    summary = {"model": model_name, "tag": tag, **task.summary_head(), "seeds": [r["seed"] for r in results],
               "protocol": protocol,
               "test": {m: mean_std([r["test"][m] for r in results]) for m in task.test_metrics
                        if m in results[0]["test"]},
               "valid": {m: mean_std([r["valid"][m] for r in results]) for m in task.valid_metrics
                         if m in results[0]["valid"]},
               **task.summary_tail(results),
               "seconds_per_epoch": mean_std([r["seconds_per_epoch"] for r in results]),
               **summary_memory(results), **({"processes": d.world} if d.active else {})}
    if d.main:
        save_config(cfg, out_dir / "config.yaml")
        atomic_write_json(out_dir / "summary.json", summary)
    d.barrier()
    return summary


def config_hash(cfg: Config, model_name: str | None = None) -> str:
    """Hash of what one seed of a CTR model reads (``llmcf.fingerprint.ctr_config_hash``)."""
    return ctr_config_hash(cfg, model_name)


def run_train(run_dir: Path, cfg: Config, model_name: str, *, run: RunData | None = None,
              progress: bool = True, upstream: str = "") -> dict:
    """Train the CTR model ``model_name`` (± the ICT, per ``cfg.ict.enabled``); returns its summary."""
    run = run or RunData(Path(run_dir), cfg)
    return train_model(run_dir, CTRTask(run, upstream), cfg, model_name, progress)


def format_summary(s: dict) -> str:
    """One line for a CTR or sequential summary."""
    if s.get("task") == "sequential":
        from llmcf.train.seq_task import SeqTask

        return SeqTask.format_summary(s)
    return CTRTask.format_summary(s)
