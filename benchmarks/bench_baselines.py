"""Benchmark the cheaper ways of bringing an LLM into a CTR backbone against the backbone alone, in one harness:
base / textemb / kd / kar (``llmcf train --baseline``), next to LLM-CF's recorded row (benchmarks/results/llmcf-*.json,
same data, split, trainer and epoch rule).

    python benchmarks/bench_baselines.py --dataset ../shared/data/ml-100k --preset ml-100k --run-dir RUN \\
        --kd-rows 1200 --kar-users 300 --kar-items 300 --kar-tokens 48 --models DIN,DCN --seeds 3
    python benchmarks/bench_baselines.py ... --llm-stage kd     # only the KD teacher scores (resumable; background)
    python benchmarks/bench_baselines.py ... --llm-stage kar    # only KAR's texts
    python benchmarks/bench_baselines.py ... --rate             # measure the LLM's rates on a few rows, then stop

The run directory's stages (data build, RecGen LoRA with the same settings as ``bench_llmcf.py``'s defaults, item
embedding) run first and are stamped/skipped like ``llmcf run``. The KD teacher is that RecGen model. Every method
uses the same batch size, learning rate, weight decay, max epochs and early stopping (valid AUC, patience); seeds
0..N-1; test metrics at the best valid epoch. Online cost: in-process model forward of one-row requests (CPU ms,
median over ``--requests`` test rows), precomputed KAR/text vectors being table lookups at serving time.
Results: ``benchmarks/results/baselines-<name>.json`` (merged over invocations) and ``baselines.md``. Not part of CI.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

import bench_llmcf as B  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
from _machine import portable  # noqa: E402
from llmcf.io import atomic_write_json, atomic_write_text  # noqa: E402

RESULTS_DIR = B.RESULTS_DIR
METHODS = ("base", "textemb", "kd", "kar")
NAMES = {"base": "base", "textemb": "textemb", "kd": "kd", "kar": "KAR", "full": "LLM-CF"}


@contextlib.contextmanager
def merge_lock(out: Path):
    """Hold an exclusive lock beside ``out`` while one invocation reads, merges and rewrites it, so two invocations
    finishing at once (e.g. DIN and DCN trained side by side) cannot drop each other's rows."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_suffix(".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def build_config(a):
    a.cot_count, a.cot_candidates, a.cot_tokens, a.k, a.seq_max_epochs = 240, 2, 96, 4, 30
    a.max_steps_per_epoch = None
    a.set = [f"baseline.kd_rows={a.kd_rows}", f"baseline.kar_max_new_tokens={a.kar_tokens}",
             f"baseline.kar_users={a.kar_users if a.kar_users is not None else 'null'}",
             f"baseline.kar_items={a.kar_items if a.kar_items is not None else 'null'}",
             f"baseline.kar_sample={a.kar_sample}", f"baseline.kd_shard_size={a.llm_batch * 2}", f"baseline.kar_shard_size={a.llm_batch * 2}", *a.set]
    return B.build_config(a)


def link_teacher(run_dir: Path, teacher: Path) -> None:
    """``run_dir``/llm/recgen/model -> ``teacher`` (relative link), checked to be a tuned model trained on this
    run's split; an existing model there that is not this link is an error (never overwritten)."""
    from llmcf.rundir import RunDir

    info = teacher / "recgen_train.json"
    if not info.exists():
        raise SystemExit(f"--teacher {teacher}: no recgen_train.json (expected a RecGen-tuned model folder)")
    here = RunDir(run_dir).recgen_model
    if here.is_symlink() or here.exists():
        if here.resolve() != teacher.resolve():
            raise SystemExit(f"--teacher {teacher}: {here} already holds another model; use another --run-dir")
        return
    mine = run_dir / "data" / "train.parquet"
    theirs = teacher.parents[2] / "data" / "train.parquet"  # <run>/llm/recgen/model -> <run>/data
    if mine.exists() and theirs.exists() and mine.read_bytes() != theirs.read_bytes():
        raise SystemExit(f"--teacher {teacher}: trained on another split ({theirs} differs from {mine})")
    here.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(teacher.resolve(), here.parent.resolve()), here, target_is_directory=True)


def teacher_text(a) -> str:
    """How the KD teacher / KAR generator was tuned, for the record."""
    if a.teacher is None:
        return f"RecGen LoRA {a.recgen_steps} steps on {a.recgen_rows} rec rows (as bench_llmcf.py)"
    t = json.loads((a.teacher / "recgen_train.json").read_text())
    data = t.get("data", {})
    return (f"RecGen-tuned model linked with --teacher ({t.get('steps')} steps on {data.get('rec')} rec rows, "
            f"general share {data.get('general_share')})")


def run_stages(cfg, run_dir: Path, train_recgen: bool = True) -> dict:
    """data → recgen (train; skipped when a ``--teacher`` is linked) → embed (items), stamped like ``llmcf run``;
    returns each stage's seconds."""
    from llmcf.config import save_config
    from llmcf.data.build import build_run_data
    from llmcf.data.loaders import load_dataset
    from llmcf.embed import run_embed
    from llmcf.llm.recgen.train import run_recgen_train
    from llmcf.pipeline import run_stage

    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    h = run_stage(run_dir, cfg, "data", "", lambda: build_run_data(load_dataset(cfg.data.dataset, cfg.data.format),
                                                                   cfg.data, run_dir), set())
    if not cfg.recgen.skip and train_recgen:
        run_stage(run_dir, cfg, "recgen", h, lambda: run_recgen_train(run_dir, cfg), set())
    if not (run_dir / "embed" / "items.npy").exists():
        run_embed(run_dir, cfg)
    out = {}
    for stage in ("data", "recgen"):
        p = run_dir / "stages" / f"{stage}.json"
        if p.exists():
            out[stage] = json.loads(p.read_text()).get("seconds")
    meta = run_dir / "embed" / "meta.json"
    if meta.exists():
        out["embed_items"] = json.loads(meta.read_text()).get("seconds")
    return out


def measure_rate(cfg, run_dir: Path, rows: int) -> dict:
    """Seconds per KD row and per KAR text on ``rows`` of each (a scratch copy of the config's sample settings)."""
    from copy import deepcopy

    from llmcf.llm.backends.factory import make_backend
    from llmcf.llm.backends.base import SamplingParams
    from llmcf.llm.baselines.common import teacher_model
    from llmcf.llm.baselines.kar import SYSTEM, build_kar_pool
    from llmcf.llm.baselines.kd import build_kd_pool
    from llmcf.llm.recgen.data import read_item_texts, read_split
    from llmcf.llm.recgen.prompts import rec_prompts_for
    from llmcf.rundir import RunDir

    c = deepcopy(cfg)
    c.baseline.kd_rows = rows
    train = read_split(run_dir, "train")
    path, _ = teacher_model(run_dir, c)
    t0 = time.perf_counter()
    be = make_backend(c.llm, path)
    load = time.perf_counter() - t0
    pool = build_kd_pool(train, c)
    style = c.llm.prompt_style
    prompts = rec_prompts_for(pool, read_item_texts(run_dir, style), c.data, c.recgen.history_items, style)
    w, p = time.perf_counter(), time.process_time()
    be.score_yes_no(prompts)
    kd = (time.perf_counter() - w, time.process_time() - p)
    c.baseline.kar_users, c.baseline.kar_items = rows // 2, rows - rows // 2
    kp = build_kar_pool(train, RunDir(run_dir).read_items(), c)
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=c.baseline.kar_max_new_tokens, seed=0)
    msgs = [[{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}] for q in kp["prompt"]]
    w, p = time.perf_counter(), time.process_time()
    for s in range(0, len(msgs), c.llm.batch_size):
        be.generate(msgs[s:s + c.llm.batch_size], params)
    kar = (time.perf_counter() - w, time.process_time() - p)
    out = {"rows": rows, "load_seconds": round(load, 1), "kd_s_per_row": round(kd[0] / rows, 2),
           "kd_cpu_s_per_row": round(kd[1] / rows, 2), "kar_s_per_text": round(kar[0] / len(msgs), 2),
           "kar_cpu_s_per_text": round(kar[1] / len(msgs), 2), "kar_max_new_tokens": c.baseline.kar_max_new_tokens,
           "llm_batch": c.llm.batch_size}
    print("[rate]", json.dumps(out), flush=True)
    return out


def online_cost(run, cfg, name: str, requests: int) -> dict:
    """CPU and wall ms of one-row forwards (median over ``requests`` test rows), the model built as trained."""
    from llmcf.train.ctr_task import CTRTask

    model = CTRTask(run).build(name, cfg)
    model.eval()
    arrays = run.arrays["test"]
    rng = np.random.default_rng(0)
    rows = rng.choice(len(arrays["label"]), size=min(requests, len(arrays["label"])), replace=False)
    cpu, wall = [], []
    with torch.no_grad():
        for r in rows:
            batch = {k: torch.from_numpy(np.ascontiguousarray(v[r:r + 1])) for k, v in arrays.items()}
            w, c = time.perf_counter(), time.process_time()
            model(batch)
            wall.append(time.perf_counter() - w)
            cpu.append(time.process_time() - c)
    return {"cpu_ms_p50": round(1000 * float(np.median(cpu)), 3), "wall_ms_p50": round(1000 * float(np.median(wall)), 3),
            "requests": len(rows)}


def llm_stage_only(cfg, run_dir: Path, method: str) -> None:
    from llmcf.train.baselines import get_baseline
    from llmcf.train.ctr_task import RunData

    run = RunData(run_dir, cfg)
    w, c = time.perf_counter(), time.process_time()
    from llmcf.pipeline import cfg_baseline

    bcfg = cfg_baseline(cfg, method)
    get_baseline(method).prepare(run, bcfg)
    print(f"[{method}] LLM stage done in {time.perf_counter() - w:.0f} s wall, {time.process_time() - c:.0f} s CPU",
          flush=True)


def train_rows(cfg, run_dir: Path, models, methods, requests: int, progress: bool) -> list[dict]:
    from llmcf.pipeline import cfg_baseline
    from llmcf.train.stage import RunData, format_summary, run_train

    run = RunData(run_dir, cfg)
    rows = []
    for name in models:
        for method in methods:
            mcfg = cfg if method == "base" else cfg_baseline(cfg, method)
            t0 = time.perf_counter()
            s = run_train(run_dir, mcfg, name, run=run, progress=progress)
            print(format_summary(s), f"[{time.perf_counter() - t0:.0f}s]", flush=True)
            row = B.summary_row(s, method, run_dir)
            row["llm_stage"] = s.get("llm_stage")
            row["cpu_seconds_per_epoch"] = cpu_per_epoch(Path(run_dir) / "models" / s["tag"], s["seeds"])
            row["online"] = online_cost(run, mcfg, name, requests)
            rows.append(row)
    return rows


def cpu_per_epoch(model_dir: Path, seeds) -> float | None:
    """Mean CPU (process) seconds of a training epoch over ``seeds`` (each seed's result.json curve), or None when a
    seed's curve has no CPU time."""
    per_seed = []
    for seed in seeds:
        curve = json.loads((model_dir / f"seed_{seed}" / "result.json").read_text()).get("curve") or []
        cpu = [c["cpu_seconds"] for c in curve if c.get("cpu_seconds") is not None]
        if not cpu:
            return None
        per_seed.append(sum(cpu) / len(cpu))
    return round(sum(per_seed) / len(per_seed), 2) if per_seed else None


def spe(r: dict) -> str:
    """Wall seconds per epoch, with CPU seconds beside them when recorded."""
    v = r["seconds_per_epoch"]
    wall = v["mean"] if isinstance(v, dict) else v
    cpu = r.get("cpu_seconds_per_epoch")
    return f"{wall:.1f}" + (f" ({cpu:.1f} CPU)" if cpu is not None else "")


def fmt(m: dict, key: str) -> str:
    return f"{m[key]['mean']:.4f} ± {m[key]['std']:.4f}"


SAME_PROTOCOL = ("split", "early_stopping", "batch_size", "lr", "weight_decay")


def llmcf_rows(name: str, models, protocol: dict) -> tuple[list[dict], dict]:
    """LLM-CF's recorded rows (``llmcf-<name>.json``) for ``models``, only those trained under the same split, epoch
    rule and optimiser as ``protocol`` (the baselines' own): a row from another epoch rule is not comparable."""
    p = RESULTS_DIR / f"llmcf-{name}.json"
    if not p.exists():
        return [], {}
    res = json.loads(p.read_text())
    ctr = res.get("ctr", {})
    rows = [r for r in ctr.get("rows", []) if r["model"] in models and r["variant"] == "full"
            and all(r.get("protocol", {}).get(k) == protocol.get(k) for k in SAME_PROTOCOL)]
    return rows, {"date": ctr.get("date"), "stage_seconds": res.get("stage_seconds"), "pool": res.get("pool")}


def stage_cell(row: dict) -> str:
    st = row.get("llm_stage") or {}
    if row["variant"] == "base":
        return "none"
    if row["variant"] == "textemb":
        return f"{st.get('texts_embedded')} item texts embedded (no generation)"
    cost = st.get("cost") or {}
    if row["variant"] == "kd":
        auc = st.get("teacher_train_auc")
        return (f"{st.get('rows_scored')} train rows scored: {cost.get('seconds', 0) / 60:.0f} min wall, "
                f"{cost.get('cpu_seconds', 0) / 60:.0f} min CPU" + (f"; teacher AUC on them {auc:.3f}" if auc else ""))
    if row["variant"] == "kar":
        cov = (st.get("coverage") or {}).get("test")
        share = f"; test rows with a user/item text {100 * cov['user']:.1f} % / {100 * cov['item']:.1f} %" if cov else ""
        return (f"{st.get('users_with_text')} user + {st.get('items_with_text')} item texts (≤ "
                f"{st.get('max_new_tokens')} tokens): {cost.get('seconds', 0) / 60:.0f} min wall, "
                f"{cost.get('cpu_seconds', 0) / 60:.0f} min CPU{share}")
    return ""


def kept_sections(text: str, generated: set[str]) -> list[str]:
    """The ``## `` sections of an existing baselines.md that no json writes (hand-written records, e.g. rows trained
    with ``llmcf train`` outside this script), so regenerating the file keeps them, in their order."""
    chunks = text.split("\n## ")[1:]
    return ["## " + c.rstrip("\n") for c in chunks if c.split("\n", 1)[0].strip() not in generated]


def write_markdown() -> Path:
    out = RESULTS_DIR / "baselines.md"
    previous = out.read_text() if out.exists() else ""
    generated: set[str] = set()
    parts = ["# Baselines vs LLM-CF (CTR)", "",
             "Written by `benchmarks/bench_baselines.py` from `benchmarks/results/baselines-*.json`. Mean ± sample "
             "std over seeds. s/epoch: mean wall time of one training epoch on a shared 2-core CPU (other jobs "
             "running), its CPU (process) time in brackets where recorded. "
             "Online: CPU ms of one in-process model forward for a one-row request (median), the LLM never called "
             "online by any method. LLM-CF's row is quoted from `llmcf-<dataset>.json` (same data build, split, "
             "trainer and epoch rule, trained on another day: its s/epoch is not comparable)."]
    for p in sorted(RESULTS_DIR.glob("baselines-*.json")):
        res = json.loads(p.read_text())
        generated.add(res["name"])
        parts += ["", f"## {res['name']}", "", f"Command: `{res['command']}`  ", f"Machine: {res['machine']}  ",
                  f"Date: {res['date']}  ", f"Protocol: {res['protocol']}  ", f"Teacher / generator: {res['teacher']}  ",
                  f"Stage seconds: {res.get('stage_seconds')}"]
        if res.get("rate"):
            parts.append(f"Measured LLM rate before choosing the budgets: {res['rate']}")
        parts += ["", "| model | method | test AUC | test LogLoss | ΔAUC vs base | seeds | s/epoch | online CPU ms | "
                  "LLM stage |", "|---|---|---|---|---|---|---|---|---|"]
        for model in res["models"]:
            rows = [r for r in res["rows"] if r["model"] == model]
            base = next((r for r in rows if r["variant"] == "base"), None)
            order = {m: k for k, m in enumerate((*METHODS, "full"))}
            for r in sorted(rows, key=lambda r: order.get(r["variant"], 9)):
                d = (f"{r['test']['auc']['mean'] - base['test']['auc']['mean']:+.4f}"
                     if base is not None and r is not base else "")
                online = f"{r['online']['cpu_ms_p50']:.2f}" if r.get("online") else "(see serve.md)"
                cell = stage_cell(r) if r["variant"] != "full" else res.get("llmcf_stage", "")
                parts.append(f"| {model} | {NAMES.get(r['variant'], r['variant'])} | {fmt(r['test'], 'auc')} | "
                             f"{fmt(r['test'], 'logloss')} | {d} | {len(r['seeds'])} | "
                             f"{spe(r)} | {online} | {cell} |")
        if res.get("notes"):
            parts += [""] + res["notes"]
    for section in kept_sections(previous, generated):
        parts += ["", section]
    atomic_write_text(out, portable("\n".join(parts) + "\n"))
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--name", default=None)
    ap.add_argument("--preset", default=None)
    ap.add_argument("--run-dir", type=Path, required=True)
    ap.add_argument("--models", default="DIN")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--max-epochs", type=int, default=10)
    ap.add_argument("--patience", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--history-items", type=int, default=8)
    ap.add_argument("--recgen-steps", type=int, default=12)
    ap.add_argument("--recgen-rows", type=int, default=96)
    ap.add_argument("--teacher", type=Path, default=None,
                    help="an already tuned RecGen model folder (e.g. bench_recgen.py's <run>/rec_only/llm/recgen/model, "
                         "trained on the same split) as the KD teacher and KAR generator, linked as the run's "
                         "llm/recgen/model instead of training the short RecGen stage")
    ap.add_argument("--llm-batch", type=int, default=8)
    ap.add_argument("--llm-threads", type=int, default=1)
    ap.add_argument("--kd-rows", type=int, default=1200)
    ap.add_argument("--kar-users", type=int, default=None)
    ap.add_argument("--kar-items", type=int, default=None)
    ap.add_argument("--kar-tokens", type=int, default=48)
    ap.add_argument("--kar-sample", default="popular", choices=("random", "popular"))
    ap.add_argument("--requests", type=int, default=300, help="one-row requests timed per model (online cost)")
    ap.add_argument("--rate", type=int, default=0, help="measure the LLM rates on this many rows and stop")
    ap.add_argument("--llm-stage", choices=("kd", "kar"), help="run only this baseline's LLM stage and stop")
    ap.add_argument("--note", action="append", default=[], help="a sentence recorded under the table")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    name = a.name or Path(a.dataset).name
    a.preset = a.preset or name
    torch.set_num_threads(a.threads)
    cfg = build_config(a)
    cmd = "python " + " ".join(shlex.quote(x) for x in ["benchmarks/bench_baselines.py",
                                                         *(argv if argv is not None else sys.argv[1:])])
    if a.teacher is not None:
        link_teacher(a.run_dir, a.teacher)
        cfg.recgen.skip = False
    stage_seconds = run_stages(cfg, a.run_dir, train_recgen=a.teacher is None)
    out = RESULTS_DIR / f"baselines-{name}.json"
    old = json.loads(out.read_text()) if out.exists() else {}
    if a.rate:
        old["rate"] = measure_rate(cfg, a.run_dir, a.rate)
        if out.exists():
            atomic_write_json(out, old)
        else:
            print("[rate] not recorded (no result file yet); pass it with --note", flush=True)
        return
    if a.llm_stage:
        llm_stage_only(cfg, a.run_dir, a.llm_stage)
        return
    models, methods = a.models.split(","), a.methods.split(",")
    rows = train_rows(cfg, a.run_dir, models, methods, a.requests, not a.quiet)
    with merge_lock(out):
        old = json.loads(out.read_text()) if out.exists() else {}  # re-read: another invocation may have written since
        keep = [r for r in old.get("rows", []) if (r["model"], r["variant"]) not in {(m, v) for m in models for v in methods}
                and r["variant"] != "full"]
        rows = keep + rows
        first = rows[0]["protocol"]
        lrows, linfo = llmcf_rows(name, {r["model"] for r in rows}, first)
        pool = linfo.get("pool") or {}
        res = {
            "name": name, "dataset": a.dataset,
            "command": " + ".join(dict.fromkeys(x for x in [old.get("command"), cmd] if x)),
            "machine": B.machine(), "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "protocol": f"split {first.get('split', {}).get('name', first.get('split'))}; {first['early_stopping']}; "
                        f"batch {first['batch_size']}, Adam lr {first['lr']}, weight decay {first['weight_decay']}, "
                        f"every method the same; seeds 0..{a.seeds - 1}; test at the best valid epoch",
            "teacher": f"SmolLM2-135M-Instruct, {teacher_text(a)}, transformers on CPU, {a.llm_threads} thread, batch {a.llm_batch}; KD prompt "
                       f"with {a.history_items} history items; KAR greedy ≤ {a.kar_tokens} new tokens, budget picks {a.kar_sample} users/items",
            "stage_seconds": stage_seconds, "rate": old.get("rate"),
            "models": sorted({r["model"] for r in rows}, key=lambda m: (m != "DIN", m)),
            "rows": rows + [{**r, "llmcf_date": linfo.get("date")} for r in lrows],
            "llmcf_stage": (f"{pool.get('rows')} CoT rows × 2 candidates ≤ 96 tokens + RecGen "
                            f"(recorded {linfo.get('date')}; stage seconds {linfo.get('stage_seconds')})") if lrows else "",
            "notes": list(dict.fromkeys([*old.get("notes", []), *a.note])),
        }
        atomic_write_json(out, json.loads(portable(json.dumps(res))))
        print(f"[bench] wrote {out} and {write_markdown()}", flush=True)


if __name__ == "__main__":
    main()
