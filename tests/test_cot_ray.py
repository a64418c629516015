"""llm.executor: ray — CoT generation through Ray Data (ray.init(num_cpus=2), a stand-in backend). Marked slow (~85 s
under load: Ray start-up and actor pools). Skipped only when
the optional extra llmcf[ray] is not installed."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="the optional extra llmcf[ray] is not installed")

from llmcf.llm.cot.generate import read_generation, run_cot_generate  # noqa: E402
from test_cot import FakeBackend, cfg_for, make_run  # noqa: E402

TESTS = str(Path(__file__).resolve().parent)


@pytest.fixture(scope="module")
def local_ray():
    # the actors unpickle the stand-in backend by reference: they need this folder on their path
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = TESTS + (os.pathsep + old if old else "")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
    if old is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = old


class FailingShard(FakeBackend):
    """Raises on one shard (found from the call's seed: cot.seed + 1_000_003·k + b)."""

    def __init__(self, shard: int):
        super().__init__()
        self.shard = shard

    def generate(self, prompts, params):
        if params.seed // 1_000_003 == self.shard:
            raise RuntimeError("simulated worker loss")
        return super().generate(prompts, params)


def _shards(run):
    return {p.name: p.read_text() for p in sorted((run / "cot" / "shards").glob("shard_*.jsonl"))}


@pytest.mark.slow
def test_ray_writes_exactly_the_rows_of_the_local_executor(tmp_path, local_ray):
    cfg = cfg_for(count=22, fraction="null", shard_size=4, candidates=2)  # 6 shards, 1 or 2 backend calls each
    cfg.llm.batch_size = 3
    local = make_run(tmp_path / "local")
    run_cot_generate(local, cfg, backend=FakeBackend())
    cfg.llm.executor, cfg.llm.ray_actors = "ray", 2
    remote = make_run(tmp_path / "ray")
    run_cot_generate(remote, cfg, backend=FakeBackend())
    assert _shards(remote) == _shards(local) and len(_shards(local)) == 6
    manifest, pool, recs = read_generation(remote)
    assert [r["key"] for r in recs] == pool["key"].tolist() and manifest["complete"]


@pytest.mark.slow
def test_a_killed_ray_run_resumes_without_loss_or_duplication(tmp_path, local_ray):
    cfg = cfg_for(count=22, fraction="null", shard_size=4, candidates=2)
    want_run = make_run(tmp_path / "want")
    run_cot_generate(want_run, cfg, backend=FakeBackend())
    want = _shards(want_run)

    cfg.llm.executor, cfg.llm.ray_actors = "ray", 1  # one actor: shards in order, the last one fails
    run = make_run(tmp_path / "run")
    with pytest.raises(Exception, match="simulated worker loss"):
        run_cot_generate(run, cfg, backend=FailingShard(5))
    kept = _shards(run)
    assert kept and "shard_00005.jsonl" not in kept and all(want[k] == v for k, v in kept.items())
    inodes = {k: (run / "cot" / "shards" / k).stat().st_ino for k in kept}

    cfg.llm.ray_actors = 2
    run_cot_generate(run, cfg, backend=FakeBackend())
    assert _shards(run) == want
    assert all((run / "cot" / "shards" / k).stat().st_ino == i for k, i in inodes.items())  # finished: untouched
    _, pool, recs = read_generation(run)
    keys = [r["key"] for r in recs]
    assert keys == pool["key"].tolist() and len(set(keys)) == 22
