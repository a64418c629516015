"""``llm.executor: ray``: CoT generation as a Ray Data pipeline (optional extra ``llmcf[ray]``).

The pending shard numbers become a Ray dataset of one row per shard (the shard's pool rows as JSON); ``map_batches``
runs them through an actor pool of ``ShardGenerator`` actors (``llm.ray_actors`` of them, each holding one backend
built by ``make_backend`` — hf, llamacpp, vllm or openai — with ``llm.ray_cpus_per_actor`` / ``ray_gpus_per_actor``
reserved), one shard per call. Each actor runs ``generate.generate_shard`` — the code and seeds of the local
executor — so the rows do not depend on the executor. The records stream back to the driver, which writes every
shard atomically as it arrives (``run_cot_generate``): a killed run keeps its finished shards and the rerun
generates only the missing ones. ``llm.ray_address`` joins an existing cluster (the model path must then exist on
every node); without it a local Ray instance is started and stopped again.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from llmcf.config import Config, LLMConfig
from llmcf.errors import LLMCFError

POOL_COLUMNS = ("key", "user_id", "pos", "item_id", "label", "prompt")


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise LLMCFError("llm.executor: ray needs Ray Data: pip install 'llmcf[ray]'") from None
    return ray


class ShardGenerator:
    """A Ray actor: one generation backend, one shard per call (batch of size 1)."""

    def __init__(self, cfg: dict, model_path: str | None, backend=None):
        from llmcf.config import config_from_dict

        self.cfg = config_from_dict(cfg)
        if backend is None:
            from llmcf.llm.backends.factory import make_backend

            backend = make_backend(self.cfg.llm, Path(model_path) if model_path else None)
        if hasattr(backend, "progress"):
            backend.progress = False
        self.backend = backend

    def __call__(self, batch: dict) -> dict:
        from llmcf.llm.cot.generate import generate_shard

        out = {"shard": [], "records": [], "new_tokens": [], "unit": []}
        for k, rows in zip(batch["shard"], batch["rows"]):
            frame = pd.DataFrame(json.loads(rows))
            records, tokens, unit = generate_shard(self.backend, frame, int(k), self.cfg)
            out["shard"].append(int(k))
            out["records"].append(json.dumps(records, ensure_ascii=False))
            out["new_tokens"].append(int(tokens))
            out["unit"].append(unit)
        return out


def ray_generate(pool: pd.DataFrame, pending: list[int], cfg: Config, model_path, backend=None):
    """Yield (shard k, records, new tokens, rate unit) as the actors finish shards (in completion order).
    ``backend``: a ready backend object handed to every actor (unit tests with a stand-in engine; it must pickle)."""
    ray = import_ray()
    from llmcf.llm.cot.generate import shard_rows

    llm: LLMConfig = cfg.llm
    started = not ray.is_initialized()
    if started:
        ray.init(address=llm.ray_address, include_dashboard=False, log_to_driver=False,
                 **({} if llm.ray_address else {"num_cpus": max(1, int(llm.ray_actors * llm.ray_cpus_per_actor))}))
    try:
        items = [{"shard": k, "rows": shard_rows(pool, k, cfg).loc[:, list(POOL_COLUMNS)].to_json(orient="records")}
                 for k in pending]
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        out = ds.map_batches(ShardGenerator, batch_size=1, concurrency=max(1, int(llm.ray_actors)),
                             num_cpus=llm.ray_cpus_per_actor, num_gpus=llm.ray_gpus_per_actor or None,
                             fn_constructor_kwargs={"cfg": cfg.to_dict(), "backend": backend,
                                                    "model_path": str(model_path) if model_path else None})
        for row in out.iter_rows():
            yield int(row["shard"]), json.loads(row["records"]), int(row["new_tokens"]), str(row["unit"])
    finally:
        if started:
            ray.shutdown()
