"""Where a served request's CPU time goes, backbone vs LLM-CF, in process (no HTTP): ``Scorer.score`` and its parts.

    .venv/bin/python benchmarks/bench_serve_parts.py --run runs/demo [--base DIN --llmcf DIN+llmcf] \
        [--compare-src ../before/src --label-a before --label-b after]

Requests are built like bench_serve.py's (a test row's user and last ``--history`` items, ``--candidates`` - 1 random
vocabulary items plus the row's own target). Each part is timed as process CPU ms per request over all requests, in
``--rounds`` rounds (median reported): the whole ``score`` call of each model, then LLM-CF's retrieval (of which the
query keys and the per-candidate order seeds), batch encoding, the model's forward (of which the ICT, its input
tokens and the query features token) and the backbone's forward alone. With ``--compare-src``, the same measurement
runs alternately with that source tree on PYTHONPATH and with this one (``--pairs`` times each, in turn), so two code
states see the same machine load. Appends a section to ``benchmarks/results/serve.md``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import shlex
import subprocess
import sys
import time
from pathlib import Path
from statistics import median

HERE = Path(__file__).resolve().parent
PARTS = ("backbone score", "llmcf score", "retrieve", "query keys", "order seeds", "batch", "model forward",
         "ICT forward", "ICT tokens", "query features", "backbone forward")


def measure(run: str, base_tag: str, llmcf_tag: str, n: int, candidates: int, history: int, rounds: int,
            seed: int) -> dict:
    """{part: [CPU ms per request, one per round]} in this process."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import numpy as np
    import pandas as pd
    import torch

    from llmcf.retrieval.bank import query_keys
    from llmcf.retrieval.select import query_seeds
    from llmcf.serve.scorer import ONLINE_POS, Scorer

    torch.set_num_threads(1)
    base, llm = Scorer.load(run, base_tag), Scorer.load(run, llmcf_tag)
    test = pd.read_parquet(Path(run) / "data" / "test.parquet")
    items = base.vocab.item[2:]
    rng = random.Random(seed)
    reqs = []
    for _ in range(n):
        r = test.iloc[rng.randrange(len(test))]
        reqs.append((str(r.user_id), [str(h) for h in list(r.history)[-history:]],
                     rng.sample(items, candidates - 1) + [str(r.item_id)]))

    def pos(k: int):
        return np.full(k, ONLINE_POS, np.int64)

    def cpu_ms(fn) -> float:
        c = time.process_time()
        fn()
        return (time.process_time() - c) * 1000 / n

    for s in (base, llm):  # warm-up
        for u, h, c in reqs[:10]:
            s.score(c, h, u)
    ctxs = [llm._retrieve([u] * len(c), [h], c, pos(len(c)), True)[0] for u, h, c in reqs]
    full = [{**llm._batch([u], [h], c, True), **llm.context.gather_rows(x)} for (u, h, c), x in zip(reqs, ctxs)]
    plain = [base._batch([u], [h], c, True) for u, h, c in reqs]
    cfg = llm.retriever.cfg
    out: dict[str, list[float]] = {p: [] for p in PARTS}
    for _ in range(rounds):
        out["backbone score"].append(cpu_ms(lambda: [base.score(c, h, u) for u, h, c in reqs]))
        out["llmcf score"].append(cpu_ms(lambda: [llm.score(c, h, u) for u, h, c in reqs]))
        out["retrieve"].append(cpu_ms(lambda: [llm._retrieve([u] * len(c), [h], c, pos(len(c)), True)
                                               for u, h, c in reqs]))
        out["query keys"].append(cpu_ms(lambda: [query_keys(llm.retriever.items, [h], c, cfg, repeat=len(c))
                                                 for u, h, c in reqs]))
        out["order seeds"].append(cpu_ms(lambda: [query_seeds(cfg.seed, [u] * len(c), pos(len(c)), c)
                                                  for u, h, c in reqs]))
        out["batch"].append(cpu_ms(lambda: [llm._batch([u], [h], c, True) for u, h, c in reqs]))
        with torch.inference_mode():
            out["model forward"].append(cpu_ms(lambda: [llm.model(b) for b in full]))
            out["ICT forward"].append(cpu_ms(lambda: [llm.model.ict(b) for b in full]))
            out["ICT tokens"].append(cpu_ms(lambda: [llm.model.ict.tokens(b) for b in full]))
            out["query features"].append(cpu_ms(lambda: [llm.model.ict.features(b["user"], b["item"], b["hist"])
                                                         for b in full]))
            out["backbone forward"].append(cpu_ms(lambda: [base.model(b) for b in plain]))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--base", default="DIN")
    ap.add_argument("--llmcf", default="DIN+llmcf")
    ap.add_argument("--requests", type=int, default=100)
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--history", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--compare-src", default=None, help="another source tree (e.g. a worktree's src) to compare")
    ap.add_argument("--label-a", default="before", help="label of --compare-src")
    ap.add_argument("--label-b", default="this tree")
    ap.add_argument("--pairs", type=int, default=2, help="with --compare-src: alternating runs of each state")
    ap.add_argument("--note", default="")
    ap.add_argument("--json-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "serve.md")
    a = ap.parse_args()
    args = (a.run, a.base, a.llmcf, a.requests, a.candidates, a.history, a.rounds, a.seed)
    if a.json_only:  # one measurement in a child process (the code state is the child's PYTHONPATH)
        print(json.dumps(measure(*args)))
        return 0
    states = [(a.label_b, None)] if not a.compare_src else [(a.label_a, a.compare_src), (a.label_b, None)]
    load0 = os.getloadavg()
    results: dict[str, dict[str, list[float]]] = {label: {p: [] for p in PARTS} for label, _ in states}
    own_src = str(HERE.parent / "src")
    for _ in range(a.pairs if a.compare_src else 1):
        for label, src in states:
            env = {**os.environ, "PYTHONPATH": src or own_src, "HF_HUB_OFFLINE": "1"}
            cmd = [sys.executable, __file__, *sys.argv[1:], "--json-only"]
            got = json.loads(subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout)
            for p in PARTS:
                results[label][p] += got[p]
            print(f"{label}: llmcf {median(got['llmcf score']):.2f} ms, backbone {median(got['backbone score']):.2f} ms"
                  f" CPU/request", flush=True)
    sys.path.insert(0, str(HERE))
    from _machine import cpu_model, ram_suffix

    labels = [label for label, _ in states]
    lines = ["", f"## {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC: where a request's CPU goes, "
                 f"{a.base} vs {a.llmcf} (bench_serve_parts.py){' — ' + a.note if a.note else ''}", "",
             f"- command: `python benchmarks/bench_serve_parts.py {shlex.join(sys.argv[1:])}`",
             f"- machine: {cpu_model()}, {os.cpu_count()} CPUs{ram_suffix()}, torch 1 thread; load average "
             f"before/after {load0[0]:.1f} / {os.getloadavg()[0]:.1f} (shared with other jobs)",
             f"- {a.requests} requests × {a.candidates} candidates, history {a.history}, in process (no HTTP); "
             f"process CPU ms per request, median of {len(results[labels[0]]['llmcf score'])} rounds"
             + (f" from {a.pairs} alternating runs per code state" if a.compare_src else ""), "",
             "| part | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for p in PARTS:
        lines.append(f"| {p} | " + " | ".join(f"{median(results[l][p]):.2f}" for l in labels) + " |")
    lines.append("| **LLM-CF / backbone (score)** | " + " | ".join(
        f"{median(results[l]['llmcf score']) / median(results[l]['backbone score']):.2f}x" for l in labels) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    with open(a.out, "a") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
