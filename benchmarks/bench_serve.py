"""Latency and throughput of `llmcf serve`: the backbone alone vs LLM-CF (retrieval + ICT), same run, same machine.

Starts one real server per model (``llmcf serve`` = uvicorn, loopback, a subprocess each), then drives them with an
async httpx client: ``--candidates`` candidates per request (default 100), a history of ``--history`` items (20), at
1, 4 and 16 concurrent clients. Each (model, concurrency) cell is bounded by ``--requests`` and ``--duration``; the
two models alternate cell by cell so both see the same background load. Requests are built from the run's test rows
(user, last items of the history) with candidates drawn from the vocabulary (the row's own target included).
Reports p50/p99 latency, requests/s and the error count per cell, the LLM-CF/backbone ratios, and the in-process
cost of ``Scorer.score`` for the same requests (no HTTP). Writes ``benchmarks/results/serve.md``.

    .venv/bin/python benchmarks/bench_serve.py --run runs/demo [--base DIN --llmcf DIN+llmcf --requests 400]
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import random
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _machine import cpu_model, ram_suffix  # noqa: E402  (benchmarks/ is on sys.path when run as a script)


def machine() -> str:
    cpu, mem = cpu_model(), ram_suffix()
    return f"{cpu}, {os.cpu_count()} logical CPUs{mem}, Linux {platform.release()}, Python {platform.python_version()}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def payloads(run: Path, n: int, n_cand: int, n_hist: int, seed: int) -> list[dict]:
    """``n`` requests from test rows: user, the last ``n_hist`` history items (padded from train items when the row
    has fewer), ``n_cand`` candidates = the row's target + random vocabulary items."""
    from llmcf.data.vocab import Vocab

    rng = random.Random(seed)
    vocab = Vocab.load(run / "data" / "vocab.json")
    test = pd.read_parquet(run / "data" / "test.parquet", columns=["user_id", "item_id", "history"])
    rows = test.sample(n=min(n, len(test)), random_state=seed, replace=len(test) < n)
    out = []
    for r in rows.itertuples():
        hist = [str(h) for h in r.history][-n_hist:]
        while len(hist) < n_hist:
            hist.insert(0, rng.choice(vocab.item))
        cands = [str(r.item_id)] + rng.sample(vocab.item, n_cand - 1)
        out.append({"user_id": str(r.user_id), "history": hist, "candidates": cands})
    return out


class Server:
    """``llmcf serve`` in a subprocess on a free loopback port."""

    def __init__(self, run: Path, tag: str, threads: int, log: Path, extra: list[str] | None = None):
        self.port = free_port()
        self.cmd = [sys.executable, "-m", "llmcf.cli", "serve", "--run", str(run), "--model", tag,
                    "--port", str(self.port), "--set", f"serve.threads={threads}", *(extra or [])]
        self.log = open(log, "w")
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS=str(threads))
        self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.url = f"http://127.0.0.1:{self.port}"

    def wait(self, timeout: float = 180) -> dict:
        import httpx

        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited ({self.proc.returncode}); see {self.log.name}")
            try:
                r = httpx.get(self.url + "/v1/info", timeout=2)
                if r.status_code == 200:
                    return r.json()
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"server not up after {timeout}s; see {self.log.name}")

    def cpu_seconds(self) -> float:
        """User + system CPU seconds the server process has used so far (from /proc; NaN where unavailable)."""
        try:
            f = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return float("nan")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


async def drive(url: str, bodies: list[dict], concurrency: int, max_requests: int, max_seconds: float) -> dict:
    """``concurrency`` clients sending POST /v1/score back to back until ``max_requests`` were sent or
    ``max_seconds`` passed; latency per request from send to parsed response."""
    import httpx

    lat, errors, sent = [], [], 0
    deadline = time.perf_counter() + max_seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        async def worker():
            nonlocal sent
            while sent < max_requests and time.perf_counter() < deadline:
                body = bodies[sent % len(bodies)]
                sent += 1
                t = time.perf_counter()
                try:
                    r = await client.post("/v1/score", json=body)
                    ok = r.status_code == 200 and len(r.json()["scores"]) == len(body["candidates"])
                    if not ok:
                        errors.append(f"HTTP {r.status_code}: {r.text[:200]}")
                except httpx.HTTPError as e:
                    errors.append(f"{type(e).__name__}: {e}")
                    continue
                lat.append(time.perf_counter() - t)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return {"lat": lat, "errors": errors, "seconds": wall}


def summarise(parts: list[dict]) -> dict:
    """Pool the rounds of one cell: percentiles over every request, requests/s = successes / total wall time."""
    lat = np.asarray([x for p in parts for x in p["lat"]]) * 1000
    errors = [e for p in parts for e in p["errors"]]
    wall = sum(p["seconds"] for p in parts)
    return {"requests": len(lat) + len(errors), "errors": len(errors), "first_error": errors[0] if errors else "",
            "p50": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
            "p99": float(np.percentile(lat, 99)) if len(lat) else float("nan"),
            "rps": len(lat) / wall if wall > 0 else float("nan"), "seconds": wall,
            "cpu_ms": 1000 * sum(p.get("cpu", float("nan")) for p in parts) / max(len(lat) + len(errors), 1)}


def in_process(run: Path, tag: str, bodies: list[dict], n: int, threads: int) -> dict:
    """Median/p99 ms of Scorer.score (no HTTP, no JSON) over ``n`` requests, one at a time."""
    import torch

    from llmcf.serve import ONLINE_POS, Scorer

    torch.set_num_threads(threads)
    s = Scorer.load(run, tag)
    for b in bodies[:5]:
        s.score(b["candidates"], b["history"], user=b["user_id"])
    t, r = [], []
    for i in range(n):
        b = bodies[i % len(bodies)]
        t0 = time.perf_counter()
        s.score(b["candidates"], b["history"], user=b["user_id"])
        t.append(time.perf_counter() - t0)
        if s.ict:  # the retrieval step alone, same request
            hist = b["history"][-s.hist_len:]
            pos = np.full(len(b["candidates"]), ONLINE_POS, np.int64)
            t0 = time.perf_counter()
            s._retrieve([b["user_id"]] * len(b["candidates"]), [hist], b["candidates"], pos, shared=True)
            r.append(time.perf_counter() - t0)
    a = np.asarray(t) * 1000
    out = {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99))}
    if r:
        out["retrieval_p50"] = float(np.percentile(np.asarray(r) * 1000, 50))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, default=Path("runs/demo"))
    ap.add_argument("--base", default="DIN", help="tag of the backbone-alone model")
    ap.add_argument("--llmcf", default="DIN+llmcf", help="tag of the LLM-CF model")
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--history", type=int, default=20)
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--requests", type=int, default=400, help="max requests per (model, concurrency) cell")
    ap.add_argument("--duration", type=float, default=30.0, help="max seconds per cell")
    ap.add_argument("--rounds", type=int, default=1, help="repeat the sweep; cells pool their rounds")
    ap.add_argument("--warmup", type=int, default=20, help="requests per server before measuring")
    ap.add_argument("--threads", type=int, default=1, help="torch/OpenMP threads of each server")
    ap.add_argument("--in-process", type=int, default=200, help="Scorer.score calls per model (0 = skip)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--note", default="", help="what code state this is (e.g. 'before', 'after'), in the heading")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "serve.md")
    args = ap.parse_args()
    run = args.run
    for tag in (args.base, args.llmcf):
        if not (run / "models" / tag).is_dir():
            sys.exit(f"{run}/models/{tag}: not trained (train it, or pass --run/--base/--llmcf)")
    levels = [int(c) for c in args.concurrency.split(",")]
    bodies = payloads(run, 256, args.candidates, args.history, args.seed)
    started = dt.datetime.now()
    load0 = os.getloadavg()
    logs = Path(tempfile.mkdtemp(prefix="bench_serve_"))
    print(f"server logs: {logs}")
    servers = {}
    try:
        for tag in (args.base, args.llmcf):
            servers[tag] = Server(run, tag, args.threads, logs / f"{tag}.log")
        infos = {tag: s.wait() for tag, s in servers.items()}
        for tag, s in servers.items():
            asyncio.run(drive(s.url, bodies, 1, args.warmup, 60))
        parts = {}
        for rnd in range(args.rounds):
            for c in levels:
                for tag in (args.base, args.llmcf):  # alternate: same background load for both
                    cpu0 = servers[tag].cpu_seconds()
                    r = asyncio.run(drive(servers[tag].url, bodies, c, args.requests, args.duration))
                    r["cpu"] = servers[tag].cpu_seconds() - cpu0
                    parts.setdefault((tag, c), []).append(r)
                    x = summarise([r])
                    print(f"round {rnd + 1} {tag:<12} c={c:<3} {x['requests']:>5} req  err {x['errors']}  "
                          f"p50 {x['p50']:7.1f} ms  p99 {x['p99']:7.1f} ms  {x['rps']:7.1f} req/s  "
                          f"server CPU {x['cpu_ms']:.1f} ms/req", flush=True)
        cells = {k: summarise(v) for k, v in parts.items()}
    finally:
        for s in servers.values():
            s.stop()
    proc = {}
    if args.in_process:
        for tag in (args.base, args.llmcf):
            proc[tag] = in_process(run, tag, bodies, args.in_process, args.threads)
            print(f"{tag:<12} in-process Scorer.score p50 {proc[tag]['p50']:.1f} ms  p99 {proc[tag]['p99']:.1f} ms"
                  + (f"  retrieval p50 {proc[tag]['retrieval_p50']:.1f} ms" if "retrieval_p50" in proc[tag] else ""))
    load1 = os.getloadavg()
    write(args, run, levels, cells, proc, infos, started, load0, load1)


def write(args, run, levels, cells, proc, infos, started, load0, load1) -> None:
    b, m = args.base, args.llmcf
    bank = infos[m].get("bank", {})
    cmd = ".venv/bin/python " + " ".join(shlex.quote(a) for a in sys.argv)
    lines = [f"## {started:%Y-%m-%d %H:%M}: {b} vs {m}, {args.candidates} candidates x history {args.history}"
             + (f" ({args.note})" if args.note else ""),
             "",
             f"- command: `{cmd}`",
             f"- machine: {machine()}",
             f"- load average before/after: {tuple(round(x, 2) for x in load0)} / "
             f"{tuple(round(x, 2) for x in load1)} (other jobs share this machine)",
             f"- run: `{run}` (dataset {infos[m].get('dataset')}, {infos[m]['vocabulary']['items']} items, "
             f"{infos[m]['vocabulary']['users']} users); bank {bank.get('rows')} rows, K={bank.get('k')}, "
             f"index {bank.get('index')}; test AUC {b} {infos[b]['metrics']['test']['auc']:.4f}, "
             f"{m} {infos[m]['metrics']['test']['auc']:.4f}",
             f"- servers: `llmcf serve` (uvicorn, 1 process) per model on 127.0.0.1, torch threads {args.threads}; "
             f"client: httpx.AsyncClient in the same machine; per cell and round at most {args.requests} requests or "
             f"{args.duration:.0f} s, {args.rounds} round(s) pooled, after {args.warmup} warm-up requests; the "
             "models alternate cell by cell",
             "",
             "| model | clients | requests | errors | p50 ms | p99 ms | requests/s | server CPU ms/request |",
             "|---|---|---|---|---|---|---|---|"]
    for c in levels:
        for tag in (b, m):
            r = cells[tag, c]
            lines.append(f"| {tag} | {c} | {r['requests']} | {r['errors']} | {r['p50']:.1f} | {r['p99']:.1f} | "
                         f"{r['rps']:.1f} | {r['cpu_ms']:.1f} |")
    lines += ["", f"Ratio LLM-CF / backbone ({m} / {b}):", "",
              "| clients | p50 latency | p99 latency | requests/s | server CPU/request |", "|---|---|---|---|---|"]
    for c in levels:
        x, y = cells[b, c], cells[m, c]
        lines.append(f"| {c} | {y['p50'] / x['p50']:.2f}x | {y['p99'] / x['p99']:.2f}x | {y['rps'] / x['rps']:.2f}x | "
                     f"{y['cpu_ms'] / x['cpu_ms']:.2f}x |")
    if proc:
        lines += ["", "In-process `Scorer.score` (Python API, no HTTP/JSON, one request at a time; retrieval = the "
                  "in-context selection step alone for the same request):", "",
                  "| model | p50 ms | p99 ms | of which retrieval, p50 ms |", "|---|---|---|---|"]
        for tag in (b, m):
            ret = proc[tag].get("retrieval_p50")
            lines.append(f"| {tag} | {proc[tag]['p50']:.1f} | {proc[tag]['p99']:.1f} | "
                         f"{'-' if ret is None else f'{ret:.1f}'} |")
        lines.append(f"\nRatio in process: p50 {proc[m]['p50'] / proc[b]['p50']:.2f}x.")
    errs = [f"{t} c={c}: {r['first_error']}" for (t, c), r in cells.items() if r["errors"]]
    lines += ["", f"Errors: {sum(r['errors'] for r in cells.values())} in total" + (f" ({'; '.join(errs)})" if errs else "")]
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    out = Path(args.out)
    head = "# Serving benchmark (benchmarks/bench_serve.py)\n\n"
    old = out.read_text() if out.exists() else head
    if not old.startswith(head):
        old = head + old
    out.write_text(old.rstrip("\n") + "\n\n" + text if old != head else head + text)


if __name__ == "__main__":
    main()
