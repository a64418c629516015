"""A newcomer's path through their own data (issue 20): the protocol said out loud, messages on their own line,
time estimates and `llmcf run --plan`, RecGen's training data, per-model memory. Hand-made data sets only."""
from __future__ import annotations

import io
import json
import os
import re
import time

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

T0 = 1_400_000_000  # 2014-05-13, Unix seconds


def write_atomic(folder, *, label=False, positional=False, late_users=0, n_users=30, n_items=25, per_user=8, seed=0,
                 late_rows=2):
    """RecBole atomic files. ``label``: a 0/1 label column (CTR log); ``positional``: timestamps 0..n-1 per user;
    else real Unix times spread over 100 days. ``late_users``: users whose ``late_rows`` rows all come after
    everyone else's."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    head = "user_id:token\titem_id:token\t" + ("label:float" if label else "rating:float") + "\ttimestamp:float"
    lines = [head]
    for u in range(n_users + late_users):
        start = int(rng.integers(0, n_items))
        late = u >= n_users
        for t in range(late_rows if late else per_user):
            ts = t if positional else (T0 + (200 if late else int(rng.integers(0, 100))) * 86400 + t * 60 + u)
            y = int(rng.integers(0, 2)) if label else int(rng.choice([2, 4, 5]))
            lines.append(f"u{u}\ti{(start + t) % n_items}\t{y}\t{ts}")
    (folder / f"{folder.name}.inter").write_text("\n".join(lines) + "\n")
    items = ["item_id:token\ttitle:token_seq"] + [f"i{j}\tthing {j}" for j in range(n_items)]
    (folder / f"{folder.name}.item").write_text("\n".join(items) + "\n")
    return folder


def build(tmp_path, capsys, folder, *sets):
    from llmcf.cli import main

    rc = main(["data", "build", "--dataset", str(folder), "--out", str(tmp_path / "run"), "--config", "demo",
               "--set", "data.max_users=null", "--set", "data.label=auto", *[a for s in sets for a in ("--set", s)]])
    out = capsys.readouterr()
    return rc, out.out, out.err


# ---------------------------------------------------------------------------- 1. protocol said out loud
def test_ratio_split_of_a_ctr_log_says_the_protocol_and_suggests_a_time_split(tmp_path, capsys):
    rc, out, err = build(tmp_path, capsys, write_atomic(tmp_path / "ctr", label=True))
    assert rc == 0
    assert "split:     per-user chronological ratio split 80/10/10" in out
    assert "label:     label = the data's own 0/1 label column" in out
    assert "negatives: 0 per positive" in out and "history:   last 20 items" in out
    assert re.search(r"OOV valid: +\d+\.\d% of rows have a user unseen in train", out)
    warn = [ln for ln in err.splitlines() if "llmcf: warning:" in ln]
    assert len(warn) == 1 and warn[0].startswith("llmcf: warning:") and "--set data.split=time" in warn[0]


def test_time_split_prints_cut_times_and_warns_about_cold_start_users(tmp_path, capsys):
    folder = write_atomic(tmp_path / "ctr", label=True, late_users=10)
    rc, out, err = build(tmp_path, capsys, folder, "data.split=time")
    assert rc == 0
    m = re.search(r"cut times: train <= (\d+) \((\d{4}-\d\d-\d\d) [\d:]+ UTC\) < valid <= (\d+) .* < test", out)
    assert m, out
    stats = json.loads((tmp_path / "run" / "data" / "stats.json").read_text())
    q1, q2 = stats["protocol"]["cut_timestamps"]
    assert (int(m.group(1)), int(m.group(3))) == (int(q1), int(q2))
    assert m.group(2) == time.strftime("%Y-%m-%d", time.gmtime(q1))
    # the 10 late users are only in test: their share of distinct test users is printed and warned about
    ids = stats["oov_ids"]["test"]["user"]
    assert ids > 0.2 and f"{100 * ids:.1f}% of its distinct users" in out
    assert "suggest" not in err and "data.split=time" not in err  # the time split was applied: no suggestion
    assert re.search(r"^llmcf: warning: \d+% of test rows come from users never seen in training", err, re.M)


def test_per_user_positions_say_no_time_split_and_refuse_one_on_its_own_line(tmp_path, capsys):
    folder = write_atomic(tmp_path / "amz", positional=True)
    rc, out, err = build(tmp_path, capsys, folder)
    assert rc == 0 and "timestamps are each user's order" in out
    assert re.search(r"^llmcf: warning: timestamps are per-user orders, not times", err, re.M)
    rc, out, err = build(tmp_path, capsys, folder, "data.split=time")
    assert rc == 1
    # the build's progress bar was live when the split failed: the error still starts its own line
    assert "[data]" in err
    assert re.search(r"(^|\n)llmcf: error: .*global time split needs timestamps comparable", err)
    assert not re.search(r"[^\n]llmcf: error", err)


# ---------------------------------------------------------------------------- 2. messages on their own line
def _bar(stream):
    from tqdm import tqdm

    bar = tqdm(total=10, desc="work", file=stream, mininterval=0)
    bar.update(3)
    return bar


def test_error_under_a_live_bar_lands_on_its_own_line():
    from llmcf import progress

    s = io.StringIO()
    bar = _bar(s)
    assert not s.getvalue().endswith("\n")  # the bar's line is open
    progress.error("boom", stream=s)
    text = s.getvalue()
    assert "\nllmcf: error: boom\n" in text and text.endswith("llmcf: error: boom\n")
    assert "3/10" in text.split("llmcf: error")[0]  # the bar's last state was kept above the error
    bar.close()


def test_warning_and_log_record_under_a_live_bar_start_a_line_and_the_bar_is_redrawn(monkeypatch):
    import logging

    from llmcf import progress

    s = io.StringIO()
    monkeypatch.setattr("sys.stderr", s)
    bar = _bar(s)
    progress.warn("careful")
    progress.install()
    logging.getLogger("llmcf.data.loaders.test").warning("from a loader %d", 7)
    text = s.getvalue()
    for msg in ("llmcf: warning: careful\n", "llmcf: warning: from a loader 7\n"):
        before = text.split(msg)[0]
        assert before.endswith("\n"), repr(before[-40:])
    assert text.rstrip().endswith("3/10 [00:00<00:00, ?it/s]") or "3/10" in text.split("from a loader 7")[1]
    bar.close()


# ---------------------------------------------------------------------------- 3. estimates and --plan
def test_estimating_bar_prints_an_estimate_after_its_warm_up_and_records_the_rate(tmp_path, monkeypatch, capsys):
    from llmcf.estimate import EstimatingBar, load_rates

    monkeypatch.setenv("LLMCF_CACHE_DIR", str(tmp_path / "cache"))
    with EstimatingBar(total=50, initial=10, desc="toy stage", unit="row", rate_key="toy", warmup_units=3,
                       min_seconds=0, file=io.StringIO()) as bar:
        for _ in range(6):
            time.sleep(0.01)
            bar.update(1)
    err = capsys.readouterr().err
    m = re.findall(r"^\[toy stage\] estimate: ~40 rows at ~([\d.e-]+) s/row ≈ .* on this machine "
                   r"\(measured on the first 3 rows, ~.* to go\)$", err, re.M)
    assert len(m) == 1 and 0.005 < float(m[0]) < 1.0
    r = load_rates()["toy"]
    assert r["unit"] == "row" and r["units"] == 6 and 0.005 < r["seconds_per_unit"] < 1.0


def test_no_estimate_for_a_stage_of_a_few_seconds(capsys, monkeypatch, tmp_path):
    from llmcf.estimate import EstimatingBar

    monkeypatch.setenv("LLMCF_CACHE_DIR", "")
    with EstimatingBar(total=20, desc="quick", warmup_units=2, file=io.StringIO()) as bar:
        bar.update(2)
        bar.update(18)
    with EstimatingBar(total=20, desc="quiet", warmup_units=2, min_seconds=0, disable=True) as bar:
        time.sleep(0.01)
        bar.update(2)  # a disabled (inner) bar says nothing
    assert "estimate" not in capsys.readouterr().err


def test_plan_lists_cached_and_pending_stages_and_models(tmp_path, capsys, monkeypatch):
    from llmcf.cli import main
    from llmcf.config import load_config
    from llmcf.data.build import build_run_data
    from llmcf.data.loaders import load_dataset
    from llmcf.pipeline import cfg_variant, run_stage
    from llmcf.plan import make_plan
    from llmcf.train.stage import run_train

    monkeypatch.setenv("LLMCF_CACHE_DIR", str(tmp_path / "cache"))
    folder = write_atomic(tmp_path / "toy")
    run = tmp_path / "run"
    sets = [f"data.dataset={folder}", "data.max_users=null", "models=[DIN]", "variants=[base,full]",
            "train.max_epochs=1", "train.seeds=1"]
    cfg = load_config("demo", sets)
    cfg.seq_models = []
    run_stage(run, cfg, "data", "", lambda: build_run_data(load_dataset(str(folder)), cfg.data, run, False), set())
    run_train(run, cfg_variant(cfg, "base"), "DIN", progress=False)
    capsys.readouterr()

    status = {r["name"]: r["status"] for r in make_plan(cfg, run)}
    assert status["data"] == "cached" and status["train DIN"] == "cached"
    assert all(status[s] == "pending" for s in ("recgen", "cot_generate", "cot_score", "embed", "retrieve"))
    assert status["train DIN+llmcf"] == "pending"
    two = load_config("demo", sets[:-1] + ["train.seeds=2"])  # one more seed: seed 0 is reused, seed 1 pending
    two.seq_models = []
    din = next(r for r in make_plan(two, run) if r["name"] == "train DIN")
    assert din["status"] == "partly" and din["cached_seeds"] == [0] and din["pending_seeds"] == [1]
    assert make_plan(cfg, run, {"data"})[0]["status"] == "pending"  # --force data

    from llmcf.train.seq_stage import run_seq_train  # the sequential task's cache key has a data-stamp part

    seq = load_config("demo", sets + ["seq.max_epochs=1", "seq_models=[SASRec]"])
    run_seq_train(run, cfg_variant(seq, "base"), "SASRec", progress=False)
    capsys.readouterr()
    st = {r["name"]: r["status"] for r in make_plan(seq, run)}
    assert st["train seq-SASRec"] == "cached" and st["train seq-SASRec+llmcf"] == "pending"
    st = {r["name"]: r["status"] for r in make_plan(seq, run, {"data"})}
    assert st["train seq-SASRec"] == "pending"  # data rebuilt: the stamp part of its key cannot be trusted
    changed = load_config("demo", sets + ["data.history_len=5"])
    changed.seq_models = []
    st2 = {r["name"]: r["status"] for r in make_plan(changed, run)}
    assert st2["data"] == "pending" and st2["train DIN"] == "pending"  # new data config: nothing reusable

    rc = main(["run", "--plan", "--config", "demo", "--out", str(run), *[a for s in sets for a in ("--set", s)],
               "--set", "seq_models=[]"])
    out = capsys.readouterr().out
    assert rc == 0 and f"plan for {run} (nothing was run):" in out
    assert re.search(r"^  data +cached", out, re.M) and re.search(r"^  recgen +pending", out, re.M)
    assert re.search(r"^  train DIN +cached", out, re.M)
    # estimates are per model: DIN's measured time is not lent to DIN+llmcf
    assert re.search(r"^  train DIN\+llmcf +pending +seed\(s\) 0 to train; no training of this model measured", out,
                     re.M)
    assert re.search(r"^6 to run, 2 cached", out, re.M)
    assert not (run / "llm").exists() and not (run / "stages" / "recgen.json").exists()  # nothing was run


# ---------------------------------------------------------------------------- 4. RecGen's training data
def test_recgen_trained_on_says_why_general_rows_were_fewer_than_asked():
    from llmcf.llm.recgen.summary import trained_on, trained_on_line

    info = {"rec": 400, "rec_positive_share": 0.5, "general_wanted": 133, "general": 34,
            "general_source": {"source": "self-distilled", "read": 40, "kept": 40, "heldout": 6}}
    kinds = ["rec"] * 400 + ["general"] * 34
    sched = [np.arange(i * 8, i * 8 + 8) for i in range(12)]  # 12 steps of 8: the first 96 rows only
    t = trained_on(info, kinds, sched, num_rec=400, steps=12)
    assert t["general_asked"] == 133 and t["general_available"] == 34 and t["general"] == 34
    assert t["seen"] == {"rec": 96, "general": 0} and t["row_visits"] == 96
    line = trained_on_line(t)
    assert "133 asked, 34 available" in line and "6 held out for the perplexity check" in line
    assert "12 steps reached 96 of 400 rec rows" in line


# ---------------------------------------------------------------------------- 5. per-model memory and the report
def test_peak_memory_is_measured_per_block_not_per_process():
    from llmcf.resources import PeakMemory

    with PeakMemory(interval=0.005) as big:
        a = np.ones(200 * 2 ** 20 // 8)  # 200 MB touched
        time.sleep(0.05)
        del a
    with PeakMemory(interval=0.005) as small:
        b = np.ones(10 * 2 ** 20 // 8)
        time.sleep(0.05)
        del b
    rb, rs = big.record(), small.record()
    assert rb["peak_delta_mb"] > 150, rb
    assert rs["peak_delta_mb"] < 60, rs  # the second block does not inherit the first one's peak
    assert rs["rss_peak_mb"] < rb["rss_peak_mb"]


def test_freed_memory_of_an_earlier_stage_is_not_counted_at_the_start():
    import torch

    from llmcf.resources import PeakMemory, rss_mb

    before = rss_mb()
    xs = [torch.ones(16, 1024) for _ in range(10000)]  # ~640 MB in 64 kB blocks (heap, not mmap)
    del xs  # freed, but the C heap usually keeps the pages (RSS stays ~640 MB higher without the trim)
    with PeakMemory() as m:
        pass
    assert m.record()["rss_start_mb"] < before + 200  # the freed 640 MB is not counted at the start


def test_train_seeds_records_each_models_own_memory(tmp_path, monkeypatch):
    import torch

    from llmcf.train.loop import FitResult
    from llmcf.train.seeds import train_seeds

    monkeypatch.setenv("LLMCF_CACHE_DIR", "")

    def train_one(seed, mb):
        x = np.ones(mb * 2 ** 20 // 8)
        time.sleep(0.1)
        del x
        return torch.nn.Linear(2, 1), FitResult(best_epoch=1, valid={"auc": 0.5}, test={"auc": 0.5}, curve=[],
                                                seconds_per_epoch=0.1, peak_rss_mb=1.0)

    recs = {mb: train_seeds(tmp_path / f"m{mb}", f"m{mb}", "M", "h", range(1), lambda s, mb=mb: train_one(s, mb),
                            cached_line=str, done_line=lambda r: "")[0] for mb in (150, 5)}
    assert recs[150]["memory"]["peak_delta_mb"] > 100 and recs[5]["memory"]["peak_delta_mb"] < 60
    assert recs[150]["peak_rss_mb"] != recs[5]["peak_rss_mb"]
    assert json.loads((tmp_path / "m5" / "seed_0" / "result.json").read_text())["memory"] == recs[5]["memory"]


def test_report_protocol_section_has_split_oov_recgen_and_memory(tmp_path, capsys):
    from llmcf.report import run_details

    folder = write_atomic(tmp_path / "ctr", label=True, late_users=10)
    build(tmp_path, capsys, folder, "data.split=time")
    run = tmp_path / "run"
    rg = run / "llm" / "recgen"
    rg.mkdir(parents=True)
    (rg / "eval_base.json").write_text(json.dumps({"rec": {"auc": 0.51, "logloss": 0.9, "n": 64}}))
    (rg / "eval_tuned.json").write_text(json.dumps({"rec": {"auc": 0.6, "logloss": 0.69, "n": 64}, "trained_on": {
        "rec": 96, "rec_asked": 96, "general": 4, "general_asked": 32, "general_source": "self-distilled",
        "steps": 8, "row_visits": 64, "seen": {"rec": 60, "general": 4}, "why": ["general: 32 asked, 4 available"]}}))
    text = run_details(run, [{"tag": "DIN", "model": "DIN", "peak_rss_mb": 812.0, "peak_delta_mb": 95.0}])
    stats = json.loads((run / "data" / "stats.json").read_text())
    from llmcf.report import split_text

    split = split_text(stats["protocol"])  # the summary's split line states a time split with its cut times
    assert "split: global time split 80/10/10" in split and "cut times: train <=" in split
    assert "data OOV test:" in text
    assert "RecGen base LLM p(Yes) AUC 0.5100" in text and "RecGen tuned LLM p(Yes) AUC 0.6000" in text
    assert "RecGen trained on 96 rec rows" in text and "32 asked, 4 available" in text
    assert "DIN 812 MB (+95)" in text


def test_jobs_estimate_after_the_first_model_uses_per_kind_means(capsys, monkeypatch, tmp_path):
    from llmcf import estimate

    monkeypatch.setenv("LLMCF_CACHE_DIR", str(tmp_path))
    estimate.save_rate("train B", 120.0, "seed", 1)  # B was trained on this machine before: its time is used
    with estimate.JobsEstimate("train", ["A", "A", "A+llmcf", "B"]):
        estimate.trained("A", 60.0)
        estimate.trained("A", 30.0)
    err = capsys.readouterr().err.splitlines()
    lines = [ln for ln in err if ln.startswith("[train] estimate:")]
    # after the first seed: A 60 s (this run) + A+llmcf 60 s (assumed like the first) + B 120 s (recorded) = 4 min
    assert lines == ["[train] estimate: ~3 more model trainings ≈ 4.0 min on this machine (first took 60 s; "
                     "A+llmcf not measured yet: assumed like the first)"]
    assert estimate._jobs == []
