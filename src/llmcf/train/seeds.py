"""Train one model over several seeds in ``<out_dir>/seed_<s>/``, skipping seeds already trained with the same config.

Each finished seed writes ``model.safetensors`` (best weights, no pickle) and then ``result.json`` (atomically, so a
crash never leaves a result without its weights); a seed whose ``result.json`` carries the same ``config_hash`` is read
back instead of trained again, which makes an interrupted run resumable seed by seed.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from llmcf.io import atomic_path, atomic_write_json
from llmcf.train.loop import FitResult


def train_seeds(out_dir: Path, tag: str, model_name: str, chash: str, seeds: range,
                train_one: Callable[[int], tuple[torch.nn.Module, FitResult]],
                cached_line: Callable[[dict], str], done_line: Callable[[FitResult], str]) -> list[dict]:
    """Records of every seed in ``seeds``, training the missing ones with ``train_one(seed) -> (model, result)``
    after seeding torch and numpy. A seed is cached when its ``result.json`` has ``config_hash`` equal to ``chash``
    (``llmcf.fingerprint.model_cache_key``). ``cached_line(record)`` / ``done_line(result)`` finish the printed status lines."""
    from safetensors.torch import save_file

    results = []
    for seed in seeds:
        sdir = Path(out_dir) / f"seed_{seed}"
        rpath = sdir / "result.json"
        if rpath.exists():
            prev = json.loads(rpath.read_text())
            if prev.get("config_hash") == chash:
                results.append(prev)
                print(f"[train] {tag} seed {seed}: cached ({cached_line(prev)})")
                continue
        torch.manual_seed(seed)
        np.random.seed(seed)
        t0 = time.perf_counter()
        model, res = train_one(seed)
        sdir.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        with atomic_path(sdir / "model.safetensors") as tmp:
            save_file(state, str(tmp))
        record = {"model": model_name, "tag": tag, "seed": seed, "config_hash": chash, **asdict(res),
                  "wall_seconds": time.perf_counter() - t0,
                  "params": int(sum(p.numel() for p in model.parameters()))}
        atomic_write_json(rpath, record)
        results.append(record)
        print(f"[train] {tag} seed {seed}: best epoch {res.best_epoch}  {done_line(res)}  "
              f"({res.seconds_per_epoch:.1f}s/epoch)")
    return results
