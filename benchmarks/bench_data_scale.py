"""``llmcf data build`` time and peak memory on synthetic interaction logs of 10^6 and 10^7 rows.

    python benchmarks/bench_data_scale.py --sizes 1000000 10000000 --mem-limit-gb 12

Writes a RecBole atomic data set per size under ``--root`` (default runs/, gitignored): N interactions of N/50 users
(50 each, consecutive timestamps) over N/100 items with a title each, ratings uniform in 1..5; then runs
``llmcf data build --set data.label=rating`` (implicit negatives off, per-user ratio split, history 20) in a child
process with an address-space limit, and records wall time, CPU time and the child's peak RSS (ru_maxrss), or how it
failed (memory limit, time limit). Results: benchmarks/results/scaling-data.md / .json. Not part of CI.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from _machine import cpu_model, portable, ram_suffix  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"


def write_dataset(folder: Path, n: int) -> None:
    if (folder / f"{folder.name}.inter").exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    users, items = max(1, n // 50), max(10, n // 100)
    u = np.repeat(np.arange(users), 50)[:n]
    t = np.tile(np.arange(50), users)[:n]
    i = rng.integers(0, items, n)
    r = rng.integers(1, 6, n)
    with open(folder / f"{folder.name}.inter", "w") as f:
        f.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        for a in range(0, n, 1_000_000):
            b = min(n, a + 1_000_000)
            f.write("".join(f"u{x}\ti{y}\t{z}\t{w}\n" for x, y, z, w in zip(u[a:b], i[a:b], r[a:b], t[a:b])))
    with open(folder / f"{folder.name}.item", "w") as f:
        f.write("item_id:token\ttitle:token_seq\n" + "".join(f"i{j}\tthing {j}\n" for j in range(items)))


def build(folder: Path, out: Path, mem_gb: float, timeout: int) -> dict:
    cmd = [sys.executable, "-m", "llmcf.cli", "data", "build", "--dataset", str(folder), "--out", str(out),
           "--set", "data.label=rating"]

    def limit():
        lim = int(mem_gb * 2 ** 30)
        resource.setrlimit(resource.RLIMIT_AS, (lim, lim))

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=limit, timeout=timeout, cwd=ROOT)
        status = "ok" if p.returncode == 0 else f"exit {p.returncode}: " + (p.stderr.strip().splitlines() or [""])[-1][:200]
    except subprocess.TimeoutExpired:
        status = f"timeout after {timeout}s"
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"status": status, "wall_s": wall, "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            "peak_rss_mb_children": after.ru_maxrss / 1024, "command": shlex.join(cmd[1:])}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--mem-limit-gb", type=float, default=12)
    ap.add_argument("--timeout", type=int, default=1800)
    ap.add_argument("--root", type=Path, default=ROOT / "runs")
    args = ap.parse_args()
    rows = []
    for n in args.sizes:
        folder = args.root / f"synth-{n}"
        t0 = time.perf_counter()
        write_dataset(folder, n)
        print(f"[bench] {n:,} interactions written in {time.perf_counter() - t0:.0f}s", flush=True)
        row = {"interactions": n, "load_1min": round(os.getloadavg()[0], 1),
               **build(folder, args.root / f"synth-{n}-run", args.mem_limit_gb, args.timeout)}
        rows.append(row)
        print("[bench] " + json.dumps(portable(row)), flush=True)
    rec = {"command": "python benchmarks/bench_data_scale.py " + shlex.join(sys.argv[1:]),
           "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "machine": f"{cpu_model()}, {os.cpu_count()} CPUs{ram_suffix()}", "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scaling-data.json").write_text(json.dumps(portable(rec), indent=2) + "\n")
    lines = ["## Data build at scale (bench_data_scale.py)", "",
             f"`{rec['command']}` — {rec['date']}, {rec['machine']}; address-space limit {args.mem_limit_gb} GB.", "",
             "| interactions | result | wall s | CPU s | peak RSS MB | 1-min load |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['interactions']:,} | {r['status']} | {r['wall_s']:.0f} | {r['cpu_s']:.0f} | "
                     f"{r['peak_rss_mb_children']:.0f} | {r['load_1min']} |")
    (RESULTS / "scaling-data.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
