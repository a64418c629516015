"""`llmcf run`: every stage from one preset, skipping stages whose inputs and config are unchanged.

A finished stage writes ``run_dir/stages/<stage>.json`` with a hash of the config sections it reads *and* of the stamp
of the stage before it, so changing e.g. the CoT config reruns CoT, embed, retrieve and LLM-CF training, but not data
or RecGen. Each stage runs inside ``llmcf.publish.publish`` (record invalidated first, written last with digests): a
stage is skipped only when its record still verifies, so a killed or hand-edited stage is rerun, never trusted.
Interrupted stages resume through their own mechanisms (CoT shards, per-seed training results).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from llmcf.config import Config, save_config
from llmcf.fingerprint import stage_hash
from llmcf.publish import problem, publish, read_record
from llmcf.rundir import RunDir

ORDER = ["data", "recgen", "cot_generate", "cot_score", "embed", "retrieve"]
"""The offline stages in run order (their config sections: ``llmcf.fingerprint.STAGE_SECTIONS``). With ``seq_models``
the sequential samples are built right after ``data`` (cached by their own stamp, ``fingerprint.seq_data_stamp``), so
``retrieve`` also writes their in-context ids."""


def _banner(msg: str) -> None:
    print(f"\n=== {msg} ===", flush=True)


def run_stage(run_dir: Path, cfg: Config, stage: str, upstream: str, fn: Callable[[], object],
              force: set[str], note: str = "") -> str:
    """Skip ``stage`` when its record carries this config's stamp and still verifies (``llmcf.publish``); else run
    ``fn`` inside ``publish`` (record invalidated first, written last)."""
    h = stage_hash(cfg, stage, upstream)
    stamp = RunDir(run_dir).stage_stamp(stage)
    rec = read_record(run_dir, stage)
    if stage not in force and rec is not None:
        why = problem(run_dir, stage)
        if why is None and rec.get("hash") == h:
            print(f"[{stage}] unchanged since last run: skipped ({stamp})")
            return h
        if why is not None:
            print(f"[{stage}] not trusted: {why}: rerunning")
    _banner(f"{stage}{' — ' + note if note else ''}")
    with publish(run_dir, stage, h, lazy=stage == "data"):  # data build calls publish.writing itself
        fn()
    return h


def run_pipeline(cfg: Config, run_dir: Path, force: set[str] | None = None) -> dict:
    from llmcf.data.build import build_run_data
    from llmcf.data.loaders import load_dataset
    from llmcf.embed import run_embed
    from llmcf.llm.cot.generate import run_cot_generate
    from llmcf.llm.cot.score import run_cot_score
    from llmcf.llm.recgen.eval import run_recgen_eval
    from llmcf.llm.recgen.train import run_recgen_train
    from llmcf.report import print_table, write_report
    from llmcf.retrieval.stage import run_retrieve
    from llmcf.train.stage import RunData, format_summary, run_train

    force = force or set()
    check_plan(cfg)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    t_start = time.perf_counter()
    from llmcf.llm.factory import engine_line

    print(f"[llm] {engine_line(cfg.llm)}", flush=True)

    def data():
        from llmcf.data.protocol import print_protocol

        if cfg.partition.shard >= 0:  # a shard's data comes from its parent's partition (llmcf.partitioned)
            from llmcf.errors import RunError

            raise RunError(f"{run_dir}: shard {cfg.partition.shard} of a partitioned run: rerun `llmcf run` on its "
                           "parent run directory instead")

        ds = load_dataset(cfg.data.dataset, cfg.data.format)
        print_protocol(build_run_data(ds, cfg.data, run_dir))

    h = run_stage(run_dir, cfg, "data", "", data, force,
                  f"{cfg.data.dataset}, split {cfg.data.split}" +
                  (f", {cfg.data.max_users} users (reduced)" if cfg.data.max_users else ""))
    if cfg.partition.shards > 1:  # SISA/APA: every later stage once per user shard (llmcf.partitioned)
        from llmcf.partitioned import run_partitioned

        return run_partitioned(cfg, run_dir, force)

    def recgen():
        if cfg.recgen.skip:
            print("[recgen] skipped by config (recgen.skip: true): CoTs come from the untuned base model")
            return
        from llmcf.llm.models import resolve_model

        run_recgen_eval(run_dir, cfg, model_path=resolve_model(cfg.llm.model), tag="base")
        run_recgen_train(run_dir, cfg)
        run_recgen_eval(run_dir, cfg, model_path=None, tag="tuned")

    if cfg.seq_models:  # cached by its own stamp (seq_stats.json, fingerprint.seq_data_stamp); feeds no stage stamp
        from llmcf.data.seq_samples import ensure_seq_data

        st = ensure_seq_data(run_dir, cfg)
        rows = ", ".join(f"{k} {v}" for k, v in st.get("rows", {}).items())
        print(f"[seq data] sequential samples: {rows} rows (data/seq_*.parquet)")

    h = run_stage(run_dir, cfg, "recgen", h, recgen, force,
                  f"{cfg.recgen.method}, {cfg.recgen.num_rec} rec rows"
                  + (f", max {cfg.recgen.max_steps} steps" if cfg.recgen.max_steps else ""))
    h = run_stage(run_dir, cfg, "cot_generate", h, lambda: run_cot_generate(run_dir, cfg), force,
                  f"{cfg.cot.count or cfg.cot.fraction} train rows x {cfg.cot.candidates} candidates, "
                  f"{cfg.cot.max_new_tokens} new tokens")
    h = run_stage(run_dir, cfg, "cot_score", h, lambda: run_cot_score(run_dir, cfg), force)
    h = run_stage(run_dir, cfg, "embed", h, lambda: run_embed(run_dir, cfg), force, cfg.embed.encoder)
    h = run_stage(run_dir, cfg, "retrieve", h, lambda: run_retrieve(run_dir, cfg), force,
                  f"K={cfg.retrieval.k}, leakage rule {cfg.retrieval.leakage}")

    from llmcf.estimate import JobsEstimate
    from llmcf.plan import make_plan, pending_trainings

    pending = pending_trainings(make_plan(cfg, run_dir, force))
    jobs = JobsEstimate("train", pending).__enter__()  # prints the remaining time after the first trained seed
    _banner(f"train {', '.join(cfg.models)} x {', '.join(cfg.variants)} ({cfg.train.seeds} seed(s))")
    run = RunData(run_dir, cfg)
    summaries = []
    for name in cfg.models:
        for variant in cfg.variants:
            vcfg = cfg_variant(cfg, variant)
            s = run_train(run_dir, vcfg, name, run=run, upstream=h if vcfg.ict.enabled else "")
            print(format_summary(s))
            summaries.append(s)
        for baseline in cfg.baselines:  # <backbone>+<baseline>: its LLM stage (if any) runs inside, resumable
            s = run_train(run_dir, cfg_baseline(cfg, baseline), name, run=run)
            print(format_summary(s))
            summaries.append(s)
    if cfg.seq_models:
        from llmcf.train.seq_stage import SeqRunData, run_seq_train

        seq_variants = [v for v in cfg.variants if v in ("base", "full")]
        _banner(f"train sequential {', '.join(cfg.seq_models)} x {', '.join(seq_variants)} "
                f"({cfg.train.seeds} seed(s))")
        seq_run = SeqRunData(run_dir, cfg)
        for name in cfg.seq_models:
            for variant in seq_variants:
                summaries.append(run_seq_train(run_dir, cfg_variant(cfg, variant), name, ict=variant == "full",
                                               run=seq_run))
    jobs.__exit__(None, None, None)
    _banner("report")
    page = write_report(run_dir)
    print_table(run_dir)  # its protocol section ends with the RecGen p(Yes) AUC lines (report.run_details)
    print(engine_line(cfg.llm))
    if cfg.data.max_users or cfg.recgen.max_steps or cfg.cot.count:
        print("\nreduced run: every stage ran for real at the reduced sizes shown above; the numbers are a smoke test "
              "of the pipeline, not a benchmark (see the README's Results for full-size runs).")
    print(f"\nreport: {page}\nrun directory: {run_dir}  (total {time.perf_counter() - t_start:.0f}s)")
    return {"summaries": summaries, "report": str(page)}


def check_names(names, registry, where: str) -> None:
    """ConfigError naming ``where`` if a model name is not in ``registry`` (a Registry of backbones)."""
    from llmcf.config import ConfigError

    for name in names:
        if name not in registry:
            raise ConfigError(f"{where}: '{name}' is not a {registry.kind}; choose from {', '.join(registry.names())}")


def check_params(names, registry, params_for, where: str) -> None:
    """ConfigError if a backbone of the plan would get a constructor argument it does not take (a shared entry of
    ``where`` meant for another backbone): say how to key it by backbone name."""
    import inspect

    from llmcf.config import ConfigError

    for name in names:
        accepted = inspect.signature(registry.get(name).__init__).parameters
        for key in params_for(name):
            if key not in accepted:
                raise ConfigError(f"{where}.{key}: not an argument of {name}; give it to its backbone only, e.g. "
                                  f"{where}: {{<backbone>: {{{key}: ...}}}}")


def check_plan(cfg: Config) -> None:
    """Fail before hours of offline work if a model or variant name is wrong."""
    from llmcf.config import ConfigError
    from llmcf.models.ranking import BACKBONES
    from llmcf.models.sequential import SEQ_BACKBONES

    if cfg.partition.shards > 1:
        from llmcf.data.partition import check_separable

        check_separable(cfg)
    check_names(cfg.models, BACKBONES, "models")
    check_names(cfg.seq_models, SEQ_BACKBONES, "seq_models")
    check_params(cfg.models, BACKBONES, cfg.model.params_for, "model.params")
    check_params(cfg.seq_models, SEQ_BACKBONES, cfg.seq.params_for, "seq.params")
    from llmcf.config import VARIANTS

    from llmcf.config import BASELINES

    for b in cfg.baselines:
        if b not in BASELINES:
            raise ConfigError(f"baselines: unknown baseline '{b}' (expected one of {', '.join(BASELINES)})")
    for v in cfg.variants:
        if v not in VARIANTS:
            raise ConfigError(f"variants: unknown variant '{v}' (expected {', '.join(VARIANTS[:-1])} or "
                              f"{VARIANTS[-1]})")
    ict_variants = [v for v in cfg.variants if v != "base"]
    if cfg.ict.warm_start and ict_variants and cfg.models and \
            ("base" not in cfg.variants or cfg.variants.index("base") > cfg.variants.index(ict_variants[0])):
        raise ConfigError(f"ict.warm_start starts every LLM-CF model from its trained base model: list 'base' first in "
                          f"variants (got {cfg.variants})")
    from llmcf.config import check_frozen_backbone, check_sim_input

    check_frozen_backbone(cfg.ict)
    check_sim_input(cfg.retrieval, cfg.ict)
    from dataclasses import replace

    from llmcf.config import check_residual_baseline

    residual = [b for b in cfg.baselines if b == "boost" or cfg.baseline.residual]
    for b in residual:
        check_residual_baseline(replace(cfg.baseline, name=b))
    if residual and cfg.models and "base" not in cfg.variants:
        raise ConfigError(f"baselines {residual} fit the residual of the trained base model: add 'base' to variants")


def cfg_variant(cfg: Config, variant: str) -> Config:
    """A copy of cfg for one training variant: base | full | no_cot | mean_pool."""
    from copy import deepcopy

    v = deepcopy(cfg)
    if variant == "base":
        v.ict.enabled = False
    else:
        v.ict.enabled = True
        v.ict.variant = variant
    return v


def cfg_baseline(cfg: Config, baseline: str) -> Config:
    """A copy of cfg that trains ``<backbone>+<baseline>`` (the ICT off)."""
    from copy import deepcopy

    v = deepcopy(cfg)
    v.ict.enabled = False
    v.baseline.name = baseline
    return v
