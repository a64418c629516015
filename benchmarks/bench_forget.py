"""Forgetting cost and partitioning cost on MovieLens-100k (issue 16).

For each S in --shards: a full partitioned `llmcf run` (timed: wall and process CPU), then `llmcf forget` of 1 user and
then of 10 more users (timed, with the stages each retrained shard reran), and the test AUC of the mean-logit
ensemble. S = 1 is the unpartitioned pipeline (its forget = a full retrain). Users to forget are a seeded draw.

    nice -n 10 .venv/bin/python benchmarks/bench_forget.py --shards 1 4 8 --out benchmarks/results/forget.json

The pipeline is reduced so that it fits this machine (stated in the output): DIN base only, train.max_epochs and
seeds from the flags, recgen.skip (CoTs from the untuned base model), cot.count per shard. Times are of the whole
`llmcf forget` (data rebuild + affected shards' stages + ensemble evaluation) vs the full run of the same config.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import cpu_model, portable, ram_suffix  # noqa: E402


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime


def timed(fn):
    t0, c0 = time.perf_counter(), cpu_seconds()
    out = fn()
    return out, round(time.perf_counter() - t0, 1), round(cpu_seconds() - c0, 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shards", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--runs", type=Path, default=Path("runs/bench_forget"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/forget.json"))
    ap.add_argument("--max-epochs", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--cot-count", type=int, default=4)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import numpy as np
    import pandas as pd
    import torch

    torch.set_num_threads(1)
    from llmcf.config import load_config
    from llmcf.data.partition import expected_shards_hit, forget_speedup_bound
    from llmcf.forget import forget
    from llmcf.pipeline import run_pipeline

    sets = ["models=[DIN]", "variants=[base]", "seq_models=[]", f"train.max_epochs={args.max_epochs}",
            f"train.seeds={args.seeds}", "train.threads=1", "recgen.skip=true", "cot.fraction=null",
            f"cot.count={args.cot_count}", "cot.candidates=1", "cot.max_new_tokens=24", "llm.threads=1",
            "llm.backend=hf"]
    results = json.loads(args.out.read_text()) if args.out.exists() else {"runs": {}}
    results.update(machine=f"{cpu_model()}{ram_suffix()}, {os.cpu_count()} cores",
                   date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                   command="nice -n 10 .venv/bin/python benchmarks/bench_forget.py " + " ".join(sys.argv[1:]),
                   config=["ml-100k preset"] + sets)
    for S in args.shards:
        run = args.runs / f"S{S}"
        cfg = load_config("ml-100k", sets + [f"partition.shards={S}"])
        load0 = os.getloadavg()[0]
        _, wall, cpu = timed(lambda: run_pipeline(cfg, run))
        tag_summary = json.loads((run / "models" / "DIN" / "summary.json").read_text())
        users = sorted(pd.read_parquet(run / "data" / "test.parquet")["user_id"].astype(str).unique())
        rng = np.random.default_rng(16)
        pick = list(rng.choice(users, size=11, replace=False))
        rec = {"full_run": {"wall_s": wall, "cpu_s": cpu, "load": round(load0, 1)},
               "test_auc": tag_summary["test"]["auc"], "per_shard_test_auc": tag_summary.get("per_shard_test_auc")}
        for name, who in (("forget_1", pick[:1]), ("forget_10", pick[1:])):
            load0 = os.getloadavg()[0]
            audit, wall, cpu = timed(lambda: forget(run, who))
            rec[name] = {"wall_s": wall, "cpu_s": cpu, "load": round(load0, 1),
                         "shards_retrained": audit["shards_retrained"], "stage_seconds": audit["stage_seconds"],
                         "speedup_vs_full_run": round(rec["full_run"]["wall_s"] / wall, 2),
                         "cpu_speedup_vs_full_run": round(rec["full_run"]["cpu_s"] / max(cpu, 1e-9), 2),
                         "expected_shards_hit": round(expected_shards_hit(S, len(who)), 3),
                         "speedup_bound": round(forget_speedup_bound(S, len(who)), 2)}
        results["runs"][str(S)] = rec
        print(json.dumps({S: rec}, indent=1), flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(portable(results), indent=1))


if __name__ == "__main__":
    main()
