"""SIGKILL a retrain at random instants and check that the trained model always loads (issue 19, defect 4).

Each round starts ``llmcf train`` in a subprocess with a changed weight shape (``model.embed_dim`` alternating between
two values, so an old config beside new weights, or the reverse, cannot load), kills it with SIGKILL after a uniformly
random delay in [0, the time a full retrain takes], then loads the model with ``Scorer.load`` as ``llmcf serve`` would
and checks which version it got (the embed_dim of the loaded config matches the weights, or loading fails). A round
whose retrain finished before the kill counts as completed. Appends the tally to ``benchmarks/results/chaos.md``.

    .venv/bin/python benchmarks/chaos_retrain.py --run RUN --kills 20   # RUN: a run with data built and DIN trained
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from _machine import cpu_model, ram_suffix  # noqa: E402  (benchmarks/ is on sys.path when run as a script)


def train_cmd(run: Path, dim: int) -> list[str]:
    return [sys.executable, "-m", "llmcf.cli", "train", "--run", str(run), "--model", "DIN", "--seeds", "1", "--quiet",
            "--set", "train.max_epochs=1", "--set", f"model.embed_dim={dim}", "--set", "train.threads=1"]


def loaded_dim(run: Path) -> int | None:
    """embed_dim of the model `llmcf serve` would load now, or None when it does not load."""
    from llmcf.serve import Scorer

    try:
        s = Scorer.load(run, "DIN")
        s.score(["1", "2"], ["3"], user="1")
        return int(s.cfg.model.embed_dim)
    except Exception as e:  # noqa: BLE001 - any failure to load is what this script counts
        print(f"  LOAD FAILED: {type(e).__name__}: {e}")
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--dims", default="16,32", help="the two embed_dim values retrains alternate between")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "chaos.md")
    args = ap.parse_args()
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    dims = [int(x) for x in args.dims.split(",")]
    rng = random.Random(args.seed)
    started, load0 = dt.datetime.now(dt.timezone.utc), os.getloadavg()

    t0 = time.perf_counter()  # one full retrain: the scale of the kill delays
    subprocess.run(train_cmd(args.run, dims[0]), env=env, check=True, stdout=subprocess.DEVNULL)
    full = time.perf_counter() - t0
    assert loaded_dim(args.run) == dims[0]
    tally = {"killed": 0, "completed": 0, "loads": 0, "old": 0, "new": 0, "unloadable": 0}
    current = dims[0]
    for k in range(args.kills):
        want = dims[1] if current == dims[0] else dims[0]
        delay = rng.uniform(0, full)
        p = subprocess.Popen(train_cmd(args.run, want), env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        time.sleep(delay)
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            tally["killed"] += 1
        else:
            tally["completed"] += 1
        p.wait()
        got = loaded_dim(args.run)
        if got is None:
            tally["unloadable"] += 1
        else:
            tally["loads"] += 1
            tally["new" if got == want else "old"] += 1
            current = got
        print(f"round {k + 1}: kill after {delay:.1f}s of {full:.1f}s -> loads embed_dim {got} "
              f"({'unloadable' if got is None else 'new version' if got == want else 'old version'})", flush=True)
    load1 = os.getloadavg()
    line = (f"{args.kills} rounds ({tally['killed']} SIGKILLed mid-retrain, {tally['completed']} finished first): "
            f"model loadable after {tally['loads']}/{args.kills} ({tally['old']} old version, {tally['new']} new), "
            f"unloadable {tally['unloadable']}; one retrain takes {full:.1f} s wall")
    print(line)
    argv = ["<run>" if a == str(args.run) else a for a in sys.argv[1:]]
    rec = [f"## {started:%Y-%m-%d %H:%M} UTC — SIGKILL during `llmcf train` (retrain with changed weight shapes)", "",
           f"- command: `python {Path(sys.argv[0]).name} {' '.join(shlex.quote(a) for a in argv)}`; `<run>`: a run "
           f"directory with data built and DIN trained",
           f"- machine: {cpu_model()}, {os.cpu_count()} logical CPUs{ram_suffix()}; load average {load0[0]:.1f} "
           f"before, {load1[0]:.1f} after (shared machine)",
           f"- result: {line}"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    head = "" if args.out.exists() else "# Chaos checks (SIGKILL at random instants)\n\nNewest last.\n\n"
    with open(args.out, "a") as f:
        f.write(head + "\n".join(rec) + "\n\n")


if __name__ == "__main__":
    main()
