"""`llmcf run` with ``partition.shards: S > 1``: every stage after the data build runs once per user shard, in the
shard's own run directory, and the S sub-models of each tag are aggregated by the mean of their logits.

Layout, lineage and what forgetting touches: ``llmcf.data.partition``. A shard whose data did not change keeps its
stage records, so it is skipped entirely (this is what makes ``llmcf forget`` retrain only the affected shards).

Aggregate outputs, per tag: ``run_dir/models/<tag>/summary.json`` = metrics of the mean-logit ensemble on the global
valid/test rows, one entry per seed (the seed-s ensemble = the seed-s sub-model of every shard), with
``"lineage": {"shards": [0..S-1]}`` and each shard's own summary.
"""
from __future__ import annotations

import time
from copy import deepcopy
from pathlib import Path

from llmcf.config import Config
from llmcf.fingerprint import stage_hash
from llmcf.io import atomic_write_json
from llmcf.rundir import RunDir


def shard_config(cfg: Config, k: int) -> Config:
    """The config of shard k's run directory: the same sections, an ordinary (unpartitioned) run of shard k."""
    sub = deepcopy(cfg)
    sub.partition.shards, sub.partition.shard = 1, k
    return sub


def mark_shard_data(root: Path, sub: Config) -> None:
    """Record shard data as a finished data stage (it came from the partition, not from a build)."""
    stamp = RunDir(root).stage_stamp("data")
    h = stage_hash(sub, "data", "")
    if stamp.exists():
        return
    atomic_write_json(stamp, {"stage": "data", "hash": h, "seconds": 0.0, "source": "partition",
                              "finished": time.strftime("%Y-%m-%d %H:%M:%S")})


def run_partitioned(cfg: Config, run_dir: Path, force: set[str] | None = None) -> dict:
    """Partition run_dir/data, run every later stage per shard, aggregate; returns {"summaries", "partition"}."""
    from llmcf.data.partition import check_separable, shard_dir, write_partition
    from llmcf.pipeline import run_pipeline

    check_separable(cfg)
    force = set(force or ()) - {"data"}
    part = write_partition(run_dir, cfg)
    sizes = ", ".join(f"{k}: {v['users']} users" for k, v in part["sizes"].items())
    print(f"\n=== partition: {cfg.partition.shards} shards ({sizes}); data changed in shards "
          f"{part['changed'] or 'none'} ===", flush=True)
    seconds = {}
    for k in range(cfg.partition.shards):
        sub, root = shard_config(cfg, k), shard_dir(run_dir, k)
        mark_shard_data(root, sub)
        t0 = time.perf_counter()
        print(f"\n##### shard {k}/{cfg.partition.shards} ({root}) #####", flush=True)
        run_pipeline(sub, root, force)
        seconds[k] = round(time.perf_counter() - t0, 2)
    summaries = aggregate(cfg, run_dir)
    return {"summaries": summaries, "partition": {**part, "seconds": seconds}}


def _tags(cfg: Config) -> list[tuple[str, str]]:
    from llmcf.pipeline import cfg_variant
    from llmcf.train.ctr_task import variant_tag

    return [(name, variant_tag(name, cfg_variant(cfg, v))) for name in cfg.models for v in cfg.variants]


def aggregate(cfg: Config, run_dir: Path) -> list[dict]:
    """Evaluate the mean-logit ensemble of every tag on the global valid/test rows; write models/<tag>/summary.json."""
    import pandas as pd

    from llmcf.data.partition import shard_dir
    from llmcf.serve.ensemble import EnsembleScorer
    from llmcf.train.metrics import ctr_metrics, mean_std

    rd = RunDir(run_dir)
    splits = {s: pd.read_parquet(rd.split(s)) for s in ("valid", "test")}
    out = []
    for name, tag in _tags(cfg):
        per_seed = []
        for seed in range(cfg.train.seed, cfg.train.seed + cfg.train.seeds):
            ens = EnsembleScorer(run_dir, tag, seed)
            res = {"seed": seed}
            for s, df in splits.items():
                p = ens.score_rows(df["user_id"].astype(str).tolist(), [list(h) for h in df["history"]],
                                   df["item_id"].astype(str).tolist(), df["pos"].to_numpy())
                res[s] = ctr_metrics(df["label"].to_numpy(), p, df["user_id"].astype(str).to_numpy())
            per_seed.append(res)
        shard_summaries = [RunDir(shard_dir(run_dir, k)).read_json(RunDir(shard_dir(run_dir, k)).model(tag) /
                                                                   "summary.json", {})
                           for k in range(cfg.partition.shards)]
        summary = {"model": name, "tag": tag, "aggregate": "mean_logit", "shards": cfg.partition.shards,
                   "lineage": {"shards": list(range(cfg.partition.shards))},
                   "seeds": [r["seed"] for r in per_seed],
                   "test": {m: mean_std([r["test"][m] for r in per_seed]) for m in per_seed[0]["test"]},
                   "valid": {m: mean_std([r["valid"][m] for r in per_seed]) for m in per_seed[0]["valid"]},
                   "per_seed": per_seed,
                   "per_shard_test_auc": [s.get("test", {}).get("auc", {}).get("mean") for s in shard_summaries]}
        atomic_write_json(rd.model(tag) / "summary.json", summary)
        t = summary["test"]
        print(f"[partition] {tag}: {cfg.partition.shards}-shard mean-logit ensemble, test AUC "
              f"{t['auc']['mean']:.4f} ± {t['auc']['std']:.4f}, logloss {t['logloss']['mean']:.4f}")
        out.append(summary)
    return out


def shard_seconds(run_dir: Path, k: int) -> dict[str, float]:
    """Seconds of each finished stage of shard k (its stage records), for the forget audit and benchmark."""
    import json

    from llmcf.data.partition import shard_dir

    root = shard_dir(run_dir, k)
    out = {p.stem: json.loads(p.read_text()).get("seconds", 0.0) for p in sorted((root / "stages").glob("*.json"))}
    for res in sorted((root / "models").glob("*/seed_*/result.json")):  # training: each seed's wall time
        out[f"train {res.parent.parent.name} {res.parent.name}"] = round(json.loads(res.read_text())
                                                                        .get("wall_seconds", 0.0), 1)
    return out

