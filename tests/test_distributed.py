"""torchrun / DDP training (llmcf.train.distributed): the row partition, and 2 CPU processes against 1."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from llmcf.config import ConfigError
from llmcf.train.batches import ArrayBatches
from llmcf.train.distributed import Dist
from llmcf.train.launch import strip_nproc, torchrun_command
from test_variants import ict_run  # noqa: F401  (fixture: a built toy run with stand-in CoT files)


def test_train_rows_are_split_like_a_distributed_sampler_and_batches_add_up_to_the_one_process_batch():
    order = np.random.default_rng(0).permutation(11)
    parts = [Dist(r, 2).train_rows(order) for r in range(2)]
    assert len(parts[0]) == len(parts[1]) == 6  # padded by wrapping: every rank takes the same number of steps
    assert sorted(np.concatenate(parts).tolist()) == sorted(order.tolist() + [order[0]])
    assert np.array_equal(Dist().train_rows(order), order)
    # rank r's step-b batch of size B/2 holds exactly the rows of the one-process step-b batch of size B with parity r
    arrays = {"x": np.arange(40)}
    one = [b["x"].tolist() for b in ArrayBatches(arrays, 8, shuffle=True, seed=3)]
    ranks = [[b["x"].tolist() for b in ArrayBatches(arrays, 4, shuffle=True, seed=3, dist=Dist(r, 2))]
             for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == len(one) == 5
    for b in range(5):
        assert sorted(ranks[0][b] + ranks[1][b]) == sorted(one[b])


def test_evaluation_chunks_cover_every_row_once_and_the_batch_must_split_evenly():
    for n in (0, 1, 7, 10):
        chunks = [Dist(r, 3).eval_chunk(n) for r in range(3)]
        assert [i for c in chunks for i in range(c.start, c.stop)] == list(range(n))
        rows = [ArrayBatches({"x": np.arange(n)}, 2, dist=Dist(r, 3)) for r in range(3)]
        assert sum(b.rows for b in rows) == n
    with pytest.raises(ConfigError, match="divisible"):
        Dist(0, 3).per_rank_batch(128)
    assert Dist(1, 4).per_rank_batch(128) == 32


def test_the_launcher_reruns_the_same_train_command_under_torchrun():
    argv = ["train", "--run", "r", "--nproc", "2", "--model", "DIN", "--nproc=3", "--quiet"]
    assert strip_nproc(argv) == ["train", "--run", "r", "--model", "DIN", "--quiet"]
    cmd = torchrun_command(2, argv)
    assert cmd[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    assert cmd[cmd.index("llmcf.cli") - 1:] == ["-m", "llmcf.cli", "--", "train", "--run", "r", "--model", "DIN",
                                                 "--quiet"]


@pytest.fixture
def ict_run_retrieved(ict_run):
    from llmcf.cli import main

    assert main(["retrieve", "--run", str(ict_run)]) == 0
    return ict_run


TRAIN = ["--model", "DIN", "--ict", "--variant", "no_cot", "--quiet", "--set", "train.max_epochs=2",
         "--set", "train.batch_size=16", "--set", "model.dropout=0", "--set", "ict.dropout=0",
         "--set", "model.embed_dim=4", "--set", "model.mlp=[8]", "--set", "ict.dim=8", "--set", "ict.layers=1",
         "--set", "ict.field_dim=4", "--set", "train.patience=5"]


def test_two_cpu_processes_train_the_one_process_model_and_write_an_interchangeable_checkpoint(
        ict_run_retrieved, tmp_path, monkeypatch):
    """DIN + ICT (no CoT) with 2 processes (gloo, DDP) and with 1, same global batch, no dropout, full batches only:
    DDP's averaged half-batch gradients are the one-process gradient, so the weights agree to float rounding; the
    2-process checkpoint loads into a one-process model and re-scores the test split to the AUC the 2 ranks
    recorded (so the gathered evaluation is the full split in order)."""
    from safetensors.torch import load_file

    from llmcf.cli import main
    from llmcf.config import load_config
    from llmcf.train.ctr_task import CTRTask, RunData
    from llmcf.train.trainer import evaluate

    run1 = ict_run_retrieved
    run2 = tmp_path / "run2"
    shutil.copytree(run1, run2)
    n_train = len(np.load(run1 / "retrieval" / "train_ctx.npy"))
    steps = ["--set", f"train.max_steps_per_epoch={n_train // 16}"]
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert main(["train", "--run", str(run1), *TRAIN, *steps]) == 0
    assert main(["train", "--run", str(run2), "--nproc", "2", *TRAIN, *steps]) == 0

    r1 = json.loads((run1 / "models" / "DIN+llmcf-no_cot" / "seed_0" / "result.json").read_text())
    r2 = json.loads((run2 / "models" / "DIN+llmcf-no_cot" / "seed_0" / "result.json").read_text())
    assert r1["processes"] == 1 and r2["processes"] == 2
    s2 = json.loads((run2 / "models" / "DIN+llmcf-no_cot" / "summary.json").read_text())
    assert s2["processes"] == 2
    w1 = load_file(str(run1 / "models" / "DIN+llmcf-no_cot" / "seed_0" / "model.safetensors"))
    w2 = load_file(str(run2 / "models" / "DIN+llmcf-no_cot" / "seed_0" / "model.safetensors"))
    assert w1.keys() == w2.keys()
    moved = max(float((w1[k] - w2[k]).abs().max()) for k in w1)
    assert moved < 1e-4, moved
    assert abs(r1["test"]["auc"] - r2["test"]["auc"]) < 1e-3

    cfg = load_config(run2 / "models" / "DIN+llmcf-no_cot" / "seed_0" / "config.yaml")
    task = CTRTask(RunData(run2, cfg))
    model = task.build("DIN", cfg)
    model.load_state_dict(w2, strict=True)
    a = task.run.arrays["test"]
    got = evaluate(model, task.run.batches("test", cfg, 0, False), a["label"], a["user"])
    assert got["auc"] == pytest.approx(r2["test"]["auc"], abs=1e-9)
