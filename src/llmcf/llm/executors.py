"""Where sharded LLM work runs (``llm.executor``): in this process, or on a Ray Data actor pool.

Every resumable LLM stage (CoT generation, the KD teacher's p(Yes), KAR's texts) is a *shard job*: an object that
builds its engine once per process (``setup``) and turns one shard's pool rows into records (``run``). The job is the
one definition of the work, so a shard's records do not depend on which executor, process or machine ran it; the
executor only decides where ``run`` is called. Executors yield ``(k, records, new_tokens)`` as shards finish, in any
order; the caller writes each shard atomically on arrival, so an interrupted run keeps every finished shard.

``ray`` (optional extra ``llmcf[ray]``): the pending shards become a Ray dataset of one row per shard (its rows as
JSON); ``map_batches`` runs them through ``llm.ray_actors`` actors, each holding one job (and so one backend) with
``llm.ray_cpus_per_actor`` / ``ray_gpus_per_actor`` reserved. ``llm.ray_address`` joins an existing cluster (model
paths must then exist on every node); without it a local Ray instance is started and stopped again.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Iterator, Protocol

import pandas as pd

from llmcf.config import LLMConfig
from llmcf.errors import LLMCFError
from llmcf.registry import Registry


class ShardJob(Protocol):
    """One kind of sharded LLM work. Must pickle (Ray ships it to its actors) until ``setup`` has run."""

    columns: tuple[str, ...] | None
    """The pool columns ``run`` reads (what Ray ships to the actors); None = every column."""

    def setup(self) -> None:
        """Build the engine (backend, model) in this process; called once before the first ``run``."""

    def run(self, rows: pd.DataFrame, k: int) -> tuple[list[dict], int]:
        """(one record per row, in order, each with the row's ``key``; new tokens generated, 0 if not counted)."""


class BackendJob:
    """A shard job holding one generation backend, built by ``make_backend`` in the process that runs the job (a
    ``backend`` given is used as is, e.g. a stand-in in tests); its per-call progress bar is turned off, since the
    stage shows one bar. Subclasses define ``columns`` and ``run``."""

    columns: tuple[str, ...] | None = None

    def __init__(self, llm: LLMConfig, model_path=None, backend=None):
        self.llm, self.model_path, self.backend = llm, model_path, backend

    def setup(self) -> None:
        if self.backend is None:
            from llmcf.llm.backends.factory import make_backend

            self.backend = make_backend(self.llm, self.model_path)
        if hasattr(self.backend, "progress"):
            self.backend.progress = False


EXECUTORS: Registry = Registry("llm executor")
"""``llm.executor`` → ``f(job, pool, pending, shard_size, llm) -> Iterator[(k, records, new_tokens)]``."""


def shard_rows(pool: pd.DataFrame, k: int, shard_size: int) -> pd.DataFrame:
    """Rows [k·S, (k+1)·S) of the pool: shard k."""
    return pool.iloc[k * shard_size:(k + 1) * shard_size]


def run_shards(job: ShardJob, pool: pd.DataFrame, pending: list[int], shard_size: int,
               llm: LLMConfig) -> Iterator[tuple[int, list[dict], int]]:
    """Run ``job`` over the ``pending`` shards on ``llm.executor``; checks that every shard's records are its rows."""
    executor = EXECUTORS.get(llm.executor)
    for k, records, tokens in executor(job, pool, pending, shard_size, llm):
        want = shard_rows(pool, k, shard_size)["key"].tolist()
        if [r.get("key") for r in records] != want:
            raise LLMCFError(f"shard {k}: the worker returned records for other rows than asked")
        yield k, records, tokens


@EXECUTORS.register("local")
def local_shards(job: ShardJob, pool: pd.DataFrame, pending: list[int], shard_size: int, llm: LLMConfig):
    """One engine in this process, shards in order."""
    if pending:
        job.setup()
    for k in pending:
        yield (k, *job.run(shard_rows(pool, k, shard_size), k))


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise LLMCFError("llm.executor: ray needs Ray Data: pip install 'llmcf[ray]'") from None
    return ray


@contextmanager
def ray_session(llm: LLMConfig, num_cpus: float):
    """Join ``llm.ray_address``, or start a local Ray instance of ``num_cpus`` (stopped again on exit); a Ray already
    initialised in this process (a test's cluster, a user's notebook) is used as is."""
    ray = import_ray()
    started = not ray.is_initialized()
    if started:
        ray.init(address=llm.ray_address, include_dashboard=False, log_to_driver=False,
                 **({} if llm.ray_address else {"num_cpus": max(1, int(num_cpus))}))
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


class ShardActor:
    """A Ray actor: one job (one engine), one shard per call (batch of size 1)."""

    def __init__(self, job: ShardJob):
        job.setup()
        self.job = job

    def __call__(self, batch: dict) -> dict:
        out = {"shard": [], "records": [], "new_tokens": []}
        for k, rows in zip(batch["shard"], batch["rows"]):
            records, tokens = self.job.run(pd.DataFrame(json.loads(rows)), int(k))
            out["shard"].append(int(k))
            out["records"].append(json.dumps(records, ensure_ascii=False))
            out["new_tokens"].append(int(tokens))
        return out


@EXECUTORS.register("ray")
def ray_shards(job: ShardJob, pool: pd.DataFrame, pending: list[int], shard_size: int, llm: LLMConfig):
    """Ray Data: an actor pool of ``llm.ray_actors`` jobs; shards stream back in completion order."""
    if not pending:
        return
    with ray_session(llm, llm.ray_actors * llm.ray_cpus_per_actor) as ray:
        cols = list(getattr(job, "columns", None) or pool.columns)
        items = [{"shard": k, "rows": shard_rows(pool, k, shard_size).loc[:, cols].to_json(orient="records",
                                                                                          force_ascii=False)}
                 for k in pending]
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        out = ds.map_batches(ShardActor, batch_size=1, concurrency=max(1, int(llm.ray_actors)),
                             num_cpus=llm.ray_cpus_per_actor, num_gpus=llm.ray_gpus_per_actor or None,
                             fn_constructor_kwargs={"job": job})
        for row in out.iter_rows():
            yield int(row["shard"]), json.loads(row["records"]), int(row["new_tokens"])
