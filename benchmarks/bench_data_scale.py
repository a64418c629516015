"""``llmcf data build`` time and peak memory on synthetic interaction logs of 10^6 and 10^7 rows, per data engine.

    python benchmarks/bench_data_scale.py --sizes 1000000 10000000 --engines pandas duckdb --mem-limit-gb 12

Writes a RecBole atomic data set per size under ``--root`` (default runs/, gitignored): N interactions of N/50 users
(50 each, consecutive timestamps) over N/100 items with a title each, ratings uniform in 1..5; then runs
``llmcf data build --set data.label=rating --set data.engine=E`` (implicit negatives off, per-user ratio split,
history 20) in a child process per engine, and records wall time, CPU time and that child's own peak RSS
(``os.wait4`` rusage), or how it failed: a child whose RSS passes ``--mem-limit-gb`` is killed (the machine is
shared), as is one past ``--timeout``. With several engines the outputs of each size are compared table by table.
Results: benchmarks/results/scaling-data.md / .json. Not part of CI.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import shutil
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


def build(folder: Path, out: Path, engine: str, mem_gb: float, timeout: int) -> dict:
    import psutil

    cmd = [sys.executable, "-m", "llmcf.cli", "data", "build", "--dataset", str(folder), "--out", str(out),
           "--set", "data.label=rating", "--set", f"data.engine={engine}"]
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    err = open(out.parent / f"{out.name}.stderr", "w")
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT)
    proc, seen, status = psutil.Process(p.pid), 0, None
    while True:
        pid, code, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            break
        try:
            seen = max(seen, proc.memory_info().rss)
        except psutil.Error:
            pass
        if seen > mem_gb * 2 ** 30 and status is None:
            status = f"killed: RSS passed {mem_gb:g} GB"
            p.kill()
        elif time.perf_counter() - t0 > timeout and status is None:
            status = f"killed: timeout after {timeout}s"
            p.kill()
        time.sleep(0.2)
    wall = time.perf_counter() - t0
    err.close()
    if status is None:
        rc = os.waitstatus_to_exitcode(code)
        tail = (Path(err.name).read_text().strip().splitlines() or [""])[-1][:200]
        status = "ok" if rc == 0 else f"exit {rc}: {tail}"
    return {"engine": engine, "status": status, "wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime,
            "peak_rss_mb": ru.ru_maxrss / 1024, "command": shlex.join(cmd[1:])}


def same_tables(a: Path, b: Path) -> bool:
    """Whether two run directories hold equal split / items tables (schema with metadata, rows) and vocabularies."""
    import pyarrow.parquet as pq

    for f in ("train", "valid", "test", "items"):
        ta, tb = pq.read_table(a / "data" / f"{f}.parquet"), pq.read_table(b / "data" / f"{f}.parquet")
        if not (ta.schema.equals(tb.schema, check_metadata=True) and ta.equals(tb)):
            return False
        del ta, tb
    return (a / "data" / "vocab.json").read_text() == (b / "data" / "vocab.json").read_text()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--engines", nargs="+", default=["pandas", "duckdb"], choices=["pandas", "duckdb"])
    ap.add_argument("--mem-limit-gb", type=float, default=12)
    ap.add_argument("--timeout", type=int, default=1800)
    ap.add_argument("--root", type=Path, default=ROOT / "runs")
    ap.add_argument("--compare", action="store_true", help="compare the engines' outputs table by table")
    args = ap.parse_args()
    rows = []
    for n in args.sizes:
        folder = args.root / f"synth-{n}"
        t0 = time.perf_counter()
        write_dataset(folder, n)
        print(f"[bench] {n:,} interactions written in {time.perf_counter() - t0:.0f}s", flush=True)
        done = {}
        for engine in args.engines:
            out = args.root / f"synth-{n}-{engine}"
            row = {"interactions": n, "load_1min": round(os.getloadavg()[0], 1),
                   **build(folder, out, engine, args.mem_limit_gb, args.timeout)}
            if row["status"] == "ok":
                done[engine] = out
            if args.compare and len(done) == 2 and engine == args.engines[-1]:
                row["same_tables_as_" + args.engines[0]] = same_tables(*done.values())
            rows.append(row)
            print("[bench] " + json.dumps(portable(row)), flush=True)
            write_records(args, rows)


def write_records(args, rows) -> None:
    rec = {"command": "python benchmarks/bench_data_scale.py " + shlex.join(portable(sys.argv[1:])),
           "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "machine": f"{cpu_model()}, {os.cpu_count()} CPUs{ram_suffix()}", "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scaling-data.json").write_text(json.dumps(portable(rec), indent=2) + "\n")
    lines = ["## Data build at scale (bench_data_scale.py)", "",
             f"`{rec['command']}` — {rec['date']}, {rec['machine']}; a build is killed when its RSS passes "
             f"{args.mem_limit_gb:g} GB.", "",
             "| interactions | engine | result | wall s | CPU s | peak RSS MB | 1-min load | same tables |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        same = next((str(v) for k, v in r.items() if k.startswith("same_tables")), "")
        lines.append(f"| {r['interactions']:,} | {r['engine']} | {r['status']} | {r['wall_s']:.0f} | "
                     f"{r['cpu_s']:.0f} | {r['peak_rss_mb']:.0f} | {r['load_1min']} | {same} |")
    (RESULTS / "scaling-data.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
