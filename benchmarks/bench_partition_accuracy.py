"""Accuracy cost of partitioned (SISA) training on MovieLens-100k (issue 16, the second table).

For one S per process (``--shards``): a partitioned ``llmcf run`` of DIN and DCN, base and LLM-CF, first with 1 seed,
then ``--seeds`` seeds of the base models, then ``--seeds`` seeds of everything (the seeds already trained are kept,
so each pass leaves a usable record); the test AUC / LogLoss of the S-shard mean-logit ensemble (S = 1: the unpartitioned run) per seed, the
best epoch of every sub-model, and the CPU seconds of the process. Each pass writes ``<runs>/S<S>.json``;
``--render`` merges those into ``--out`` (JSON) and rewrites the accuracy section of ``forget.md``.

    nice -n 5 python benchmarks/bench_partition_accuracy.py --shards 4 --seeds 3 --runs ../runs/16/acc
    python benchmarks/bench_partition_accuracy.py --render --runs ../runs/16/acc

Pipeline: bench_forget.py's (ml-100k preset, recgen.skip = CoTs from the untuned base LLM, 1 candidate of 24 new
tokens, hf backend, 1 thread) with models DIN + DCN, variants base + full, ``train.max_epochs`` from the flag for
every row (early stopping on valid AUC, patience 2), and a CoT bank of ``--bank`` rows in total (default 32):
cot.count = bank / S per shard, so every S has the same number of CoT rows and each sub-model retrieves from its own
shard's (S = 8: 4 per shard, bench_forget's setting). A small bank because the untuned 135M model writes a 24-token
CoT in ~8 s of a loaded core here (240 rows took ~30 min per process).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import cpu_model, portable, ram_suffix  # noqa: E402

TAGS = ("DIN", "DIN+llmcf", "DCN", "DCN+llmcf")
MD_START = "<!-- accuracy: bench_partition_accuracy.py -->"
MD_END = "<!-- /accuracy -->"


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime


def sets_for(S: int, args) -> list[str]:
    return ["models=[DIN,DCN]", "variants=[base,full]", "seq_models=[]", f"train.max_epochs={args.max_epochs}",
            "train.patience=2", "train.threads=1", "recgen.skip=true", "cot.fraction=null",
            f"cot.count={args.bank // S}", "cot.candidates=1", "cot.max_new_tokens=24", "llm.threads=1",
            "llm.backend=hf"]


def best_epochs(run: Path, tag: str, S: int, seed: int) -> list[int]:
    roots = [run] if S == 1 else [run / "shards" / str(k) for k in range(S)]
    out = []
    for r in roots:
        p = r / "models" / tag / f"seed_{seed}" / "result.json"
        out.append(json.loads(p.read_text())["best_epoch"] if p.exists() else None)
    return out


def collect(run: Path, S: int) -> dict:
    rows = {}
    for tag in TAGS:
        s = json.loads((run / "models" / tag / "summary.json").read_text())
        seeds = s["seeds"]
        per_seed = s.get("per_seed") or [json.loads((run / "models" / tag / f"seed_{sd}" / "result.json").read_text())
                                         for sd in seeds]
        rows[tag] = {"test": {m: s["test"][m] for m in ("auc", "logloss", "gauc") if m in s["test"]},
                     "valid_auc": s["valid"]["auc"],
                     "per_seed_test_auc": [r["test"]["auc"] for r in per_seed],
                     "per_seed_test_logloss": [r["test"]["logloss"] for r in per_seed],
                     "seeds": seeds, "best_epochs": {str(sd): best_epochs(run, tag, S, sd) for sd in seeds}}
    return rows


def run_one(args) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(1)
    from llmcf.config import load_config
    from llmcf.pipeline import run_pipeline

    S = args.shards
    run = args.runs / f"S{S}"
    out = args.runs / f"S{S}.json"
    rec = json.loads(out.read_text()) if out.exists() else {"passes": []}
    # 1 seed of everything, then every seed of the (cheap) base models, then every seed of everything: each pass
    # leaves a usable record (the seeds already trained are cached, so no pass repeats the work of another)
    passes = [(1, "base,full"), (args.seeds, "base"), (args.seeds, "base,full")] if args.seeds > 1 else [(1, "base,full")]
    for n_seeds, variants in passes:
        sets = sets_for(S, args) + [f"train.seeds={n_seeds}", f"partition.shards={S}", f"variants=[{variants}]"]
        cfg = load_config("ml-100k", sets)
        load0 = os.getloadavg()[0]
        t0, c0 = time.perf_counter(), cpu_seconds()
        run_pipeline(cfg, run)
        rec["passes"].append({"seeds": n_seeds, "variants": variants, "wall_s": round(time.perf_counter() - t0, 1),
                              "cpu_s": round(cpu_seconds() - c0, 1), "load_start": round(load0, 1),
                              "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())})
        rec.update(S=S, seeds_done=n_seeds, config=["ml-100k preset"] + sets[:-1], rows=collect(run, S),
                   machine=f"{cpu_model()}{ram_suffix()}, {os.cpu_count()} cores",
                   command="nice -n 5 python benchmarks/bench_partition_accuracy.py " + " ".join(sys.argv[1:]))
        out.write_text(json.dumps(portable(rec), indent=1))
        print(json.dumps({"S": S, "seeds": n_seeds, "passes": rec["passes"][-1]}), flush=True)


def fmt(ms: dict | None) -> str:
    if not ms:
        return "–"
    return f"{ms['mean']:.4f} ± {ms['std']:.4f}" if ms.get("n", 1) > 1 else f"{ms['mean']:.4f} (1 seed)"


def render(args) -> None:
    parts = {}
    for p in sorted(args.runs.glob("S*.json")):
        rec = json.loads(p.read_text())
        parts[str(rec["S"])] = rec
    s1 = args.runs / "S1"
    if "1" not in parts and s1.exists():  # S = 1 still in its first pass: a finished seed-0 model is its final row
        rows = {}
        for tag in TAGS:
            p = s1 / "models" / tag / "seed_0" / "result.json"
            if p.exists():
                r = json.loads(p.read_text())
                rows[tag] = {"test": {m: {"mean": r["test"][m], "std": 0.0, "n": 1} for m in ("auc", "logloss")},
                             "seeds": [0], "best_epochs": {"0": [r["best_epoch"]]}}
        if rows:
            parts["1"] = {"S": 1, "seeds_done": 1, "rows": rows, "passes": [], "partial": "first pass running",
                          "config": [], "command": "", "machine": ""}
    merged = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "parts": parts}
    args.out.write_text(json.dumps(portable(merged), indent=1))
    order = sorted(parts, key=int)
    lines = [MD_START, "", "## Accuracy cost of partitioning (bench_partition_accuracy.py)", ""]
    any_rec = next((parts[S] for S in order if parts[S].get("command")), None) or {
        "command": f"nice -n 5 python benchmarks/bench_partition_accuracy.py --shards S --seeds {args.seeds} "
                   f"--bank {args.bank} --max-epochs {args.max_epochs}",
        "machine": f"{cpu_model()}{ram_suffix()}, {os.cpu_count()} cores",
        "config": ["ml-100k preset"] + sets_for(1, args) + ["train.seeds", "partition.shards"]}
    lines += [f"- command: `{any_rec.get('command', '')}` per S (S = " + ", ".join(order) + "), then `--render`; "
              "figures in `forget-accuracy.json`",
              f"- machine: {any_rec.get('machine', '')}; rendered {merged['date']}; each S in its own process, "
              "machine shared with other jobs",
              "- config: " + ", ".join(f"`{c}`" for c in any_rec.get("config", [])[:-2] if not c.startswith(
                  "cot.count")) + f"; CoT bank {args.bank} rows in total (`cot.count = {args.bank}/S` per shard)",
              "- every row: early stopping on valid AUC, patience 2, at most "
              f"{args.max_epochs} epochs; in a partitioned run each sub-model stops on its own shard's valid rows; "
              "test metrics of the mean-logit ensemble on the global test rows", ""]
    status = {S: ", ".join(f"{t} {len(parts[S]['rows'][t].get('seeds') or parts[S]['rows'][t].get('per_seed_test_auc', [0]))}" for t in TAGS if t in parts[S]["rows"])
              for S in order}
    lines += ["| model | " + " | ".join(f"S={S} test AUC" for S in order) + " | "
              + " | ".join(f"S={S} LogLoss" for S in order) + " |",
              "|---|" + "---|" * (2 * len(order))]
    for tag in TAGS:
        aucs = [fmt(parts[S]["rows"].get(tag, {}).get("test", {}).get("auc")) for S in order]
        lls = [fmt(parts[S]["rows"].get(tag, {}).get("test", {}).get("logloss")) for S in order]
        lines.append(f"| {tag} | " + " | ".join(aucs) + " | " + " | ".join(lls) + " |")
    lines += ["", "Seeds per row: " + "; ".join(f"S={S}: {v}" for S, v in status.items())
              + ". CPU seconds per pass: " + "; ".join(
                  f"S={S}: " + ", ".join(f"{p['seeds']} seed(s) of {p.get('variants', 'base,full')} {p['cpu_s']} s (wall {p['wall_s']} s)"
                                         for p in parts[S]["passes"]) for S in order) + ".", ""]
    for S in (1, 4, 8):  # runs still in their first pass: how far they are (no ensemble metrics yet)
        run = args.runs / f"S{S}"
        if str(S) in parts or not run.exists():
            continue
        roots = [run] if S == 1 else [run / "shards" / str(k) for k in range(S)]
        done = {t: sum((r / "models" / t / "seed_0" / "result.json").exists() for r in roots) for t in TAGS}
        lines.append(f"S={S}: first pass still running; seed-0 sub-models trained: "
                     + ", ".join(f"{t} {n} of {len(roots)}" for t, n in done.items()) + ".")
    lines += ["", "Best epochs (seed: one per sub-model):", ""]
    for S in order:
        for tag in TAGS:
            be = parts[S]["rows"].get(tag, {}).get("best_epochs", {})
            lines.append(f"- S={S} {tag}: " + "; ".join(f"seed {sd}: {v}" for sd, v in be.items()))
    lines += ["", MD_END]
    block = "\n".join(lines)
    md = args.md.read_text() if args.md.exists() else ""
    if MD_START in md:
        pre, rest = md.split(MD_START, 1)
        post = rest.split(MD_END, 1)[1] if MD_END in rest else ""
        md = pre + block + post
    else:
        md = md.rstrip() + "\n\n" + block + "\n"
    args.md.write_text(md)
    print(block)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--max-epochs", type=int, default=10)
    ap.add_argument("--bank", type=int, default=32)
    ap.add_argument("--runs", type=Path, default=Path("runs/bench_partition_accuracy"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/forget-accuracy.json"))
    ap.add_argument("--md", type=Path, default=Path("benchmarks/results/forget.md"))
    ap.add_argument("--render", action="store_true")
    args = ap.parse_args()
    args.runs.mkdir(parents=True, exist_ok=True)
    render(args) if args.render else run_one(args)


if __name__ == "__main__":
    main()
