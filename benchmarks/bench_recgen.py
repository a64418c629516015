"""Benchmark: RecGen tuning on ml-100k — base vs rec-only vs mixed (rec + general) tuning of SmolLM2-135M.

    .venv/bin/python benchmarks/bench_recgen.py [--steps 40] [--batch-size 8] [--num-rec 320] [--eval-rows 300]
        [--lr 1e-3] [--method lora] [--mmlu-subjects a,b,c] [--mmlu-questions 25] [--run /tmp/bench_recgen]
        [--set recgen.amp=true --set llm.prompt_style=compact ...]

Builds the ml-100k run data once (the ml-100k preset: rating >= 4, per-user 80/10/10), then for each variant a run
directory sharing that data: ``base`` (evaluation only), ``rec_only`` (general_ratio 0) and ``mixed``
(general_ratio 0.25, general rows from ../shared/data/general-instructions/alpaca_en_demo.jsonl, or self-distilled
answers when that file is absent). Each is scored on the same test rows (AUC/LogLoss of p(Yes)), the same 5-shot
MMLU questions (../shared/data/mmlu, skipped when absent) and the same held-out general answers (perplexity).
Appends a table to benchmarks/results/recgen.md with the command, machine and date.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "results" / "recgen.md"


def machine(threads) -> str:
    import torch

    if threads:
        torch.set_num_threads(threads)
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(x.split(":", 1)[1].strip() for x in open("/proc/cpuinfo") if x.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--num-rec", type=int, default=320)
    ap.add_argument("--eval-rows", type=int, default=300)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--method", default="lora")
    ap.add_argument("--lora-layers", type=int, default=None, help="LoRA on the top N decoder layers only")
    ap.add_argument("--history-items", type=int, default=10)
    ap.add_argument("--mmlu-subjects", default="high_school_geography,marketing,nutrition,us_foreign_policy")
    ap.add_argument("--mmlu-questions", type=int, default=25)
    ap.add_argument("--heldout", type=int, default=40, help="held-out general rows for perplexity")
    ap.add_argument("--variants", default="base,rec_only,mixed")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (1 is best on a busy machine)")
    ap.add_argument("--run", type=Path, default=Path("/tmp/bench_recgen"))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="further config overrides for every variant, e.g. recgen.amp=true, llm.prompt_style=compact")
    a = ap.parse_args()

    from llmcf.config import load_config
    from llmcf.data.build import build_run_data
    from llmcf.data.loaders import load_dataset
    from llmcf.io import atomic_write_json
    from llmcf.llm.models import resolve_model
    from llmcf.llm.recgen.eval import run_recgen_eval
    from llmcf.llm.recgen.train import run_recgen_train

    general = SHARED / "general-instructions" / "alpaca_en_demo.jsonl"
    mmlu = SHARED / "mmlu"
    sets = [f"recgen.max_steps={a.steps}", f"recgen.batch_size={a.batch_size}", f"recgen.num_rec={a.num_rec}",
            f"recgen.eval_rows={a.eval_rows}", f"recgen.lr={a.lr}", f"recgen.method={a.method}",
            f"recgen.history_items={a.history_items}", f"recgen.mmlu_max_questions={a.mmlu_questions}",
            f"recgen.heldout_general={a.heldout}",
            f"llm.batch_size={a.batch_size}"] + ([f"llm.threads={a.threads}"] if a.threads else [])
    if a.lora_layers:
        sets.append(f"recgen.lora_layers={a.lora_layers}")
    sets += a.set
    if general.exists():
        sets.append(f"recgen.general_data={general}")
    if mmlu.exists():
        sets += [f"recgen.mmlu_dir={mmlu}", f"recgen.mmlu_subjects=[{a.mmlu_subjects}]"]
    data_dir = a.run / "data_run"
    if not (data_dir / "data" / "train.parquet").exists():
        cfg0 = load_config("ml-100k", sets)
        build_run_data(load_dataset(cfg0.data.dataset, cfg0.data.format), cfg0.data, data_dir)

    results, t_all = {}, time.perf_counter()
    for variant in a.variants.split(","):
        vdir = a.run / variant
        vdir.mkdir(parents=True, exist_ok=True)
        done = vdir / "bench_result.json"
        if done.exists():  # a finished variant of a cut-off run: its result is kept, not recomputed
            results[variant] = json.loads(done.read_text())
            print(f"{variant}: kept from {done}", flush=True)
            continue
        if not (vdir / "data").exists():
            (vdir / "data").symlink_to((data_dir / "data").resolve())
        extra = {"base": [], "rec_only": ["recgen.general_ratio=0.0"], "mixed": ["recgen.general_ratio=0.25"]}[variant]
        cfg = load_config("ml-100k", sets + extra)
        t0 = time.perf_counter()
        train_s = None
        if variant == "base":
            res = run_recgen_eval(vdir, cfg, model_path=resolve_model(cfg.llm.model), tag="base")
        else:
            run_recgen_train(vdir, cfg)
            train_s = json.loads((vdir / "llm" / "recgen" / "train_info.json").read_text())
            res = run_recgen_eval(vdir, cfg, tag="tuned")
        res["wall_s"] = round(time.perf_counter() - t0, 1)
        res["train"] = train_s and {k: train_s[k] for k in ("train_seconds", "loss_first", "loss_last", "data")}
        results[variant] = res
        atomic_write_json(done, res)
        print(f"{variant}: rec AUC {res['rec']['auc']:.4f}, MMLU {res['mmlu'].get('accuracy')}, "
              f"{res['wall_s']} s", flush=True)

    lines = [f"\n## RecGen tuning on ml-100k ({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC)\n",
             f"- command: `{' '.join([Path(sys.executable).name, *sys.argv])}`",
             f"- machine: {machine(a.threads)} (shared with other jobs while this ran: timings are upper bounds)",
             f"- budget: {a.method}{f' (top {a.lora_layers} layers)' if a.lora_layers else ''}, {a.steps} steps x batch {a.batch_size} (lr {a.lr}, cosine, 5% warm-up), "
             f"{a.num_rec} rec rows, history {a.history_items} items{'; ' + ', '.join(a.set) if a.set else ''}; "
             f"eval on {a.eval_rows} test rows, "
             f"perplexity on {a.heldout} held-out general answers; "
             f"MMLU 5-shot, {a.mmlu_questions} questions x [{a.mmlu_subjects}]; general data: "
             f"{general.name if general.exists() else 'self-distilled'}\n",
             "| variant | rec AUC | rec LogLoss | mean p(Yes) | MMLU acc | general ppl | train loss first→last | train s |",
             "|---|---|---|---|---|---|---|---|"]
    for v, r in results.items():
        tr = r.get("train") or {}
        mm = r["mmlu"].get("accuracy")
        lines.append(f"| {v} | {r['rec']['auc']:.4f} | {r['rec']['logloss']:.4f} | {r['rec']['mean_p_yes']:.3f} | "
                     f"{'-' if mm is None else f'{mm:.3f}'} | {r['general']['perplexity']:.2f} | "
                     f"{tr.get('loss_first', '-')}→{tr.get('loss_last', '-')} | {tr.get('train_seconds', '-')} |")
    pos = next(iter(results.values()))["rec"]["positive_rate"]
    lines.append(f"\nTest positive rate {pos:.3f}; total {time.perf_counter() - t_all:.0f} s.\n")
    text = "\n".join(lines)
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS, "a") as f:
        if f.tell() == 0:
            f.write("# RecGen benchmark results\n")
        f.write(text)


if __name__ == "__main__":
    main()
