"""Resumable LLM work in shards: the one home of it (CoT generation, the KD teacher's p(Yes), KAR's texts).

A *generation* lives in one folder: its pool (the rows to process, in order, each with a unique ``key``),
``manifest.json`` (``gen_id`` = hash of everything the outputs depend on) and ``shards/shard_<k>.jsonl`` (rows
[k·S, (k+1)·S) of the pool, one JSON object per row, each file written atomically). A shard whose file holds exactly
its keys (and passes the caller's check) is never redone, so a crash or Ctrl-C loses at most one shard of work.
When the config changes (another ``gen_id``), the old generation is moved to ``previous/<old gen_id>/`` and
switching back restores it.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Callable

from llmcf import fingerprint
from llmcf.errors import DataError, RunError
from llmcf.io import atomic_path


def shard_path(folder: Path, k: int) -> Path:
    return Path(folder) / "shards" / f"shard_{k:05d}.jsonl"


def read_shard(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def write_shard(folder: Path, k: int, records: list[dict]) -> None:
    with atomic_path(shard_path(folder, k)) as tmp:
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def shard_complete(path: Path, keys: list[str], check: Callable[[dict], bool] | None = None) -> bool:
    """The shard file exists, holds exactly ``keys`` in order, and every record passes ``check``."""
    if not path.exists():
        return False
    try:
        recs = read_shard(path)
    except (json.JSONDecodeError, OSError):
        return False
    return [r.get("key") for r in recs] == keys and (check is None or all(check(r) for r in recs))


def archive(folder: Path, name: str, files: tuple[str, ...]) -> Path:
    """Move ``files`` (and shards/) of ``folder`` to ``folder/previous/<name>/``."""
    dest = Path(folder) / "previous" / name
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for f in ("manifest.json", "shards", *files):
        if (Path(folder) / f).exists():
            shutil.move(str(Path(folder) / f), str(dest / f))
    return dest


def generation_for(folder: Path, parts: dict) -> tuple[str, dict]:
    """(gen_id, parts) of the generation ``parts`` describe. A generation already in ``folder`` that differs only
    in the spelling of the tuned model's path (recorded before the path was kept relative to the run directory, as
    the command line spelled it: ``runs/x/llm/...`` vs ``/abs/runs/x/llm/...``) is the same generation: its own id
    and recorded path are kept, so its shards are resumed instead of generated again."""
    gen_id = fingerprint.generation_id(parts)
    mpath = Path(folder) / "manifest.json"
    model = parts.get("model")
    if not mpath.exists() or not isinstance(model, dict) or "path" not in model:
        return gen_id, parts
    old = json.loads(mpath.read_text())
    old_model = old.get("model")
    if old.get("gen_id") == gen_id or not isinstance(old_model, dict) or "path" not in old_model:
        return gen_id, parts
    legacy = {**parts, "model": {**model, "path": old_model["path"]}}
    if fingerprint.generation_id(legacy) == old.get("gen_id"):
        return old["gen_id"], legacy
    return gen_id, parts


def prepare_folder(folder: Path, gen_id: str, files: tuple[str, ...]) -> str:
    """Archive a generation made with another config; restore this config's earlier generation if one was kept.
    Returns a note for the log (``resuming``, ``new generation``, or what moved)."""
    folder = Path(folder)
    note = ""
    mpath = folder / "manifest.json"
    if mpath.exists():
        old = json.loads(mpath.read_text()).get("gen_id", "unknown")
        if old == gen_id:
            return "resuming"
        note = f"config changed: previous generation {old} moved to {archive(folder, old, files)}"
    elif (folder / "shards").exists() and any((folder / "shards").iterdir()):
        note = (f"shards without a manifest moved to "
                f"{archive(folder, 'orphan-' + time.strftime('%Y%m%d-%H%M%S'), files)}")
    kept = folder / "previous" / gen_id
    if kept.is_dir():
        for f in kept.iterdir():
            shutil.move(str(f), str(folder / f.name))
        kept.rmdir()
        note += ("; " if note else "") + f"restored generation {gen_id} from {kept}"
    return note or "new generation"


def pending_shards(folder: Path, keys: list[str], shard_size: int,
                   check: Callable[[dict], bool] | None = None) -> list[int]:
    """Indices of the shards not yet complete."""
    n_shards = (len(keys) + shard_size - 1) // shard_size
    return [k for k in range(n_shards)
            if not shard_complete(shard_path(folder, k), keys[k * shard_size:(k + 1) * shard_size], check)]


def read_records(folder: Path, keys: list[str], shard_size: int, what: str, rerun: str,
                 partial: bool = False) -> list[dict]:
    """Every shard's records in pool order; RunError naming ``rerun`` when a shard is missing (``partial``: the
    finished shards' records only)."""
    n_shards = (len(keys) + shard_size - 1) // shard_size
    recs, missing = [], []
    for k in range(n_shards):
        path = shard_path(folder, k)
        if not path.exists():
            missing.append(k)
            continue
        shard = read_shard(path)
        if [r.get("key") for r in shard] != keys[k * shard_size:(k + 1) * shard_size]:
            raise DataError("rows do not match the pool (edited by hand?); delete the file to regenerate it",
                            file=str(path))
        recs.extend(shard)
    if missing and not partial:
        raise RunError(f"{what} is incomplete: {len(missing)} of {n_shards} shards missing (first: "
                       f"{shard_path(folder, missing[0])}); rerun `{rerun}`")
    return recs
