"""Benchmark the sequential task: four backbones × {base, LLM-CF when the run has a CoT bank, textemb with
``--textemb``}, several seeds.

    python benchmarks/bench_sequential.py --dataset ml-100k=../shared/data/ml-100k \
        --dataset amazon-beauty=../shared/data/amazon-beauty --seeds 3

Each dataset is trained in its run directory (``--run-root``/<name>, or ``name=path@run_dir``); the LLM-CF variant runs
only when that run directory already holds ``retrieval/meta.json`` (built by ``llmcf run`` / ``llmcf retrieve``).
Results (test Recall/NDCG@10 and @20 mean ± std, seconds per epoch) are appended to benchmarks/results/sequential.md
with the command, machine and date. Not part of CI.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

from llmcf.config import load_config
from llmcf.io import atomic_write_text
from llmcf.train.seq_stage import SeqRunData, run_seq_train
from _machine import cpu_model  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

MODELS = ("SASRec", "GRU4Rec", "YouTubeDNN", "SRGNN")
RESULTS = Path(__file__).parent / "results" / "sequential.md"


def parse_dataset(spec: str, run_root: Path) -> tuple[str, str, Path]:
    name, _, rest = spec.partition("=")
    path, _, run = rest.partition("@")
    if not path:
        raise SystemExit(f"--dataset {spec}: expected name=path[@run_dir]")
    return name, path, Path(run) if run else run_root / name


def machine() -> str:
    cpu = cpu_model()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{cpu}, {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"Python {platform.python_version()}, load average at start {load:.1f}")


def ms(s: dict, m: str) -> str:
    return f"{s['test'][m]['mean']:.4f} ± {s['test'][m]['std']:.4f}"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", action="append", help="name=path[@run_dir] (repeatable)")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--max-epochs", type=int, default=None)
    ap.add_argument("--run-root", type=Path, default=Path("runs/bench-seq"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], help="extra config override section.field=value")
    ap.add_argument("--no-ict", action="store_true", help="no LLM-CF rows")
    ap.add_argument("--textemb", action="store_true", help="also the textemb baseline (needs embed/items.npy in the "
                    "run directory: `llmcf data build` + `llmcf embed` first)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--quiet", action="store_true", help="no per-epoch lines / progress bars")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    specs = args.dataset or ["ml-100k=../shared/data/ml-100k", "amazon-beauty=../shared/data/amazon-beauty"]
    started = dt.datetime.now().astimezone()
    mach = machine()
    lines = []
    for spec in specs:
        name, path, run_dir = parse_dataset(spec, args.run_root)
        if not Path(path).exists() and path != "ml-100k":
            print(f"[bench] {name}: {path} not found, skipped")
            continue
        overrides = [f"data.dataset={path}", f"train.seeds={args.seeds}", *args.set]
        if args.max_epochs:
            overrides.append(f"seq.max_epochs={args.max_epochs}")
        cfg = load_config(None, overrides)
        t0 = time.perf_counter()
        run = SeqRunData(run_dir, cfg)
        st = run.stats
        print(f"[bench] {name}: seq samples {st['rows']} ({time.perf_counter() - t0:.1f}s), {run.n_items - 2} items")
        has_bank = (run_dir / "retrieval" / "meta.json").exists() and not args.no_ict
        lines += [f"\n### {name}\n", f"Data: `{path}`, {st['users']} users, {run.n_items - 2} items in the vocabulary, "
                  f"seq rows {st['rows']} (positives: {st['protocol']['positives']}; OOV test targets "
                  f"{st['oov_targets']['test']}, counted as misses). LLM-CF: "
                  f"{'CoT bank of ' + str(run_dir) if has_bank else 'no CoT bank in the run directory — not run'}.\n",
                  "| model | variant | Recall@10 | NDCG@10 | Recall@20 | NDCG@20 | best epoch | s/epoch |",
                  "|---|---|---|---|---|---|---|---|"]
        has_text = args.textemb and (run_dir / "embed" / "items.npy").exists()
        if args.textemb and not has_text:
            print(f"[bench] {name}: no embed/items.npy in {run_dir}: textemb not run")
        methods = [("base", False, None)] + ([("LLM-CF", True, None)] if has_bank else []) + \
            ([("textemb", False, "textemb")] if has_text else [])
        for model in args.models.split(","):
            for label, ict, baseline in methods:
                cfg.baseline.name = baseline
                s = run_seq_train(run_dir, cfg, model, ict, run=run, progress=not args.quiet)
                lines.append(f"| {model} | {label} | {ms(s, 'recall@10')} | {ms(s, 'ndcg@10')} | "
                             f"{ms(s, 'recall@20')} | {ms(s, 'ndcg@20')} | {s['best_epoch']['mean']:.1f} | "
                             f"{s['seconds_per_epoch']['mean']:.1f} |")
                print(lines[-1], flush=True)
        proto = s["protocol"]
        lines.append(f"\nProtocol: {proto['ranking']}; {proto['loss']}; early stopping on {proto['early_stopping']}; "
                     f"batch {proto['batch_size']}, Adam lr {proto['lr']}, weight decay {proto['weight_decay']}; "
                     f"split: {proto['split'].get('split')}; {args.seeds} seeds (mean ± sample std).")
    cmd = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    block = [f"\n## Run of {started:%Y-%m-%d %H:%M %Z}\n", f"Command: `{cmd}`  ", f"Machine: {mach}  ",
             f"Wall time: {(dt.datetime.now().astimezone() - started).total_seconds() / 60:.1f} min", *lines]
    header = "" if args.out.exists() else ("# Sequential recommendation benchmark\n\nNext-item retrieval with full "
                                           "ranking (see src/llmcf/train/seq_stage.py). Newest runs at the end.\n")
    previous = args.out.read_text() if args.out.exists() else header
    atomic_write_text(args.out, previous + "\n".join(block) + "\n")
    print("\n".join(block))


if __name__ == "__main__":
    main()
