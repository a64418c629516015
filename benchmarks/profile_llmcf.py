"""Where LLM-CF's time goes: torch.profiler (and cProfile) over training steps and serving requests, backbone vs
LLM-CF on one run directory. Prints the top operators by self CPU time and appends them to
``benchmarks/results/profile.md``.

    nice -n 10 .venv/bin/python benchmarks/profile_llmcf.py --run runs/cost-ml-100k --model DIN --steps 150

Training: ``--steps`` optimiser steps of the shuffled train batches (the trainer's own loop body: forward, BCE + ICT
losses, backward, Adam), for the backbone alone, LLM-CF (full) and LLM-CF w/o CoT, built from the run's data exactly
as ``llmcf train`` builds them (fresh weights, seed 0). The batch preparation (row gather + ``ContextBank.gather``) is
timed on its own too. Serving: ``--requests`` calls of ``Scorer.score`` (100 candidates, history 20, from test rows),
for the trained ``<model>`` and ``<model>+llmcf`` of the run. The run needs `llmcf retrieve` (and, for the serving
part, both models trained).
"""
from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import io
import os
import pstats
import shlex
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import cpu_model, portable, ram_suffix  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def train_steps(model, batches, steps: int, lr: float = 0.01) -> None:
    """The trainer's loop body (``llmcf.train.loop.early_stopping_fit``, the trainer's Adam) for ``steps`` batches."""
    from llmcf.train.trainer import adam

    model.train()
    opt = adam(model.parameters(), lr)
    for i, batch in enumerate(batches):
        if i >= steps:
            break
        out = model(batch)
        total = F.binary_cross_entropy_with_logits(out["logit"], batch["label"].float())
        for aux in out.get("losses", {}).values():
            total = total + aux
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()


def op_table(prof, n: int) -> list[tuple[str, float, int]]:
    """(op name, self CPU ms, calls) of the ``n`` costliest operators."""
    rows = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:n]
    return [(e.key, e.self_cpu_time_total / 1000.0, e.count) for e in rows]


def py_table(pr: cProfile.Profile, n: int) -> str:
    s = io.StringIO()
    pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(n)
    keep = [ln for ln in s.getvalue().splitlines() if ln.strip() and not ln.startswith(("   Ordered", "   List"))]
    return "\n".join(portable(ln) for ln in keep[-(n + 1):])


def profile_call(fn, n_ops: int, n_py: int) -> dict:
    """Wall and CPU seconds of ``fn()`` plain, then its operator table (torch.profiler) and Python table (cProfile)."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    pr = cProfile.Profile()
    pr.enable()
    fn()
    pr.disable()
    return {"wall": wall, "cpu": cpu, "ops": op_table(prof, n_ops), "py": py_table(pr, n_py)}


def training_part(run: Path, model_name: str, steps: int, preset: str, sets: list[str], n_ops: int,
                  n_py: int) -> dict:
    from llmcf.config import load_config
    from llmcf.train.ctr_task import CTRTask, RunData
    from llmcf.tune import apply_params

    base_cfg = load_config(preset, sets)
    data = RunData(run, base_cfg)
    out = {}
    for name, over in (("backbone", {"ict.enabled": False}),
                       ("LLM-CF", {"ict.enabled": True, "ict.variant": "full"}),
                       ("LLM-CF w/o CoT", {"ict.enabled": True, "ict.variant": "no_cot"})):
        cfg = apply_params(base_cfg, over)
        task = CTRTask(data)
        torch.manual_seed(0)
        model = task.build(model_name, cfg)

        def batches():
            return data.batches("train", cfg, 0, True)

        prep_t0, prep_c0 = time.perf_counter(), time.process_time()
        for i, _ in enumerate(batches()):
            if i + 1 >= steps:
                break
        prep = (time.perf_counter() - prep_t0, time.process_time() - prep_c0)
        res = profile_call(lambda: train_steps(model, batches(), steps), n_ops, n_py)
        res["prep"] = prep
        out[name] = res
        print(f"[train] {name:<15} {steps} steps: wall {res['wall']:.2f}s cpu {res['cpu']:.2f}s "
              f"(batch preparation alone: wall {prep[0]:.2f}s cpu {prep[1]:.2f}s)", flush=True)
    return out


def parts_part(run: Path, model_name: str, steps: int, preset: str, sets: list[str], rounds: int = 3) -> dict:
    """CPU ms per training step of the pieces of an LLM-CF step, measured interleaved on the same ``steps`` batches
    (``rounds`` passes): the whole forward+backward, the backbone alone (fed a zero ICT feature), the ICT alone
    (forward+backward of w and its losses), its input tokens alone, its decoder alone (random tokens of the same
    shape), the ICT's forward without autograd, and the trainer's Adam step over all parameters."""
    from llmcf.config import load_config
    from llmcf.train.ctr_task import CTRTask, RunData
    from llmcf.train.trainer import adam
    from llmcf.tune import apply_params

    cfg = apply_params(load_config(preset, sets), {"ict.enabled": True, "ict.variant": "full"})
    data = RunData(run, cfg)
    torch.manual_seed(0)
    model = CTRTask(data).build(model_name, cfg)
    model.train()
    ict = model.ict
    batches = [b for _, b in zip(range(steps), data.batches("train", cfg, 0, True))]
    opt = adam(model.parameters(), cfg.train.lr)

    def whole(b):
        out = model(b)
        loss = F.binary_cross_entropy_with_logits(out["logit"], b["label"].float())
        (loss + sum(out["losses"].values())).backward()

    def backbone(b):
        out = model.backbone(b, extra=torch.zeros(len(b["label"]), ict.dim))
        F.binary_cross_entropy_with_logits(out["logit"], b["label"].float()).backward()

    def ict_all(b):
        w, losses = ict(b)
        (w.sum() + sum(losses.values())).backward()

    def tokens(b):
        ict.tokens(b)[0].sum().backward()

    with torch.no_grad():
        dec_in = {id(b): ict.tokens(b) for b in batches}  # the decoder's inputs, made outside the timing

    def decoder(b):
        seq, present = dec_in[id(b)]
        ict.decoder(seq.clone().requires_grad_(), present)[0].sum().backward()

    def no_grad(b):
        with torch.no_grad():
            ict(b)

    def optimiser(b):
        opt.step()

    whole(batches[0])  # gradients exist for the optimiser step
    pieces = {"LLM-CF forward+backward": whole, "backbone forward+backward": backbone,
              "ICT forward+backward": ict_all, "ICT tokens forward+backward": tokens,
              "ICT decoder forward+backward (full pass)": decoder, "ICT forward, no autograd": no_grad,
              "Adam step (fused), all parameters": optimiser}
    acc = dict.fromkeys(pieces, 0.0)
    for _ in range(rounds):
        for name, fn in pieces.items():
            fn(batches[0])
            c0 = time.process_time()
            for b in batches:
                fn(b)
            acc[name] += time.process_time() - c0
    out = {name: 1000 * c / (rounds * len(batches)) for name, c in acc.items()}
    for name, ms in out.items():
        print(f"[parts] {name:<42} {ms:7.2f} CPU ms/step", flush=True)
    return out


def serving_part(run: Path, model_name: str, n: int, n_ops: int, n_py: int) -> dict:
    from bench_serve import payloads

    from llmcf.serve import Scorer

    bodies = payloads(run, 64, 100, 20, 0)
    out = {}
    for tag in (model_name, f"{model_name}+llmcf"):
        s = Scorer.load(run, tag)

        def calls():
            for i in range(n):
                b = bodies[i % len(bodies)]
                s.score(b["candidates"], b["history"], user=b["user_id"])

        calls()  # warm-up
        res = profile_call(calls, n_ops, n_py)
        out[tag] = res
        print(f"[serve] {tag:<12} {n} requests: wall {res['wall']:.2f}s ({1000 * res['wall'] / n:.2f} ms/request) "
              f"cpu {res['cpu']:.2f}s", flush=True)
    return out


def markdown(args, train: dict, serve: dict, started: str, load0, load1) -> str:
    lines = [f"## {started}: {args.model}, run `{portable(str(args.run))}`", "",
             f"- command: `.venv/bin/python benchmarks/profile_llmcf.py {portable(shlex.join(sys.argv[1:]))}`",
             f"- machine: {cpu_model()}, {os.cpu_count()} CPUs{ram_suffix()}, torch {torch.__version__} "
             f"({torch.get_num_threads()} thread)",
             f"- load average before/after: {tuple(round(x, 2) for x in load0)} / "
             f"{tuple(round(x, 2) for x in load1)} (machine shared with other jobs)",
             "- times below are from a plain pass; the tables from a second pass under torch.profiler (self CPU "
             "time per operator, profiler overhead included) and a third under cProfile (Python functions, own "
             "time)", ""]
    for part, res, unit, count in (("Training", train, "steps", args.steps), ("Serving", serve, "requests",
                                                                             args.requests)):
        if not res:
            continue
        lines += [f"### {part}: {count} {unit}", "", "| model | wall s | CPU s | per " + unit[:-1] + " ms (wall) |"
                  + (" batch preparation alone, wall / CPU s |" if part == "Training" else ""),
                  "|---|---|---|---|" + ("---|" if part == "Training" else "")]
        for name, r in res.items():
            lines.append(f"| {name} | {r['wall']:.2f} | {r['cpu']:.2f} | {1000 * r['wall'] / count:.2f} |"
                         + (f" {r['prep'][0]:.2f} / {r['prep'][1]:.2f} |" if "prep" in r else ""))
        for name, r in res.items():
            total = sum(ms for _, ms, _ in r["ops"]) or 1.0
            lines += ["", f"{part}, {name}: top operators by self CPU time", "",
                      "| operator | self CPU ms | calls | share of the listed |", "|---|---|---|---|"]
            lines += [f"| `{k}` | {ms:.1f} | {c} | {100 * ms / total:.0f}% |" for k, ms, c in r["ops"]]
            lines += ["", f"{part}, {name}: top Python functions (cProfile, own time)", "", "```", r["py"], "```"]
        lines.append("")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--model", default="DIN")
    ap.add_argument("--preset", default="ml-100k")
    ap.add_argument("--dataset", default="../shared/data/ml-100k")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--requests", type=int, default=100)
    ap.add_argument("--ops", type=int, default=15, help="operators listed per table")
    ap.add_argument("--py", type=int, default=12, help="Python functions listed per table")
    ap.add_argument("--no-train", action="store_true")
    ap.add_argument("--no-serve", action="store_true")
    ap.add_argument("--parts", action="store_true", help="only the interleaved per-piece CPU ms of an LLM-CF step")
    ap.add_argument("--out", type=Path, default=RESULTS / "profile.md")
    a = ap.parse_args()
    torch.set_num_threads(1)
    started = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load0 = os.getloadavg()
    sets = [f"data.dataset={a.dataset}", "train.threads=1"]
    if a.parts:
        parts = parts_part(a.run, a.model, a.steps, a.preset, sets)
        lines = [f"## {started}: {a.model}, pieces of an LLM-CF training step", "",
                 f"- command: `.venv/bin/python benchmarks/profile_llmcf.py {portable(shlex.join(sys.argv[1:]))}`",
                 f"- machine: {cpu_model()}, {os.cpu_count()} CPUs{ram_suffix()}, torch {torch.__version__} (1 thread)",
                 f"- load average before/after: {tuple(round(x, 2) for x in load0)} / "
                 f"{tuple(round(x, 2) for x in os.getloadavg())} (machine shared with other jobs)",
                 f"- {a.steps} train batches, 3 interleaved passes per piece; process CPU time", "",
                 "| piece | CPU ms/step |", "|---|---|"] + [f"| {k} | {v:.2f} |" for k, v in parts.items()]
        text = "\n".join(lines) + "\n"
        print(text)
        old = a.out.read_text() if a.out.exists() else ""
        a.out.write_text(old.rstrip("\n") + "\n\n" + text)
        return 0
    train = {} if a.no_train else training_part(a.run, a.model, a.steps, a.preset, sets, a.ops, a.py)
    serve = {} if a.no_serve else serving_part(a.run, a.model, a.requests, a.ops, a.py)
    text = markdown(a, train, serve, started, load0, os.getloadavg())
    print(text)
    head = "# Profiles of training steps and serving requests (benchmarks/profile_llmcf.py)\n\n"
    old = a.out.read_text() if a.out.exists() else head
    a.out.write_text(old.rstrip("\n") + "\n\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
