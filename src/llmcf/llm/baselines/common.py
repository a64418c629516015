"""What the baselines' LLM stages share: the generation loop over resumable shards and its manifest."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import pandas as pd

from llmcf.estimate import EstimatingBar
from llmcf.io import atomic_write_json, write_parquet
from llmcf.config import LLMConfig
from llmcf.llm import executors, shards
from llmcf.llm.executors import ShardJob


def run_generation(folder: Path, pool: pd.DataFrame, parts: dict, shard_size: int, job: ShardJob, llm: LLMConfig,
                   *, desc: str, unit: str, log: str, check: Callable[[dict], bool] | None = None) -> dict:
    """Process ``pool`` (a ``key`` column, unique) in resumable shards of ``shard_size`` rows under ``folder``.

    ``parts``: everything the outputs depend on (hashed into ``gen_id``); ``job``: the work on one shard
    (``llmcf.llm.executors``), run on ``llm.executor`` (this process or a Ray actor pool). Writes pool.parquet and
    manifest.json (with ``cost``: rows processed, wall seconds and this process's CPU seconds — a Ray pool's actors
    are not in it — summed over this and earlier runs; backend loading included). Returns the manifest."""
    if shard_size < 1:
        raise ValueError(f"shard size must be >= 1, got {shard_size}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    gen_id, parts = shards.generation_for(folder, parts)
    note = shards.prepare_folder(folder, gen_id, ("pool.parquet",))
    print(f"[{log}] generation {gen_id}: {note}")
    keys = pool["key"].tolist()
    n_shards = (len(keys) + shard_size - 1) // shard_size
    mpath = folder / "manifest.json"
    old = json.loads(mpath.read_text()) if mpath.exists() else {}
    write_parquet(pool, folder / "pool.parquet")
    manifest = {"gen_id": gen_id, **parts, "rows": len(keys), "shards": n_shards, "shard_size": shard_size,
                "complete": False, "cost": {"rows_processed": 0, "seconds": 0.0, "cpu_seconds": 0.0, **old.get("cost", {})},
                "created": old.get("created", time.strftime("%Y-%m-%d %H:%M:%S"))}
    atomic_write_json(mpath, manifest)
    pending = shards.pending_shards(folder, keys, shard_size, check)
    t0, c0 = time.perf_counter(), time.process_time()
    done_now = 0
    if pending:
        done = len(keys) - sum(len(keys[k * shard_size:(k + 1) * shard_size]) for k in pending)
        with EstimatingBar(total=len(keys), initial=done, unit=unit, desc=desc, dynamic_ncols=True,
                           rate_key=desc) as bar:
            for k, records, _ in executors.run_shards(job, pool, pending, shard_size, llm):
                shards.write_shard(folder, k, records)
                done_now += len(records)
                bar.update(len(records))
                cost = manifest["cost"]
                manifest["cost"] = {"rows_processed": cost["rows_processed"] + len(records),
                                    "seconds": round(cost["seconds"] + time.perf_counter() - t0, 1),
                                    "cpu_seconds": round(cost["cpu_seconds"] + time.process_time() - c0, 1)}
                t0, c0 = time.perf_counter(), time.process_time()
                atomic_write_json(mpath, manifest)
    manifest.update(complete=True, finished=time.strftime("%Y-%m-%d %H:%M:%S"))
    atomic_write_json(mpath, manifest)
    print(f"[{log}] {len(keys)} rows in {n_shards} shards ({done_now} processed now; "
          f"{manifest['cost']['rows_processed']} in all, {manifest['cost']['seconds']:.0f} s)")
    return manifest


def read_generation(folder: Path, what: str, rerun: str, partial: bool = False) -> tuple[dict, pd.DataFrame, list[dict]]:
    """(manifest, pool, records in pool order) of a complete generation under ``folder``; ``partial``: of its
    finished shards (the pool cut to their rows)."""
    from llmcf.errors import RunError

    folder = Path(folder)
    mpath = folder / "manifest.json"
    if not mpath.exists() or not (folder / "pool.parquet").exists():
        raise RunError(f"{mpath} is missing: run `{rerun}` first")
    manifest = json.loads(mpath.read_text())
    pool = pd.read_parquet(folder / "pool.parquet")
    recs = shards.read_records(folder, pool["key"].tolist(), manifest["shard_size"], f"{what} {manifest['gen_id']}",
                               rerun, partial)
    if partial:
        done = {r["key"] for r in recs}
        pool = pool[pool["key"].isin(done)].reset_index(drop=True)
    return manifest, pool, recs


def teacher_model(run_dir: Path, cfg) -> tuple[Path | None, dict]:
    """The model the baselines ask (the RecGen-tuned one unless ``recgen.skip`` or untrained: as CoT generation)."""
    from llmcf.llm.cot.generate import resolve_cot_model

    return resolve_cot_model(run_dir, cfg)
