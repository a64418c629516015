"""Train one model over several seeds in ``<out_dir>/seed_<s>/``, skipping seeds already trained with the same config.

A seed is written complete or not at all: ``model.safetensors`` (best weights, no pickle), ``config.yaml`` (the config
it was trained with) and last ``result.json`` go into ``<out_dir>/.staging-seed_<s>/``, which then replaces
``seed_<s>/`` by two renames (old → ``.old-seed_<s>``, staging → ``seed_<s>``). Until then the previous seed_<s> keeps
loading; a kill between the two renames is repaired by ``recover_seed_dirs`` on the next training (complete staging
published, else the old version restored). A seed whose ``result.json`` carries the same ``config_hash`` is read back
instead of trained again, which makes an interrupted run resumable seed by seed.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from llmcf.config import Config, save_config
from llmcf.estimate import trained
from llmcf.io import atomic_path, atomic_write_json, save_npy
from llmcf.resources import PeakMemory
from llmcf.train.distributed import current
from llmcf.train.loop import FitResult


STAGING, OLD = ".staging-", ".old-"


def publish_dir(staging: Path, final: Path) -> None:
    """Replace directory ``final`` by the complete directory ``staging`` (two renames; see the module docstring)."""
    old = final.parent / f"{OLD}{final.name}"
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        final.rename(old)
    staging.rename(final)
    if old.exists():
        shutil.rmtree(old)


def recover_seed_dirs(out_dir: Path) -> None:
    """Finish or undo a swap a kill interrupted, and drop staging directories of trainings that did not finish."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return
    for old in out_dir.glob(f"{OLD}seed_*"):
        final = out_dir / old.name[len(OLD):]
        staging = out_dir / f"{STAGING}{final.name}"
        if not final.exists():
            if (staging / "result.json").exists():
                staging.rename(final)
            else:
                old.rename(final)
        if old.exists():
            shutil.rmtree(old)
    for staging in out_dir.glob(f"{STAGING}seed_*"):
        shutil.rmtree(staging)


def train_seeds(out_dir: Path, tag: str, model_name: str, chash: str, seeds: range,
                train_one: Callable[[int], tuple[torch.nn.Module, FitResult]],
                cached_line: Callable[[dict], str], done_line: Callable[[FitResult], str],
                cfg: Config | None = None, seed_files: Callable[[int], dict] | None = None,
                seed_stamp: Callable[[int], dict] | None = None) -> list[dict]:
    """Records of every seed in ``seeds``, training the missing ones with ``train_one(seed) -> (model, result)``
    after seeding torch and numpy. A seed is cached when its ``result.json`` has ``config_hash`` equal to ``chash``
    (``llmcf.fingerprint.model_cache_key``). ``cached_line(record)`` / ``done_line(result)`` finish the printed status lines.
    ``cfg``: written as each seed's config.yaml. ``seed_files(seed) -> {file name: array}``: extra .npy files of a
    freshly trained seed (e.g. its per-row test predictions), written into the seed folder with its weights.
    Under torchrun every rank trains, rank 0 alone writes and prints, and the ranks meet at a barrier after each seed
    (``llmcf.train.distributed``). ``seed_stamp(seed) -> {field: value}``: what else one seed was trained from (a
    warm start's base weights), recorded in its result.json; a cached seed must carry the same values (a record
    written before the field existed is taken as it is)."""
    from safetensors.torch import save_file

    d = current()
    if d.main:
        recover_seed_dirs(out_dir)
    d.barrier()
    results = []
    for seed in seeds:
        sdir = Path(out_dir) / f"seed_{seed}"
        rpath = sdir / "result.json"
        prev = json.loads(rpath.read_text()) if rpath.exists() else {}
        stamp = seed_stamp(seed) if seed_stamp else {}
        if d.same_everywhere(prev.get("config_hash") == chash and all(prev.get(k, v) == v for k, v in stamp.items())):
            results.append(prev)
            if d.main:
                print(f"[train] {tag} seed {seed}: cached ({cached_line(prev)})")
            continue
        torch.manual_seed(seed)
        np.random.seed(seed)
        t0 = time.perf_counter()
        with PeakMemory() as mem:
            model, res = train_one(seed)
        record = {"model": model_name, "tag": tag, "seed": seed, "config_hash": chash, **stamp, **asdict(res),
                  "wall_seconds": time.perf_counter() - t0,
                  "params": int(sum(p.numel() for p in model.parameters())), "processes": d.world}
        memory = mem.record()  # this model's own peak (see llmcf.resources), not the process's high-water mark
        record.update(memory=memory, process_peak_rss_mb=record["peak_rss_mb"],
                      peak_rss_mb=memory["rss_peak_mb"])
        results.append(record)
        if not d.main:
            d.barrier()  # rank 0 publishes the seed
            continue
        staging = Path(out_dir) / f"{STAGING}{sdir.name}"
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        with atomic_path(staging / "model.safetensors") as tmp:
            save_file(state, str(tmp))
        if cfg is not None:
            save_config(cfg, staging / "config.yaml")
        for name, arr in (seed_files(seed) if seed_files else {}).items():
            save_npy(staging / name, arr)
        atomic_write_json(staging / "result.json", record)  # last: a staging dir with result.json is complete
        publish_dir(staging, sdir)
        d.barrier()
        trained(tag, record["wall_seconds"])
        print(f"[train] {tag} seed {seed}: best epoch {res.best_epoch}  {done_line(res)}  "
              f"({res.seconds_per_epoch:.1f}s/epoch)")
    return results
