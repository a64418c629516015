"""`llmcf`: one subcommand per stage of LLM-CF, plus `run` (the whole pipeline, cached) and `serve`.

Every stage reads and writes files in a run directory, so it can be re-run, resumed, inspected or moved.
Config: `--config <preset name or YAML>` then `--set section.field=value` overrides; a stage given `--run DIR`
without `--config` starts from DIR/config.yaml (the config the run was built with).
"""
from __future__ import annotations

import argparse
import os
import sys
from contextlib import nullcontext
from pathlib import Path

from llmcf import __version__, progress
from llmcf.config import BASELINES, VARIANTS, Config, ConfigError, load_config, save_config
from llmcf.errors import LLMCFError
from llmcf.publish import publish

STAGES_HELP = """\
stages (each reads/writes files in a run directory):
  data build   raw data -> CTR samples with splits, vocabularies, stats        (runs/<name>/data/)
  recgen train RecGen instruction tuning of the LLM (rec + general data mix)   (runs/<name>/llm/recgen/)
  recgen eval  rec AUC/LogLoss of p(Yes), 5-shot MMLU, perplexity               (runs/<name>/llm/recgen/eval_*.json)
  cot generate label-conditioned chains of thought for a sample of train rows  (runs/<name>/cot/shards/)
  cot score    score candidates, keep the best per row                         (runs/<name>/cot/selected.parquet)
  embed        sentence-encoder embeddings of item texts and CoTs              (runs/<name>/embed/)
  retrieve     CoT bank, FAISS index, in-context example ids for every row     (runs/<name>/retrieval/)
  train        a backbone with or without the ICT module, over seeds           (runs/<name>/models/<tag>/)
  tune         Optuna search of a backbone (± ICT / a baseline), valid AUC     (runs/<name>/tune/<tag>/)
  report       tables, slices and plots of every trained model and study       (runs/<name>/report/)
  run          all of the above from one preset, skipping unchanged stages

example:
  llmcf data build --dataset ml-100k --out runs/ml100k
  llmcf train --run runs/ml100k --model DIN --seeds 3
  llmcf run --config demo
"""


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="preset name (demo, ml-100k, amazon-beauty) or a YAML file")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override one config value (repeatable), e.g. --set train.lr=0.001")


def _config_for_run(args, run_dir: Path | None) -> Config:
    base = args.config
    if base is None and run_dir is not None and (run_dir / "config.yaml").exists():
        base = str(run_dir / "config.yaml")
    return load_config(base, args.set)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llmcf", description="LLM-CF: LLM-enhanced collaborative filtering, stage by stage.",
                                epilog=STAGES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"llmcf {__version__}")
    sub = p.add_subparsers(dest="cmd", metavar="<stage>")

    data = sub.add_parser("data", help="build samples from raw data").add_subparsers(dest="sub", metavar="build")
    b = data.add_parser("build", help="raw data -> CTR samples, splits, vocabularies, stats")
    b.add_argument("--dataset", help="embedded name (ml-100k) or a folder of raw data (RecBole atomic, MovieLens, "
                                     "Amazon 2014/2018/2023)")
    b.add_argument("--format", help="auto | atomic | movielens | amazon2014 | amazon2018 | amazon2023")
    b.add_argument("--out", required=True, type=Path, help="run directory to write (e.g. runs/ml100k)")
    _add_config_args(b)

    t = sub.add_parser("train", help="train and evaluate a backbone (± ICT) over seeds")
    t.add_argument("--run", required=True, type=Path)
    t.add_argument("--task", choices=["ctr", "sequential"], default="ctr",
                   help="ctr: ranking backbones, AUC/LogLoss (default); sequential: next-item retrieval, full-ranking "
                        "Recall/NDCG")
    t.add_argument("--model", default=None, help="ctr: DeepFM | xDeepFM | DCN | DCNv2 | AutoInt | DIN; sequential: "
                                                 "SASRec | GRU4Rec | YouTubeDNN | SRGNN (default: config)")
    t.add_argument("--seeds", type=int, help="number of seeds (mean ± std reported)")
    t.add_argument("--ict", action="store_true", help="add the LLM-CF in-context CoT module (needs `llmcf retrieve`)")
    t.add_argument("--variant", choices=list(VARIANTS[1:]), help="ICT variant (with --ict)")
    t.add_argument("--baseline", choices=list(BASELINES), help="train <model>+<baseline> instead: textemb (frozen "
                   "item-text vectors), kd (distil the RecGen p(Yes)), kar (KAR's LLM user/item texts), boost (a second "
                   "backbone on the trained one's residual); settings in the baseline: config section "
                   "(--set baseline.residual=true: textemb/kar learn the trained base model's residual instead)")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    t.add_argument("--nproc", type=int, default=1, help="ctr task: train with N processes on this machine (torchrun + "
                                                        "DistributedDataParallel, gloo; README 'Scaling out')")
    _add_config_args(t)

    tu = sub.add_parser("tune", help="hyper-parameter search (Optuna TPE) of a backbone (± ICT) on valid AUC")
    tu.add_argument("--run", required=True, type=Path)
    tu.add_argument("--model", required=True, help="DeepFM | xDeepFM | DCN | DCNv2 | AutoInt | DIN")
    tu.add_argument("--ict", action="store_true", help="tune LLM-CF (the backbone with the ICT module)")
    tu.add_argument("--variant", choices=["full", "no_cot", "mean_pool"], help="ICT variant (with --ict)")
    tu.add_argument("--baseline", choices=[b for b in BASELINES if b != "boost"],
                    help="tune <model>+<baseline> instead: the backbone's space plus tune.baselines.<baseline>")
    tu.add_argument("--trials", type=int, help="finished trials wanted (default tune.trials); a rerun resumes")
    _add_config_args(tu)

    rg = sub.add_parser("recgen", help="RecGen instruction tuning of the LLM").add_subparsers(dest="sub",
                                                                                             metavar="train|eval")
    for name, hlp in (("train", "fine-tune the LLM on rec + general instructions"),
                      ("eval", "rec AUC/LogLoss of p(Yes), MMLU, perplexity")):
        q = rg.add_parser(name, help=hlp)
        q.add_argument("--run", required=True, type=Path)
        if name == "eval":
            q.add_argument("--base", action="store_true", help="evaluate the untuned base model")
        _add_config_args(q)

    cot = sub.add_parser("cot", help="CoT generation and selection").add_subparsers(dest="sub", metavar="generate|score")
    for name, hlp in (("generate", "generate label-conditioned CoTs (sharded, resumable)"),
                      ("score", "score candidates and keep the best per row")):
        q = cot.add_parser(name, help=hlp)
        q.add_argument("--run", required=True, type=Path)
        if name == "generate":
            q.add_argument("--address", help="generate on this Ray cluster (llm.executor=ray, llm.ray_address; "
                                             "pip install 'llmcf[ray]'), e.g. auto or ray://head:10001")
        _add_config_args(q)

    for name, hlp in (("embed", "embed item texts and kept CoTs"),
                      ("retrieve", "build the CoT bank and index, precompute in-context ids"),
                      ("report", "write result tables and plots")):
        q = sub.add_parser(name, help=hlp)
        q.add_argument("--run", required=True, type=Path)
        if name == "embed":
            q.add_argument("--address", help="encode on this Ray cluster (embed.executor=ray, llm.ray_address; "
                                             "pip install 'llmcf[ray]'), e.g. auto or ray://head:10001")
        _add_config_args(q)

    r = sub.add_parser("run", help="run every stage from one preset, skipping unchanged stages")
    r.add_argument("--out", type=Path, help="run directory (default runs/<preset name>)")
    r.add_argument("--force", action="append", default=[], metavar="STAGE", help="rerun this stage (repeatable)")
    r.add_argument("--plan", action="store_true", help="print the stages that would run, what is cached and time "
                                                       "estimates from this machine's earlier runs; run nothing")
    _add_config_args(r)

    fg = sub.add_parser("forget", help="forget users exactly: drop their data, retrain only their shards, audit")
    fg.add_argument("--run", required=True, type=Path)
    fg.add_argument("--user", action="append", default=[], help="a user id to forget (repeatable)")
    fg.add_argument("--resume", action="store_true", help="finish an interrupted forget (forget/journal.json)")

    s = sub.add_parser("serve", help="serve a trained model over HTTP (scores, explanations; docs at /docs)")
    s.add_argument("--run", required=True, type=Path)
    s.add_argument("--model", required=True, help="a trained model's tag under <run>/models: DIN, DIN+llmcf, "
                                                  "DIN+llmcf-no_cot, ... (or a backbone name with --ict)")
    s.add_argument("--ict", action="store_true", help="serve <model>+llmcf (the LLM-CF variant of the backbone)")
    s.add_argument("--variant", choices=list(VARIANTS[1:]), help="ICT variant (with --ict)")
    s.add_argument("--seed", type=int, help="which trained seed (default: best validation AUC)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    _add_config_args(s)
    return p


def _cmd_data_build(args) -> None:
    from llmcf.data.build import build_run_data
    from llmcf.data.loaders import load_dataset
    from llmcf.data.protocol import print_protocol

    from llmcf.data.checks import check_out_dir

    check_out_dir(args.out)
    cfg = load_config(args.config, args.set)
    if args.dataset:
        cfg.data.dataset = args.dataset
    if args.format:
        cfg.data.format = args.format
    ds = load_dataset(cfg.data.dataset, cfg.data.format)
    with publish(args.out, "data", lazy=True):  # the record is invalidated only once the build writes (llmcf.publish)
        stats = build_run_data(ds, cfg.data, args.out)
    save_config(cfg, args.out / "config.yaml")
    print(f"[data] {ds.name}: wrote {args.out / 'data'}")
    for split in ("train", "valid", "test"):
        st = stats["splits"][split] if "splits" in stats else stats[split]
        print(f"  {split:<5} rows {st['rows']:>8}  users {st['users']:>6}  positive rate {st['positive_rate']:.3f}")
    print_protocol(stats)


def _cmd_train(args) -> None:
    from llmcf.train import distributed, launch
    from llmcf.train.stage import format_summary, run_train

    if args.nproc > 1 and not launch.launched_by_torchrun():
        code = launch.launch(args.nproc, args.argv)
        if code:
            raise LLMCFError(f"torchrun with {args.nproc} processes exited with code {code} (messages above)")
        return
    distributed.init_from_env()
    cfg = _config_for_run(args, args.run)
    if args.seeds:
        cfg.train.seeds = args.seeds
    if args.ict:
        cfg.ict.enabled = True
    if args.variant:
        cfg.ict.variant = args.variant
    if args.baseline:
        if args.ict:
            raise ConfigError("--baseline and --ict are separate methods: train one at a time")
        cfg.baseline.name = args.baseline
        if args.task == "sequential":
            from llmcf.train.seq_task import check_seq_baseline

            check_seq_baseline(cfg, False)
    if args.task == "sequential":
        from llmcf.models.sequential import SEQ_BACKBONES
        from llmcf.pipeline import check_names
        from llmcf.train.seq_stage import SeqRunData, run_seq_train

        names = [args.model] if args.model else (cfg.seq_models or ["SASRec"])
        check_names(names, SEQ_BACKBONES, "--model")
        run = SeqRunData(args.run, cfg)
        for name in names:
            run_seq_train(args.run, cfg, name, ict=args.ict, run=run, progress=not args.quiet)
        return
    from llmcf.estimate import JobsEstimate
    from llmcf.plan import ctr_seed_rows, pending_trainings

    names = [args.model] if args.model else cfg.models
    pending = pending_trainings([r for n in names for r in ctr_seed_rows(args.run, cfg, n)])
    with JobsEstimate("train", pending):  # after the first trained seed: the time the others should take
        for name in names:
            summary = run_train(args.run, cfg, name, progress=not args.quiet)
            if distributed.current().main:
                print(format_summary(summary))


def _cmd_tune(args) -> None:
    from llmcf.tune import run_tune

    cfg = _config_for_run(args, args.run)
    if args.ict or args.variant:
        cfg.ict.enabled = True
        cfg.ict.variant = args.variant or cfg.ict.variant
    else:
        cfg.ict.enabled = False
    cfg.baseline.name = args.baseline
    run_tune(args.run, cfg, args.model, trials=args.trials)


STAGE_OF = {("recgen", "train"): "recgen", ("cot", "generate"): "cot_generate", ("cot", "score"): "cot_score",
            ("embed", None): "embed", ("retrieve", None): "retrieve"}
"""The crash-consistent stage (``llmcf.publish``) each stand-alone command runs."""


def _cmd_stage(args) -> None:
    cfg = _config_for_run(args, args.run)
    key = (args.cmd, getattr(args, "sub", None))
    stage = STAGE_OF.get(key)
    with publish(args.run, stage) if stage else nullcontext():
        _run_stage_command(args, cfg, key)


def _run_stage_command(args, cfg, key) -> None:
    if key == ("recgen", "train"):
        from llmcf.llm.recgen.train import run_recgen_train

        print(f"[recgen] tuned model: {run_recgen_train(args.run, cfg)}")
    elif key == ("recgen", "eval"):
        from llmcf.llm.recgen.eval import run_recgen_eval
        from llmcf.llm.models import resolve_model

        path = resolve_model(cfg.llm.model) if args.base else None
        res = run_recgen_eval(args.run, cfg, model_path=path, tag="base" if args.base else "tuned")
        print(res)
    elif key == ("cot", "generate"):
        from llmcf.llm.cot.generate import run_cot_generate

        if args.address:
            cfg.llm.executor, cfg.llm.ray_address = "ray", args.address
        print(f"[cot] generated: {run_cot_generate(args.run, cfg)}")
    elif key == ("cot", "score"):
        from llmcf.llm.cot.score import run_cot_score

        print(f"[cot] selected: {run_cot_score(args.run, cfg)}")
    elif args.cmd == "embed":
        from llmcf.embed import run_embed

        if args.address:
            cfg.embed.executor, cfg.llm.ray_address = "ray", args.address
        run_embed(args.run, cfg)
    elif args.cmd == "retrieve":
        from llmcf.retrieval.stage import run_retrieve

        run_retrieve(args.run, cfg)  # prints its own one-line summary; details in retrieval/meta.json
    elif args.cmd == "report":
        from llmcf.report import write_report

        print(f"[report] {write_report(args.run)}")


def _cmd_run(args) -> None:
    from llmcf.pipeline import run_pipeline

    if args.config is None:
        raise ConfigError("llmcf run needs --config (e.g. --config demo)")
    cfg = load_config(args.config, args.set)
    out = args.out or Path("runs") / Path(args.config).stem
    from llmcf.data.checks import check_out_dir

    check_out_dir(out)
    if args.plan:
        from llmcf.pipeline import check_plan
        from llmcf.plan import format_plan, make_plan

        check_plan(cfg)
        print(format_plan(make_plan(cfg, out, set(args.force)), out))
        return
    run_pipeline(cfg, out, force=set(args.force))


SERVE_READS = ("serve.",)
"""The only config a server takes from the command line: the model's own settings come from the config.yaml it was
trained with and the retrieval settings from retrieval/meta.json (those of the saved index)."""


def check_serve_overrides(overrides: list[str]) -> None:
    """ConfigError for a ``--set`` that serving would silently ignore (anything outside ``serve.*``)."""
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if not key.startswith(SERVE_READS):
            raise ConfigError(f"llmcf serve --set {item}: serving reads only serve.* settings from the command line; "
                              f"'{key}' comes from models/<tag>/config.yaml (the config the model was trained with) "
                              "or retrieval/meta.json (the saved index): change it there by retraining or rerunning "
                              "`llmcf retrieve`")


def _cmd_serve(args) -> None:
    from llmcf.serve.app import serve

    check_serve_overrides(args.set)
    cfg = _config_for_run(args, args.run)
    tag = args.model
    if args.ict:
        from llmcf.config import model_tag

        cfg.ict.enabled = True
        cfg.ict.variant = args.variant or "full"
        tag = model_tag(args.model, True, cfg.ict.variant)
    serve(args.run, cfg, tag, host=args.host, port=args.port, seed=args.seed)


def _cmd_forget(args) -> None:
    import json

    from llmcf.forget import forget

    rec = forget(args.run, args.user, resume=args.resume)
    print(f"[forget] done: {json.dumps(rec)}")


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    progress.install()
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.cmd is None or (args.cmd in ("data", "recgen", "cot") and args.sub is None):
        parser.print_help() if args.cmd is None else parser.parse_args([args.cmd, "--help"])
        return 2
    try:
        if args.cmd == "data":
            _cmd_data_build(args)
        elif args.cmd == "train":
            _cmd_train(args)
        elif args.cmd == "run":
            _cmd_run(args)
        elif args.cmd == "tune":
            _cmd_tune(args)
        elif args.cmd == "serve":
            _cmd_serve(args)
        elif args.cmd == "forget":
            _cmd_forget(args)
        else:
            _cmd_stage(args)
    except (LLMCFError, ConfigError) as e:
        progress.error(str(e))
        return 1
    except KeyboardInterrupt:
        progress.close_bars()
        print("llmcf: interrupted; completed work is kept, rerun the same command to resume", file=sys.stderr)
        return 130
    except BaseException:
        progress.close_bars()  # a bug's traceback starts on its own line too
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
