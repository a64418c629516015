"""`llmcf forget --run R --user U [--user ...]`: exact forgetting of users in a partitioned run (``llmcf.data.partition``
has the data model). Steps, each recorded in ``forget/journal.json`` so an interrupted forget resumes
(``llmcf forget --run R --resume``; every step is idempotent):

1. ``excluded``: the users' salted hashes are added to ``forget/excluded.json`` (the data build drops them from now on,
   so no rebuild can bring them back); their shards are computed from the ids (``shard_of``).
2. ``cleared``: everything of the affected shards derived from data (adapter, CoTs, embeddings, bank + indexes,
   sub-models, records) is deleted at once, so nothing on disk can retrieve their rows any more.
3. ``data``: the global samples are rebuilt without them (``llmcf data build``; users.parquet, vocab, stats too).
4. ``trained``: ``llmcf run`` of the partitioned run: the partition rewrites only the affected shards' data, the
   unchanged shards are skipped by their stage records, the affected shards rerun every stage from scratch, and the
   mean-logit aggregates are re-evaluated.
5. An audit record is appended to ``forget/audit.jsonl`` (UTC time, salted hash of each user id, the shards
   retrained and the seconds of each of their stages; no user id, no user data) and the journal is removed.

After it, every artifact equals what a fresh partitioned run on the dataset without those users writes with the same
seeds (tests/test_forget.py checks this bit for bit). An unpartitioned run (S = 1) is forgotten the same way: its one
shard is the whole run, so everything is retrained.

Not covered (README "Forgetting a user"): the raw dataset files themselves (outside the run directory; the exclusion
list keeps their rows out), an ``embed.cache_dir`` shared outside the run (sentence vectors of the forgotten CoTs,
keyed by text hash; no ids), and copies of the run made elsewhere.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

from llmcf.config import Config, load_config
from llmcf.errors import RunError
from llmcf.io import atomic_write_json
from llmcf.rundir import RunDir


def journal_path(run_dir) -> Path:
    return Path(run_dir) / "forget" / "journal.json"


def _known_users(run_dir) -> set[str]:
    import pyarrow.parquet as pq

    rd = RunDir(run_dir)
    out: set[str] = set()
    for s in ("train", "valid", "test"):
        out |= set(pq.read_table(rd.need(rd.split(s)), columns=["user_id"]).column(0).to_pylist())
    return {str(u) for u in out}


def forget(run_dir: str | Path, users: Sequence[str] = (), resume: bool = False, on_step=None) -> dict:
    """Forget ``users`` in the run (or finish an interrupted forget with ``resume``); returns the audit record.
    ``on_step(name)`` is called after each journal step (tests interrupt there)."""
    from llmcf.data.partition import add_excluded, clear_derived, clear_shard, forget_salt, shard_of, user_hash

    run_dir = Path(run_dir)
    rd = RunDir(run_dir)
    cfg: Config = load_config(rd.need(rd.config, "run"))
    S = max(1, cfg.partition.shards)
    jp = journal_path(run_dir)
    journal = rd.read_json(jp, {}) if jp.exists() else {}
    users = [str(u) for u in users]
    if journal and users:
        salt = forget_salt(run_dir)
        if sorted(user_hash(salt, u) for u in users) != sorted(journal["users"]):
            raise RunError(f"{jp}: an unfinished forget of other users; finish it first with `llmcf forget --run "
                           f"{run_dir} --resume`")
    if not journal:
        if resume:
            raise RunError(f"{jp}: no unfinished forget to resume")
        if not users:
            raise RunError("forget: name at least one --user")
        known = _known_users(run_dir)
        missing = [u for u in users if u not in known]
        if missing:
            raise RunError(f"{rd.data}: no samples of user(s) {', '.join(map(repr, missing))} in this run "
                           "(already forgotten, or never in it)")
        t0 = time.time()
        shards = sorted({int(k) for k in shard_of(users, S, cfg.partition.seed)}) if S > 1 else [0]
        hashes = add_excluded(run_dir, users)
        journal = {"users": sorted(hashes), "shards": shards, "started": t0, "done": ["excluded"]}
        atomic_write_json(jp, journal)
        _step(on_step, "excluded")
    done = journal["done"]

    def mark(step):
        done.append(step)
        atomic_write_json(jp, journal)
        _step(on_step, step)

    if "cleared" not in done:
        if S > 1:
            for k in journal["shards"]:
                clear_shard(run_dir, k)
        else:
            clear_derived(run_dir)
        mark("cleared")
    from llmcf.pipeline import run_pipeline

    t_train = time.perf_counter()
    if "data" not in done:
        # the whole pipeline from the data build: with S > 1 only the affected shards' stages run again
        result = run_pipeline(cfg, run_dir, force={"data"})
        mark("data")
        mark("trained")
    elif "trained" not in done:
        result = run_pipeline(cfg, run_dir)
        mark("trained")
    else:
        result = {}
    # the journal's shards were cleared, so rebuilt; "changed" adds any other shard whose data moved (none when the
    # build is separable, which check_separable enforces)
    retrained = sorted(set(journal["shards"]) | set((result.get("partition") or {}).get("changed", [])))
    from llmcf.partitioned import shard_seconds

    record = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "users": journal["users"],
              "salted": "sha256(salt:user_id), salt in forget/excluded.json", "shards": S,
              "shards_retrained": retrained,
              "stage_seconds": {str(k): shard_seconds(run_dir, k) for k in retrained} if S > 1 else {},
              "seconds": round(time.time() - journal["started"], 2),
              "train_seconds": round(time.perf_counter() - t_train, 2)}
    audit = run_dir / "forget" / "audit.jsonl"
    with open(audit, "a") as f:
        f.write(json.dumps(record) + "\n")
    jp.unlink()
    return record


def _step(on_step, name: str) -> None:
    if on_step is not None:
        on_step(name)
