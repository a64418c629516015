"""Benchmark: real CoT generation (SmolLM2-135M, CPU), scoring and embedding on a small ml-100k pool.

    .venv/bin/python benchmarks/bench_cot.py [--rows 16] [--max-new-tokens 96] [--candidates 2] [--run /tmp/bench_cot]

Builds a reduced ml-100k run directory (demo preset data section, 40 users), generates label-conditioned CoTs for
``--rows`` train rows with the base model (no RecGen tuning), scores/selects them with MiniLM, embeds items and
CoTs, and prints rows/s, tokens/s, the selection statistics and a few kept CoTs.

Recorded 2026-11-22, this 2-core CPU machine *shared with 5-6 other busy processes* (load average ~9), defaults:
generation 16 rows x 2 candidates x 96 tokens in 1401 s (2.1 new tok/s, 0.011 rows/s; the uncontended figure in
DESIGN.md §5 is ~37 tok/s); scoring 32 candidates 12.9 s (MiniLM load included); embedding 1,682 items + 16 CoTs 64 s
(26 texts/s). Selection: 16/16 rows kept, 1 candidate zeroed as an echo (it copied the prompt's history list),
mean kept score 0.59 (coherence 0.73, completeness 0.64, relevance 0.44, consistency 0.57). The untuned 135M model's
CoTs are generic ("the user's profile suggests that they enjoy a particular type of movies...") and sometimes
contradict a negative label.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--candidates", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--run", type=Path, default=Path("/tmp/bench_cot"))
    a = ap.parse_args()

    import pandas as pd

    from llmcf.config import load_config
    from llmcf.data.build import build_run_data
    from llmcf.data.loaders import load_dataset
    from llmcf.embed import run_embed
    from llmcf.llm.cot.generate import run_cot_generate
    from llmcf.llm.cot.score import run_cot_score

    cfg = load_config("demo", [f"data.max_users=40", f"cot.count={a.rows}", "cot.fraction=null",
                               f"cot.max_new_tokens={a.max_new_tokens}", f"cot.candidates={a.candidates}",
                               f"cot.shard_size={a.batch_size}", f"llm.batch_size={a.batch_size}",
                               "recgen.skip=true"])
    if not (a.run / "data" / "train.parquet").exists():
        build_run_data(load_dataset(cfg.data.dataset, cfg.data.format), cfg.data, a.run)
    t0 = time.perf_counter()
    run_cot_generate(a.run, cfg)
    t_gen = time.perf_counter() - t0
    t0 = time.perf_counter()
    run_cot_score(a.run, cfg)
    t_score = time.perf_counter() - t0
    t0 = time.perf_counter()
    run_embed(a.run, cfg)
    t_embed = time.perf_counter() - t0
    manifest = json.loads((a.run / "cot" / "manifest.json").read_text())
    meta = json.loads((a.run / "cot" / "score_meta.json").read_text())
    sel = pd.read_parquet(a.run / "cot" / "selected.parquet")
    print(json.dumps({"generate_s": round(t_gen, 1), "last_run": manifest["last_run"], "score_s": round(t_score, 1),
                      "embed_s": round(t_embed, 1), "selection": meta}, indent=2))
    for r in sel.head(3).itertuples():
        print(f"\n--- {r.key} label={r.label} score={r.score:.3f} (coh {r.coherence:.2f}, comp {r.completeness:.2f}, "
              f"rel {r.relevance:.2f}, cons {r.consistency:.2f})\n{r.cot}")


if __name__ == "__main__":
    main()
