"""Training cost of LLM-CF against its backbone, side by side: CPU (process) seconds and wall seconds per epoch.

    nice -n 10 .venv/bin/python benchmarks/bench_train_cost.py --run runs/cost-ml-100k --models DIN,DCN,xDeepFM \
        --seq SASRec --steps 150 --rounds 2

For each backbone, the backbone alone and backbone + ICT (variant full, the run's bank) are built as ``llmcf train``
builds them (fresh weights, seed 0) and trained for ``--steps`` optimiser steps on the shuffled train batches (the
trainer's loop body), alternating backbone / LLM-CF ``--rounds`` times so both see the same machine load. Per-step
costs are scaled to one epoch (train rows / batch size steps); validation is not included. The run needs `llmcf
retrieve` (bench_variants.py / profile_llmcf.py show how to make a CoT-free one). Appends to
``benchmarks/results/train_cost.md``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import cpu_model, portable, ram_suffix  # noqa: E402
from profile_llmcf import train_steps  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def seq_steps(model, batches, steps: int, lr: float, num_negatives: int) -> None:
    """The sequential trainer's loop body (sampled softmax + ICT losses) for ``steps`` batches."""
    from llmcf.train.seq_trainer import sampled_softmax_loss
    from llmcf.train.trainer import adam

    model.train()
    opt = adam(model.parameters(), lr)
    gen = torch.Generator().manual_seed(0)
    for i, batch in enumerate(batches):
        if i >= steps:
            break
        out = model(batch)
        total = sampled_softmax_loss(out["user_vec"], model.item_vectors(), batch["item"], num_negatives, gen)
        for aux in out.get("losses", {}).values():
            total = total + aux
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()


def timed(fn) -> tuple[float, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def ctr_pairs(run: Path, models: list[str], preset: str, sets: list[str]):
    from llmcf.config import load_config
    from llmcf.train.ctr_task import CTRTask, RunData
    from llmcf.tune import apply_params

    cfg0 = load_config(preset, sets)
    data = RunData(run, cfg0)
    n_train = len(data.arrays["train"]["label"])
    for name in models:
        arms = {}
        for arm, over in (("backbone", {"ict.enabled": False}), ("LLM-CF", {"ict.enabled": True})):
            cfg = apply_params(cfg0, over)
            torch.manual_seed(0)
            model = CTRTask(data).build(name, cfg)
            arms[arm] = (lambda m=model, c=cfg: lambda steps: train_steps(m, data.batches("train", c, 0, True),
                                                                         steps, c.train.lr))()
        yield name, arms, n_train / cfg0.train.batch_size


def seq_pairs(run: Path, models: list[str], preset: str, sets: list[str]):
    from llmcf.config import load_config
    from llmcf.train.seq_task import SeqRunData, SeqTask

    cfg = load_config(preset, sets)
    data = SeqRunData(run, cfg)
    n_train = len(data.arrays["train"]["item"])
    for name in models:
        arms = {}
        for arm, ict in (("backbone", False), ("LLM-CF", True)):
            torch.manual_seed(0)
            model = SeqTask(data, ict, progress=False).build(name, cfg)
            arms[arm] = (lambda m=model, i=ict: lambda steps: seq_steps(
                m, data.batches("train", cfg, 0, True, i), steps, cfg.seq.lr, cfg.seq.num_negatives))()
        yield f"seq {name}", arms, n_train / cfg.train.batch_size


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--models", default="DIN,DCN,xDeepFM")
    ap.add_argument("--seq", default="SASRec", help="sequential backbones ('' = none)")
    ap.add_argument("--preset", default="ml-100k")
    ap.add_argument("--dataset", default="../shared/data/ml-100k")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--note", default="", help="what this code state is (e.g. 'before', 'after')")
    ap.add_argument("--out", type=Path, default=RESULTS / "train_cost.md")
    a = ap.parse_args()
    torch.set_num_threads(1)
    started = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load0 = os.getloadavg()
    sets = [f"data.dataset={a.dataset}", "train.threads=1"]
    rows = []
    groups = [ctr_pairs(a.run, [m for m in a.models.split(",") if m], a.preset, sets)]
    if a.seq:
        groups.append(seq_pairs(a.run, [m for m in a.seq.split(",") if m], a.preset, sets))
    for group in groups:
        for name, arms, steps_per_epoch in group:
            for fn in arms.values():
                fn(10)  # warm-up
            acc = {arm: [0.0, 0.0] for arm in arms}
            for _ in range(a.rounds):
                for arm, fn in arms.items():  # alternate: same background load for both
                    w, c = timed(lambda: fn(a.steps))
                    acc[arm][0] += w
                    acc[arm][1] += c
            n = a.steps * a.rounds
            per = {arm: (w / n * steps_per_epoch, c / n * steps_per_epoch) for arm, (w, c) in acc.items()}
            rows.append((name, per))
            b, m = per["backbone"], per["LLM-CF"]
            print(f"{name:<12} backbone wall {b[0]:6.1f} cpu {b[1]:6.1f} s/epoch | LLM-CF wall {m[0]:6.1f} cpu "
                  f"{m[1]:6.1f} s/epoch | ratio cpu {m[1] / b[1]:.2f}x wall {m[0] / b[0]:.2f}x", flush=True)
    load1 = os.getloadavg()
    lines = [f"## {started}{' (' + a.note + ')' if a.note else ''}", "",
             f"- command: `.venv/bin/python benchmarks/bench_train_cost.py {portable(shlex.join(sys.argv[1:]))}`",
             f"- machine: {cpu_model()}, {os.cpu_count()} CPUs{ram_suffix()}, torch {torch.__version__} (1 thread)",
             f"- load average before/after: {tuple(round(x, 2) for x in load0)} / "
             f"{tuple(round(x, 2) for x in load1)} (machine shared with other jobs)",
             f"- {a.steps} steps x {a.rounds} rounds per arm, alternating; scaled to train rows / batch size steps; "
             "training steps only (no validation)", "",
             "| model | backbone CPU s/epoch | LLM-CF CPU s/epoch | CPU ratio | backbone wall s/epoch | "
             "LLM-CF wall s/epoch | wall ratio |", "|---|---|---|---|---|---|---|"]
    for name, per in rows:
        b, m = per["backbone"], per["LLM-CF"]
        lines.append(f"| {name} | {b[1]:.1f} | {m[1]:.1f} | {m[1] / b[1]:.2f}x | {b[0]:.1f} | {m[0]:.1f} | "
                     f"{m[0] / b[0]:.2f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    head = "# Training cost: LLM-CF vs its backbone (benchmarks/bench_train_cost.py)\n\n"
    old = a.out.read_text() if a.out.exists() else head
    a.out.write_text(old.rstrip("\n") + "\n\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
