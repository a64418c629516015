"""Input loading (``load_dataset`` on a RecBole atomic file) at 10^6 and 10^7 interactions: the bytes fast path of
``read_delimited`` against the general per-line path, each in its own child process, interleaved per size.

    python benchmarks/bench_loader.py --sizes 1000000 10000000 --root ../runs/17

The data sets are bench_data_scale.py's (written under ``--root`` when missing). Records each child's CPU seconds,
wall seconds and peak RSS (``ru_maxrss``) in benchmarks/results/scaling-loader.md / .json. Not part of CI.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from _machine import cpu_model, portable, ram_suffix  # noqa: E402
from bench_data_scale import write_dataset  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CHILD = """
import json, resource, sys, time
from pathlib import Path
import llmcf.data.loaders.table as tb
if sys.argv[2] == "general":
    tb._read_bytes_fast = lambda *a, **k: None
from llmcf.data.loaders import load_dataset
c0, w0 = time.process_time(), time.time()
ds = load_dataset(Path(sys.argv[1]))
print(json.dumps({"rows": int(len(ds.interactions)), "cpu_s": round(time.process_time() - c0, 1),
                  "wall_s": round(time.time() - w0, 1),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--root", type=Path, default=Path("runs"))
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    rows = []
    for n in args.sizes:
        folder = args.root / f"synth-{n}"
        write_dataset(folder, n)
        for r in range(args.rounds):
            for path in ("general", "fast"):
                out = subprocess.run([sys.executable, "-c", CHILD, str(folder), path], check=True,
                                     capture_output=True, text=True).stdout.strip().splitlines()[-1]
                row = {"interactions": n, "path": path, "round": r, **json.loads(out),
                       "load_1min": round(os.getloadavg()[0], 1)}
                print("[bench] " + json.dumps(row), flush=True)
                rows.append(row)
    rec = {"command": "python benchmarks/bench_loader.py " + shlex.join(portable(sys.argv[1:])),
           "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "machine": f"{cpu_model()}, {os.cpu_count()} CPUs{ram_suffix()}", "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scaling-loader.json").write_text(json.dumps(portable(rec), indent=2) + "\n")
    lines = ["## Input loading at scale (bench_loader.py)", "", f"`{rec['command']}` — {rec['date']}, {rec['machine']}",
             "", "`load_dataset` of a RecBole atomic log (parsing and validation), one child process per row:",
             "the general path keeps every line as a Python string with its number; the fast path (a UTF-8 file",
             "without blank lines, carriage returns or quotes, every row as wide as the header) parses the bytes",
             "with pandas' C parser and implies the line numbers. Both give the same table.", "",
             "| interactions | path | CPU s | wall s | peak RSS MB | 1-min load |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['interactions']:,} | {r['path']} | {r['cpu_s']} | {r['wall_s']} | {r['peak_rss_mb']:,} | "
              f"{r['load_1min']} |" for r in rows]
    (RESULTS / "scaling-loader.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
