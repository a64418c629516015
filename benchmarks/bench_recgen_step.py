"""Cost of one RecGen optimiser step by LoRA placement: every decoder layer vs the top N only (``recgen.lora_layers``).

    nice -n 10 .venv/bin/python benchmarks/bench_recgen_step.py --run ../runs/12/recon-ml-100k --layers all,8,4 \
        --steps 4 --rounds 2

The run directory needs ``data/`` (``llmcf data build``). The RecGen rec prompts of its train split (the ml-100k
preset's, ``--history-items`` items) are tokenised once; each placement wraps a fresh copy of the configured base
model and trains ``--steps`` steps of ``--batch-size`` rows (answer-only loss, the library's own train loop), the
placements alternating ``--rounds`` times so machine load hits them alike. Prints process-CPU and wall seconds per
step (median over rounds) and the trainable parameter count; appends to ``benchmarks/results/recgen.md``. Whether a
placement *learns* as well is a separate question (bench_recgen.py).
"""
from __future__ import annotations

import argparse
import copy
import datetime as dt
import os
import shlex
import sys
import time
from pathlib import Path
from statistics import median

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import cpu_model, ram_suffix  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--preset", default="ml-100k")
    ap.add_argument("--layers", default="all,8,4",
                    help="comma-separated: all or a number of top layers, each optionally +amp (recgen.amp: "
                         "bfloat16 autocast), e.g. all,4,4+amp")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--history-items", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "recgen.md")
    a = ap.parse_args()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmcf.config import load_config
    from llmcf.llm.models import resolve_model
    from llmcf.llm.recgen.data import read_item_texts, read_split, rec_examples, sample_rows, tokenize_example
    from llmcf.llm.recgen.train import prepare_model, train_loop

    torch.set_num_threads(a.threads)
    n_rows = a.steps * a.batch_size
    cfg = load_config(a.preset, [f"recgen.history_items={a.history_items}", f"recgen.num_rec={n_rows}",
                                 f"recgen.batch_size={a.batch_size}", "recgen.micro_batch=2", "recgen.lr=1e-3"])
    base = resolve_model(cfg.llm.model)
    tok = AutoTokenizer.from_pretrained(str(base))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    enc = [e for e in (tokenize_example(tok, x, cfg.recgen.cutoff_len) for x in rec_examples(sample_rows(read_split(a.run, "train"), n_rows, 0), read_item_texts(a.run, cfg.llm.prompt_style), cfg))
           if e is not None][:n_rows]
    mean_len = sum(len(e["input_ids"]) for e in enc) / len(enc)
    placements = [p.strip() for p in a.layers.split(",") if p.strip()]
    res: dict[str, dict] = {p: {"cpu": [], "wall": []} for p in placements}
    load0 = os.getloadavg()[0]
    for _ in range(a.rounds):
        for p in placements:
            model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
            n_layers = model.config.num_hidden_layers
            where, _, amp = p.partition("+")
            if amp not in ("", "amp"):
                raise SystemExit(f"--layers: {p!r}: the only suffix is +amp")
            model = prepare_model(model, "lora", cfg.recgen.lora_r, cfg.recgen.lora_alpha, 0.0,
                                  None if where == "all" else int(where))
            rc = copy.copy(cfg.recgen)
            rc.amp = amp == "amp"
            res[p]["trainable"] = sum(x.numel() for x in model.parameters() if x.requires_grad)
            res[p]["n_layers"] = n_layers
            c0, t0 = time.process_time(), time.perf_counter()
            train_loop(model, tok, enc, rc, a.steps, progress=False)
            res[p]["cpu"].append((time.process_time() - c0) / a.steps)
            res[p]["wall"].append((time.perf_counter() - t0) / a.steps)
            print(f"{p}: {res[p]['cpu'][-1]:.1f} CPU s/step, {res[p]['wall'][-1]:.1f} wall s/step", flush=True)
            del model

    first = placements[0]
    lines = ["", f"## {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC: RecGen step cost by LoRA placement "
                 "(bench_recgen_step.py)", "",
             f"- command: `python benchmarks/bench_recgen_step.py {shlex.join(sys.argv[1:])}`",
             f"- machine: {cpu_model()}, {os.cpu_count()} CPUs{ram_suffix()}, torch {torch.__version__} "
             f"({a.threads} thread); load average at start {load0:.1f} (shared with other jobs)",
             f"- model {base.name} ({res[first]['n_layers']} decoder layers), fp32 weights (+amp: bfloat16 autocast), LoRA r={cfg.recgen.lora_r} on "
             f"every projection; {a.steps} steps x {a.batch_size} rec rows (micro-batch 2, mean "
             f"{mean_len:.0f} tokens per row, history {a.history_items} items); median of {a.rounds} rounds, "
             "placements alternating", "",
             "| LoRA on | trainable params | CPU s/step | wall s/step | CPU vs the first row |", "|---|---|---|---|---|"]
    ref = median(res[first]["cpu"])
    for p in placements:
        c = median(res[p]["cpu"])
        where, _, amp = p.partition("+")
        name = ("all layers" if where == "all" else f"top {where}") + (", bf16 autocast" if amp else "")
        lines.append(f"| {name} | {res[p]['trainable']:,} | {c:.1f} | "
                     f"{median(res[p]['wall']):.1f} | {c / ref:.2f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    with open(a.out, "a") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
