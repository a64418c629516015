"""llm.executor: ray for the KD teacher's p(Yes) and KAR's texts, and embed.executor: ray for the sentence encoder,
on a local Ray cluster (ray.init(num_cpus=2)). Each must write exactly what the single-process path writes. Marked
slow (Ray start-up and actor pools); skipped only when the optional extra llmcf[ray] is not installed."""
from __future__ import annotations

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="the optional extra llmcf[ray] is not installed")

from test_baselines import CountingBackend, _cfg, _copy_run, tiny_run  # noqa: E402,F401
from test_cot_ray import local_ray  # noqa: E402,F401


def _shards(folder):
    return {p.name: p.read_text() for p in sorted((folder / "shards").glob("shard_*.jsonl"))}


@pytest.mark.slow
def test_kd_and_kar_on_ray_write_the_rows_of_the_local_executor(tiny_run, tmp_path, local_ray):  # noqa: F811
    from llmcf.llm.baselines.kar import kar_dir, read_kar_texts, run_kar_generate
    from llmcf.llm.baselines.kd import kd_dir, run_kd_score

    local, remote = _copy_run(tiny_run, tmp_path / "local"), _copy_run(tiny_run, tmp_path / "ray")
    cfg = _cfg(tiny_run)
    run_kd_score(local, cfg, backend=CountingBackend())
    run_kar_generate(local, cfg, backend=CountingBackend())
    cfg.llm.executor, cfg.llm.ray_actors = "ray", 2
    kd = run_kd_score(remote, cfg, backend=CountingBackend())
    kar = run_kar_generate(remote, cfg, backend=CountingBackend())
    assert _shards(kd_dir(remote)) == _shards(kd_dir(local)) and len(_shards(kd_dir(local))) == 4  # 30 rows / 8
    assert _shards(kar_dir(remote)) == _shards(kar_dir(local)) and len(_shards(kar_dir(local))) == 6  # 44 texts / 8
    assert kd["complete"] and kd["cost"]["rows_processed"] == 30 and kar["cost"]["rows_processed"] == 44
    users, items, _ = read_kar_texts(remote)
    assert len(users) == 24 and len(items) == 20


@pytest.mark.slow
def test_ray_encoder_gives_the_local_vectors_and_fills_the_cache(tmp_path, local_ray):  # noqa: F811
    from llmcf.config import LLMConfig
    from llmcf.embed import Encoder

    texts = [f"title: Movie number {i}; category: {['Drama', 'Comedy', 'Horror'][i % 3]}" for i in range(30)]
    texts[4] = ""  # blank: a zero row, never sent to a model
    texts[9] = texts[8]  # a duplicate: encoded once
    want = Encoder("minilm", chunk=7).encode(texts)
    enc = Encoder("minilm", cache_dir=tmp_path / "cache", chunk=7, executor="ray", ray=LLMConfig(ray_actors=2))
    got = enc.encode(texts)
    assert got.shape == want.shape and np.abs(got - want).max() < 1e-5
    assert not got[4].any() and enc.model_calls == 28  # 30 - blank - duplicate, in 4 chunks
    again = Encoder("minilm", cache_dir=tmp_path / "cache", chunk=7, executor="ray", ray=LLMConfig(ray_actors=2))
    assert np.array_equal(again.encode(texts), got) and again.model_calls == 0  # all from the cache, no Ray pool


def test_an_unknown_embed_executor_is_refused():
    from llmcf.embed import Encoder
    from llmcf.errors import LLMCFError

    with pytest.raises(LLMCFError, match="embed.executor must be local or ray"):
        Encoder("minilm", executor="dask")
    with pytest.raises(LLMCFError, match="needs the Ray settings"):
        Encoder("minilm", executor="ray")
