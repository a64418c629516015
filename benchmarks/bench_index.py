"""FAISS index choice at scale: recall@K against exact search, queries/s, build time and memory on 10^5 and 10^6
bank keys of the real dimension (768 = the history half and the target half of MiniLM's 384-d, as ``llmcf
retrieve`` composes them).

    python benchmarks/bench_index.py --sizes 100000 1000000 --queries 500 --threads 1

Keys: every MovieLens-100k interaction (../shared/data/ml-100k) becomes a real bank key — its item's MiniLM text
embedding (``title: ...; category: ...``) as the target part, the re-normalised mean of its user's previous (at most
20) items as the history part (``llmcf.retrieval.bank.compose_keys``, weights 0.5/0.5). 500 interactions are held out
as queries. Banks larger than the ~10^5 real keys are filled with noisy copies of them (Gaussian noise of norm 0.3 on
each unit half, re-normalised): real-encoded structure, synthetic volume. Exact search (IndexFlatIP) gives the true
neighbours; recall@K = |approx top-K ∩ exact top-K| / K with K = 18 (k/2 + margin: what the selector fetches per label
bucket with the defaults). Memory: index file size, and the process's RSS growth when the index is read into the heap
vs memory-mapped (``load_index(mmap=True)``, what serving does) before any search. Single-threaded FAISS on a shared
machine (load recorded). Results: the "Retrieval at scale" section of benchmarks/results/scaling-index.md and
scaling-index.json. Not part of CI.
"""
from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from _machine import cpu_model, portable, ram_suffix  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ML = ROOT.parent / "shared" / "data" / "ml-100k"
RESULTS = Path(__file__).resolve().parent / "results"
K = 18


def rss_mb() -> float:
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def unit(x):
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(n, 1e-12)).astype(np.float32)


def real_keys(cache: Path) -> np.ndarray:
    from llmcf.config import RetrievalConfig
    from llmcf.data.schema import item_text
    from llmcf.embed import Encoder
    from llmcf.retrieval.bank import compose_keys

    items = pd.read_csv(ML / "ml-100k.item", sep="\t")
    items.columns = [c.split(":")[0] for c in items.columns]
    texts = [item_text(str(t), "", str(c).split()) for t, c in zip(items.movie_title, items["class"])]
    vec = unit(Encoder("minilm", cache_dir=cache).encode(texts, progress=False))
    row = {str(i): r for r, i in enumerate(items.item_id)}
    inter = pd.read_csv(ML / "ml-100k.inter", sep="\t")
    inter.columns = [c.split(":")[0] for c in inter.columns]
    inter = inter.sort_values(["user_id", "timestamp"], kind="stable")
    hist, tgt = [], []
    for _, g in inter.groupby("user_id", sort=False):
        ids = [row[str(i)] for i in g.item_id]
        for p, it in enumerate(ids):
            h = ids[max(0, p - 20):p]
            hist.append(vec[h].mean(0) if h else np.zeros(vec.shape[1], np.float32))
            tgt.append(vec[it])
    return compose_keys(unit(np.asarray(hist)), np.asarray(tgt), RetrievalConfig())


def noisy(keys: np.ndarray, n: int, rng) -> np.ndarray:
    d = keys.shape[1] // 2
    src = keys[rng.integers(0, len(keys), n)] * np.float32(np.sqrt(2))
    out = np.empty_like(src)
    for a in (slice(0, d), slice(d, 2 * d)):
        x = src[:, a]
        x = x + rng.normal(size=x.shape).astype(np.float32) * np.float32(0.3 / np.sqrt(d))
        out[:, a] = unit(x) * np.float32(np.sqrt(0.5))
    return out


def timed_search(index, q, cfg):
    from llmcf.retrieval.index import search

    t0, c0 = time.perf_counter(), time.process_time()
    _, ids = search(index, q, K, cfg)
    return ids, len(q) / (time.perf_counter() - t0), len(q) / max(time.process_time() - c0, 1e-9)


def recall(ids, exact):
    return float(np.mean([len(set(a) & set(b)) / K for a, b in zip(ids, exact)]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--hnsw-max", type=int, default=100_000, help="build HNSW only up to this many vectors")
    ap.add_argument("--cache", type=Path, default=ROOT / "runs" / "bench-index-cache")
    args = ap.parse_args()
    import faiss

    from llmcf.config import RetrievalConfig
    from llmcf.retrieval.index import build_index, load_index, save_index

    faiss.omp_set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    keys = real_keys(args.cache)
    perm = rng.permutation(len(keys))
    queries, real = keys[perm[:args.queries]], keys[perm[args.queries:]]
    print(f"[bench] {len(real)} real keys of dim {keys.shape[1]}, {len(queries)} held-out queries", flush=True)
    configs = [("flat", RetrievalConfig(index="flat")),
               ("ivf nlist 256 nprobe 16 (defaults)", RetrievalConfig(index="ivf", nlist=256, nprobe=16)),
               ("ivf nlist 1024 nprobe 32", RetrievalConfig(index="ivf", nlist=1024, nprobe=32)),
               ("hnsw M 32 efSearch 64 (defaults)", RetrievalConfig(index="hnsw", hnsw_m=32, hnsw_ef_search=64))]
    load0, rows = os.getloadavg()[0], []
    tmp = Path(tempfile.mkdtemp(prefix="bench-index-", dir=args.cache.parent))
    for n in args.sizes:
        bank = real[:n] if n <= len(real) else np.concatenate([real, noisy(real, n - len(real), rng)])
        exact = None
        for name, cfg in configs:
            if cfg.index == "hnsw" and n > args.hnsw_max:
                continue
            t0 = time.perf_counter()
            index = build_index(bank, cfg)
            build_s = time.perf_counter() - t0
            ids, qps, cpu_qps = timed_search(index, queries, cfg)
            if exact is None:
                exact = ids
            path = tmp / f"{cfg.index}.faiss"
            save_index(index, path)
            del index
            gc.collect()
            r0 = rss_mb()
            heap = load_index(path)
            heap_mb = rss_mb() - r0
            del heap
            gc.collect()
            r0 = rss_mb()
            mapped = load_index(path, mmap=True)
            mmap_mb = rss_mb() - r0
            ids_m, qps_m, _ = timed_search(mapped, queries, cfg)
            del mapped
            row = {"bank": n, "index": name, "recall@18": recall(ids, exact), "queries_per_s": qps,
                   "queries_per_cpu_s": cpu_qps, "queries_per_s_mmap": qps_m, "mmap_same_ids": bool((ids_m == ids).all()),
                   "build_s": build_s, "file_mb": path.stat().st_size / 2 ** 20, "rss_heap_load_mb": heap_mb,
                   "rss_mmap_load_mb": mmap_mb}
            path.unlink()
            rows.append(row)
            print("[bench] " + json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}),
                  flush=True)
        del bank
        gc.collect()
    tmp.rmdir()
    load1 = os.getloadavg()[0]
    rec = {"command": "python benchmarks/bench_index.py " + shlex.join(sys.argv[1:]),
           "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "machine": f"{cpu_model()}, {os.cpu_count()} CPUs{ram_suffix()}, faiss {faiss.__version__}, "
                      f"{args.threads} FAISS thread(s)",
           "load_1min": [round(load0, 1), round(load1, 1)], "dim": int(keys.shape[1]), "queries": len(queries),
           "real_keys": int(len(real)), "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scaling-index.json").write_text(json.dumps(portable(rec), indent=2) + "\n")
    lines = ["## Retrieval at scale (bench_index.py)", "",
             f"`{rec['command']}` — {rec['date']}, {rec['machine']}, 1-min load {load0:.1f} → {load1:.1f}.", "",
             f"Keys of dim {rec['dim']}: {rec['real_keys']:,} real MiniLM-encoded ml-100k bank keys, larger banks "
             f"filled with noisy copies of them; {rec['queries']} held-out real queries; recall@18 against exact "
             "search; RSS = growth of the process when the index file is read into memory vs memory-mapped.", "",
             "| bank | index | recall@18 | queries/s | queries/CPU-s | build s | file MB | RSS read MB | RSS mmap MB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['bank']:,} | {r['index']} | {r['recall@18']:.3f} | {r['queries_per_s']:.0f} | "
                     f"{r['queries_per_cpu_s']:.0f} | {r['build_s']:.1f} | {r['file_mb']:.0f} | "
                     f"{r['rss_heap_load_mb']:.0f} | {r['rss_mmap_load_mb']:.0f} |")
    (RESULTS / "scaling-index.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
