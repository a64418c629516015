"""SIGKILL llmcf's stages at random instants, resume or rerun, and check that nothing is lost, duplicated or trusted
mixed and that the previous model still loads (issue 19; the mechanism is ``llmcf.publish``).

Every round of a stage: start the real command in a subprocess with one of two configs (A or B, alternating, so a
kill can land while the stage replaces A's outputs by B's), SIGKILL it after a uniformly random delay in
[0.3, 1.05] x the time a full run of it takes (``WINDOW``), then check the run directory as a reader would:
    * trusted (``publish.problem`` is None) ⇒ the stage's content files are exactly those of a complete A or B run
      (else: a *mixed directory trusted* — the failure this suite exists to find);
    * untrusted ⇒ ``publish.verify`` raises a RunError naming the command to run (counted as *refused*);
then rerun the same command to completion and check its content files against the uninterrupted reference run of
that config (bit-identical: *0 lost, 0 duplicated*), and for CoT generation that every pool row is in exactly one
shard. "Content files" are the stage's files less the JSON metadata that carry timestamps (manifest.json,
meta.json, stats.json, score_meta.json, state.json, train_info.json).

Stages: ``data`` (`llmcf data build`, A/B = two split ratios), ``cot`` (`llmcf cot generate`, the real SmolLM2,
A/B = two cot.count; half the rounds first delete the archived generation so the killed run really generates),
``retrieve`` (`llmcf retrieve`, A/B = retrieval.k 4/2), ``train`` (`llmcf train --model DIN`, A/B = embed_dim 8/16;
checks the model `llmcf serve` would load is the old or the new one, never unloadable), ``run`` (`llmcf run`: odd
rounds a fresh directory, even rounds a finished A directory rerun with a changed data split or cot.count; after the
kill the original config is rerun and every stage must equal the reference and DIN+llmcf must load).

    nice -n 10 .venv/bin/python benchmarks/chaos.py --work /tmp/chaos --stages data,retrieve,train --kills 20
Appends one section per stage to benchmarks/results/chaos.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from _machine import cpu_model, ram_suffix  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

from llmcf import publish

ENV = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1",
           TOKENIZERS_PARALLELISM="false")
VOLATILE = {"manifest.json", "meta.json", "stats.json", "score_meta.json", "state.json", "train_info.json",
            "recgen_train.json"}
PRESET = {
    "data": {"dataset": "ml-100k", "split": "ratio", "split_ratio": [0.8, 0.1, 0.1], "label": "rating",
             "rating_threshold": 4, "max_users": 60, "history_len": 10},
    "models": ["DIN"], "variants": ["base", "full"], "seq_models": [],
    "train": {"seeds": 1, "max_epochs": 1, "threads": 1, "batch_size": 128},
    "llm": {"backend": "hf", "model": "smollm2-135m", "batch_size": 4, "threads": 1},
    "recgen": {"skip": True},
    "cot": {"fraction": None, "count": 6, "candidates": 1, "max_new_tokens": 16, "history_items": 4,
            "shard_size": 1, "min_chars": 1},
    "embed": {"encoder": "minilm"},
    "ict": {"dim": 16, "layers": 1},
    "retrieval": {"k": 4},
}
"""A tiny but real config: ml-100k (60 users), SmolLM2-135M without RecGen tuning, MiniLM, FAISS, DIN ± ICT."""

WINDOW = [0.3, 1.05]
"""Kill delays, as fractions of one uninterrupted run's wall time: the first ~30 % is interpreter and library start-up,
where a kill can touch nothing."""

STAGE_OF = {"data": "data", "cot": "cot_generate", "retrieve": "retrieve"}
ALT = {"data": ["data.split_ratio=[0.8,0.1,0.1]", "data.split_ratio=[0.6,0.2,0.2]"],
       "cot": ["cot.count=6", "cot.count=4"], "retrieve": ["retrieval.k=4", "retrieval.k=2"],
       "train": ["model.embed_dim=8", "model.embed_dim=16"]}


def llmcf(*args: str) -> list[str]:
    return [sys.executable, "-m", "llmcf.cli", *args]


def command(stage: str, run: Path, preset: Path, setting: str) -> list[str]:
    if stage == "data":
        return llmcf("data", "build", "--out", str(run), "--config", str(preset), "--set", setting)
    if stage == "cot":
        return llmcf("cot", "generate", "--run", str(run), "--set", setting)
    if stage == "retrieve":
        return llmcf("retrieve", "--run", str(run), "--set", setting)
    if stage == "train":
        return llmcf("train", "--run", str(run), "--model", "DIN", "--seeds", "1", "--quiet", "--set", setting)
    return llmcf("run", "--config", str(preset), "--out", str(run), *(("--set", setting) if setting else ()))


def content(run: Path, stage: str) -> dict[str, str]:
    return {k: v for k, v in publish.output_digests(run, stage).items() if Path(k).name not in VOLATILE}


def complete(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, env=ENV, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def kill_at_random(cmd: list[str], delay: float) -> bool:
    """Start cmd, SIGKILL it after ``delay`` s; True when it was still running (killed), False when it finished."""
    p = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        p.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGKILL)
        p.wait()
        return True


def refused(run: Path, stage: str) -> bool:
    try:
        publish.verify(run, stage)
    except Exception as e:  # noqa: BLE001 - a RunError naming the command is what a reader must get
        return "llmcf" in str(e)
    return False


def pool_rows_once(run: Path) -> bool:
    import pandas as pd

    keys = pd.read_parquet(run / "cot" / "pool.parquet")["key"].tolist()
    got = [json.loads(line)["key"] for f in sorted((run / "cot" / "shards").glob("shard_*.jsonl"))
           for line in f.read_text().splitlines() if line.strip()]
    return sorted(got) == sorted(keys) and len(set(got)) == len(got)


def loaded_dim(run: Path, tag: str) -> int | None:
    from llmcf.serve import Scorer

    try:
        s = Scorer.load(run, tag)
        s.score(["1", "2"], ["3"], user="1")
        return int(s.cfg.model.embed_dim)
    except Exception as e:  # noqa: BLE001
        print(f"  LOAD FAILED: {type(e).__name__}: {e}", flush=True)
        return None


def chaos_stage(stage: str, base: Path, work: Path, preset: Path, kills: int, rng: random.Random) -> dict:
    """One stage's rounds on a copy of ``base`` (a finished run of PRESET)."""
    run = work / stage
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(base, run, symlinks=True)
    if stage == "train":
        return chaos_train(run, kills, rng)
    name, (a, b) = STAGE_OF[stage], ALT[stage]
    refs, secs = {}, {}
    for s in (b, a):  # reference content of each config, ending at A
        secs[s] = complete(command(stage, run, preset, s))
        refs[s] = content(run, name)
    full = max(secs.values())
    t = dict(rounds=0, killed=0, finished_first=0, landed_running=0, trusted=0, trusted_mixed=0, refused=0,
             unrefused_untrusted=0, resumed_identical=0, resumed_differs=0, rows_once=0, rows_bad=0)
    current = a
    for k in range(kills):
        want = b if current == a else a
        if stage == "cot" and k % 2 == 0:
            shutil.rmtree(run / "cot" / "previous", ignore_errors=True)  # the killed run really generates
        delay = rng.uniform(*WINDOW) * full
        killed = kill_at_random(command(stage, run, preset, want), delay)
        t["rounds"] += 1
        t["killed" if killed else "finished_first"] += 1
        rec = publish.read_record(run, name) or {}
        t["landed_running"] += rec.get("state") == "running"
        if publish.problem(run, name) is None:
            t["trusted"] += 1
            if content(run, name) not in (refs[a], refs[b]):
                t["trusted_mixed"] += 1
                print(f"  MIXED DIRECTORY TRUSTED after round {k + 1}", flush=True)
        elif refused(run, name):
            t["refused"] += 1
        else:
            t["unrefused_untrusted"] += 1
        complete(command(stage, run, preset, want))  # resume / rerun the same command
        same = content(run, name) == refs[want]
        t["resumed_identical" if same else "resumed_differs"] += 1
        if stage == "cot":
            t["rows_once" if pool_rows_once(run) else "rows_bad"] += 1
        current = want
        print(f"{stage} round {k + 1}: kill at {delay:.1f}s of {full:.1f}s ({'killed' if killed else 'finished'}; "
              f"record {rec.get('state')}) -> resumed {'identical' if same else 'DIFFERS'}", flush=True)
    t["full_seconds"] = round(full, 1)
    return t


def chaos_train(run: Path, kills: int, rng: random.Random) -> dict:
    a, b = ALT["train"]
    dims = {a: 8, b: 16}
    full = complete(command("train", run, Path(), a))
    assert loaded_dim(run, "DIN") == 8
    t = dict(rounds=0, killed=0, finished_first=0, loads_old=0, loads_new=0, unloadable=0, resumed_new=0,
             resumed_other=0)
    current = a
    for k in range(kills):
        want = b if current == a else a
        delay = rng.uniform(*WINDOW) * full
        killed = kill_at_random(command("train", run, Path(), want), delay)
        t["rounds"] += 1
        t["killed" if killed else "finished_first"] += 1
        got = loaded_dim(run, "DIN")
        t["unloadable" if got is None else "loads_new" if got == dims[want] else "loads_old"] += 1
        complete(command("train", run, Path(), want))
        t["resumed_new" if loaded_dim(run, "DIN") == dims[want] else "resumed_other"] += 1
        current = want
        print(f"train round {k + 1}: kill at {delay:.1f}s of {full:.1f}s -> loads {got}", flush=True)
    t["full_seconds"] = round(full, 1)
    return t


def chaos_run(base: Path, work: Path, preset: Path, kills: int, rng: random.Random) -> dict:
    """`llmcf run` killed in a fresh directory (odd rounds) or while rerunning a finished one with a changed config
    (even rounds, alternating a data change and a CoT change); then the original config runs to completion."""
    stages = list(publish.STAGE_OUTPUTS)
    ref = {s: content(base, s) for s in stages}
    changes = ["data.split_ratio=[0.6,0.2,0.2]", "cot.count=4"]
    changed, full = {}, 0.0
    for change in changes:  # each changed-config run once, uninterrupted: its content and the scale of the delays
        scratch = work / "run-ref"
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.copytree(base, scratch, symlinks=True)
        full = max(full, complete(command("run", scratch, preset, change)))
        changed[change] = {s: content(scratch, s) for s in stages}
    t = dict(rounds=0, killed=0, finished_first=0, trusted_stages=0, trusted_mixed=0, refused_stages=0,
             unrefused_untrusted=0, resumed_identical=0, resumed_differs=0, model_loads=0, unloadable=0)
    for k in range(kills):
        run = work / "run"
        shutil.rmtree(run, ignore_errors=True)
        fresh = k % 2 == 0
        change = "" if fresh else changes[(k // 2) % 2]
        if not fresh:
            shutil.copytree(base, run, symlinks=True)
        delay = rng.uniform(*WINDOW) * full
        killed = kill_at_random(command("run", run, preset, change), delay)
        t["rounds"] += 1
        t["killed" if killed else "finished_first"] += 1
        for s in stages:
            if publish.read_record(run, s) is None:
                continue
            if publish.problem(run, s) is None:
                t["trusted_stages"] += 1
                if content(run, s) not in ((ref[s],) if fresh else (ref[s], changed[change][s])):
                    t["trusted_mixed"] += 1
                    print(f"  MIXED {s} TRUSTED after round {k + 1}", flush=True)
            elif refused(run, s):
                t["refused_stages"] += 1
            else:
                t["unrefused_untrusted"] += 1
        complete(command("run", run, preset, ""))
        same = all(content(run, s) == ref[s] for s in stages)
        t["resumed_identical" if same else "resumed_differs"] += 1
        t["model_loads" if loaded_dim(run, "DIN+llmcf") is not None else "unloadable"] += 1
        print(f"run round {k + 1} ({'fresh' if fresh else 'changed ' + change}): kill at {delay:.1f}s of {full:.1f}s "
              f"-> resumed {'identical' if same else 'DIFFERS'}", flush=True)
    t["full_seconds"] = round(full, 1)
    return t


def record(out: Path, stage: str, argv: list[str], tally: dict, started, load0, load1) -> None:
    what = {"data": "`llmcf data build`", "cot": "`llmcf cot generate` (real SmolLM2-135M)",
            "retrieve": "`llmcf retrieve`", "train": "`llmcf train` (DIN)", "run": "`llmcf run`"}[stage]
    lines = [f"## {started:%Y-%m-%d %H:%M} UTC — chaos.py: SIGKILL during {what}", "",
             f"- command: `python benchmarks/chaos.py {' '.join(argv)}` (tiny real config: ml-100k 60 users, "
             f"SmolLM2-135M untuned, MiniLM, FAISS, DIN ± ICT)",
             f"- machine: {cpu_model()}, {os.cpu_count()} logical CPUs{ram_suffix()}; load average {load0:.1f} "
             f"before, {load1:.1f} after (shared machine)",
             f"- result: {json.dumps(tally)}"]
    head = "" if out.exists() else "# Chaos checks (SIGKILL at random instants)\n\nNewest last.\n\n"
    with open(out, "a") as f:
        f.write(head + "\n".join(lines) + "\n\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, required=True, help="scratch folder for the run directories")
    ap.add_argument("--stages", default="data,retrieve,train,cot,run")
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--window", default=None, help="kill delays as fractions of a full run, e.g. 0.7,1.0 (default "
                                                   f"{WINDOW[0]},{WINDOW[1]})")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "chaos.md")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    if args.window:
        WINDOW[:] = [float(x) for x in args.window.split(",")]
    args.work.mkdir(parents=True, exist_ok=True)
    preset = args.work / "chaos.yaml"
    preset.write_text(yaml.safe_dump(PRESET))
    base = args.work / "base"
    if publish.read_record(base, "retrieve") is None or publish.problem(base, "retrieve") is not None \
            or not (base / "models" / "DIN+llmcf").is_dir():
        complete(command("run", base, preset, ""))
    argv = ["<scratch>" if a == str(args.work) else a for a in sys.argv[1:]]
    for stage in args.stages.split(","):
        started, load0 = dt.datetime.now(dt.timezone.utc), os.getloadavg()[0]
        tally = (chaos_run(base, args.work, preset, args.kills, rng) if stage == "run"
                 else chaos_stage(stage, base, args.work, preset, args.kills, rng))
        print(f"{stage}: {tally}", flush=True)
        record(args.out, stage, argv, tally, started, load0, os.getloadavg()[0])


if __name__ == "__main__":
    main()
