"""Benchmark the six ranking (CTR) backbones alone — no LLM, no ICT — on MovieLens-100k and Amazon Beauty.

    python benchmarks/bench_backbones.py --datasets ml-100k --seeds 3 --threads 1
    python benchmarks/bench_backbones.py --datasets amazon-beauty --seeds 3 --threads 1 --max-epochs 4

For each dataset the run directory (``--run-root``/bench-<name>, default /work/main/runs, gitignored) is built once with
the dataset's preset (``llmcf data build``; reused when its data config is unchanged). Each backbone is then trained by
``llmcf train --run <run> --model <name> --seeds N --quiet`` in a fresh process, so the recorded peak RSS is that
backbone's own (data + model + torch runtime), not the largest of everything trained before it. Trained seeds are
cached in ``<run>/models/<name>/`` per config hash, so an interrupted benchmark resumes where it stopped.

Training settings are the paper's: embedding 32, MLP [200, 80], dropout 0.1, Adam lr 0.01, weight decay 1e-4,
batch 128, early stopping on validation AUC with patience 2 (best epoch reloaded), up to 20 epochs unless
``--max-epochs`` caps it (the cap is recorded, and so is every seed that reached it without stopping early).

Results: benchmarks/results/backbones.json (one record per dataset, replaced when that dataset is rerun) and
benchmarks/results/backbones.md (regenerated from the JSON), each with the command, machine, date, git commit,
protocol, rows per split and caps. Not part of CI.

Datasets: ``--datasets`` takes names (``ml-100k``, ``amazon-beauty``: their folders under ../shared/data and their
presets) or ``name=path[@preset]`` for other data.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from _machine import cpu_model, portable, ram_suffix  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
RESULTS_DIR = Path(__file__).resolve().parent / "results"
MODELS = ("DeepFM", "xDeepFM", "DCN", "DCNv2", "AutoInt", "DIN")
KNOWN = {"ml-100k": (SHARED / "ml-100k", "ml-100k"), "amazon-beauty": (SHARED / "amazon-beauty", "amazon-beauty")}
# The paper's ranking settings, passed explicitly so a preset change cannot silently alter the benchmark.
PAPER = ["model.embed_dim=32", "model.mlp=[200,80]", "model.dropout=0.1", "train.lr=0.01",
         "train.weight_decay=0.0001", "train.batch_size=128", "train.patience=2"]
DEFAULT_MAX_EPOCHS = 20


def parse_dataset(spec: str) -> tuple[str, Path, str]:
    """``name`` (a known dataset) or ``name=path[@preset]`` → (name, absolute path, preset)."""
    name, eq, rest = spec.partition("=")
    if not eq:
        if name not in KNOWN:
            raise SystemExit(f"--datasets {spec}: unknown name; use one of {sorted(KNOWN)} or name=path[@preset]")
        path, preset = KNOWN[name]
        return name, path.resolve(), preset
    path, _, preset = rest.partition("@")
    return name, Path(path).resolve(), preset or KNOWN.get(name, (None, name))[1]


def machine(threads: int) -> str:
    import torch

    cpu, mem = cpu_model(), ram_suffix()
    return (f"{cpu}, {os.cpu_count()} CPUs{mem}, torch {torch.__version__} ({threads} training thread(s)), "
            f"Python {platform.python_version()}")


def git_commit() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.strip()
        return rev
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def ensure_run(name: str, path: Path, preset: str, run_dir: Path, extra: list[str]) -> dict:
    """Build run_dir/data once (reused when the saved data config matches); return data/stats.json."""
    from llmcf.config import load_config, save_config
    from llmcf.data.build import build_run_data
    from llmcf.data.loaders import load_dataset

    cfg = load_config(preset, [f"data.dataset={path}", *extra])
    saved = run_dir / "config.yaml"
    stats_path = run_dir / "data" / "stats.json"
    if saved.exists() and stats_path.exists() and load_config(saved).section_hash("data") == cfg.section_hash("data"):
        print(f"[bench] {name}: reusing {run_dir / 'data'}", flush=True)
    else:
        if not path.exists():
            raise SystemExit(f"[bench] {name}: {path} not found")
        t0 = time.perf_counter()
        build_run_data(load_dataset(cfg.data.dataset, cfg.data.format), cfg.data, run_dir, show_progress=False)
        save_config(cfg, saved)
        print(f"[bench] {name}: built {run_dir / 'data'} in {time.perf_counter() - t0:.1f}s", flush=True)
    return json.loads(stats_path.read_text())


def train_one(run_dir: Path, model: str, seeds: int, overrides: list[str], threads: int, log: Path) -> float:
    """``llmcf train`` for one backbone in its own process; returns the wall seconds; raises on failure."""
    cmd = [sys.executable, "-m", "llmcf.cli", "train", "--run", str(run_dir), "--model", model, "--seeds", str(seeds),
           "--config", str(run_dir / "config.yaml"), "--quiet"]
    for o in overrides:
        cmd += ["--set", o]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1")
    t0 = time.perf_counter()
    with open(log, "a") as f:
        f.write(f"\n$ {shlex.join(cmd)}\n")
        f.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
        for line in proc.stdout:
            f.write(line)
            f.flush()
            if line.startswith("[train]") or "error" in line.lower():
                print("   ", line.rstrip(), flush=True)
        rc = proc.wait()
    if rc != 0:
        raise SystemExit(f"[bench] {model}: `llmcf train` failed (exit {rc}); see {log}")
    return time.perf_counter() - t0


def collect(run_dir: Path, model: str, max_epochs: int) -> dict:
    summary = json.loads((run_dir / "models" / model / "summary.json").read_text())
    seeds = []
    for s in summary["seeds"]:
        r = json.loads((run_dir / "models" / model / f"seed_{s}" / "result.json").read_text())
        seeds.append({"seed": s, "best_epoch": r["best_epoch"], "epochs_run": len(r["curve"]),
                      "test": r["test"], "valid": r["valid"], "seconds_per_epoch": r["seconds_per_epoch"],
                      "peak_rss_mb": r["peak_rss_mb"], "wall_seconds": r["wall_seconds"], "params": r["params"]})
    # a seed "hit the cap" when it ran max_epochs epochs without the patience rule stopping it
    import yaml

    patience = yaml.safe_load((run_dir / "models" / model / "config.yaml").read_text())["train"]["patience"]
    capped = [x["seed"] for x in seeds
              if x["epochs_run"] >= max_epochs and x["epochs_run"] - x["best_epoch"] < patience]
    return {"test": summary["test"], "valid": summary["valid"], "seconds_per_epoch": summary["seconds_per_epoch"],
            "peak_rss_mb": summary["peak_rss_mb"], "params": seeds[0]["params"],
            "best_epoch_mean": sum(x["best_epoch"] for x in seeds) / len(seeds),
            "epochs_run_mean": sum(x["epochs_run"] for x in seeds) / len(seeds),
            "seeds_hitting_epoch_cap": capped, "per_seed": seeds}


def ms(d: dict, digits: int = 4) -> str:
    return f"{d['mean']:.{digits}f} ± {d['std']:.{digits}f}"


def render(results: dict) -> str:
    out = ["# Ranking backbones benchmark (CTR, backbones alone)", "",
           "Six ranking backbones without the LLM-CF module, trained by `llmcf train` with the paper's settings. "
           "Generated from `backbones.json` by `benchmarks/bench_backbones.py`; one section per dataset (its latest "
           "run). Test metrics after early stopping on validation AUC and reloading the best epoch; mean ± sample "
           "std over seeds. s/epoch is training time only (validation excluded); peak RSS is the training "
           "process's maximum resident memory (data, model and torch runtime)."]
    for name, rec in results.items():
        p = rec["protocol"]
        sp = rec["splits"]
        out += ["", f"## {name}", "",
                f"Command: `{rec['command']}`  ", f"Date: {rec['date']} (git {rec['git_commit']})  ",
                f"Machine: {rec['machine']}; load average {rec['load_start']:.1f} at start, "
                f"{rec['load_end']:.1f} at end (shared machine: s/epoch is indicative)  ",
                f"Wall time: {rec['wall_minutes']:.1f} min", "",
                f"Data: `{rec['path']}` (preset `{rec['preset']}`), {rec['interactions']} interactions; vocabulary "
                f"{rec['vocab']['user'] - 2} users, {rec['vocab']['item'] - 2} items (train only; ids 0/1 = "
                "pad/OOV).  ",
                "Rows: " + ", ".join(f"{s} {sp[s]['rows']} ({sp[s]['positive_rate']:.3f} positive)"
                                     for s in ("train", "valid", "test")) + ".  ",
                f"Split: {p.get('split')} — {p.get('rule')}.  ",
                f"Labels: {p.get('label')}" + (f" (rating ≥ {p['rating_threshold']:g})" if p.get("rating_threshold")
                                               else "") +
                (f"; sampled negatives per positive: {p['negatives']} ({p.get('negative_sampling')})"
                 if p.get("negatives") else "; no sampled negatives (label from the rating)") + ".  ",
                f"Features: user id, item id, brand, categories, last {p.get('history_len')} history items "
                f"({p.get('history_rule')}).  ",
                f"Training: {rec['training']}; {rec['seeds']} seeds (0..{rec['seeds'] - 1}).  ",
                f"Budget cap: {rec['cap']}", *([f"Note: {rec['note']}"] if rec.get("note") else []), "",
                "| model | test AUC | test LogLoss | test gAUC | valid AUC | best epoch | epochs run | s/epoch "
                "| peak RSS (MB) | params |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        for model, r in rec["models"].items():
            out.append(f"| {model} | {ms(r['test']['auc'])} | {ms(r['test']['logloss'])} | {ms(r['test']['gauc'])} | "
                       f"{ms(r['valid']['auc'])} | {r['best_epoch_mean']:.1f} | {r['epochs_run_mean']:.1f} | "
                       f"{r['seconds_per_epoch']['mean']:.1f} | {r['peak_rss_mb']:.0f} | {r['params']:,} |")
        capped = {m: r["seeds_hitting_epoch_cap"] for m, r in rec["models"].items() if r["seeds_hitting_epoch_cap"]}
        if capped:
            out += ["", "Seeds stopped by the epoch cap before the patience rule could stop them (their numbers may "
                        "be short of convergence): " + "; ".join(f"{m} seeds {v}" for m, v in capped.items()) + "."]
    return "\n".join(out) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="ml-100k,amazon-beauty",
                    help="comma list of ml-100k | amazon-beauty | name=path[@preset] (default: both)")
    ap.add_argument("--models", default=",".join(MODELS), help="comma list (default: all six)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--max-epochs", type=int, default=None,
                    help=f"cap on epochs per seed (default: the paper's setting, {DEFAULT_MAX_EPOCHS}, with early "
                         "stopping)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads per training process (default 1)")
    ap.add_argument("--run-root", type=Path, default=ROOT / "runs", help="run dirs are <run-root>/bench-<name>")
    ap.add_argument("--set", action="append", default=[], help="extra config override section.field=value "
                                                                "(recorded; changes the benchmark settings)")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR / "backbones.json")
    ap.add_argument("--note", default="", help="free text recorded with the results (e.g. how an interrupted run "
                                               "was resumed)")
    args = ap.parse_args(argv)

    from llmcf.io import atomic_write_json, atomic_write_text
    from llmcf.models.ranking import BACKBONES

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in BACKBONES]
    if unknown:
        raise SystemExit(f"--models: unknown {unknown}; choose from {list(MODELS)}")
    max_epochs = args.max_epochs or DEFAULT_MAX_EPOCHS
    data_sets = [s for s in args.set if s.startswith("data.")]
    train_sets = [*PAPER, f"train.max_epochs={max_epochs}", f"train.threads={args.threads}",
                  *[s for s in args.set if not s.startswith("data.")]]
    cmd = "python " + shlex.join([os.path.relpath(sys.argv[0], ROOT) if sys.argv[0].endswith(".py") else sys.argv[0],
                                  *(argv if argv is not None else sys.argv[1:])])
    results = json.loads(args.out.read_text()).get("datasets", {}) if args.out.exists() else {}
    for spec in args.datasets.split(","):
        name, path, preset = parse_dataset(spec.strip())
        run_dir = args.run_root / f"bench-{name}"
        started = dt.datetime.now().astimezone()
        load_start = os.getloadavg()[0]
        t0 = time.perf_counter()
        stats = ensure_run(name, path, preset, run_dir, data_sets)
        log = run_dir / "bench_backbones.log"
        per_model = {}
        for model in models:
            print(f"[bench] {name} {model}: {args.seeds} seed(s), max {max_epochs} epochs, {args.threads} thread(s)",
                  flush=True)
            wall = train_one(run_dir, model, args.seeds, train_sets, args.threads, log)
            per_model[model] = collect(run_dir, model, max_epochs)
            r = per_model[model]
            print(f"[bench] {name} {model}: test AUC {ms(r['test']['auc'])}  LogLoss {ms(r['test']['logloss'])}  "
                  f"gAUC {ms(r['test']['gauc'])}  {r['seconds_per_epoch']['mean']:.1f}s/epoch  "
                  f"peak {r['peak_rss_mb']:.0f} MB  ({wall / 60:.1f} min)", flush=True)
        cap = (f"max {max_epochs} epochs per seed (the paper's early stopping applies within it)"
               if args.max_epochs and args.max_epochs < DEFAULT_MAX_EPOCHS else
               f"none (max {max_epochs} epochs, early stopping on valid AUC)")
        if args.set:
            cap += f"; extra overrides: {', '.join(args.set)}"
        results[name] = {
            "command": cmd, "date": f"{started:%Y-%m-%d %H:%M %Z}", "git_commit": git_commit(),
            "machine": machine(args.threads), "load_start": load_start, "load_end": os.getloadavg()[0],
            "wall_minutes": (time.perf_counter() - t0) / 60, "path": str(path), "preset": preset,
            "run_dir": str(run_dir), "interactions": stats["interactions"], "vocab": stats["vocab"],
            "protocol": stats["protocol"], "splits": stats["splits"], "seeds": args.seeds, "max_epochs": max_epochs,
            "cap": cap, "note": args.note, "overrides": train_sets + data_sets,
            "training": "embedding 32, MLP [200, 80], dropout 0.1, Adam lr 0.01, weight decay 1e-4, batch 128, "
                        f"early stopping on valid AUC (patience 2), max {max_epochs} epochs, "
                        f"{args.threads} torch thread(s)",
            "models": per_model}
        # keep the datasets in a stable order: known ones first
        order = [k for k in KNOWN if k in results] + [k for k in results if k not in KNOWN]
        results = {k: results[k] for k in order}
        atomic_write_json(args.out, portable({"datasets": results}))
        md = args.out.with_suffix(".md")
        atomic_write_text(md, portable(render(results)))
        print(f"[bench] {name}: wrote {args.out} and {md}", flush=True)


if __name__ == "__main__":
    main()
