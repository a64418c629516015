"""User partition of a run for exact forgetting (SISA for the sub-models, APA for the RecGen adapters).

Data model (``partition.shards = S > 1``; S = 1 is an ordinary run and none of this is written)::

    run_dir/data/                 the global samples, as ``llmcf data build`` writes them (all kept users)
    run_dir/partition.parquet     user_id -> shard, one row per user of data/ (what forgetting reads to route)
    run_dir/partition.json        S, seed, the assignment rule, users and rows per shard
    run_dir/shards/<k>/           a complete run directory of shard k alone:
        data/                     the rows of shard k's users only, with a vocabulary built from them
        llm/recgen/               shard k's own RecGen adapter (tuned on shard k's rows only)
        cot/, embed/              CoTs of shard k's rows, written by shard k's adapter, and their embeddings
        retrieval/                shard k's bank: only shard k's CoT rows, so sub-model k retrieves only from them
        models/<tag>/             sub-model k of every backbone / variant
        stages/                   its own stage records (``llmcf run`` skips an unchanged shard entirely)
    run_dir/models/<tag>/summary.json   the aggregate (mean of the S sub-models' logits) on the global splits
    run_dir/forget/excluded.json  salt + salted hashes of forgotten users: the data build drops them for good
    run_dir/forget/audit.jsonl    one record per finished forget (time, salted hash, shards retrained, seconds)
    run_dir/forget/journal.json   an unfinished forget (resumable with ``llmcf forget --run R --resume``)

Lineage: every artifact under ``shards/<k>/`` derives from shard k's users only (``shards/<k>/data/stats.json``
says ``"lineage": {"shards": [k]}``); the aggregate summaries and the global ``data/`` derive from all shards. The
bank a sub-model retrieves from is its own shard's bank (not the union of all shards' CoT rows): with a union bank,
forgetting one user would change the training context of every LLM-CF sub-model and force retraining all of them.
The served bank is the union of the S shard banks, each sub-model querying its own.

Assignment: shard = blake2b(f"{seed}:{user_id}") mod S — a function of the id alone, so removing users never moves
another user (a rank-based round-robin would be exactly balanced but not stable under removal). Shard sizes are
balanced in expectation (multinomial), recorded in partition.json.

Exactness needs a data build in which one user's rows depend only on that user's interactions
(``check_separable``): per-user splits (loo / ratio), labels from ratings or a label column, no ``max_users`` draw.
Implicit labels with sampled negatives (one RNG stream and a catalogue over all users) and the global time split are
refused for partitioned runs.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import secrets
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from llmcf.config import Config, ConfigError
from llmcf.data.schema import SPLITS
from llmcf.errors import RunError
from llmcf.io import atomic_path, atomic_write_json
from llmcf.rundir import RunDir

SHARD_DATA_FILES = ("items.parquet", "users.parquet", "train.parquet", "valid.parquet", "test.parquet", "vocab.json")
KEEP_ON_CLEAR = ("data", "config.yaml", "forget", "shards", "partition.json", "partition.parquet")
"""What clearing a run directory keeps: everything else in it is derived from its data and rebuilt."""


def shard_of(user_ids, shards: int, seed: int = 0) -> np.ndarray:
    """Shard of each user id (int64 array): blake2b of ``f"{seed}:{user_id}"`` modulo ``shards``."""
    out = np.empty(len(user_ids), dtype=np.int64)
    for i, u in enumerate(user_ids):
        h = hashlib.blake2b(f"{seed}:{u}".encode(), digest_size=8).digest()
        out[i] = int.from_bytes(h, "little") % shards
    return out


def shard_dir(run_dir: str | Path, k: int) -> Path:
    return Path(run_dir) / "shards" / str(k)


def check_separable(cfg: Config) -> None:
    """ConfigError unless a user's samples depend only on that user's interactions (see the module docstring)."""
    d = cfg.data
    if d.split == "time":
        raise ConfigError("partition.shards > 1 needs a per-user split (data.split: loo | ratio): the global time "
                          "split's cut points depend on every user's timestamps, so forgetting could not be exact")
    if d.max_users is not None:
        raise ConfigError("partition.shards > 1 needs data.max_users: null: the seeded draw of users depends on every "
                          "user id, so forgetting one user would change who else is kept")
    if d.label == "implicit" and d.num_negatives > 0:
        raise ConfigError("partition.shards > 1 does not support data.label: implicit with sampled negatives (one RNG "
                          "stream and a catalogue shared by all users); use rating or column labels")
    if cfg.seq_models:
        raise ConfigError("partition.shards > 1 does not cover the sequential task yet: set seq_models: []")


# ---- what a forget of n users costs -----------------------------------------------------------------------------
def expected_shards_hit(shards: int, users: int) -> float:
    """Expected number of distinct shards that ``users`` random users fall in: S·(1 − (1 − 1/S)^n) (each user's
    shard is an independent uniform draw, which the blake2b assignment approximates)."""
    S = max(1, int(shards))
    return S * (1.0 - (1.0 - 1.0 / S) ** int(users))


def _resumed_fraction(m: int, slices: int) -> float:
    """Expected share of a sliced shard's training that a forget of m of its users reruns: stage i trains on slices
    1..i (cost ∝ i), the forget resumes at the earliest slice J holding one of them (J = min of m uniform slices)."""
    if m == 0:
        return 0.0
    R = slices
    total = R * (R + 1) / 2
    return sum((((R - j + 1) / R) ** m - ((R - j) / R) ** m) * sum(range(j, R + 1)) / total
               for j in range(1, R + 1))


def forget_speedup_bound(shards: int, users: int, slices: int = 1) -> float:
    """Upper bound on the expected speed-up of forgetting ``users`` random users over a full retrain of the same
    partitioned pipeline, when every cost is per shard (anything global — the data rebuild, the ensemble evaluation —
    only lowers it): S / E[shards hit]. With ``slices`` R > 1 (SISA slice checkpoints, the training of an affected
    shard resumed at its earliest affected slice) it bounds the training part alone: S / E[Σ_shards resumed share],
    the number of a shard's forgotten users being Binomial(n, 1/S)."""
    from math import comb

    S, n = max(1, int(shards)), int(users)
    if slices <= 1:
        return S / expected_shards_hit(S, n)
    p = 1.0 / S
    work = S * sum(comb(n, m) * p ** m * (1 - p) ** (n - m) * _resumed_fraction(m, slices) for m in range(n + 1))
    return S / work


# ---- forgotten users ------------------------------------------------------------------------------------------------
def excluded_path(run_dir) -> Path:
    return Path(run_dir) / "forget" / "excluded.json"


def forget_salt(run_dir, create: bool = False) -> str:
    """The run's salt for user-id hashes (created on first use when ``create``)."""
    import json

    p = excluded_path(run_dir)
    if p.exists():
        return json.loads(p.read_text())["salt"]
    if not create:
        return ""
    salt = secrets.token_hex(16)
    atomic_write_json(p, {"salt": salt, "users": []})
    return salt


def user_hash(salt: str, user_id: str) -> str:
    return hashlib.sha256(f"{salt}:{user_id}".encode()).hexdigest()


def excluded_hashes(run_dir) -> tuple[str, set[str]]:
    import json

    p = excluded_path(run_dir)
    if not p.exists():
        return "", set()
    rec = json.loads(p.read_text())
    return rec["salt"], set(rec["users"])


def add_excluded(run_dir, user_ids) -> list[str]:
    """Record the users as forgotten (salted hashes only); returns their hashes."""
    salt = forget_salt(run_dir, create=True)
    _, have = excluded_hashes(run_dir)
    new = [user_hash(salt, str(u)) for u in user_ids]
    atomic_write_json(excluded_path(run_dir), {"salt": salt, "users": sorted(have | set(new))})
    return new


def without_forgotten(ds, run_dir):
    """``ds`` without the interactions (and user-table rows) of the users forgotten in ``run_dir``."""
    salt, hashes = excluded_hashes(run_dir)
    if not hashes:
        return ds
    ids = ds.interactions["user_id"].astype(str)
    uniq = pd.unique(ids)
    gone = {u for u in uniq if user_hash(salt, u) in hashes}
    changes = {"interactions": ds.interactions[~ids.isin(gone).to_numpy()].reset_index(drop=True)}
    if ds.users is not None:
        changes["users"] = ds.users[~ds.users["user_id"].astype(str).isin(gone).to_numpy()].reset_index(drop=True)
    return dataclasses.replace(ds, **changes)


# ---- writing the shards -----------------------------------------------------------------------------------------
def _parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def _digest(b: bytes) -> dict:
    return {"bytes": len(b), "sha256": hashlib.sha256(b).hexdigest()}


def clear_shard(run_dir, k: int) -> None:
    """Remove everything of shard k derived from its data (models, bank, CoTs, adapter, records)."""
    clear_derived(shard_dir(run_dir, k))


def clear_derived(root: Path) -> None:
    """Remove everything of one run directory derived from its data/ (models, bank, CoTs, adapter, records)."""
    root = Path(root)
    if not root.is_dir():
        return
    for p in root.iterdir():
        if p.name in KEEP_ON_CLEAR:
            continue
        shutil.rmtree(p) if p.is_dir() else p.unlink()


def write_partition(run_dir, cfg: Config) -> dict:
    """Assign the users of run_dir/data to ``cfg.partition.shards`` shards and write each shard's data (only the
    shards whose data changed: such a shard is cleared first, so every later stage of it reruns). Returns
    ``{"changed": [k, ...], "sizes": {k: {"users", "rows"}}}``; also writes partition.parquet / partition.json."""
    from llmcf.data.build import _oov_ids, _oov_rates, samples_table, split_stats
    from llmcf.data.vocab import Vocab

    S, seed = cfg.partition.shards, cfg.partition.seed
    rd = RunDir(run_dir)
    stats = rd.verify_data()
    parts = {s: pd.read_parquet(rd.split(s)) for s in SPLITS}
    items_bytes = rd.items.read_bytes()
    items = pd.read_parquet(rd.items)
    users_tab = pd.read_parquet(rd.users) if rd.users.exists() else None
    all_users = sorted(set().union(*(set(parts[s]["user_id"].astype(str)) for s in SPLITS)))
    assign = shard_of(all_users, S, seed)
    by_user = dict(zip(all_users, assign))
    changed, sizes = [], {}
    for k in range(S):
        files: dict[str, bytes] = {"items.parquet": items_bytes}
        sub = {}
        for s in SPLITS:
            df = parts[s]
            sub[s] = df[df["user_id"].astype(str).map(by_user).to_numpy() == k].reset_index(drop=True)
            files[f"{s}.parquet"] = _parquet_bytes(samples_table(sub[s]))
        if users_tab is not None:
            ut = users_tab[users_tab["user_id"].astype(str).map(by_user).to_numpy() == k].reset_index(drop=True)
            files["users.parquet"] = _parquet_bytes(pa.Table.from_pandas(ut, preserve_index=False))
        vocab = Vocab.from_train(sub["train"], items)
        import json

        files["vocab.json"] = json.dumps(vocab.to_dict()).encode()
        digests = {f: _digest(b) for f, b in files.items()}
        root = shard_dir(run_dir, k)
        old = RunDir(root).read_json(RunDir(root).stats, {})
        n_users = int((assign == k).sum())
        sizes[k] = {"users": n_users, "rows": int(sum(len(v) for v in sub.values()))}
        if old.get("files") == digests:
            continue
        changed.append(k)
        clear_shard(run_dir, k)
        data = root / "data"
        data.mkdir(parents=True, exist_ok=True)
        (data / "stats.json").unlink(missing_ok=True)  # written last: a half-written shard is never trusted
        for name in SHARD_DATA_FILES:
            if name not in files:
                (data / name).unlink(missing_ok=True)
                continue
            with atomic_path(data / name) as tmp:
                Path(tmp).write_bytes(files[name])
        shard_stats = {"dataset": stats.get("dataset"), "source": stats.get("source"),
                       "real_time": stats.get("real_time"), "protocol": stats.get("protocol"),
                       "lineage": {"shards": [k], "of": S, "users": n_users},
                       "splits": {s: split_stats(sub[s]) for s in SPLITS},
                       "vocab": {f: vocab.size(f) for f in ("user", "item", "brand", "category")},
                       "oov_rate": {s: _oov_rates(sub[s], vocab) for s in ("valid", "test")},
                       "oov_ids": {s: _oov_ids(sub[s], sub["train"]) for s in ("valid", "test")},
                       "files": digests}
        atomic_write_json(data / "stats.json", shard_stats)
    for k in range(S, 1 << 16):  # a smaller S than before: drop the shards that no longer exist
        if not shard_dir(run_dir, k).exists():
            break
        shutil.rmtree(shard_dir(run_dir, k))
    table = pa.table({"user_id": pa.array(all_users, pa.string()), "shard": pa.array(assign, pa.int64())})
    with atomic_path(Path(run_dir) / "partition.parquet") as tmp:
        pq.write_table(table, tmp)
    atomic_write_json(Path(run_dir) / "partition.json",
                      {"shards": S, "seed": seed, "rule": "blake2b(f'{seed}:{user_id}') mod shards",
                       "sizes": {str(k): v for k, v in sizes.items()}})
    return {"changed": changed, "sizes": sizes}


def read_partition(run_dir) -> dict:
    """partition.json of a partitioned run (RunError when the run is not partitioned)."""
    p = Path(run_dir) / "partition.json"
    if not p.exists():
        raise RunError(f"{p}: missing; this run is not partitioned (partition.shards: 1)")
    return RunDir(run_dir).read_json(p)
