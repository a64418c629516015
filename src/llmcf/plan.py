"""`llmcf run --plan`: the stages `llmcf run` would run, which are cached, and how long the pending ones should take.

Nothing is run and nothing is written. A stage is *cached* exactly when `llmcf run` would skip it: its stamp
(``stages/<stage>.json``) carries the hash the pipeline computes from the config (``pipeline.stage_hash``), and it is
not in ``--force``. Models get one row each (cached / partly / pending, by seed). A CTR model seed is cached when its ``result.json`` carries the config hash ``run_train`` would
compute; a sequential model seed when its hash prefix matches and the data (and, with the ICT, retrieval) stages are
cached (the rest of that hash is read from the data files at training time).

Estimates use the rates recorded on this machine by earlier runs (``llmcf.estimate``: ``rates.json``); a stage never
measured here says so (it prints its own estimate after its warm-up when it runs).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from llmcf.config import Config
from llmcf.estimate import fmt_duration, load_rates


def _stamp_hash(run_dir: Path, stage: str) -> str | None:
    p = run_dir / "stages" / f"{stage}.json"
    try:
        return json.loads(p.read_text()).get("hash") if p.exists() else None
    except ValueError:
        return None


def _train_rows(run_dir: Path) -> int | None:
    p = run_dir / "data" / "stats.json"
    try:
        return int(json.loads(p.read_text())["splits"]["train"]["rows"]) if p.exists() else None
    except (ValueError, KeyError):
        return None


def _work(cfg: Config, stage: str, run_dir: Path) -> list[tuple[str, int, str]]:
    """(rate key, units, unit) the stage will do, as far as the config tells before running."""
    rc, c = cfg.recgen, cfg.cot
    if stage == "recgen":
        if rc.skip:
            return []
        n_ex = rc.num_rec / max(1e-9, 1.0 - rc.general_ratio)
        steps = int(rc.max_steps) if rc.max_steps else max(1, math.ceil(rc.epochs * n_ex / (rc.batch_size *
                                                                                          rc.grad_accum)))
        return [("llm p(Yes)", 2 * int(rc.eval_rows), "prompt"), ("recgen train", steps, "step")]
    if stage == "cot_generate":
        n = c.count
        if n is None:
            tr = _train_rows(run_dir)
            n = max(1, round(c.fraction * tr)) if (tr and c.fraction) else None
        return [("cot generate", int(n), "row")] if n else [("cot generate", -1, "row")]
    return []


def _estimate(work: list[tuple[str, int, str]], rates: dict) -> tuple[str, float | None, bool]:
    """(text, seconds of the measured parts or None, whether some part has no measurement)."""
    parts, total, known = [], 0.0, True
    for key, n, unit in work:
        r = rates.get(key)
        if n < 0:
            parts.append(f"{key}: size known after `data` (cot.fraction of the train rows)")
            known = False
        elif r:
            s = n * r["seconds_per_unit"]
            total += s
            parts.append(f"{key}: ~{n:,} {unit}s at ~{r['seconds_per_unit']:.3g} s/{unit} ≈ {fmt_duration(s)}")
        else:
            parts.append(f"{key}: ~{n:,} {unit}s, no rate measured on this machine yet")
            known = False
    return "; ".join(parts), (total if total else None), not known


def make_plan(cfg: Config, run_dir: Path, force: set[str] | None = None) -> list[dict]:
    """One dict per stage and per model seed: name, status (cached | pending), detail, seconds (estimate or None)."""
    from llmcf.pipeline import ORDER, cfg_baseline, cfg_variant, stage_hash

    force = force or set()
    run_dir = Path(run_dir)
    rates = load_rates()
    rows, h, hashes, status = [], "", {}, {}
    for stage in ORDER:
        h = stage_hash(cfg, stage, h)
        hashes[stage] = h
        cached = stage not in force and _stamp_hash(run_dir, stage) == h
        status[stage] = cached
        detail, secs, unmeasured = ("", None, False) if cached else _estimate(_work(cfg, stage, run_dir), rates)
        rows.append({"name": stage, "status": "cached" if cached else "pending", "detail": detail, "seconds": secs,
                     "unmeasured": unmeasured})
    seeds = range(cfg.train.seed, cfg.train.seed + cfg.train.seeds)
    for name in cfg.models:
        for variant in cfg.variants:
            v = cfg_variant(cfg, variant)
            rows += ctr_seed_rows(run_dir, v, name, hashes["retrieve"] if v.ict.enabled else "", rates)
        for baseline in cfg.baselines:  # <backbone>+<baseline>, trained after the variants (pipeline.run_pipeline)
            rows += ctr_seed_rows(run_dir, cfg_baseline(cfg, baseline), name, "", rates)
    if cfg.seq_models:
        from llmcf.config import model_tag
        from llmcf.fingerprint import model_cache_key, seq_config_hash

        for name in cfg.seq_models:
            for variant in [x for x in cfg.variants if x in ("base", "full")]:
                ict = variant == "full"
                v = cfg_variant(cfg, variant)
                # SeqTask.cache_key = this prefix + the data stamp, vocab hash and (ICT) context stamp
                prefix = model_cache_key(seq_config_hash(v, name, ict), name) + "-"
                ok = status["data"] and (status["retrieve"] if ict else True)
                rows += _model_rows(run_dir, model_tag(name, ict, v.ict.variant, task="sequential"), seeds,
                                    lambda rec, p=prefix, ok=ok: ok and str(rec.get("config_hash", "")).startswith(p),
                                    rates)
    return rows


def ctr_seed_rows(run_dir: Path, cfg: Config, name: str, upstream: str = "", rates: dict | None = None) -> list[dict]:
    """Plan rows of one CTR model's seeds (``cfg`` already the variant's or baseline's config; ``upstream`` as
    run_train gets it). A baseline's key ends with the stamp of its LLM outputs (``CTRTask.cache_key``), which only
    its LLM stage can compute; the plan matches the rest of the key, so a seed whose texts/scores have since changed
    shows as cached here and is retrained when training finds the new stamp."""
    from llmcf.config import baseline_tag, model_tag
    from llmcf.fingerprint import ctr_config_hash, model_cache_key

    chash = model_cache_key(ctr_config_hash(cfg, name), name, upstream)  # as CTRTask.cache_key
    def is_cached(rec):
        key = str(rec.get("config_hash", ""))
        return (key.rsplit("-", 1)[0] if cfg.baseline.name else key) == chash
    seeds = range(cfg.train.seed, cfg.train.seed + cfg.train.seeds)
    tag = model_tag(name, cfg.ict.enabled, cfg.ict.variant, baseline=baseline_tag(cfg.baseline))
    return _model_rows(Path(run_dir), tag, seeds, is_cached, load_rates() if rates is None else rates)


def _model_rows(run_dir: Path, tag: str, seeds, is_cached, rates: dict) -> list[dict]:
    """One row for a model: which seeds are cached, which pending, and the estimate for the pending ones."""
    cached, pending = [], []
    for seed in seeds:
        p = run_dir / "models" / tag / f"seed_{seed}" / "result.json"
        try:
            rec = json.loads(p.read_text()) if p.exists() else None
        except ValueError:
            rec = None
        (cached if rec is not None and is_cached(rec) else pending).append(seed)
    r = rates.get(f"train {tag}")
    secs = r["seconds_per_unit"] * len(pending) if (r and pending) else None
    status = "cached" if not pending else "pending" if not cached else "partly"
    bits = [f"seed(s) {_seeds(cached)} cached"] if cached and pending else []
    if pending:
        bits.append(f"seed(s) {_seeds(pending)} " + (f"≈ {fmt_duration(secs)} (~{fmt_duration(r['seconds_per_unit'])}"
                                                     f" per seed, measured here {r['when']})" if secs is not None else
                                                     "to train; no training of this model measured here yet"))
    return [{"name": f"train {tag}", "status": status, "detail": "; ".join(bits), "seconds": secs,
             "unmeasured": bool(pending) and secs is None,
             "tag": tag, "cached_seeds": cached, "pending_seeds": pending}]


def _seeds(s: list[int]) -> str:
    return f"{s[0]}-{s[-1]}" if len(s) > 2 and s == list(range(s[0], s[-1] + 1)) else ",".join(map(str, s))


def pending_trainings(rows: list[dict]) -> list[str]:
    """The tag of every pending model seed (repeated per seed), for ``estimate.JobsEstimate``."""
    return [r["tag"] for r in rows if r.get("tag") for _ in r["pending_seeds"]]


def format_plan(rows: list[dict], run_dir: Path) -> str:
    w = max(len(r["name"]) for r in rows)
    lines = [f"plan for {run_dir} (nothing was run):"]
    for r in rows:
        lines.append(f"  {r['name']:<{w}}  {r['status']:<7}  {r['detail']}".rstrip())
    pend = [r for r in rows if r["status"] != "cached"]
    known = sum(r["seconds"] for r in pend if r["seconds"] is not None)
    unknown = sum(bool(r.get("unmeasured")) for r in pend)
    tail = f"{len(pend)} to run, {len(rows) - len(pend)} cached"
    if pend:
        if known:
            tail += (f"; estimated ≈ {fmt_duration(known)}" if not unknown else
                     f"; ≈ {fmt_duration(known)} for the measured parts, {unknown} row(s) not (fully) measured here")
        else:
            tail += "; no estimate yet (nothing pending was measured on this machine; each long stage prints its own " \
                    "estimate after a short warm-up)"
    lines.append(tail)
    return "\n".join(lines)
