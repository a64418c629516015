"""Benchmark: batched hf generation vs a one-prompt-at-a-time loop, same model, same CoT prompts.

    .venv/bin/python benchmarks/bench_generation.py [--prompts 16] [--batch-size 8] [--max-new-tokens 64]
        [--model smollm2-135m] [--threads 2]

Prompts are the real label-conditioned CoT prompts (llmcf.llm.cot.prompts) for the first ``--prompts`` ml-100k
train rows with 10 history items. Both runs are greedy with a fixed max_new_tokens, so the work is the same; the
loop calls HFBackend.generate with batch size 1 (the way naive code calls model.generate per row). Prints and
appends to benchmarks/results/generation.md: new tokens/s, rows/s, speed-up and peak RSS.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

RESULTS = Path(__file__).resolve().parent / "results" / "generation.md"


def cot_prompts(n: int, history_items: int = 10):
    import pandas as pd

    from llmcf.config import load_config
    from llmcf.data.build import build_run_data
    from llmcf.data.loaders import load_dataset
    from llmcf.llm.cot.prompts import build_cot_prompt
    from llmcf.llm.recgen.prompts import item_texts

    run = Path("/tmp/bench_generation_data")
    cfg = load_config("ml-100k")
    if not (run / "data" / "train.parquet").exists():
        build_run_data(load_dataset(cfg.data.dataset, cfg.data.format), cfg.data, run, show_progress=False)
    train = pd.read_parquet(run / "data" / "train.parquet")
    texts = item_texts(pd.read_parquet(run / "data" / "items.parquet"))
    rows = train[train["history"].map(len) >= history_items].head(n)
    return [build_cot_prompt([texts[i] for i in list(h)[-history_items:]], texts[t], int(y), cfg.data)
            for h, t, y in zip(rows["history"], rows["item_id"], rows["label"])]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()

    import torch

    from llmcf.llm.backends.base import SamplingParams
    from llmcf.llm.backends.hf import HFBackend, render_chat
    from llmcf.llm.models import resolve_model

    torch.set_num_threads(a.threads)
    prompts = cot_prompts(a.prompts)
    backend = HFBackend(resolve_model(a.model), batch_size=a.batch_size, device="cpu")
    lens = [len(backend.tokenizer.encode(render_chat(backend.tokenizer, p), add_special_tokens=False)) for p in prompts]
    # Force exactly max_new_tokens per row so both runs do identical work (no early EOS in either).
    backend.eos_ids = []
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=a.max_new_tokens)

    backend.generate(prompts[:1], SamplingParams(n=1, temperature=0.0, max_new_tokens=4))  # warm-up
    t0 = time.perf_counter()
    backend.generate(prompts, params)
    batched = dict(backend.last_stats, wall=time.perf_counter() - t0)

    backend.batch_size = 1
    t0 = time.perf_counter()
    new_tokens = 0
    for p in prompts:
        backend.generate([p], params)
        new_tokens += backend.last_stats["new_tokens"]
    loop_wall = time.perf_counter() - t0
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    tb, tl = batched["new_tokens"] / batched["wall"], new_tokens / loop_wall
    lines = [f"\n## Batched vs one-at-a-time generation ({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC)\n",
             f"- command: `{' '.join([Path(sys.executable).name, *sys.argv])}`",
             f"- machine: {os.cpu_count()} CPUs, torch {torch.__version__}, {a.threads} threads "
             "(shared with other jobs while this ran)",
             f"- model {a.model}, {len(prompts)} CoT prompts of {min(lens)}-{max(lens)} tokens "
             f"(mean {sum(lens) / len(lens):.0f}), greedy, {a.max_new_tokens} new tokens each\n",
             "| mode | new tokens | wall s | tokens/s | rows/s |", "|---|---|---|---|---|",
             f"| batched (batch {a.batch_size}) | {batched['new_tokens']} | {batched['wall']:.1f} | {tb:.1f} | "
             f"{len(prompts) / batched['wall']:.2f} |",
             f"| one at a time | {new_tokens} | {loop_wall:.1f} | {tl:.1f} | {len(prompts) / loop_wall:.2f} |",
             f"\nSpeed-up {tb / tl:.2f}x; peak RSS {rss_mb:.0f} MB.\n"]
    text = "\n".join(lines)
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS, "a") as f:
        if f.tell() == 0:
            f.write("# Generation benchmark results\n")
        f.write(text)


if __name__ == "__main__":
    main()
