"""Benchmark: the two prompt styles (``llm.prompt_style: full | compact``, issue 13 item 2) — prompt tokens, and the
cost and output of the same engine on both.

    .venv/bin/python benchmarks/bench_prompts.py --dataset ../shared/data/ml-100k [--dataset ../shared/data/amazon-beauty]
        [--token-rows 500] [--prompts 32] [--score-rows 320] [--engine hf] [--threads 1] [--note '...']

1. Tokens (every ``--dataset``): the CoT prompt (its preset's ``cot.history_items``) of ``--token-rows`` seeded
   train rows and the RecGen prompt (``recgen.history_items``) of as many test rows, each through the model's chat
   template, in both styles: mean / median / max and the share saved.
2. Cost and output (the first dataset, ``--prompts`` > 0): one engine worker (bench_generation.py's: end of sequence
   disabled, so every completion has exactly ``--max-new-tokens`` tokens) gets chunks of the same rows in the two
   styles alternately: CoT generation (``--candidates`` sampled completions at temperature 0.6, top-k 50, the same
   seed for both styles) and p(Yes) of ``--score-rows`` RecGen prompts. Records wall and process CPU seconds per
   style, the CoT scores (llmcf's scorer: coherence, completeness, relevance, consistency; echo share) of both
   styles' completions, and the p(Yes) AUC of both (the untuned model: a check, not a quality claim).

Appends to benchmarks/results/prompts.md.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import cpu_model, ram_suffix  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "prompts.md"
STYLES = ("full", "compact")


def load_run(dataset: str):
    """(cfg, train, test, items) of ``dataset`` under its preset (built once into /tmp)."""
    import pandas as pd

    from llmcf.config import load_config
    from llmcf.data.build import build_run_data
    from llmcf.data.loaders import load_dataset

    name = Path(dataset).name
    cfg = load_config(name if name in ("ml-100k", "amazon-beauty") else "ml-100k", [f"data.dataset={dataset}"])
    out = Path(f"/tmp/bench_prompts_{name}")
    if not (out / "data" / "test.parquet").exists():
        build_run_data(load_dataset(cfg.data.dataset, cfg.data.format), cfg.data, out, show_progress=False)
    d = out / "data"
    return cfg, pd.read_parquet(d / "train.parquet"), pd.read_parquet(d / "test.parquet"), \
        pd.read_parquet(d / "items.parquet")


def prompts_for(cfg, train, test, items, n_cot: int, n_rec: int, style: str, seed: int = 0):
    """(CoT chat prompts, CoT user messages, relevance inputs, labels, RecGen chat prompts, RecGen labels) of the
    same seeded rows in ``style`` — built by llmcf's own prompt code (the CoT pool builder and rec_prompts_for)."""
    from llmcf.llm.cot.generate import build_pool
    from llmcf.llm.cot.prompts import system_prompt
    from llmcf.llm.recgen.prompts import item_texts, rec_prompts_for

    c = _with(cfg, {"llm.prompt_style": style, "cot.count": n_cot, "cot.fraction": None, "cot.seed": seed})
    pool = build_pool(train, items, c)
    cot = [[{"role": "system", "content": system_prompt(style)}, {"role": "user", "content": p}]
           for p in pool["prompt"]]
    rows = test.sample(n=min(n_rec, len(test)), random_state=seed)
    rec = rec_prompts_for(rows, item_texts(items, style=style), c.data, c.recgen.history_items, style)
    return cot, list(pool["prompt"]), list(pool["input_text"]), pool["label"].tolist(), rec, rows["label"].to_numpy()


def token_stats(tok, prompts) -> dict:
    import numpy as np

    n = np.array([len(tok(tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True),
                          add_special_tokens=False)["input_ids"]) for p in prompts])
    return {"rows": int(len(n)), "mean": float(n.mean()), "median": float(np.median(n)), "max": int(n.max())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", action="append", required=True)
    ap.add_argument("--token-rows", type=int, default=500)
    ap.add_argument("--prompts", type=int, default=32, help="CoT rows for the cost/output part (0: tokens only)")
    ap.add_argument("--candidates", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--score-rows", type=int, default=320)
    ap.add_argument("--engine", default="hf", choices=("hf", "hf-bf16"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--chunk", type=int, default=8, help="CoT rows per alternation; x8 RecGen rows")
    ap.add_argument("--note", default="")
    a = ap.parse_args()

    import numpy as np
    import torch
    from sklearn.metrics import roc_auc_score
    from transformers import AutoTokenizer

    from llmcf.llm.models import resolve_model

    torch.set_num_threads(a.threads)
    tok = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m"))
    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load0 = os.getloadavg()[0]
    lines = [f"## {started}", "",
             "- command: `python benchmarks/bench_prompts.py " + " ".join(
                 f"'{x}'" if " " in x else x for x in sys.argv[1:]) + "`",
             f"- machine: {cpu_model()}, {os.cpu_count()} CPUs{ram_suffix()}, torch {torch.__version__}, "
             f"load average at start {load0:.1f}" + (f"; {a.note}" if a.note else ""),
             "- tokens: the model's chat template applied (SmolLM2-135M-Instruct tokenizer); the same seeded rows in "
             "both styles", "",
             "| dataset | prompt | style | rows | mean tokens | median | max | saved vs full |", "|---|---|---|---|---|---|---|---|"]
    first, examples = None, []
    for ds in a.dataset:
        cfg, train, test, items = load_run(ds)
        got = {s: prompts_for(cfg, train, test, items, a.token_rows, a.token_rows, s) for s in STYLES}
        if first is None:
            first = (cfg, train, test, items)
        for kind, idx, hist in (("CoT", 0, cfg.cot.history_items), ("RecGen", 4, cfg.recgen.history_items)):
            stats = {s: token_stats(tok, got[s][idx]) for s in STYLES}
            for s in STYLES:
                st = stats[s]
                saved = "–" if s == "full" else f"{1 - st['mean'] / stats['full']['mean']:.0%}"
                lines.append(f"| {Path(ds).name} | {kind} ({hist} history items) | {s} | {st['rows']} | "
                             f"{st['mean']:.0f} | {st['median']:.0f} | {st['max']} | {saved} |")
                print(lines[-1], flush=True)
        ex = got["compact"][4][0]
        examples += ["", f"Compact RecGen prompt, {Path(ds).name}, first row:", "", "```",
                     tok.apply_chat_template(ex, tokenize=False, add_generation_prompt=True).strip(), "```"]
    lines += examples + [""]

    if a.prompts > 0:
        from bench_generation import worker

        from llmcf.llm.backends.base import SamplingParams
        from llmcf.llm.cot.score import score_candidates
        from llmcf.embed import make_encoder

        cfg, train, test, items = first
        data = {s: prompts_for(cfg, train, test, items, a.prompts, a.score_rows, s) for s in STYLES}
        params = SamplingParams(n=a.candidates, temperature=0.6, top_k=50, top_p=1.0,
                                max_new_tokens=a.max_new_tokens, seed=0)
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=worker, args=(a.engine, a.threads, "", child))
        proc.start()
        parent.recv()
        cost = {s: {"cot_wall": 0.0, "cot_cpu": 0.0, "cot_tokens": 0, "rec_wall": 0.0, "rec_cpu": 0.0}
                for s in STYLES}
        cands = {s: [] for s in STYLES}
        p_yes = {s: [] for s in STYLES}
        for b in range(0, a.prompts, a.chunk):
            for s in (STYLES if (b // a.chunk) % 2 == 0 else STYLES[::-1]):
                parent.send(("gen", data[s][0][b:b + a.chunk], params))
                res = parent.recv()[1]
                cost[s]["cot_wall"] += res["wall"]
                cost[s]["cot_cpu"] += res["cpu"]
                cost[s]["cot_tokens"] += res["new_tokens"]
                cands[s].extend(res.get("outputs", []))
            print(f"[cot] {min(b + a.chunk, a.prompts)}/{a.prompts}", flush=True)
        step = a.chunk * 8
        for b in range(0, a.score_rows, step):
            for s in (STYLES if (b // step) % 2 == 0 else STYLES[::-1]):
                parent.send(("score", data[s][4][b:b + step]))
                res = parent.recv()[1]
                cost[s]["rec_wall"] += res["wall"]
                cost[s]["rec_cpu"] += res["cpu"]
                p_yes[s].extend(res["p"])
            print(f"[p(Yes)] {min(b + step, a.score_rows)}/{a.score_rows}", flush=True)
        parent.send(("stop",))
        parent.recv()
        proc.join()

        enc = make_encoder(Path("/tmp/bench_prompts_encoder"), cfg)
        lines += [f"Cost and output, {Path(a.dataset[0]).name}: engine {a.engine} ({a.threads} thread), one worker "
                  f"process, the styles alternating every {a.chunk} CoT rows / {step} p(Yes) rows; CoT: {a.prompts} "
                  f"rows × {a.candidates} candidates × {a.max_new_tokens} new tokens (EOS disabled); p(Yes): "
                  f"{a.score_rows} test rows.", "",
                  "| style | CoT wall s | CoT CPU s | CoT rows/s (wall) | CoT score mean ± std | echo share mean | "
                  "p(Yes) wall s | p(Yes) CPU s | p(Yes) rows/s (wall) | p(Yes) AUC |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for s in STYLES:
            _, msgs, inputs, labels, _, rlabels = data[s]
            flat = [c for row in cands[s] for c in row]
            k = a.candidates
            sc = score_candidates(flat, [m for m in msgs for _ in range(k)], [t for t in inputs for _ in range(k)],
                                  [y for y in labels for _ in range(k)], _with(cfg, {"llm.prompt_style": s}), enc)
            c = cost[s]
            auc = roc_auc_score(rlabels[:len(p_yes[s])], p_yes[s]) if len(set(rlabels[:len(p_yes[s])])) > 1 else float("nan")
            score = f"{sc['score'].mean():.3f} ± {sc['score'].std():.3f}"
            echo = f"{sc['echo_share'].mean():.3f}"
            lines.append(f"| {s} | {c['cot_wall']:.1f} | {c['cot_cpu']:.1f} | {a.prompts / c['cot_wall']:.3f} | "
                         f"{score} | {echo} | {c['rec_wall']:.1f} | {c['rec_cpu']:.1f} | "
                         f"{a.score_rows / c['rec_wall']:.2f} | {auc:.4f} |")
            print(lines[-1], flush=True)
        f, cpt = cost["full"], cost["compact"]
        lines += ["", f"compact / full: CoT CPU {cpt['cot_cpu'] / f['cot_cpu']:.2f}× (wall "
                      f"{cpt['cot_wall'] / f['cot_wall']:.2f}×), p(Yes) CPU {cpt['rec_cpu'] / f['rec_cpu']:.2f}× "
                      f"(wall {cpt['rec_wall'] / f['rec_wall']:.2f}×); p(Yes) correlation between the styles "
                      f"{np.corrcoef(p_yes['full'], p_yes['compact'])[0, 1]:.3f}."]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    head = "" if RESULTS.exists() else ("# Prompt styles\n\nWritten by `benchmarks/bench_prompts.py`: `llm.prompt_style` "
                                        "full vs compact (issue 13 item 2).\n\n")
    with open(RESULTS, "a") as fh:
        fh.write(head + "\n".join(lines) + "\n\n")
    print(f"appended to {RESULTS}")


def _with(cfg, values: dict):
    from llmcf.tune import apply_params

    return apply_params(cfg, values)


if __name__ == "__main__":
    main()
