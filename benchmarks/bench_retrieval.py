"""Throughput of balanced, leakage-safe in-context selection for the flat / IVF / HNSW indexes.

Synthetic bank: ``--rows`` rows (half positive) whose keys are [h ; t] with ``--dim``/2-d clustered unit halves (so the
keys are ``--dim``-d, like two 384-d MiniLM embeddings), ``--users`` users with random positions; ``--queries``
queries of bank users (so the same-user leakage rule filters). Reports index build time, selection queries/s, and
agreement with the exact (flat) selection. Appends a section to ``benchmarks/results/retrieval.md``.

    .venv/bin/python benchmarks/bench_retrieval.py [--rows 80000 --dim 768 --queries 10000]
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
from pathlib import Path

import faiss
import numpy as np
import pandas as pd

from llmcf.config import RetrievalConfig
from llmcf.retrieval.bank import compose_keys, normalise
from llmcf.retrieval.index import build_index
from llmcf.retrieval.select import Selector
from llmcf.retrieval.stage import leakage_violations
from _machine import cpu_model  # noqa: E402  (benchmarks/ is on sys.path when run as a script)


def clustered(rng, n, d, centers):
    c = centers[rng.integers(0, len(centers), n)]
    return normalise(c + 0.5 * rng.standard_normal((n, d)).astype(np.float32) / np.sqrt(d))


def machine() -> str:
    cpu = cpu_model()
    return f"{cpu}, {os.cpu_count()} logical CPUs, faiss {faiss.__version__}, numpy {np.__version__}, " \
           f"Python {platform.python_version()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=80_000)
    ap.add_argument("--dim", type=int, default=768, help="key dimension (history half + target half)")
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--users", type=int, default=8_000)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--indexes", default="flat,ivf,hnsw")
    ap.add_argument("--threads", type=int, default=None, help="FAISS OpenMP threads (default: all)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "retrieval.md"))
    args = ap.parse_args()
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    load0 = tuple(round(x, 2) for x in os.getloadavg())
    rng = np.random.default_rng(0)
    half = args.dim // 2
    hc, tc = normalise(rng.standard_normal((200, half)).astype(np.float32)), \
        normalise(rng.standard_normal((1000, half)).astype(np.float32))
    h, t = clustered(rng, args.rows, half, hc), clustered(rng, args.rows, half, tc)
    users = [f"u{u}" for u in rng.integers(0, args.users, args.rows)]
    pos = rng.integers(0, 50, args.rows).astype(np.int64)
    labels = (rng.random(args.rows) < 0.5).astype(np.int8)
    qi = rng.integers(0, args.rows, args.queries)
    qh, qt = clustered(rng, args.queries, half, hc), clustered(rng, args.queries, half, tc)
    qusers, qpos = [users[i] for i in qi], pos[qi]
    targets = [f"t{i}" for i in range(args.queries)]

    rows, exact = [], None
    for name in args.indexes.split(","):
        cfg = RetrievalConfig(k=args.k, index=name)
        keys = compose_keys(h, t, cfg)
        t0 = time.perf_counter()
        idx = {lab: build_index(keys[labels == lab], cfg) for lab in (1, 0)}
        build = time.perf_counter() - t0
        sel = Selector(users, pos, labels, idx, cfg)
        qk = compose_keys(qh, qt, cfg)
        sel.select(qk[:256], qusers[:256], qpos[:256], targets[:256])  # warm-up
        sel.stats["re_searched_queries"] = 0
        t0, c0 = time.perf_counter(), time.process_time()
        ctx = sel.select(qk, qusers, qpos, targets)
        secs, cpu = time.perf_counter() - t0, time.process_time() - c0
        research = sel.stats["re_searched_queries"]
        viol = leakage_violations(ctx, pd.DataFrame({"user_id": users, "pos": pos}), qusers, qpos, cfg.leakage)
        if name == "flat":
            exact = ctx
        agree = None if exact is None else float(np.mean(
            [len(set(a) & set(b)) / max(1, len(set(b) - {-1})) for a, b in zip(ctx.tolist(), exact.tolist())]))
        params = {"flat": "exact", "ivf": f"nlist={cfg.nlist}, nprobe={cfg.nprobe}",
                  "hnsw": f"M={cfg.hnsw_m}, efC={cfg.hnsw_ef_construction}, efSearch={cfg.hnsw_ef_search}"}[name]
        rows.append((name, params, build, secs, args.queries / secs, cpu, agree, viol, research))
        print(f"{name:5s} {params:35s} build {build:7.2f} s  select {secs:7.2f} s  {args.queries / secs:9.0f} q/s  "
              f"cpu {cpu:7.2f} s  agreement with flat {agree if agree is None else round(agree, 4)}  "
              f"leakage violations {viol}  re-searched {research}",
              flush=True)

    cmd = ".venv/bin/python " + " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:])
    lines = [f"\n## {dt.datetime.now().strftime('%Y-%m-%d %H:%M')}: {args.rows:,} bank rows x {args.dim}-d keys, "
             f"{args.queries:,} queries, K={args.k} balanced, leakage same_or_later\n",
             f"- command: `{cmd}`", f"- machine: {machine()}",
             f"- load average before/after: {load0} / {tuple(round(x, 2) for x in os.getloadavg())} "
             "(other jobs share this machine)",
             f"- FAISS threads: {args.threads or faiss.omp_get_max_threads()}; one index per label "
             f"(~{args.rows // 2:,} rows each); agreement = share of flat's selected rows also selected; selection = over-fetch K/2+16 per label, leakage filter, re-search "
             "of short queries, seeded shuffle", "",
             "| index | parameters | build (s, both labels) | select (s, wall) | queries/s (wall) | select CPU s | "
             "agreement with flat | leakage violations | re-searched queries |", "|---|---|---|---|---|---|---|---|---|"]
    for name, params, build, secs, qps, cpu, agree, viol, research in rows:
        lines.append(f"| {name} | {params} | {build:.2f} | {secs:.2f} | {qps:,.0f} | {cpu:.2f} | "
                     f"{'—' if agree is None else f'{agree:.4f}'} | {viol} | {research} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    head = "" if out.exists() else "# Retrieval benchmark (benchmarks/bench_retrieval.py)\n"
    with out.open("a") as f:
        f.write(head + "\n".join(lines) + "\n")
    print(f"appended to {out}")


if __name__ == "__main__":
    main()
