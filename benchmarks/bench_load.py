"""Bounded load test of `llmcf serve`: a fixed number of requests (default 10,000) from a fixed number of concurrent
clients (default 16) over loopback against one real server (uvicorn in a subprocess, `bench_serve.Server`).

Counts every failure by kind — HTTP status other than 200, a body without one score per candidate, and client-side
transport errors (connection reset / closed without a response, timeouts: what a dropped connection looks like) — and
scans the server's log for errors and warnings, so a drop the server never logged still shows up. Reports p50/p95/p99
and max latency, requests/s, and the CPU time of the server and of the client beside the wall time. Appends the figures
with the command, machine, date and load to ``benchmarks/results/load.md``.

    .venv/bin/python benchmarks/bench_load.py --run runs/demo --model DIN+llmcf [--requests 10000 --clients 16]
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import datetime as dt
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench_serve import Server, machine, payloads  # noqa: E402  (benchmarks/ is on sys.path when run as a script)


async def hammer(url: str, bodies: list[dict], clients: int, total: int, timeout: float) -> dict:
    """``clients`` workers sending POST /v1/score back to back until ``total`` requests were sent."""
    import httpx

    lat: list[float] = []
    errors: collections.Counter = collections.Counter()
    first: dict[str, str] = {}
    when: list[str] = []  # "<kind> at <s> s (request <i>, its own <ms> ms)"
    sent = 0
    t_start = time.perf_counter()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) as client:
        async def worker():
            nonlocal sent
            while sent < total:
                body = bodies[sent % len(bodies)]
                i = sent
                sent += 1
                t = time.perf_counter()
                try:
                    r = await client.post("/v1/score", json=body)
                except httpx.HTTPError as e:
                    kind = type(e).__name__
                    errors[kind] += 1
                    first.setdefault(kind, repr(e)[:200])
                    now = time.perf_counter()
                    when.append(f"{kind} at {now - t_start:.1f} s (request {i}, after {(now - t) * 1000:.0f} ms)")
                    continue
                if r.status_code != 200:
                    kind = f"HTTP {r.status_code}"
                elif len(r.json().get("scores", [])) != len(body["candidates"]):
                    kind = "short body"
                else:
                    lat.append(time.perf_counter() - t)
                    continue
                errors[kind] += 1
                first.setdefault(kind, r.text[:200])

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - t0
    return {"lat": lat, "errors": dict(errors), "first": first, "when": when, "seconds": wall}


def server_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (and its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def log_problems(path: Path) -> list[str]:
    """Lines of the server log that report an error or a warning (uvicorn / llmcf / Python)."""
    bad = ("ERROR", "Traceback", "Exception", "WARNING", "error")
    return [ln.rstrip() for ln in path.read_text(errors="replace").splitlines() if any(b in ln for b in bad)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, default=Path("runs/demo"))
    ap.add_argument("--model", default="DIN+llmcf", help="a trained model's tag under <run>/models")
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--history", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1, help="torch/OpenMP threads of the server")
    ap.add_argument("--timeout", type=float, default=60.0, help="client timeout per request (s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                    help="config override passed to the server, e.g. serve.keep_alive_seconds=30")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "load.md")
    args = ap.parse_args()
    if not (args.run / "models" / args.model).is_dir():
        sys.exit(f"{args.run}/models/{args.model}: not trained")
    bodies = payloads(args.run, 256, args.candidates, args.history, args.seed)
    logs = Path(tempfile.mkdtemp(prefix="bench_load_"))
    started, load0 = dt.datetime.now(dt.timezone.utc), os.getloadavg()
    server = Server(args.run, args.model, args.threads, logs / "server.log", extra=[
        a for kv in args.set for a in ("--set", kv)])
    try:
        server.wait()
        asyncio.run(hammer(server.url, bodies, 1, 20, args.timeout))  # warm-up
        cpu0, client0 = server_cpu(server.proc.pid), time.process_time()
        res = asyncio.run(hammer(server.url, bodies, args.clients, args.requests, args.timeout))
        cpu1, client1 = server_cpu(server.proc.pid), time.process_time()
    finally:
        server.stop()
    load1 = os.getloadavg()
    lat = np.asarray(res["lat"]) * 1000
    n_err = sum(res["errors"].values())
    pct = {q: float(np.percentile(lat, q)) if len(lat) else float("nan") for q in (50, 95, 99)}
    problems = log_problems(logs / "server.log")
    line = (f"{len(lat) + n_err} requests, {args.clients} clients: {n_err} errors {res['errors'] or ''}; "
            f"p50 {pct[50]:.1f} ms, p95 {pct[95]:.1f} ms, p99 {pct[99]:.1f} ms, max {lat.max():.1f} ms; "
            f"{len(lat) / res['seconds']:.1f} req/s over {res['seconds']:.1f} s wall; server CPU "
            f"{cpu1 - cpu0:.1f} s, client CPU {client1 - client0:.1f} s; server log: {len(problems)} error/warning "
            f"lines")
    print(line)
    for kind, msg in res["first"].items():
        print(f"  first {kind}: {msg}")
    for w in res["when"][:20]:
        print(f"  {w}")
    for p in problems[:10]:
        print(f"  log: {p}")
    argv = ["<run>" if a == str(args.run) else a for a in sys.argv[1:]]  # no absolute path in the record
    cmd = "python " + " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).name, *argv])
    info = (args.run / "data" / "stats.json")
    dataset = json.loads(info.read_text()).get("dataset") if info.exists() else "?"
    rec = [f"## {started:%Y-%m-%d %H:%M} UTC — `{args.model}`, {args.requests} requests, {args.clients} clients",
           "", f"- command: `{cmd}`; `<run>`: a run directory with dataset {dataset} and model {args.model}",
           f"- machine: {machine()}; load average {load0[0]:.1f} before, {load1[0]:.1f} after (shared machine)",
           f"- requests: {args.candidates} candidates × history {args.history}, bodies from the run's test rows; "
           f"server: `llmcf serve` (its serve.* config), {args.threads} torch thread; client: httpx.AsyncClient, one "
           f"pool of {args.clients} keep-alive connections, timeout {args.timeout:g} s; server overrides: "
           f"{', '.join(args.set) or 'none'}",
           f"- result: {line}"]
    rec += [f"- first {k}: `{v}`" for k, v in res["first"].items()]
    rec += [f"- {w}" for w in res["when"][:20]]
    rec += [f"- server log: `{p}`" for p in problems[:10]]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    head = "" if args.out.exists() else ("# Bounded load test of `llmcf serve`\n\nWritten by "
                                         "`benchmarks/bench_load.py`; newest last.\n\n")
    with open(args.out, "a") as f:
        f.write(head + "\n".join(rec) + "\n\n")
    print(f"appended to {args.out}")


if __name__ == "__main__":
    main()
