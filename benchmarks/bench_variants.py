"""Study of the in-context module's variants that need no LLM (issue 12, studies a–b, the no-LLM part): one CTR
backbone on a real dataset, the backbone alone against LLM-CF *w/o CoT* with

    nocot-bank     the default bank: ``--bank-rows`` train rows sampled at random (seeded), as many as the CoT bank
                   of the README's results (240), K = 4 balanced, concat fusion
    nocot-hybrid   the hybrid bank (``retrieval.bank: hybrid``): every train row is an in-context candidate
    nocot-safe     the default bank with safe fusion (``ict.fusion: residual``: starts equal to the backbone)
    (and, with ``--variants``, hybrid + safe, similarity input, K = 2 / 8, unbalanced, history-only keys; the
    reconstruction weight is not among them: w/o CoT has no reconstruction loss, so it needs the full variant)

The w/o CoT variant reads no CoT text, so the bank rows here carry none (their CoT slot is a placeholder sentence the
variant never reads): what differs between the rows is only which training rows can be retrieved and how the ICT
enters the backbone. The full variant (with CoTs) needs the LLM stages: give ``--cot-run R``, a run of the same preset
and dataset where ``llmcf cot generate`` and ``llmcf cot score`` wrote real CoTs, and pick the ``*-cotbank`` variants
(full, full with reconstruction weight 0.1 / 0, and w/o CoT over exactly those rows).

The residual probe (``*-frozen``): the trained base model of the same seed kept frozen and only the in-context module
learning its residual; its controls ``textemb-frozen`` (the item-text vectors alone on the residual, no retrieval) and
``boost-frozen`` (a second backbone on the residual: capacity, no text) separate retrieval from text from boosting.

    nice -n 10 python benchmarks/bench_variants.py --dataset ../shared/data/ml-100k --preset ml-100k --seeds 3

Every variant: same split, batch, lr, early stopping (valid AUC, patience), ``--max-epochs``; seeds 0..n-1; test is
read once per seed at the best validation epoch. Each variant trains in its own folder of the run directory (links
to the shared data/embed/cot), so their seeds never overwrite each other. Writes
``benchmarks/results/variants-<name>.json`` and ``.md`` after every seed (partial tables while it runs): test
AUC / LogLoss mean ± std, valid AUC, s/epoch, wall and process CPU seconds of the last seed, and the cold /
popularity slices. Seeds run seed-major (seed 0 of every variant first), so a cut-off run still compares them all.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import cpu_model, ram_suffix  # noqa: E402

from llmcf.io import atomic_write_json, atomic_write_text  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
FROZEN = {"ict.fusion": "residual", "ict.warm_start": True, "ict.freeze_backbone": True}
VARIANTS = {
    "base": {"ict": False, "sets": {}},
    "nocot-bank": {"ict": True, "sets": {}},
    "nocot-hybrid": {"ict": True, "sets": {"retrieval.bank": "hybrid"}},
    "nocot-safe": {"ict": True, "sets": {"ict.fusion": "residual"}},
    # more switches, one at a time against nocot-bank (pick them with --variants)
    "nocot-hybrid-safe": {"ict": True, "sets": {"retrieval.bank": "hybrid", "ict.fusion": "residual"}},
    "nocot-sim": {"ict": True, "sets": {"ict.sim_input": True}},
    "nocot-hybrid-sim": {"ict": True, "sets": {"retrieval.bank": "hybrid", "ict.sim_input": True}},
    "nocot-k2": {"ict": True, "sets": {"retrieval.k": 2}},
    "nocot-k8": {"ict": True, "sets": {"retrieval.k": 8}},
    "nocot-unbalanced": {"ict": True, "sets": {"retrieval.balanced": False}},
    "nocot-history-only": {"ict": True, "sets": {"retrieval.history_weight": 1.0, "retrieval.target_weight": 0.0}},
    "nocot-target-only": {"ict": True, "sets": {"retrieval.history_weight": 0.0, "retrieval.target_weight": 1.0}},
    # learning-rate decay on plateau (FuxiCTR's default, worth +0.005 AUC to DCN alone: benchmarks/results/fuxictr.md)
    # on both sides: does the in-context module still add anything to a backbone trained with it?
    "base-decay": {"ict": False, "sets": {"train.plateau_lr_factor": 0.1}},
    "nocot-bank-decay": {"ict": True, "sets": {"train.plateau_lr_factor": 0.1}},
    # with decay, the ICT still peaks at epoch 2-4 while the backbone improves to epoch 7-11: a 10x lower ICT rate,
    # and safe fusion (zero-initialised residual), each on top of decay
    "nocot-bank-decay-ictlr": {"ict": True, "sets": {"train.plateau_lr_factor": 0.1, "train.ict_lr": 0.001}},
    "nocot-safe-decay": {"ict": True, "sets": {"train.plateau_lr_factor": 0.1, "ict.fusion": "residual"}},
    # a constant rate (the paper's rule; the ml-100k preset decays since 2026-12-04)
    "base-constant": {"ict": False, "sets": {"train.plateau_lr_factor": None}},
    "nocot-bank-constant": {"ict": True, "sets": {"train.plateau_lr_factor": None}},
    # study (a), bank size: the default bank with more random train rows (own cot/ and embed/ in its folder)
    "nocot-bank1k": {"ict": True, "sets": {}, "bank_rows": 1000},
    "nocot-bank4k": {"ict": True, "sets": {}, "bank_rows": 4000},
    # study (a) with real CoTs (``--cot-run``: a run of the same preset whose ``llmcf cot generate`` + ``cot score``
    # wrote cot/selected.parquet): the full variant over that bank, its reconstruction weight, and w/o CoT over the
    # very same rows (what the CoT text adds beyond which rows are retrievable)
    "full-cotbank": {"ict": True, "variant": "full", "sets": {}, "cot_bank": True},
    "full-cotbank-r01": {"ict": True, "variant": "full", "sets": {"ict.recon_weight": 0.1}, "cot_bank": True},
    "full-cotbank-r0": {"ict": True, "variant": "full", "sets": {"ict.recon_weight": 0.0}, "cot_bank": True},
    "nocot-cotbank": {"ict": True, "sets": {}, "cot_bank": True},
    # safe fusion warm-started from the trained backbone of the same seed (``ict.warm_start``; the study must run
    # ``base`` first: its weights are linked in) — by construction never below the backbone on validation
    "nocot-safe-warm": {"ict": True, "sets": {"ict.fusion": "residual", "ict.warm_start": True}, "warm": True},
    "nocot-hybrid-safe-warm": {"ict": True, "warm": True,
                               "sets": {"retrieval.bank": "hybrid", "ict.fusion": "residual", "ict.warm_start": True}},
    "full-cotbank-warm": {"ict": True, "variant": "full", "cot_bank": True, "warm": True,
                          "sets": {"ict.fusion": "residual", "ict.warm_start": True}},
    # the residual probe (``ict.freeze_backbone``): the trained backbone of the same seed kept exactly, only the ICT
    # learns on its residual, so whatever moves validation or test is the in-context module's own contribution
    "nocot-frozen": {"ict": True, "warm": True, "sets": FROZEN},
    "nocot-hybrid-frozen": {"ict": True, "warm": True, "sets": {**FROZEN, "retrieval.bank": "hybrid"}},
    # unbalanced: the neighbours' labels are free to say how liked the target is (a k-NN signal beside the backbone)
    "nocot-hybrid-unbal-frozen": {"ict": True, "warm": True,
                                  "sets": {**FROZEN, "retrieval.bank": "hybrid", "retrieval.balanced": False}},
    "full-cotbank-frozen": {"ict": True, "variant": "full", "cot_bank": True, "warm": True, "sets": FROZEN},
    "full-cotbank-r0-frozen": {"ict": True, "variant": "full", "cot_bank": True, "warm": True,
                               "sets": {**FROZEN, "ict.recon_weight": 0.0}},
    "nocot-cotbank-frozen": {"ict": True, "cot_bank": True, "warm": True, "sets": FROZEN},
    # study (a) inside the probe: more random train rows in the bank (its own cot/ and embed/, as nocot-bank1k/4k)
    "nocot-bank1k-frozen": {"ict": True, "warm": True, "sets": FROZEN, "bank_rows": 1000},
    "nocot-bank4k-frozen": {"ict": True, "warm": True, "sets": FROZEN, "bank_rows": 4000},
    # unbalanced over the 4k bank: the neighbours' label mix is free to be a k-NN estimate for the query
    "nocot-bank4k-unbal-frozen": {"ict": True, "warm": True, "bank_rows": 4000,
                                  "sets": {**FROZEN, "retrieval.balanced": False}},
    # the architecture-matched control of the probe: the same frozen base, ICT, bank and label balance, with the
    # in-context rows drawn at random per query instead of by similarity (``retrieval.selection: random``)
    "nocot-random-frozen": {"ict": True, "warm": True, "sets": {**FROZEN, "retrieval.selection": "random"}},
    # the probe's controls, same frozen base and the same residual set-up, no retrieval: the item-text vectors alone
    # (the target's and the history mean, which the ICT also reads) through a zero-initialised head, and a second
    # backbone of the same kind on the residual (extra capacity, no text: one round of boosting)
    "textemb-frozen": {"ict": False, "warm": True, "sets": {"baseline.name": "textemb", "baseline.residual": True}},
    "boost-frozen": {"ict": False, "warm": True, "sets": {"baseline.name": "boost"}},
}
DEFAULT_VARIANTS = ("base", "nocot-bank", "nocot-hybrid", "nocot-safe")
PLACEHOLDER = "no chain of thought: the w/o CoT variant does not read this text"


def prepare(cfg, run: Path, bank_rows: int, seed: int) -> None:
    """data build, a CoT-free bank sample (cot/selected.parquet) and the embeddings, each once."""
    from llmcf.data.build import build_run_data
    from llmcf.data.loaders import load_dataset

    if not (run / "data" / "vocab.json").exists():
        build_run_data(load_dataset(cfg.data.dataset, cfg.data.format), cfg.data, run)
    sample_bank(cfg, run, run, bank_rows, seed)


def embed_variant(cfg, run: Path, dest: Path) -> None:
    """Embed ``dest``'s items and bank CoTs through ``run``'s embedding cache, so the item texts the study's run has
    embedded already are read back instead of encoded again (only new texts, e.g. real CoTs, are encoded)."""
    from dataclasses import replace

    from llmcf.embed import run_embed
    from llmcf.rundir import RunDir

    shared = RunDir(run).embed_cache
    if cfg.embed.cache_dir is None and shared.exists():
        cfg = replace(cfg, embed=replace(cfg.embed, cache_dir=str(shared)))
    run_embed(dest, cfg)


def sample_bank(cfg, run: Path, dest: Path, bank_rows: int, seed: int) -> None:
    """``dest``/cot/selected.parquet: ``bank_rows`` train rows of ``run`` (seeded), no CoT text; then its embeddings."""
    from llmcf.io import write_parquet

    sel = dest / "cot" / "selected.parquet"
    if not sel.exists():
        train = pd.read_parquet(run / "data" / "train.parquet")
        rows = train.sample(n=min(bank_rows, len(train)), random_state=seed).reset_index(drop=True)
        rows = rows.assign(cot=PLACEHOLDER, score=0.0)
        write_parquet(rows[["user_id", "pos", "item_id", "label", "history", "cot", "score"]], sel)
    if not (dest / "embed" / "cot.npy").exists():
        embed_variant(cfg, run, dest)


def check_cot_run(run: Path, cot_run: Path) -> None:
    """``cot_run`` must hold scored CoTs over the same train split as ``run`` (same rows, same order)."""
    sel = cot_run / "cot" / "selected.parquet"
    if not sel.exists():
        raise SystemExit(f"--cot-run {cot_run}: no cot/selected.parquet (run `llmcf cot generate` and `llmcf cot "
                         f"score` on it first)")
    mine, theirs = (pd.read_parquet(d / "data" / "train.parquet") for d in (run, cot_run))
    if not mine.equals(theirs):
        raise SystemExit(f"--cot-run {cot_run}: its data/train.parquet differs from {run}'s (build both with the "
                         f"same preset and dataset)")


def view(cfg, run: Path, name: str, cot_run: Path | None = None, folder: str | None = None) -> Path:
    """<run>/variants/<folder or name>/ with relative links to the shared stage outputs (its own bank if the variant
    sets ``bank_rows``; the CoT run's cot/ and its own embeddings of them if it sets ``cot_bank``)."""
    v = run / "variants" / (folder or name)
    v.mkdir(parents=True, exist_ok=True)
    spec = VARIANTS[name]
    if spec.get("cot_bank") and cot_run is None:
        raise SystemExit(f"variant {name} needs --cot-run (a run with real CoTs)")
    links = {"data": run / "data"}
    if spec.get("cot_bank"):
        links["cot"] = cot_run / "cot"
    elif "bank_rows" not in spec:
        links.update(embed=run / "embed", cot=run / "cot")
    for sub, target in links.items():
        if not (v / sub).exists():
            os.symlink(os.path.relpath(target, v), v / sub, target_is_directory=True)
    if "bank_rows" in spec:
        sample_bank(cfg, run, v, spec["bank_rows"], seed=0)
    elif spec.get("cot_bank") and not (v / "embed" / "cot.npy").exists():
        embed_variant(cfg, run, v)
    return v


def link_base_model(run: Path, d: Path, model: str, seeds: int) -> None:
    """``d``/models/``model`` -> the ``base`` variant's trained backbone (what ``ict.warm_start`` loads)."""
    base = run / "variants" / "base" / "models" / model
    missing = [s for s in range(seeds) if not (base / f"seed_{s}" / "model.safetensors").exists()]
    if missing:
        raise SystemExit(f"a warm-started variant needs the base {model} of seeds {missing} in {base}: put `base` "
                         f"before it in --variants")
    link = d / "models" / model
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(base, link.parent), link, target_is_directory=True)


def warm_folder(name: str, warm_sets: dict) -> str | None:
    """The folder of a warm-started variant trained with ``--warm-set`` values (None: the variant's own name), so a
    second protocol never retrains over the first one's seeds: ``nocot-frozen@train.min_epochs=6``."""
    if not warm_sets or not VARIANTS[name].get("warm"):
        return None
    return name + "@" + ",".join(f"{k}={v}" for k, v in sorted(warm_sets.items()))


def run_variant(cfg, run: Path, name: str, model: str, seeds: int, cot_run: Path | None = None,
                warm_sets: dict | None = None) -> dict:
    from llmcf.config import save_config
    from llmcf.retrieval.stage import run_retrieve
    from llmcf.slices import SliceTable, load_predictions
    from llmcf.train.stage import run_train
    from llmcf.tune import apply_params

    spec = VARIANTS[name]
    extra = (warm_sets or {}) if spec.get("warm") else {}
    vcfg = apply_params(cfg, {**spec["sets"], **extra, "ict.enabled": spec["ict"],
                              "ict.variant": spec.get("variant", "no_cot")})
    d = view(vcfg, run, name, cot_run, warm_folder(name, extra))
    save_config(vcfg, d / "config.yaml")
    if spec.get("warm"):
        link_base_model(run, d, model, seeds)
    t0, c0 = time.perf_counter(), time.process_time()
    if spec["ict"]:
        meta = d / "retrieval" / "meta.json"
        if not meta.exists():
            run_retrieve(d, vcfg, progress=False)
    vcfg.train.seeds = seeds  # seeds 0..seeds-1; the earlier ones are read back from their result.json
    summary = run_train(d, vcfg, model, progress=False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    table = SliceTable(d)
    preds = load_predictions(d / "models" / summary["tag"], len(table.labels))
    results = [json.loads((d / "models" / summary["tag"] / f"seed_{s}" / "result.json").read_text())
               for s in summary["seeds"]]
    rmeta = json.loads((d / "retrieval" / "meta.json").read_text()) if spec["ict"] else {}
    return {"variant": name, "tag": summary["tag"], "seeds": summary["seeds"], "test": summary["test"],
            "valid": summary["valid"], "seconds_per_epoch": summary["seconds_per_epoch"],
            "best_epochs": [r["best_epoch"] for r in results],
            "per_seed": {"seed": [r["seed"] for r in results], "test_auc": [r["test"]["auc"] for r in results],
                         "test_logloss": [r["test"]["logloss"] for r in results],
                         "valid_auc": [r["valid"]["auc"] for r in results]},
            "wall_seconds_last_seed": round(wall, 1),
            "cpu_seconds_last_seed": round(cpu, 1), "bank_rows": rmeta.get("bank_rows"),
            "slices": table.model(preds), "edges": {k: v["edges"] for k, v in table.kinds.items()},
            "finished": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def fmt(ms: dict, d: int = 4) -> str:
    return f"{ms['mean']:.{d}f} ± {ms['std']:.{d}f}" if ms.get("n", 1) > 1 else f"{ms['mean']:.{d}f}"


def versus(row: dict, base: dict | None, metric: str = "auc") -> str:
    """test ``metric`` of ``row`` minus the base's, and whether it exceeds 2 standard errors of the difference
    (SE = sqrt(s1²/n1 + s2²/n2), sample std over seeds); '–' without two seeds on both sides."""
    if base is None or row is base:
        return "–"
    a, b = row["test"][metric], base["test"][metric]
    diff = a["mean"] - b["mean"]
    if a.get("n", 1) < 2 or b.get("n", 1) < 2:
        return f"{diff:+.4f} (n<2)"
    se = (a["std"] ** 2 / a["n"] + b["std"] ** 2 / b["n"]) ** 0.5
    return f"{diff:+.4f} ({beyond(diff, se)}, SE {se:.4f})"


def beyond(diff: float, se: float) -> str:
    """'> 2 SE' or '< 2 SE'; a difference that is 0.0000 at the tables' four decimals is never beyond (identical
    per-seed results give SE 0, and float noise in the last bits must not read as significant)."""
    return "> 2 SE" if abs(diff) >= 5e-5 and abs(diff) > 2 * se else "< 2 SE"


def paired(row: dict, base: dict, key: str = "test_auc") -> dict | None:
    """Per-seed differences ``row`` − ``base`` over the seeds both have (a warm-started variant starts from the same
    seed's base model, so its seeds pair with the base's): the differences, their mean, sample std and
    SE = std/√n; None when fewer than two seeds pair or a record predates per-seed values."""
    a, b = row.get("per_seed"), base.get("per_seed")
    if not a or not b:
        return None
    theirs = dict(zip(b["seed"], b[key]))
    diffs = [v - theirs[s] for s, v in zip(a["seed"], a[key]) if s in theirs]
    if len(diffs) < 2:
        return None
    mean = sum(diffs) / len(diffs)
    std = (sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1)) ** 0.5
    return {"diffs": diffs, "mean": mean, "std": std, "se": std / len(diffs) ** 0.5}


def markdown(rec: dict) -> str:
    # the reference row: ``base`` when the study has it, else its first variant (e.g. base-decay)
    base = next((r for r in rec["rows"] if r["variant"] == "base"), rec["rows"][0] if rec["rows"] else None)
    ref = base["variant"] if base else "base"
    lines = [f"# Variant study: {rec['name']}", "", f"- command: `{rec['command']}`",
             f"- machine: {rec['machine']}", f"- started: {rec['started']}", f"- protocol: {rec['protocol']}", "",
             f"| variant | bank rows | test AUC | Δ AUC vs {ref} | test LogLoss | Δ LogLoss vs {ref} | valid AUC | "
             "best epochs | s/epoch | last seed wall s | CPU s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rec["rows"]:
        lines.append(f"| {r['variant']} | {r['bank_rows'] or '–'} | {fmt(r['test']['auc'])} | {versus(r, base)} | "
                     f"{fmt(r['test']['logloss'])} | {versus(r, base, 'logloss')} | {fmt(r['valid']['auc'])} | "
                     f"{r['best_epochs']} | "
                     f"{r['seconds_per_epoch']['mean']:.1f} | {r['wall_seconds_last_seed']} | "
                     f"{r['cpu_seconds_last_seed']} |")
    pairs = [(r, paired(r, base), paired(r, base, "valid_auc"), paired(r, base, "test_logloss"))
             for r in rec["rows"] if base and r is not base and VARIANTS.get(r["variant"], {}).get("warm")]
    pairs = [p for p in pairs if p[1] is not None]
    if pairs:
        lines += ["", f"Paired by seed (a warm-started variant starts from the same seed's {ref} model; SE = std of the "
                      "per-seed differences / √n):", "",
                  f"| variant | Δ test AUC per seed | mean ± std | vs 2 SE | Δ valid AUC per seed | Δ test LogLoss, "
                  "mean ± std |", "|---|---|---|---|---|---|"]
        for r, t, v, ll in pairs:
            lines.append(f"| {r['variant']} | {', '.join(f'{d:+.4f}' for d in t['diffs'])} | {t['mean']:+.4f} ± "
                         f"{t['std']:.4f} | {beyond(t['mean'], t['se'])} (SE "
                         f"{t['se']:.4f}) | {', '.join(f'{d:+.4f}' for d in v['diffs'])} | {ll['mean']:+.4f} ± "
                         f"{ll['std']:.4f} |")
    if rec["rows"]:
        for kind in ("user", "item"):
            first = rec["rows"][0]["slices"][kind]
            lines += ["", f"Test AUC by {kind} training rows (edges {rec['rows'][0]['edges'][kind]}; mean over seeds):",
                      "", "| bucket | rows | " + " | ".join(r["variant"] for r in rec["rows"]) + " |",
                      "|---|---|" + "---|" * len(rec["rows"])]
            for j, b in enumerate(first):
                vals = " | ".join("–" if r["slices"][kind][j]["auc"] is None else f"{r['slices'][kind][j]['auc']:.4f}"
                                  for r in rec["rows"])
                lines.append(f"| {b['bucket']} | {b['rows']} | {vals} |")
    pending = [v for v in rec["variants"] if v not in {r["variant"] for r in rec["rows"]}]
    short = [f"{r['variant']} ({len(r['seeds'])} of {rec['seeds']} seeds)" for r in rec["rows"]
             if len(r["seeds"]) < rec["seeds"]]
    if pending or short:
        lines += ["", f"Partial: {', '.join(short + [f'{v} (not run yet)' for v in pending])}."]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--preset", default="ml-100k")
    ap.add_argument("--model", default="DIN")
    ap.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                    help=f"comma-separated, from: {', '.join(VARIANTS)}")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--max-epochs", type=int, default=10)
    ap.add_argument("--patience", type=int, default=2)
    ap.add_argument("--bank-rows", type=int, default=240)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--run-dir", type=Path, default=Path("runs/bench-variants-ml-100k"))
    ap.add_argument("--name", default=None)
    ap.add_argument("--cot-run", type=Path, default=None,
                    help="a run of the same preset with real CoTs (cot/selected.parquet) for the *-cotbank variants")
    ap.add_argument("--warm-set", action="append", default=[], metavar="KEY=VALUE",
                    help="a config value for the warm-started variants only (e.g. train.min_epochs=6 for the residual "
                         "probe and its controls); the base model stays as trained. Their seeds train in their own "
                         "folders (variants/<name>@KEY=VALUE), beside the default protocol's")
    ap.add_argument("--refresh", action="store_true",
                    help="rewrite the record's tables from the trained seeds (all cached), keeping its command, "
                         "machine, start and each row's timings from the existing JSON (e.g. after a new column)")
    a = ap.parse_args()
    import torch

    from llmcf.config import load_config
    from llmcf.train.ctr_task import lr_rule

    torch.set_num_threads(a.threads)
    cfg = load_config(a.preset, [f"data.dataset={a.dataset}", f"train.seeds={a.seeds}",
                                 f"train.max_epochs={a.max_epochs}", f"train.patience={a.patience}",
                                 f"train.threads={a.threads}", "embed.batch_size=64"])
    import yaml

    warm_sets = {}
    for kv in a.warm_set:
        if "=" not in kv:
            ap.error(f"--warm-set {kv!r}: expected KEY=VALUE")
        k, v = kv.split("=", 1)
        warm_sets[k.strip()] = yaml.safe_load(v)
    variants = [v.strip() for v in a.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    name = a.name or f"{Path(a.dataset).name}-{a.model}"
    out_json, out_md = RESULTS / f"variants-{name}.json", RESULTS / f"variants-{name}.md"
    rec = {"name": name, "command": "python benchmarks/bench_variants.py " + shlex.join(sys.argv[1:]),
           "machine": f"{cpu_model()}, {os.cpu_count()} CPUs{ram_suffix()}, torch {torch.__version__} "
                      f"({a.threads} thread), load average at start {os.getloadavg()[0]:.1f} (shared with other jobs)",
           "started": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "protocol": f"{a.preset} preset split/label; {a.model}; batch {cfg.train.batch_size}, lr {cfg.train.lr}, "
                       f"early stopping on valid AUC (patience {a.patience}, max {a.max_epochs} epochs"
                       f"{lr_rule(cfg.train)}); seeds "
                       f"0..{a.seeds - 1}; K={cfg.retrieval.k} balanced={cfg.retrieval.balanced}; default bank = "
                       f"{a.bank_rows} random train rows (seed 0)"
                       + (f"; warm-started variants only: {', '.join(a.warm_set)}" if warm_sets else ""),
           "variants": variants, "seeds": a.seeds, "rows": []}
    prev = json.loads(out_json.read_text()) if a.refresh and out_json.exists() else None
    if a.refresh and prev is None:
        ap.error(f"--refresh: no record {out_json} to refresh")
    if prev is not None:
        rec.update({k: prev[k] for k in ("command", "machine", "started", "protocol")})
    prepare(cfg, a.run_dir, a.bank_rows, seed=0)
    if a.cot_run is not None:
        check_cot_run(a.run_dir, a.cot_run)
        sel = pd.read_parquet(a.cot_run / "cot" / "selected.parquet")
        man = a.cot_run / "cot" / "manifest.json"
        llm = json.loads(man.read_text()).get("model", {}) if man.exists() else {}
        rec["protocol"] += (f"; CoT bank = {len(sel)} train rows with real CoTs from the CoT run {a.cot_run.name} "
                            f"(LLM: {llm.get('name', '?')}, {llm.get('kind', '?')} model)")
    # seed-major: seed 0 of every variant first, so a cut-off run still compares them all on one seed
    for n in range(1, a.seeds + 1):
        for v in variants:
            print(f"=== {v}, seeds 0..{n - 1} ===", flush=True)
            row = run_variant(cfg, a.run_dir, v, a.model, n, a.cot_run, warm_sets)
            if prev is not None:  # the timings of the run that trained the seeds, not of this re-read
                old = next((r for r in prev["rows"] if r["variant"] == v), {})
                row.update({k: old[k] for k in ("wall_seconds_last_seed", "cpu_seconds_last_seed", "finished")
                            if k in old})
            rows = {r["variant"]: r for r in rec["rows"]}
            rows[v] = row
            rec["rows"] = [rows[x] for x in variants if x in rows]
            atomic_write_json(out_json, rec)
            atomic_write_text(out_md, markdown(rec))
    print(markdown(rec), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
