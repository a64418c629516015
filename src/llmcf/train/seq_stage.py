"""`llmcf train --task sequential`: the training stage (``llmcf.train.stage``) with the sequential task
(``llmcf.train.seq_task``). Kept as the entry point of the sequential task's Python API."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from llmcf.config import Config
from llmcf.train.seq_task import REPORTED, SeqRunData, SeqTask, seq_tag  # noqa: F401  (public API)
from llmcf.train.stage import train_model


def run_seq_train(run_dir: str | Path, cfg: Config, model_name: str, ict: bool = False, *,
                  run: SeqRunData | None = None, progress: bool = True) -> dict:
    """Train the sequential backbone ``model_name`` (± the ICT) over cfg.train.seeds seeds; returns the summary."""
    run = run or SeqRunData(run_dir, cfg)
    cfg = replace(cfg, ict=replace(cfg.ict, enabled=ict))
    task = SeqTask(run, ict, progress)
    print(f"[train] {task.tag(model_name, cfg)}: {task.protocol(cfg)['ranking']}")
    summary = train_model(run_dir, task, cfg, model_name, progress)
    print(SeqTask.format_summary(summary))
    return summary


def format_seq_summary(s: dict) -> str:
    return SeqTask.format_summary(s)
