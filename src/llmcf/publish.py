"""Crash-consistent stage outputs: one record per offline stage, invalidated before the stage touches its outputs and
written last, with the digests of what it read and of what it wrote.

Every offline stage (``llmcf run`` and the stand-alone commands) runs inside ``publish(run_dir, stage)``:

    1. the input stages' records are verified (``verify``): a reader never starts on a folder it cannot trust;
    2. ``stages/<stage>.json`` is replaced by a *running* record before any output is touched, so a SIGKILL at any
       later instant leaves a record that no reader trusts;
    3. the stage body writes every file with an atomic rename (``llmcf.io``): no half-written file at a final path;
    4. the *published* record is written last (atomic rename): ``outputs`` maps every file the stage owns
       (``STAGE_OUTPUTS``) to its SHA-256, ``inputs`` maps each input stage to the digest of that stage's outputs.

A reader trusts a stage's files only when its record is published, every recorded file is still the one it wrote, no
unrecorded file of the stage has appeared, and every input stage still holds the outputs this stage read (checked
recursively); otherwise ``verify`` raises a ``RunError`` naming the command that rebuilds it. Records written by
older versions (no ``state``) and stages that were never recorded (a test fixture calling a stage function directly)
are not checked. Model versions are swapped in as complete folders by ``llmcf.train.seeds``, not here.
"""
from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from llmcf.errors import RunError
from llmcf.fingerprint import digest, file_digest
from llmcf.io import atomic_write_json

STAGE_OUTPUTS: dict[str, tuple[str, ...]] = {
    "data": ("data/items.parquet", "data/users.parquet", "data/train.parquet", "data/valid.parquet",
             "data/test.parquet", "data/vocab.json", "data/stats.json"),
    "recgen": ("llm/recgen/model/**/*", "llm/recgen/train_info.json"),
    "cot_generate": ("cot/pool.parquet", "cot/manifest.json", "cot/shards/*"),
    "cot_score": ("cot/selected.parquet", "cot/all_scores.parquet", "cot/score_meta.json"),
    "embed": ("embed/items.npy", "embed/item_ids.json", "embed/cot.npy", "embed/meta.json"),
    "retrieve": ("retrieval/*",),
}
"""Files each stage owns (globs under the run directory; caches such as embed/cache/, and retrieval/seq/ with its
own stamp, are left out)."""

STAGE_INPUTS: dict[str, tuple[str, ...]] = {
    "data": (), "recgen": ("data",), "cot_generate": ("data", "recgen"), "cot_score": ("cot_generate",),
    "embed": ("data", "cot_score"), "retrieve": ("data", "cot_score", "embed"),
}
"""The stages whose outputs each stage reads."""

COMMAND: dict[str, str] = {"data": "data build --out {run}", "recgen": "recgen train --run {run}",
                           "cot_generate": "cot generate --run {run}", "cot_score": "cot score --run {run}",
                           "embed": "embed --run {run}", "retrieve": "retrieve --run {run}"}
"""The stand-alone command that rebuilds each stage (``llmcf run`` reruns whatever does not verify)."""

HOOKS: dict[str, Callable[[str], None]] = {}
"""Test-only hook points: ``HOOKS["before_record"](stage)`` runs after the stage body, before its record (a crash
there must leave the stage untrusted)."""


def record_path(run_dir: str | Path, stage: str) -> Path:
    return Path(run_dir) / "stages" / f"{stage}.json"


def read_record(run_dir: str | Path, stage: str) -> dict | None:
    """The stage's record, or None when there is none (or it is unreadable, which no reader trusts either)."""
    path = record_path(run_dir, stage)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        return {"stage": stage, "state": "unreadable"}


def owned_files(run_dir: str | Path, stage: str) -> list[Path]:
    root = Path(run_dir)
    return sorted({p for g in STAGE_OUTPUTS[stage] for p in root.glob(g)
                   if p.is_file() and not p.name.startswith(".")})


def output_digests(run_dir: str | Path, stage: str) -> dict[str, str]:
    """{relative path: sha256} of every file ``stage`` owns now."""
    root = Path(run_dir)
    return {p.relative_to(root).as_posix(): file_digest(p)["sha256"] for p in owned_files(root, stage)}


def outputs_digest(record: dict | None) -> str | None:
    """One digest of a published record's outputs (what a downstream record keeps as its input)."""
    if not record or record.get("state") != "published":
        return None
    return digest(record.get("outputs", {}))


def command(run_dir: str | Path, stage: str) -> str:
    return f"`llmcf {COMMAND[stage].format(run=run_dir)}` (or `llmcf run`)"


def problem(run_dir: str | Path, stage: str, _seen: dict | None = None) -> str | None:
    """Why ``stage``'s files cannot be trusted (None when they can, or when the stage carries no checkable record)."""
    seen = {} if _seen is None else _seen
    if stage in seen:
        return seen[stage]
    rec = read_record(run_dir, stage)
    why = None
    if rec is not None and "state" in rec:
        if rec["state"] != "published":
            why = (f"{record_path(run_dir, stage)}: the last {stage} stage did not finish (record {rec['state']}); "
                   f"its files may mix two runs")
        else:
            why = _outputs_problem(run_dir, stage, rec) or _inputs_problem(run_dir, stage, rec, seen)
    seen[stage] = why
    return why


def _outputs_problem(run_dir, stage: str, rec: dict) -> str | None:
    want, got = rec.get("outputs", {}), output_digests(run_dir, stage)
    for rel in sorted(set(want) | set(got)):
        if rel not in got:
            return f"{Path(run_dir) / rel}: missing, though the {stage} stage that finished last wrote it"
        if rel not in want:
            return f"{Path(run_dir) / rel}: not written by the {stage} stage that finished last"
        if got[rel] != want[rel]:
            return (f"{Path(run_dir) / rel}: changed since the {stage} stage wrote it (sha256 {got[rel][:12]} vs "
                    f"{want[rel][:12]})")
    return None


def _inputs_problem(run_dir, stage: str, rec: dict, seen: dict) -> str | None:
    for up, want in (rec.get("inputs") or {}).items():
        if want is None:  # the input stage carried no record when this stage ran: nothing to compare
            continue
        if problem(run_dir, up, seen) is not None or outputs_digest(read_record(run_dir, up)) != want:
            return f"the {up} stage's files are not the ones the {stage} stage read"
    return None


def verify(run_dir: str | Path, stage: str) -> dict | None:
    """The stage's record after checking it (``problem``); a RunError naming the command to run when it fails."""
    why = problem(run_dir, stage)
    if why:
        raise RunError(f"{why}; run {command(run_dir, stage)} again")
    return read_record(run_dir, stage)


class Publication:
    """One stage run inside ``publish``: ``invalidate()`` replaces the record by a *running* one (once)."""

    def __init__(self, run_dir: str | Path, stage: str):
        self.run_dir, self.stage, self.invalidated = Path(run_dir), stage, False

    def invalidate(self) -> None:
        if not self.invalidated:
            atomic_write_json(record_path(self.run_dir, self.stage),
                              {"stage": self.stage, "state": "running", "hash": None,
                               "started": time.strftime("%Y-%m-%d %H:%M:%S")})
            self.invalidated = True


_ACTIVE: dict[str, Publication] = {}


def writing(run_dir: str | Path) -> None:
    """Called by a stage body right before it first touches its outputs: invalidates the record of a stage published
    with ``lazy=True`` (so input a stage rejects leaves the finished stage trusted and no new file behind). A no-op
    outside ``publish``."""
    pub = _ACTIVE.get(str(Path(run_dir).resolve()))
    if pub is not None:
        pub.invalidate()


@contextmanager
def publish(run_dir: str | Path, stage: str, stage_hash: str | None = None, lazy: bool = False) -> Iterator[None]:
    """Run a stage body crash-consistently (the module docstring): inputs verified, record invalidated, body, record
    written last. ``stage_hash`` is the config stamp ``llmcf run`` compares to skip an unchanged stage. ``lazy``: the
    record is invalidated when the body calls ``writing(run_dir)`` (it must, before touching any output)."""
    for up in STAGE_INPUTS[stage]:
        verify(run_dir, up)
    inputs = {up: outputs_digest(read_record(run_dir, up)) for up in STAGE_INPUTS[stage]}
    t0, pub, key = time.perf_counter(), Publication(run_dir, stage), str(Path(run_dir).resolve())
    if not lazy:
        pub.invalidate()
    _ACTIVE[key] = pub
    try:
        yield
    finally:
        _ACTIVE.pop(key, None)
    if "before_record" in HOOKS:
        HOOKS["before_record"](stage)
    atomic_write_json(record_path(run_dir, stage), {
        "stage": stage, "state": "published", "hash": stage_hash, "inputs": inputs,
        "outputs": output_digests(run_dir, stage), "seconds": round(time.perf_counter() - t0, 1),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S")})
