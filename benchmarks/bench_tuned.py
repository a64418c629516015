"""Tuned backbone vs tuned LLM-CF with equal `llmcf tune` budgets (issue 12, study c).

    nice -n 10 python benchmarks/bench_tuned.py --dataset ../shared/data/ml-100k --preset ml-100k --model DCN \
        --trials 12 --seeds 3 --run-dir ../runs/12/ml-100k

Both sides are searched by the library's own ``llmcf tune`` (llmcf.tune.run_tune: Optuna TPE, seeded, on validation
AUC only) over the shipped search spaces: the backbone over ``tune.space`` ∪ ``tune.models[<model>]``, LLM-CF over
the same plus ``tune.ict`` (ICT dim/layers/lr, reconstruction weight, K). The two studies advance one trial at a time
in turn, so machine load hits both alike and a cut-off run still compares equal budgets. Each side's best trial
(seed 0, as every trial) is then trained with seeds 0..n-1 and read on test once; the table reports test AUC /
LogLoss mean ± std, the difference against the tuned backbone with its 2-SE check, the valid AUC of the chosen
trial, s/epoch, and the cold / popularity slices. A third row, the backbone alone trained with the backbone
hyper-parameters of LLM-CF's best trial (an ablation, not a selection), separates what the in-context module adds
from what the two searches' different picks of lr, dropout, ... add.

LLM-CF here is the *w/o CoT* variant over a bank of ``--bank-rows`` random train rows (bench_variants.py's bank): it
needs no LLM stage, which this machine cannot afford inside a tuning loop; with CoTs, point ``--run-dir`` at a run
whose cot/ and embed/ come from ``llmcf run`` and pass ``--with-cot``. Writes ``benchmarks/results/tuned-<name>.json``
and ``.md`` after every trial pair and every final training (partial tables while it runs).

``--method textemb|kd|kar`` tunes a baseline instead of LLM-CF (``llmcf tune --baseline``: the backbone's space plus
``tune.baselines.<name>``), with the same budget and rules; its LLM stage outputs (KAR texts, teacher scores) must
already be in ``--run-dir`` (bench_baselines.py makes them) and ``--run-config`` starts from that run's config.yaml, so
every trial reads them instead of generating anew:

    python benchmarks/bench_tuned.py --dataset ../shared/data/ml-100k --model xDeepFM --method kar --run-config \
        --trials 5 --seeds 3 --run-dir ../runs/15/ml100k-decay
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import cpu_model, ram_suffix  # noqa: E402
from bench_variants import fmt, prepare, versus  # noqa: E402

from llmcf.io import atomic_write_json, atomic_write_text  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = {"llmcf": "LLM-CF", "textemb": "textemb", "kd": "kd", "kar": "KAR"}
"""The tuned method compared with the tuned backbone (``--method``) and its label in the record."""


def sides_of(method: str) -> tuple[str, str]:
    return ("backbone", method)


def ablation_name(method: str) -> str:
    return f"backbone @ {METHODS[method]}'s backbone params"


def side_config(cfg, side: str, with_cot: bool):
    from llmcf.tune import apply_params

    if side == "backbone":
        return apply_params(cfg, {"ict.enabled": False, "baseline.name": None})
    if side == "llmcf":
        return apply_params(cfg, {"ict.enabled": True, "ict.variant": "full" if with_cot else "no_cot",
                                  "baseline.name": None})
    return apply_params(cfg, {"ict.enabled": False, "baseline.name": side})


def final_train(run: Path, best_yaml: Path, model: str, seeds: int, name: str | None = None,
                sets: dict | None = None) -> dict:
    """Train the chosen configuration (``sets`` applied on top) with seeds 0..seeds-1 in its own folder
    (tuned/<name or tag>/) and read test."""
    from llmcf.config import load_config
    from llmcf.slices import SliceTable, load_predictions
    from llmcf.train.stage import RunData, run_train
    from llmcf.tune import apply_params, retrieval_dir

    cfg = load_config(best_yaml)
    if sets:
        cfg = apply_params(cfg, sets)
    cfg.train.seeds = seeds
    src = retrieval_dir(run, cfg) if cfg.ict.enabled else run
    out = run / "tuned" / (name or best_yaml.parent.name)
    out.mkdir(parents=True, exist_ok=True)
    t0, c0 = time.perf_counter(), time.process_time()
    summary = run_train(out, cfg, model, run=RunData(src, cfg), progress=False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    table = SliceTable(run)
    preds = load_predictions(out / "models" / summary["tag"], len(table.labels))
    results = [json.loads((out / "models" / summary["tag"] / f"seed_{s}" / "result.json").read_text())
               for s in summary["seeds"]]
    return {"tag": summary["tag"], "seeds": summary["seeds"], "test": summary["test"], "valid": summary["valid"],
            "seconds_per_epoch": summary["seconds_per_epoch"], "best_epochs": [r["best_epoch"] for r in results],
            "wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1), "slices": table.model(preds),
            "edges": {k: v["edges"] for k, v in table.kinds.items()}}


def markdown(rec: dict) -> str:
    method = rec.get("method", "llmcf")  # records written before --method compared LLM-CF
    label, sides, ablation = METHODS[method], sides_of(method), ablation_name(method)
    lines = [f"# Tuned vs tuned: {rec['name']}", "", f"- command: `{rec['command']}`", f"- machine: {rec['machine']}",
             f"- started: {rec['started']}", f"- protocol: {rec['protocol']}", "",
             "## The studies (validation AUC, seed 0)", "",
             "| side | trials | best trial | best valid AUC | best parameters |", "|---|---|---|---|---|"]
    for side in sides:
        s = rec["studies"].get(side)
        if s:
            params = ", ".join(f"{k}={v}" for k, v in s["best"]["params"].items())
            lines.append(f"| {side} | {s['trials']} | {s['best']['number']} | {s['best']['valid_auc']:.4f} | "
                         f"{params} |")
    for side in sides:
        start = (rec["studies"].get(side) or {}).get("start_at_config")
        if start:
            lines.append(f"\nTrial 0 of the {side} study trained the starting configuration's own values "
                         f"(`tune.start_at_config`): {', '.join(f'{k}={v}' for k, v in start.items())}.")
    finals = rec["finals"]
    if finals:
        lines += ["", f"## Test, best configuration of each side, seeds 0..{rec['seeds'] - 1}", "",
                  "| side | test AUC | Δ AUC vs backbone | test LogLoss | Δ LogLoss vs backbone | valid AUC | "
                  "best epochs | s/epoch | wall s | CPU s |", "|---|---|---|---|---|---|---|---|---|---|"]
        base = finals.get("backbone")
        for side in sides:
            r = finals.get(side)
            if r:
                lines.append(f"| {side} | {fmt(r['test']['auc'])} | {versus(r, base)} | {fmt(r['test']['logloss'])}"
                             f" | {versus(r, base, 'logloss')} | {fmt(r['valid']['auc'])} | {r['best_epochs']} | "
                             f"{r['seconds_per_epoch']['mean']:.1f} | {r['wall_seconds']} | {r['cpu_seconds']} |")
        ab = finals.get(ablation)
        if ab:
            lines.append(f"| {ablation} | {fmt(ab['test']['auc'])} | {versus(ab, base)} | {fmt(ab['test']['logloss'])}"
                         f" | {versus(ab, base, 'logloss')} | {fmt(ab['valid']['auc'])} | {ab['best_epochs']} | "
                         f"{ab['seconds_per_epoch']['mean']:.1f} | {ab['wall_seconds']} | {ab['cpu_seconds']} |")
            part = "the in-context module" if method == "llmcf" else f"{label}'s own part"
            lines += ["", f"`{ablation}` is an ablation, not a selection: the backbone alone with the backbone "
                      f"hyper-parameters (lr, weight decay, embedding size, dropout, backbone fields) of {label}'s "
                      f"best trial, so {label} minus this row is what {part} adds at equal backbone settings "
                      f"({label} vs this row: AUC {versus(finals[method], ab)}, LogLoss "
                      f"{versus(finals[method], ab, 'logloss')})." if method in finals else ""]
        rows = [(side, finals[side]) for side in (*sides, ablation) if side in finals]
        for kind in ("user", "item"):
            first = rows[0][1]
            lines += ["", f"Test AUC by {kind} training rows (edges {first['edges'][kind]}; mean over seeds):", "",
                      "| bucket | rows | " + " | ".join(s for s, _ in rows) + " |", "|---|---|" + "---|" * len(rows)]
            for j, b in enumerate(first["slices"][kind]):
                vals = " | ".join("–" if r["slices"][kind][j]["auc"] is None else f"{r['slices'][kind][j]['auc']:.4f}"
                                  for _, r in rows)
                lines.append(f"| {b['bucket']} | {b['rows']} | {vals} |")
    if rec.get("status"):
        lines += ["", rec["status"]]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--preset", default="ml-100k")
    ap.add_argument("--model", default="DCN")
    ap.add_argument("--trials", type=int, default=12, help="trials per side (the same budget for both)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--seeds-per-trial", type=int, default=1,
                    help="tune.seeds: each trial's objective is the mean valid AUC of seeds 0..n-1")
    ap.add_argument("--max-epochs", type=int, default=10)
    ap.add_argument("--patience", type=int, default=2)
    ap.add_argument("--bank-rows", type=int, default=240)
    ap.add_argument("--with-cot", action="store_true", help="LLM-CF reads the run's CoTs (the run has them)")
    ap.add_argument("--method", choices=list(METHODS), default="llmcf",
                    help="the method tuned against the backbone: LLM-CF, or a baseline (`llmcf tune --baseline`) "
                         "whose LLM stage outputs are in --run-dir (made by bench_baselines.py)")
    ap.add_argument("--run-config", action="store_true",
                    help="start from --run-dir's config.yaml (the settings its LLM stage ran with) instead of "
                         "the preset; --dataset must match it")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--run-dir", type=Path, default=Path("runs/bench-tuned-ml-100k"))
    ap.add_argument("--name", default=None)
    a = ap.parse_args()
    import torch

    from llmcf.config import load_config
    from llmcf.tune import run_tune, study_tag

    torch.set_num_threads(a.threads)
    cfg = load_config(a.run_dir / "config.yaml" if a.run_config else a.preset, [f"data.dataset={a.dataset}", f"train.max_epochs={a.max_epochs}",
                                 f"train.patience={a.patience}", f"train.threads={a.threads}", "embed.batch_size=64",
                                 f"tune.seeds={a.seeds_per_trial}"])
    name = a.name or f"{Path(a.dataset).name}-{a.model}" + ("" if a.method == "llmcf" else f"-{a.method}")
    label, SIDES, ABLATION = METHODS[a.method], sides_of(a.method), ablation_name(a.method)
    if a.run_config and not (a.run_dir / "config.yaml").exists():
        ap.error(f"--run-config: {a.run_dir / 'config.yaml'} is missing")
    out_json, out_md = RESULTS / f"tuned-{name}.json", RESULTS / f"tuned-{name}.md"
    rec = {"name": name, "command": "python benchmarks/bench_tuned.py " + shlex.join(sys.argv[1:]),
           "machine": f"{cpu_model()}, {os.cpu_count()} CPUs{ram_suffix()}, torch {torch.__version__} "
                      f"({a.threads} thread), load average at start {os.getloadavg()[0]:.1f} (shared with other jobs)",
           "started": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "method": a.method,
           "protocol": ("the run's config.yaml (its preset, split, label and LLM stage settings)" if a.run_config
                        else f"{a.preset} preset split/label") + f"; {a.model}; `llmcf tune` on each side, {a.trials} trials "
                       f"(TPE seed {cfg.tune.seed}, {cfg.tune.startup_trials} random start-up trials), objective "
                       + ("valid AUC of seed 0" if a.seeds_per_trial == 1 else
                          f"mean valid AUC of seeds 0..{a.seeds_per_trial - 1}")
                       + f"; early stopping on valid AUC (patience {a.patience}, max {a.max_epochs} epochs) in every "
                       + "trial and final run; "
                       + (f"{label} over the run's LLM stage outputs (baselines/{a.method}/, made once, read by "
                          "every trial)" if a.method != "llmcf" else
                          "LLM-CF " + ("with the run's CoTs" if a.with_cot else
                                       f"w/o CoT, bank = {a.bank_rows} random train rows"))
                       + f"; test read once per seed (0..{a.seeds - 1}) for each side's best trial",
           "trials": a.trials, "seeds": a.seeds, "studies": {}, "finals": {}}
    prev = json.loads(out_json.read_text()) if out_json.exists() else None
    if prev and prev.get("command") == rec["command"]:  # resuming the same study: keep when it started
        rec["started"], rec["machine"] = prev["started"], prev["machine"]

    def timed(side: str, row: dict) -> dict:
        """A final whose seeds were all cached took no time now: keep the times recorded when they trained."""
        old = ((prev or {}).get("finals") or {}).get(side)
        if old and old.get("tag") == row["tag"] and old.get("seeds") == row["seeds"] and row["wall_seconds"] < 10:
            row = {**row, "wall_seconds": old["wall_seconds"], "cpu_seconds": old["cpu_seconds"]}
        return row

    if a.method != "llmcf":
        if a.with_cot:
            ap.error("--with-cot is for --method llmcf")
    elif a.with_cot:
        if not (a.run_dir / "cot" / "selected.parquet").exists():
            ap.error(f"--with-cot: {a.run_dir / 'cot' / 'selected.parquet'} is missing (run `llmcf run` there first)")
    else:
        prepare(cfg, a.run_dir, a.bank_rows, seed=0)
    sides = {s: side_config(cfg, s, a.with_cot) for s in SIDES}

    def save() -> None:
        atomic_write_json(out_json, rec)
        atomic_write_text(out_md, markdown(rec))

    for n in range(1, a.trials + 1):  # one trial per side in turn: equal budgets at every point
        for side in SIDES:
            s = run_tune(a.run_dir, sides[side], a.model, trials=n)
            rec["studies"][side] = {k: s[k] for k in ("tag", "trials", "best", "importance", "all")}
            if s.get("start_at_config"):
                rec["studies"][side]["start_at_config"] = s["start_at_config"]
        rec["status"] = f"Partial: {n} of {a.trials} trials per side; the final trainings have not run yet."
        save()
    for side in SIDES:
        print(f"=== {side}: best configuration, seeds 0..{a.seeds - 1} ===", flush=True)
        best = a.run_dir / "tune" / study_tag(a.model, sides[side]) / "best.yaml"
        rec["finals"][side] = timed(side, final_train(a.run_dir, best, a.model, a.seeds))
        rec["status"] = "" if len(rec["finals"]) == len(SIDES) else f"Partial: {label}'s final training is running."
        save()
    print(f"=== {ABLATION}, seeds 0..{a.seeds - 1} ===", flush=True)
    best = a.run_dir / "tune" / study_tag(a.model, sides[a.method]) / "best.yaml"
    rec["status"] = "Partial: the ablation row is training."
    rec["finals"][ABLATION] = timed(ABLATION, final_train(a.run_dir, best, a.model, a.seeds,
                                                         name=f"{a.model}-at-{a.method}-params",
                                                         sets={"ict.enabled": False, "baseline.name": None}))
    rec["status"] = ""
    save()
    print(markdown(rec), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
