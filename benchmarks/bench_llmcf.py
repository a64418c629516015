"""Benchmark LLM-CF end to end: CTR backbones × {base, LLM-CF, without CoT} (and optionally the sequential
backbones × {base, LLM-CF}) on a real dataset, every stage for real.

    python benchmarks/bench_llmcf.py --dataset ../shared/data/ml-100k --preset ml-100k --cot-count 240 --seeds 3
    python benchmarks/bench_llmcf.py --dataset ../shared/data/ml-100k --preset ml-100k --cot-count 240 \
        --seq --no-ctr --seq-seeds 3          # the sequential rows, reusing the same run directory

Stages (each resumable; a finished stage is stamped in ``<run>/stages/`` and skipped when its config is unchanged,
using the same stamps as ``llmcf run``): data build → RecGen (LoRA, ``--recgen-steps`` optimizer steps on
``--recgen-rows`` rec rows + the shared alpaca general rows; ``--recgen-steps 0`` skips it and CoTs come from the base
model) → CoT generation (``--cot-count`` train rows × ``--cot-candidates``, ``--cot-tokens`` new tokens; sharded) →
CoT scoring → embedding → retrieval → training. Trained seeds are cached in ``<run>/models`` (per config hash), so a
crashed run resumes where it stopped.

Every CTR variant uses the same batch size, learning rate, max epochs and early stopping (valid AUC, patience).
Results: ``benchmarks/results/llmcf-<name>.json`` (merged across invocations for one dataset) and
``benchmarks/results/llmcf.md`` (regenerated from every llmcf-*.json), with command, machine, date, CoT pool and
protocol. Not part of CI.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

from _machine import portable  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
from llmcf.io import atomic_write_json, atomic_write_text  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = Path(__file__).resolve().parent / "results"
GENERAL = ROOT.parent / "shared" / "data" / "general-instructions" / "alpaca_en_demo.jsonl"
CTR_MODELS = ("DeepFM", "xDeepFM", "DCN", "DCNv2", "AutoInt", "DIN")
SEQ_MODELS = ("SASRec", "GRU4Rec", "YouTubeDNN", "SRGNN")
VARIANT_NAMES = {"base": "base", "full": "LLM-CF", "no_cot": "w/o CoT", "mean_pool": "mean-pool"}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(x.split(":", 1)[1].strip() for x in open("/proc/cpuinfo") if x.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{cpu}, {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"Python {platform.python_version()}, load average at start {load:.1f} (machine shared with other jobs)")


def build_config(a: argparse.Namespace):
    from llmcf.config import load_config

    sets = [f"data.dataset={a.dataset}", f"train.seeds={a.seeds}", f"train.batch_size={a.batch_size}",
            f"train.max_epochs={a.max_epochs}", f"train.patience={a.patience}", f"train.threads={a.threads}",
            f"llm.threads={a.llm_threads}", f"llm.batch_size={a.llm_batch}",
            "cot.fraction=null", f"cot.count={a.cot_count}", f"cot.candidates={a.cot_candidates}",
            f"cot.max_new_tokens={a.cot_tokens}", f"cot.history_items={a.history_items}",
            f"cot.shard_size={a.llm_batch * 2}", f"retrieval.k={a.k}", f"seq.max_epochs={a.seq_max_epochs}"]
    if a.max_steps_per_epoch:
        sets.append(f"train.max_steps_per_epoch={a.max_steps_per_epoch}")
    if a.recgen_steps > 0:
        sets += [f"recgen.max_steps={a.recgen_steps}", f"recgen.num_rec={a.recgen_rows}", "recgen.lr=0.001",
                 "recgen.batch_size=8", "recgen.cutoff_len=384", f"recgen.history_items={a.history_items}",
                 "recgen.general_ratio=0.25"]
        if GENERAL.exists():
            sets.append(f"recgen.general_data={GENERAL}")
    else:
        sets.append("recgen.skip=true")
    return load_config(a.preset, sets + a.set)


def run_stages(cfg, run_dir: Path) -> tuple[str, dict]:
    """data → recgen (train only) → cot_generate → cot_score → embed → retrieve, stamped like `llmcf run`."""
    from llmcf.config import save_config
    from llmcf.data.build import build_run_data
    from llmcf.data.loaders import load_dataset
    from llmcf.embed import run_embed
    from llmcf.llm.cot.generate import run_cot_generate
    from llmcf.llm.cot.score import run_cot_score
    from llmcf.llm.recgen.train import run_recgen_train
    from llmcf.pipeline import run_stage
    from llmcf.retrieval.stage import run_retrieve

    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    times = {}

    def timed(stage, fn):
        def wrapped():
            t0 = time.perf_counter()
            fn()
            times[stage] = round(time.perf_counter() - t0, 1)
        return wrapped

    def data():
        build_run_data(load_dataset(cfg.data.dataset, cfg.data.format), cfg.data, run_dir)

    def recgen():
        if cfg.recgen.skip:
            print("[recgen] skipped (--recgen-steps 0): CoTs come from the untuned base model")
            return
        run_recgen_train(run_dir, cfg)  # evaluation left out of the benchmark (see bench_recgen.py for it)

    h = run_stage(run_dir, cfg, "data", "", timed("data", data), set())
    h = run_stage(run_dir, cfg, "recgen", h, timed("recgen", recgen), set())
    h = run_stage(run_dir, cfg, "cot_generate", h, timed("cot_generate", lambda: run_cot_generate(run_dir, cfg)),
                  set())
    h = run_stage(run_dir, cfg, "cot_score", h, timed("cot_score", lambda: run_cot_score(run_dir, cfg)), set())
    h = run_stage(run_dir, cfg, "embed", h, timed("embed", lambda: run_embed(run_dir, cfg)), set())
    h = run_stage(run_dir, cfg, "retrieve", h, timed("retrieve", lambda: run_retrieve(run_dir, cfg)), set())
    # seconds of every stage, from its stamp (also for stages finished by an earlier invocation)
    for stage in ("data", "recgen", "cot_generate", "cot_score", "embed", "retrieve"):
        p = run_dir / "stages" / f"{stage}.json"
        if p.exists():
            times[stage] = json.loads(p.read_text()).get("seconds", times.get(stage))
    return h, times


def pool_info(run_dir: Path) -> dict:
    m = json.loads((run_dir / "cot" / "manifest.json").read_text())
    info = {"rows": m["rows"], "candidates": m["sampling"].get("n"), "max_new_tokens": m["sampling"].get("max_new_tokens"),
            "model": m["model"], "new_tokens": (m.get("last_run") or {}).get("new_tokens")}
    rmeta = run_dir / "retrieval" / "meta.json"
    if rmeta.exists():
        r = json.loads(rmeta.read_text())
        info["bank"] = {k: r.get(k) for k in ("bank_rows", "positives", "negatives", "bank_users")}
        info["mean_filled"] = {s: v.get("mean_filled") for s, v in r.get("splits", {}).items()}
    tinfo = run_dir / "llm" / "recgen" / "train_info.json"
    if tinfo.exists() and m["model"].get("kind") == "recgen":
        t = json.loads(tinfo.read_text())
        info["recgen"] = {"steps": t.get("steps"), "examples": t.get("examples"), "loss_first": t.get("loss_first"),
                          "loss_last": t.get("loss_last"), "train_seconds": t.get("train_seconds")}
    return info


def summary_row(s: dict, variant: str, run_dir: Path) -> dict:
    walls = [json.loads(p.read_text()).get("wall_seconds", 0.0)
             for p in (run_dir / "models" / s["tag"]).glob("seed_*/result.json")
             if int(p.parent.name.split("_")[1]) in s["seeds"]]
    return {"model": s["model"], "variant": variant, "tag": s["tag"], "seeds": s["seeds"], "test": s["test"],
            "valid": s.get("valid"), "seconds_per_epoch": s["seconds_per_epoch"], "protocol": s["protocol"],
            "train_minutes": sum(walls) / 60}


def run_ctr(cfg, run_dir: Path, upstream: str, models, variants, progress: bool) -> list[dict]:
    from llmcf.pipeline import cfg_variant
    from llmcf.train.stage import RunData, format_summary, run_train

    run = RunData(run_dir, cfg)
    rows = []
    for name in models:
        for variant in variants:
            vcfg = cfg_variant(cfg, variant)
            t0 = time.perf_counter()
            s = run_train(run_dir, vcfg, name, run=run, upstream=upstream if vcfg.ict.enabled else "",
                          progress=progress)
            print(format_summary(s), f"[{time.perf_counter() - t0:.0f}s]", flush=True)
            rows.append(summary_row(s, variant, run_dir))
    return rows


def run_seq(cfg, run_dir: Path, models, seeds: int, progress: bool) -> list[dict]:
    from copy import deepcopy

    from llmcf.train.seq_stage import SeqRunData, run_seq_train

    scfg = deepcopy(cfg)
    scfg.train.seeds = seeds
    run = SeqRunData(run_dir, scfg)
    rows = []
    for name in models:
        for ict in (False, True):
            t0 = time.perf_counter()
            s = run_seq_train(run_dir, scfg, name, ict, run=run, progress=progress)
            t = s["test"]
            print(f"[seq] {s['tag']}: NDCG@10 {t['ndcg@10']['mean']:.4f} ± {t['ndcg@10']['std']:.4f}  "
                  f"Recall@10 {t['recall@10']['mean']:.4f}  ({s['seconds_per_epoch']['mean']:.1f}s/epoch) "
                  f"[{time.perf_counter() - t0:.0f}s]", flush=True)
            rows.append(summary_row(s, "full" if ict else "base", run_dir))
    return rows


# ---------------------------------------------------------------- report

def _ms(d: dict, digits: int = 4) -> str:
    return f"{d['mean']:.{digits}f} ± {d['std']:.{digits}f}"


def ctr_table(rows: list[dict]) -> list[str]:
    by = {(r["model"], r["variant"]): r for r in rows}
    models = list(dict.fromkeys(r["model"] for r in rows))
    variants = [v for v in ("base", "full", "no_cot", "mean_pool") if any(r["variant"] == v for r in rows)]
    out = ["| model | variant | test AUC | test LogLoss | ΔAUC vs base | seeds | s/epoch |",
           "|---|---|---|---|---|---|---|"]
    for m in models:
        base = by.get((m, "base"))
        for v in variants:
            r = by.get((m, v))
            if r is None:
                continue
            d = "" if v == "base" or base is None else f"{r['test']['auc']['mean'] - base['test']['auc']['mean']:+.4f}"
            out.append(f"| {m} | {VARIANT_NAMES.get(v, v)} | {_ms(r['test']['auc'])} | {_ms(r['test']['logloss'])} | "
                       f"{d} | {len(r['seeds'])} | {r['seconds_per_epoch']['mean']:.1f} |")
    return out


def seq_table(rows: list[dict]) -> list[str]:
    by = {(r["model"], r["variant"]): r for r in rows}
    out = ["| model | variant | Recall@10 | NDCG@10 | Recall@20 | NDCG@20 | seeds | s/epoch |",
           "|---|---|---|---|---|---|---|---|"]
    for m in dict.fromkeys(r["model"] for r in rows):
        for v in ("base", "full"):
            r = by.get((m, v))
            if r is None:
                continue
            t = r["test"]
            out.append(f"| {m} | {VARIANT_NAMES[v]} | {_ms(t['recall@10'])} | {_ms(t['ndcg@10'])} | "
                       f"{_ms(t['recall@20'])} | {_ms(t['ndcg@20'])} | {len(r['seeds'])} | "
                       f"{r['seconds_per_epoch']['mean']:.1f} |")
    return out


def wins(rows: list[dict], metric: str, higher: bool, variant: str = "full") -> str:
    by = {(r["model"], r["variant"]): r for r in rows}
    pairs = [(by[(m, "base")], by[(m, variant)]) for m, v in by if v == variant and (m, "base") in by]
    if not pairs:
        return "–"
    sign = 1 if higher else -1
    better = sum(sign * (b2["test"][metric]["mean"] - b1["test"][metric]["mean"]) > 0 for b1, b2 in pairs)
    return f"{better}/{len(pairs)}"


def dataset_section(res: dict) -> list[str]:
    p = res["pool"]
    kind = p["model"].get("kind")
    src = (f"RecGen-tuned SmolLM2-135M-Instruct (LoRA, {p['recgen']['steps']} steps on {p['recgen']['examples']} "
           f"examples: a tiny budget that does not learn collaborative signal, see recgen.md)"
           if kind == "recgen" and "recgen" in p else "the untuned base SmolLM2-135M-Instruct (RecGen skipped)")
    lines = [f"\n## {res['name']}\n", f"Data: `{res['dataset']}` (preset `{res['preset']}`): {res['data_stats']}.  ",
             f"CoT pool: **{p['rows']} train rows** × {p['candidates']} candidates, ≤ {p['max_new_tokens']} new tokens, "
             f"from {src}; best candidate kept by the CoT score; bank {p.get('bank')}; mean in-context examples "
             f"filled per row {p.get('mean_filled')}. "
             f"Retrieval K={res['k']} (balanced), leakage rule `same_or_later`.  ",
             f"Stage seconds: {res['stage_seconds']}."]
    if res.get("note"):
        lines.append(f"\n**Note:** {res['note']}")
    for part in ("ctr", "seq"):
        block = res.get(part)
        if not block:
            continue
        rows = block["rows"]
        lines += [f"\n### {'CTR' if part == 'ctr' else 'Sequential'} ({block['date']})\n",
                  f"Command: `{block['command']}`  ", f"Machine: {block['machine']}  ",
                  f"Training time (sum over rows and seeds of each seed's wall time, cached seeds included): "
                  f"{sum(r.get('train_minutes', 0) for r in rows):.0f} min  ", f"Protocol: {block['protocol']}\n"]
        if part == "ctr":
            lines += ctr_table(rows)
            lines.append(f"\nLLM-CF beats base on test AUC for {wins(rows, 'auc', True)} backbones, on LogLoss for "
                         f"{wins(rows, 'logloss', False)}; without CoT beats base on AUC for "
                         f"{wins(rows, 'auc', True, 'no_cot')}.")
        else:
            lines += seq_table(rows)
            lines.append(f"\nLLM-CF beats base on NDCG@10 for {wins(rows, 'ndcg@10', True)} backbones, on Recall@20 "
                         f"for {wins(rows, 'recall@20', True)}.")
    return lines


def write_markdown() -> Path:
    parts = ["# LLM-CF vs backbones benchmark\n",
             "Written by `benchmarks/bench_llmcf.py` from `benchmarks/results/llmcf-*.json` (regenerated on every run). "
             "Mean ± sample std over seeds; s/epoch is the mean training time of one epoch on a shared 2-core CPU "
             "(other jobs were running: compare base vs LLM-CF within a table, not across tables)."]
    results = [json.loads(p.read_text()) for p in sorted(RESULTS_DIR.glob("llmcf-*.json"))]
    for res in sorted(results, key=lambda r: (bool(r.get("note")), r["name"])):  # ablations after the main runs
        parts += dataset_section(res)
    out = RESULTS_DIR / "llmcf.md"
    atomic_write_text(out, portable("\n".join(parts) + "\n"))
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True, help="dataset folder (or the embedded name ml-100k)")
    ap.add_argument("--name", default=None, help="result name (default: the dataset folder name)")
    ap.add_argument("--preset", default=None, help="preset name or YAML (default: the result name)")
    ap.add_argument("--run-dir", type=Path, default=None, help="default /work/main/runs/bench-llmcf-<name>")
    ap.add_argument("--cot-count", type=int, default=240)
    ap.add_argument("--cot-candidates", type=int, default=2)
    ap.add_argument("--cot-tokens", type=int, default=96)
    ap.add_argument("--history-items", type=int, default=8, help="history items shown in RecGen/CoT prompts")
    ap.add_argument("--recgen-steps", type=int, default=12, help="0 = skip RecGen (CoTs from the base model)")
    ap.add_argument("--recgen-rows", type=int, default=96)
    ap.add_argument("--llm-batch", type=int, default=8)
    ap.add_argument("--llm-threads", type=int, default=1)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--models", default=",".join(CTR_MODELS))
    ap.add_argument("--variants", default="base,full,no_cot")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--max-epochs", type=int, default=10)
    ap.add_argument("--patience", type=int, default=2)
    ap.add_argument("--max-steps-per-epoch", type=int, default=None, help="cap train batches per epoch (large data)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for training")
    ap.add_argument("--no-ctr", action="store_true", help="skip the CTR training")
    ap.add_argument("--seq", action="store_true", help="also train the sequential backbones × {base, LLM-CF}")
    ap.add_argument("--seq-models", default=",".join(SEQ_MODELS))
    ap.add_argument("--seq-seeds", type=int, default=3)
    ap.add_argument("--seq-max-epochs", type=int, default=30)
    ap.add_argument("--stages-only", action="store_true", help="stop after retrieval")
    ap.add_argument("--base-only-now", action="store_true",
                    help="train only the base variants without touching the stages (e.g. while CoTs generate); "
                         "writes no results")
    ap.add_argument("--set", action="append", default=[], help="extra config override section.field=value")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    ap.add_argument("--note", default=None, help="a sentence printed under the dataset heading (e.g. an ablation)")
    a = ap.parse_args(argv)

    name = a.name or Path(a.dataset).name
    a.preset = a.preset or name
    run_dir = a.run_dir or ROOT / "runs" / f"bench-llmcf-{name}"
    torch.set_num_threads(a.threads)
    cmd = "python " + " ".join(shlex.quote(x) for x in ["benchmarks/bench_llmcf.py",
                                                         *(argv if argv is not None else sys.argv[1:])])
    cfg = build_config(a)
    t_start = time.perf_counter()
    if a.base_only_now:
        run_ctr(cfg, run_dir, "", a.models.split(","), ["base"], not a.quiet)
        return
    upstream, stage_seconds = run_stages(cfg, run_dir)
    print(f"[bench] stages done: {stage_seconds}", flush=True)
    if a.stages_only:
        return

    res_path = RESULTS_DIR / f"llmcf-{name}.json"
    res = json.loads(res_path.read_text()) if res_path.exists() else {}
    stats = json.loads((run_dir / "data" / "stats.json").read_text())
    if a.note:
        res["note"] = a.note
    res.update(name=name, dataset=a.dataset, preset=a.preset, run_dir=str(run_dir), k=a.k, pool=pool_info(run_dir),
               stage_seconds=stage_seconds,
               data_stats=", ".join(f"{s} {stats.get('splits', {}).get(s, {}).get('rows', '?')} rows"
                                    for s in ("train", "valid", "test"))
               + f"; split: {stats.get('protocol', {}).get('split', '?')}")
    mach = machine()

    def block(part, rows, proto, t0):
        """Merge this invocation's rows into the dataset's earlier ones (same model and variant: replaced)."""
        prev = json.loads(res_path.read_text()).get(part) if res_path.exists() else None
        new_keys = {(r["model"], r["variant"]) for r in rows}
        kept = [r for r in (prev or {}).get("rows", []) if (r["model"], r["variant"]) not in new_keys]
        cmds = [c for c in (prev or {}).get("command", "").split("  +  ") if c and c != cmd] + [cmd]
        wall = (time.perf_counter() - t0) / 60 + ((prev or {}).get("wall_minutes", 0) if kept else 0)
        return {"rows": kept + rows, "command": "  +  ".join(cmds), "machine": mach, "protocol": proto,
                "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"), "wall_minutes": wall}

    if not a.no_ctr:
        t0 = time.perf_counter()
        rows = run_ctr(cfg, run_dir, upstream, a.models.split(","), a.variants.split(","), not a.quiet)
        pr = rows[-1]["protocol"]
        proto = (f"{stats.get('protocol', {}).get('split', '')}; early stopping on {pr['early_stopping']}; "
                 f"batch {pr['batch_size']}, Adam lr {pr['lr']}, weight decay {pr['weight_decay']} on the backbone and "
                 f"{getattr(cfg.train, 'ict_weight_decay', pr['weight_decay'])} on the ICT module, same for every "
                 f"variant" + (f"; at most {a.max_steps_per_epoch} batches per epoch" if a.max_steps_per_epoch
                               else "") + f"; {a.seeds} seeds (0..{a.seeds - 1}); test metrics at the best valid epoch.")
        res["ctr"] = block("ctr", rows, proto, t0)
        if res_path.exists():
            res["seq"] = json.loads(res_path.read_text()).get("seq", res.get("seq"))
        atomic_write_json(res_path, portable(res))
        print(f"[bench] wrote {res_path} and {write_markdown()}", flush=True)
    if a.seq:
        t0 = time.perf_counter()
        rows = run_seq(cfg, run_dir, a.seq_models.split(","), a.seq_seeds, not a.quiet)
        pr = rows[-1]["protocol"]
        proto = (f"{pr['ranking']}; {pr['loss']}; early stopping on {pr['early_stopping']}; batch "
                 f"{pr['batch_size']}, Adam lr {pr['lr']}; split: {pr['split'].get('split')}; LLM-CF in-context rows "
                 f"retrieved by history only; {a.seq_seeds} seeds.")
        res["seq"] = block("seq", rows, proto, t0)
        if res_path.exists():
            res["ctr"] = json.loads(res_path.read_text()).get("ctr", res.get("ctr"))
        atomic_write_json(res_path, portable(res))
        print(f"[bench] wrote {res_path} and {write_markdown()}", flush=True)
    print(f"[bench] total {(time.perf_counter() - t_start) / 60:.1f} min")


if __name__ == "__main__":
    main()
