"""Our ranking backbones side by side with FuxiCTR's (DeepFM, DCN, DIN) on the same rows: test AUC, LogLoss, CPU s/epoch.

    python benchmarks/bench_fuxictr.py --run ../runs/fx-ml100k --fuxictr-python ../fxvenv/bin/python \\
        --fuxictr-zoo ../FuxiCTR/model_zoo --models DeepFM,DCN,DIN --seeds 3 --threads 1

What it does. ``--run`` is a run directory written by ``llmcf data build`` (e.g. ``llmcf data build --dataset
ml-100k --config ml-100k --out ../runs/fx-ml100k``). Its train/valid/test Parquet rows are exported once to FuxiCTR's
model-input format (``export_fuxictr``: one ``.npz`` per split plus ``feature_map.json``, ids taken from our
vocabulary, so both libraries see the same ids, the same out-of-vocabulary rows and the same history). Then, model
by model and seed by seed (the side that goes first alternates per seed, so machine load hits both alike):
ours is trained by ``llmcf train`` in a fresh process, FuxiCTR's by this same file in ``--fuxictr-worker`` mode, run
by the FuxiCTR interpreter. Both sides use the same settings: embedding 32, MLP [200, 80] (ReLU), dropout 0.1,
Adam lr 0.01, L2 1e-4 on every parameter (our Adam ``weight_decay``; FuxiCTR's ``embedding_regularizer`` and
``net_regularizer``, the same gradient), batch 128, shuffled every epoch, early stopping on validation AUC with
patience 2 and no learning-rate decay (FuxiCTR's ``reduce_lr_on_plateau`` is switched off: that is our rule), at most
20 epochs, the best epoch reloaded and tested once, 1 torch thread per side. FuxiCTR keeps its own initialisation and
its gradient-norm clipping at 10 (its ``fit`` default). Test AUC / LogLoss / gAUC of both sides are computed by our
metric code (the worker saves FuxiCTR's test predictions). CPU s/epoch is ``time.process_time`` of the training
steps of an epoch (validation and checkpointing excluded) in each side's own process, wall s/epoch beside it.

Features (ml-100k has no brands: the brand fields are padding on both sides, zero vectors):
    DeepFM, DCN   user, item, brand, genres (mean over the item's genres), and the last 20 history items as three
                  mean-pooled fields (``--history-pooling mean``, FuxiCTR's ``MaskedAveragePooling``): items, brands,
                  genres. Ours averages each history item's genre mean; FuxiCTR averages all the history's genre ids
                  (an item with more genres weighs more). ``--history-pooling none`` drops the history fields on
                  FuxiCTR's side (what a FuxiCTR user gets from a sequence field with no encoder set).
                  FuxiCTR's DeepFM first-order term sum-pools sequence fields, ours mean-pools them.
    DIN           attention over the history with (item, brand, genre) keys, attention MLP [80, 40] ReLU, no
                  softmax, like ours; FuxiCTR needs one genre id per history position, so its DIN gets each item's
                  first genre where ours averages all of the item's genres.

Setting up FuxiCTR (optional, only for this benchmark; llmcf never imports it). In a separate virtual environment:

    python3.11 -m venv ../fxvenv
    ../fxvenv/bin/pip install torch==2.13.0          # the CPU wheel; pin torch, never take an unpinned one
    ../fxvenv/bin/pip install --no-deps fuxictr==2.3.10
    ../fxvenv/bin/pip install numpy pandas pyarrow polars pydantic pyyaml scikit-learn tqdm h5py ray==2.60.0
    git clone https://github.com/reczoo/FuxiCTR ../FuxiCTR   # its model_zoo holds DeepFM, DCN and DIN

The pip package has FuxiCTR's layers and trainer but not its models: those live in the repository's ``model_zoo``
(``DeepFM/DeepFM_torch/src``, ``DCN/DCN_torch/src``, ``DIN/src``), which ``--fuxictr-zoo`` points at; use a checkout
whose models match the installed package. ``ray`` is imported by FuxiCTR's data-loader package even though this
benchmark uses its npz loader (``num_workers=0``: loading runs in the training process and counts in its CPU time);
Ray itself is never started. Nothing is downloaded at run time.

Results: benchmarks/results/fuxictr.json and fuxictr.md (command, machine, date, versions, settings, per-seed rows).
Finished (side, model, seed) runs are kept under ``<run>/fuxictr/`` and reused, so an interrupted run resumes.
Not part of CI.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS_DIR = HERE / "results"
MODELS = ("DeepFM", "DCN", "DIN")
SETTINGS = {"embed_dim": 32, "mlp": [200, 80], "dropout": 0.1, "lr": 0.01, "l2": 1e-4, "batch_size": 128,
            "patience": 2, "max_epochs": 20, "attention_mlp": [80, 40]}
# The same settings as `llmcf train` overrides (a preset change cannot silently alter the benchmark).
OURS_SETTINGS = ["model.embed_dim=32", "model.mlp=[200,80]", "model.dropout=0.1", "train.lr=0.01",
                 "train.weight_decay=0.0001", "train.batch_size=128", "train.patience=2"]
FEATURES_FM = ["user_id", "item_id", "brand", "genres", "hist_items", "hist_brands", "hist_genres"]
FEATURES_DIN = ["user_id", "item_id", "brand", "genre", "hist_items", "hist_brands", "hist_genre"]
ZOO_DIRS = {"DeepFM": "DeepFM/DeepFM_torch/src", "DCN": "DCN/DCN_torch/src", "DIN": "DIN/src"}


# ----------------------------------------------------------------------------------------------------------------
# export: our run directory -> FuxiCTR's model input (npz per split + feature_map.json)
# ----------------------------------------------------------------------------------------------------------------

def _compact_nonzero(a):
    """Rows of a 2-D id array with the non-zero ids moved to the front (order kept), trimmed to the longest row
    (at least one column)."""
    import numpy as np

    order = np.argsort(a == 0, axis=1, kind="stable")
    out = np.take_along_axis(a, order, axis=1)
    width = max(int((a != 0).sum(1).max()) if a.size else 0, 1)
    return np.ascontiguousarray(out[:, :width])


def feature_arrays(enc: dict, schema) -> dict:
    """FuxiCTR columns of one split from our encoded arrays (``llmcf.data.features.load_encoded``) and side tables
    (``FeatureSchema``). The history stays left-padded with 0 (most recent last), as in our batches."""
    import numpy as np

    item_brand = np.asarray(schema.item_brand, dtype=np.int64)
    item_cats = np.asarray(schema.item_cats, dtype=np.int64)
    hist = enc["hist"].astype(np.int64)
    L = hist.shape[1]
    mask = np.arange(L)[None, :] >= (L - enc["hist_len"][:, None])
    hist = hist * mask
    hist_cats = item_cats[hist]  # [N, L, C]; row 0 (padding) has no genres
    return {"user_id": enc["user"].astype(np.int64), "item_id": enc["item"].astype(np.int64),
            "brand": item_brand[enc["item"]], "genres": item_cats[enc["item"]], "genre": item_cats[enc["item"], 0],
            "hist_items": hist, "hist_brands": item_brand[hist], "hist_genre": hist_cats[:, :, 0],
            "hist_genres": hist_cats.reshape(len(hist), -1), "label": enc["label"].astype(np.float32)}


def export_fuxictr(run_dir, out_dir, dataset_id: str = "llmcf") -> dict:
    """Write ``out_dir/{train,valid,test}.npz`` and ``out_dir/feature_map.json`` (FuxiCTR's ``FeatureMap`` JSON) from
    the CTR rows of ``run_dir`` (``llmcf data build``), with our vocabulary's ids (0 = padding, 1 = out of
    vocabulary). Columns: user_id, item_id, brand, genre (first genre), genres (all, 0-padded), hist_items,
    hist_brands, hist_genre (first genre per history position; these three share the tables of item_id, brand,
    genre), hist_genres (every genre id of the history, non-zero first; shares genres' table), label.
    Returns ``{"rows": {split: n}, "features": {name: spec}}``."""
    import numpy as np

    from llmcf.data.features import load_encoded
    from llmcf.data.schema import SPLITS
    from llmcf.io import atomic_write_json
    from llmcf.train.inputs import load_model_inputs

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    stats = json.loads((run_dir / "data" / "stats.json").read_text())
    hist_len = int(stats["protocol"]["history_len"])
    inputs = load_model_inputs(run_dir, hist_len)
    schema = inputs.schema
    splits = {s: feature_arrays(load_encoded(run_dir, s, inputs.vocab, hist_len), schema) for s in SPLITS}
    # one width for the flattened history genres across splits (the loader stacks fixed-width columns)
    width = max(int((splits[s]["hist_genres"] != 0).sum(1).max()) for s in SPLITS)
    for s in SPLITS:
        splits[s]["hist_genres"] = _compact_nonzero(splits[s]["hist_genres"])[:, :max(width, 1)]
        if splits[s]["hist_genres"].shape[1] < max(width, 1):  # a split whose longest row is shorter
            pad = max(width, 1) - splits[s]["hist_genres"].shape[1]
            splits[s]["hist_genres"] = np.pad(splits[s]["hist_genres"], ((0, 0), (0, pad)))
    n_cats_cols = int(np.asarray(schema.item_cats).shape[1])

    def cat(source, vocab):
        return {"source": source, "type": "categorical", "padding_idx": 0, "vocab_size": int(vocab)}

    def seq(source, vocab, max_len, share=None):
        spec = {"source": source, "type": "sequence", "padding_idx": 0, "vocab_size": int(vocab),
                "max_len": int(max_len)}
        if share:
            spec["share_embedding"] = share
        return spec

    features = {
        "user_id": cat("user", schema.n_users), "item_id": cat("item", schema.n_items),
        "brand": cat("item", schema.n_brands), "genre": cat("item", schema.n_cats),
        "genres": seq("item", schema.n_cats, n_cats_cols),
        "hist_items": seq("user", schema.n_items, hist_len, "item_id"),
        "hist_brands": seq("user", schema.n_brands, hist_len, "brand"),
        "hist_genre": seq("user", schema.n_cats, hist_len, "genre"),
        "hist_genres": seq("user", schema.n_cats, max(width, 1), "genres"),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    for s, arrays in splits.items():
        tmp = out_dir / f".{s}.tmp.npz"
        np.savez(tmp, **arrays)
        os.replace(tmp, out_dir / f"{s}.npz")
    input_length = sum(f["max_len"] if f["type"] == "sequence" else 1 for f in features.values())
    atomic_write_json(out_dir / "feature_map.json", {
        "dataset_id": dataset_id, "num_fields": len(features), "total_features": int(sum(
            f["vocab_size"] for f in features.values() if "share_embedding" not in f)),
        "input_length": input_length, "labels": ["label"],
        "features": [{k: v} for k, v in features.items()]})
    return {"rows": {s: int(len(a["label"])) for s, a in splits.items()}, "features": features}


# ----------------------------------------------------------------------------------------------------------------
# worker: runs under FuxiCTR's interpreter (imports fuxictr, never llmcf)
# ----------------------------------------------------------------------------------------------------------------

def fuxictr_worker(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    import random

    import numpy as np
    import torch

    torch.set_num_threads(int(spec["threads"]))
    model_name, seed = spec["model"], int(spec["seed"])
    sys.path.insert(0, str(Path(spec["zoo"]) / ZOO_DIRS[model_name]))
    import importlib

    import fuxictr
    from fuxictr.features import FeatureMap
    from fuxictr.pytorch.dataloaders.npz_dataloader import NpzDataLoader

    Model = getattr(importlib.import_module(model_name), model_name)
    data = Path(spec["data"])
    s = spec["settings"]
    fm = FeatureMap(spec["dataset_id"], str(data))
    use = FEATURES_DIN if model_name == "DIN" else FEATURES_FM
    pooled = []
    if model_name != "DIN":
        pooled = ["genres"]
        if spec["history_pooling"] == "mean":
            pooled += ["hist_items", "hist_brands", "hist_genres"]
        else:
            use = [f for f in use if not f.startswith("hist_")]
    fm.load(str(data / "feature_map.json"), params={
        "embedding_dim": s["embed_dim"], "use_features": use,
        "feature_specs": [{"name": pooled, "feature_encoder": "layers.MaskedAveragePooling()"}] if pooled else None})
    fm.num_fields = fm.get_num_fields()  # load() counts the fields before use_features filters them
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    common = dict(model_id=f"{model_name}_seed{seed}", gpu=-1, learning_rate=s["lr"], embedding_dim=s["embed_dim"],
                  net_dropout=s["dropout"], batch_norm=False, embedding_regularizer=s["l2"], net_regularizer=s["l2"],
                  optimizer="adam", loss="binary_crossentropy", metrics=["AUC", "logloss"], monitor="AUC",
                  monitor_mode="max", early_stop_patience=s["patience"], reduce_lr_on_plateau=False,
                  model_root=spec["model_root"], verbose=0)
    per_model = {
        "DeepFM": dict(hidden_units=s["mlp"], hidden_activations="ReLU"),
        "DCN": dict(dnn_hidden_units=s["mlp"], dnn_activations="ReLU", num_cross_layers=3),
        "DIN": dict(dnn_hidden_units=s["mlp"], dnn_activations="ReLU", attention_hidden_units=s["attention_mlp"],
                    attention_hidden_activations="ReLU", attention_output_activation=None, attention_dropout=0,
                    din_target_field=[("item_id", "brand", "genre")],
                    din_sequence_field=[("hist_items", "hist_brands", "hist_genre")], din_use_softmax=False)}
    kwargs = {**common, **per_model[model_name], **spec.get("extra", {})}
    model = Model(fm, **kwargs)
    os.makedirs(model.model_dir, exist_ok=True)  # its checkpoint folder (FuxiCTR's own scripts create it)
    bs = int(s["batch_size"])
    train = NpzDataLoader(fm, str(data / "train.npz"), batch_size=bs, shuffle=True, num_workers=0)
    valid = NpzDataLoader(fm, str(data / "valid.npz"), batch_size=2048, shuffle=False, num_workers=0)
    test = NpzDataLoader(fm, str(data / "test.npz"), batch_size=2048, shuffle=False, num_workers=0)

    epochs, valid_auc = [], []
    inner = {"cpu": 0.0, "wall": 0.0}
    orig_epoch, orig_eval, orig_check = model.train_epoch, model.eval_step, model.checkpoint_and_earlystop

    def timed_epoch(gen):
        inner.update(cpu=0.0, wall=0.0)
        t0, c0 = time.perf_counter(), time.process_time()
        orig_epoch(gen)
        epochs.append({"wall": time.perf_counter() - t0 - inner["wall"], "cpu": time.process_time() - c0 - inner["cpu"]})

    def timed_eval():
        t0, c0 = time.perf_counter(), time.process_time()
        orig_eval()
        inner["wall"] += time.perf_counter() - t0
        inner["cpu"] += time.process_time() - c0

    def record_logs(logs, *a, **k):
        valid_auc.append(float(logs["AUC"]))
        return orig_check(logs, *a, **k)

    model.train_epoch, model.eval_step, model.checkpoint_and_earlystop = timed_epoch, timed_eval, record_logs
    model.fit(train, epochs=int(s["max_epochs"]), validation_data=valid)
    preds = model.predict(test)
    out = Path(spec["out"])
    np.save(out.with_suffix(".test_probs.npy"), np.asarray(preds, dtype=np.float64))
    best, best_epoch = -float("inf"), 0
    for i, a in enumerate(valid_auc):  # FuxiCTR's rule: better by more than min_delta = 1e-6
        if a >= best + 1e-6:
            best, best_epoch = a, i + 1
    result = {"side": "fuxictr", "model": model_name, "seed": seed, "fuxictr_version": fuxictr.__version__,
              "torch": torch.__version__, "best_epoch": best_epoch, "epochs_run": len(epochs),
              "valid_auc": best, "valid_auc_curve": valid_auc,
              "cpu_seconds_per_epoch": float(np.mean([e["cpu"] for e in epochs])),
              "seconds_per_epoch": float(np.mean([e["wall"] for e in epochs])), "epochs": epochs,
              "params": int(sum(p.numel() for p in model.parameters())), "features": list(fm.features),
              "kwargs": {k: (v if isinstance(v, (int, float, str, bool, type(None), list)) else repr(v))
                         for k, v in kwargs.items() if k != "model_root"}}
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, out)


# ----------------------------------------------------------------------------------------------------------------
# driver
# ----------------------------------------------------------------------------------------------------------------

def _child_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _run(cmd: list[str], log: Path, env: dict) -> tuple[float, float]:
    """Run ``cmd`` (output appended to ``log``); returns (wall s, CPU s of the process); raises on failure."""
    import shlex
    import subprocess

    c0, t0 = _child_cpu(), time.perf_counter()
    with open(log, "a") as f:
        f.write(f"\n$ {shlex.join(cmd)}\n")
        f.flush()
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT).returncode
    if rc != 0:
        raise SystemExit(f"[fuxictr] `{shlex.join(cmd[:4])} ...` failed (exit {rc}); see {log}")
    return time.perf_counter() - t0, _child_cpu() - c0


def run_ours(run_dir: Path, model: str, seed: int, threads: int, extra: list[str], log: Path, env: dict) -> dict:
    rec_path = run_dir / "models" / model / f"seed_{seed}" / "result.json"
    cmd = [sys.executable, "-m", "llmcf.cli", "train", "--run", str(run_dir), "--model", model, "--seeds",
           str(seed + 1), "--config", str(run_dir / "config.yaml"), "--quiet"]
    for o in [*OURS_SETTINGS, f"train.max_epochs={SETTINGS['max_epochs']}", f"train.threads={threads}", *extra]:
        cmd += ["--set", o]
    wall, cpu = _run(cmd, log, env)
    r = json.loads(rec_path.read_text())
    if "cpu_seconds_per_epoch" not in r:
        raise SystemExit(f"[fuxictr] {rec_path} has no cpu_seconds_per_epoch (trained by an older llmcf); "
                         "remove it to retrain")
    return {"side": "llmcf", "model": model, "seed": seed, "best_epoch": r["best_epoch"],
            "epochs_run": len(r["curve"]), "valid_auc": r["valid"]["auc"], "test": r["test"],
            "cpu_seconds_per_epoch": r["cpu_seconds_per_epoch"], "seconds_per_epoch": r["seconds_per_epoch"],
            "params": r["params"], "process_wall_seconds": wall, "process_cpu_seconds": cpu}


def run_fuxictr(args, work: Path, model: str, seed: int, test_labels, test_users, log: Path, env: dict) -> dict:
    import numpy as np

    from llmcf.train.metrics import ctr_metrics

    out = work / "results" / f"{model}_seed{seed}_{args.variant}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    spec = {"zoo": str(args.fuxictr_zoo.resolve()), "data": str(work / "data"), "dataset_id": "llmcf",
            "model": model, "seed": seed, "threads": args.threads, "settings": SETTINGS,
            "history_pooling": args.history_pooling, "model_root": str(work / "checkpoints"), "out": str(out),
            "extra": {k: _scalar(v) for k, v in (p.split("=", 1) for p in args.fuxictr_param)}}
    spec_path = out.with_suffix(".spec.json")
    spec_path.write_text(json.dumps(spec, indent=1))
    wall, cpu = _run([str(args.fuxictr_python), str(Path(__file__).resolve()), "--fuxictr-worker", str(spec_path)],
                     log, env)
    r = json.loads(out.read_text())
    probs = np.load(out.with_suffix(".test_probs.npy"))
    r["test"] = ctr_metrics(test_labels, probs, test_users)
    r.update(process_wall_seconds=wall, process_cpu_seconds=cpu)
    return r


def _scalar(v: str):
    try:
        return json.loads(v)
    except ValueError:
        return v


def summarise(rows: list[dict]) -> dict:
    from llmcf.train.metrics import mean_std

    return {"test_auc": mean_std([r["test"]["auc"] for r in rows]),
            "test_logloss": mean_std([r["test"]["logloss"] for r in rows]),
            "test_gauc": mean_std([r["test"]["gauc"] for r in rows]),
            "valid_auc": mean_std([r["valid_auc"] for r in rows]),
            "best_epoch": mean_std([r["best_epoch"] for r in rows]),
            "epochs_run": mean_std([r["epochs_run"] for r in rows]),
            "cpu_seconds_per_epoch": mean_std([r["cpu_seconds_per_epoch"] for r in rows]),
            "seconds_per_epoch": mean_std([r["seconds_per_epoch"] for r in rows]), "seeds": len(rows)}


def render(rec: dict) -> str:
    def ms(d, digits=4):
        return f"{d['mean']:.{digits}f} ± {d['std']:.{digits}f}"

    out = [f"## {rec['label']}: {rec['title']}", "",
           f"- command: `{rec['command']}`", f"- date: {rec['date']} (git {rec['git_commit']})",
           f"- machine: {rec['machine']}; load average {rec['load_start']:.1f} at start, {rec['load_end']:.1f} at "
           "end (shared machine)",
           f"- versions: llmcf at git {rec['git_commit']}, torch {rec['torch_ours']} (ours) / "
           f"{rec.get('torch_fuxictr', '?')} (FuxiCTR's venv), fuxictr {rec.get('fuxictr_version', '?')}",
           f"- data: run `{rec['run']}` ({rec['dataset']}), rows train {rec['rows']['train']}, valid "
           f"{rec['rows']['valid']}, test {rec['rows']['test']}; FuxiCTR gets the same rows and ids "
           "(`export_fuxictr`)",
           f"- settings (both sides): {rec['settings_text']}",
           f"- history pooling: {rec['history_pooling_text']}",
           *([f"- note: {rec['note']}"] if rec.get("note") else []),
           *([f"- extra settings: ours {rec['ours_extra'] or 'none'}; FuxiCTR {rec['fuxictr_extra'] or 'none'}"]
             if rec.get("ours_extra") or rec.get("fuxictr_extra") else []), "",
           "| model | library | test AUC | test LogLoss | test gAUC | valid AUC | best epoch | epochs run | "
           "CPU s/epoch | wall s/epoch | seeds |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for model, sides in rec["models"].items():
        for side in ("llmcf", "fuxictr"):
            if side not in sides:
                continue
            s = sides[side]["summary"]
            out.append(f"| {model} | {'llmcf' if side == 'llmcf' else 'FuxiCTR'} | {ms(s['test_auc'])} | "
                       f"{ms(s['test_logloss'])} | {ms(s['test_gauc'])} | {ms(s['valid_auc'])} | "
                       f"{s['best_epoch']['mean']:.1f} | {s['epochs_run']['mean']:.1f} | "
                       f"{ms(s['cpu_seconds_per_epoch'], 2)} | {s['seconds_per_epoch']['mean']:.2f} | "
                       f"{s['seeds']} |")
    out += ["", "CPU time per epoch, FuxiCTR / llmcf (≥ 1.0: ours is cheaper), and test AUC difference llmcf − "
                "FuxiCTR:", "", "| model | CPU ratio | wall ratio | ΔAUC (llmcf − FuxiCTR) | seeds |",
            "|---|---|---|---|---|"]
    for model, sides in rec["models"].items():
        if "llmcf" in sides and "fuxictr" in sides:
            a, b = sides["llmcf"]["summary"], sides["fuxictr"]["summary"]
            out.append(f"| {model} | {b['cpu_seconds_per_epoch']['mean'] / a['cpu_seconds_per_epoch']['mean']:.2f}x | "
                       f"{b['seconds_per_epoch']['mean'] / a['seconds_per_epoch']['mean']:.2f}x | "
                       f"{a['test_auc']['mean'] - b['test_auc']['mean']:+.4f} | "
                       f"{min(a['seeds'], b['seeds'])} |")
    if rec.get("reading"):
        out += ["", rec["reading"]]
    return "\n".join(out) + "\n"


def render_all(records: dict) -> str:
    """The .md record: one section per labelled run (``--label``), in the order they were first recorded."""
    head = ["# Ranking backbones: llmcf vs FuxiCTR on the same rows (benchmarks/bench_fuxictr.py)", "",
            "Generated from fuxictr.json. Each section is one invocation; test metrics by our metric code on the "
            "same test rows, mean ± sample std over seeds; CPU s/epoch is the process time of an epoch's training "
            "steps in each side's own process (1 torch thread), validation excluded."]
    return "\n".join(head) + "\n\n" + "\n".join(render(r) for r in records.values())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, help="run directory with data built by `llmcf data build`")
    ap.add_argument("--fuxictr-python", type=Path, help="python of the virtual environment that has fuxictr")
    ap.add_argument("--fuxictr-zoo", type=Path, help="the model_zoo folder of a FuxiCTR checkout")
    ap.add_argument("--models", default=",".join(MODELS), help="comma list of DeepFM, DCN, DIN (default: all)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--max-epochs", type=int, default=SETTINGS["max_epochs"],
                    help=f"epoch cap per seed on both sides (default {SETTINGS['max_epochs']}; recorded)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per side (default 1)")
    ap.add_argument("--history-pooling", choices=("mean", "none"), default="mean",
                    help="FuxiCTR's DeepFM/DCN history fields: mean-pooled (default) or left out")
    ap.add_argument("--set", action="append", default=[], help="extra `llmcf train` override for our side "
                                                                "(recorded)")
    ap.add_argument("--fuxictr-param", action="append", default=[],
                    help="extra FuxiCTR model keyword KEY=VALUE (JSON value; recorded)")
    ap.add_argument("--work", type=Path, help="export and per-run results (default <run>/fuxictr)")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR / "fuxictr.json")
    ap.add_argument("--label", default="main", help="name of this run's section in the record (replaced when rerun "
                                                    "with the same label; other sections are kept)")
    ap.add_argument("--title", default="the same training rule on both sides", help="the section's heading")
    ap.add_argument("--note", default="")
    ap.add_argument("--reading", default="", help="a closing paragraph for the .md record")
    ap.add_argument("--fuxictr-worker", metavar="SPEC", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.fuxictr_worker:
        return fuxictr_worker(args.fuxictr_worker)
    for name in ("run", "fuxictr_python", "fuxictr_zoo"):
        if getattr(args, name) is None:
            ap.error(f"--{name.replace('_', '-')} is required")
    if not (args.run / "data" / "stats.json").exists():
        raise SystemExit(f"[fuxictr] {args.run}: no data here; run `llmcf data build --out {args.run}` first")
    if not args.fuxictr_python.exists():
        raise SystemExit(f"[fuxictr] --fuxictr-python {args.fuxictr_python}: not found (see this script's "
                         "docstring for the setup)")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = [m for m in models if m not in MODELS]
    if bad:
        raise SystemExit(f"[fuxictr] --models: unknown {bad}; choose from {list(MODELS)}")
    missing = [m for m in models if not (args.fuxictr_zoo / ZOO_DIRS[m] / f"{m}.py").exists()]
    if missing:
        raise SystemExit(f"[fuxictr] --fuxictr-zoo {args.fuxictr_zoo}: no {', '.join(missing)} model file "
                         f"(expected {', '.join(ZOO_DIRS[m] + '/' + m + '.py' for m in missing)})")

    import datetime as dt
    import platform
    import shlex
    import subprocess

    import pandas as pd
    import torch

    sys.path.insert(0, str(HERE))
    from _machine import cpu_model, portable, ram_suffix

    from llmcf.data.vocab import Vocab
    from llmcf.io import atomic_write_json, atomic_write_text

    run_dir = args.run.resolve()
    work = (args.work or run_dir / "fuxictr").resolve()
    data = work / "data"
    if not (data / "feature_map.json").exists():
        info = export_fuxictr(run_dir, data)
        print(f"[fuxictr] exported {info['rows']} to {data}", flush=True)
    rows = {s: int(len(pd.read_parquet(run_dir / "data" / f"{s}.parquet", columns=["label"])))
            for s in ("train", "valid", "test")}
    test = pd.read_parquet(run_dir / "data" / "test.parquet", columns=["user_id", "label"])
    test_labels = test["label"].to_numpy().astype("float64")
    test_users = Vocab.load(run_dir / "data" / "vocab.json").encode_users(test["user_id"])
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=os.environ.get("PYTHONPATH", str(ROOT / "src")))
    fx_env = {k: v for k, v in env.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    fx_env["RAY_USAGE_STATS_ENABLED"] = "0"
    log = work / "bench_fuxictr.log"
    cmd = "python " + shlex.join([os.path.relpath(sys.argv[0], ROOT) if sys.argv[0].endswith(".py") else sys.argv[0],
                                  *(argv if argv is not None else sys.argv[1:])])
    started, load_start = dt.datetime.now(dt.timezone.utc), os.getloadavg()[0]
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        rev = "unknown"
    stats = json.loads((run_dir / "data" / "stats.json").read_text())
    rec = {"label": args.label, "title": args.title, "command": cmd, "date": f"{started:%Y-%m-%d %H:%M} UTC", "git_commit": rev,
           "machine": f"{cpu_model()}, {os.cpu_count()} CPUs{ram_suffix()}, Python {platform.python_version()}, "
                      f"{args.threads} torch thread(s) per side",
           "load_start": load_start, "load_end": load_start, "torch_ours": torch.__version__,
           "run": str(run_dir), "dataset": stats.get("dataset"), "rows": rows, "seeds": args.seeds,
           "settings": SETTINGS, "history_pooling": args.history_pooling,
           "settings_text": "embedding 32, MLP [200, 80] ReLU, dropout 0.1, Adam lr 0.01, L2 1e-4 on every "
                            "parameter, batch 128, early stopping on valid AUC (patience 2, no LR decay), max "
                            f"{args.max_epochs} epochs, best epoch tested once; DIN attention MLP [80, 40] ReLU, no softmax; FuxiCTR: "
                            "its own initialisation and gradient clipping at norm 10",
           "history_pooling_text": ("DeepFM/DCN: history items, brands and genres mean-pooled on both sides; DIN: "
                                    "target attention on both sides" if args.history_pooling == "mean" else
                                    "FuxiCTR's DeepFM/DCN without history fields (ours keep their mean-pooled "
                                    "history); DIN: target attention on both sides"),
           "note": args.note, "ours_extra": args.set, "fuxictr_extra": args.fuxictr_param, "reading": args.reading,
           "models": {}}
    import hashlib

    SETTINGS["max_epochs"] = args.max_epochs

    def key(*parts) -> str:
        return hashlib.sha256(json.dumps([*parts, args.threads, SETTINGS]).encode()).hexdigest()[:8]

    # each side's finished runs are keyed by the settings that side reads
    variants = {"llmcf": key(args.set), "fuxictr": key(args.fuxictr_param, args.history_pooling)}
    args.variant = variants["fuxictr"]
    done = {}
    for model in models:
        sides = {"llmcf": [], "fuxictr": []}
        for seed in range(args.seeds):
            order = ("llmcf", "fuxictr") if seed % 2 == 0 else ("fuxictr", "llmcf")
            for side in order:
                cached = work / "results" / f"{side}-{model}-{seed}-{variants[side]}.done.json"
                if cached.exists():
                    r = json.loads(cached.read_text())
                else:
                    print(f"[fuxictr] {model} seed {seed}: training {side}", flush=True)
                    if side == "llmcf":
                        r = run_ours(run_dir, model, seed, args.threads, args.set, log, env)
                    else:
                        r = run_fuxictr(args, work, model, seed, test_labels, test_users, log, fx_env)
                    cached.parent.mkdir(parents=True, exist_ok=True)
                    atomic_write_json(cached, r)
                sides[side].append(r)
                print(f"[fuxictr] {model} seed {seed} {side:8s}: test AUC {r['test']['auc']:.4f}  LogLoss "
                      f"{r['test']['logloss']:.4f}  best epoch {r['best_epoch']}/{r['epochs_run']}  CPU "
                      f"{r['cpu_seconds_per_epoch']:.2f} s/epoch (wall {r['seconds_per_epoch']:.2f})", flush=True)
                if side == "fuxictr":
                    rec["fuxictr_version"], rec["torch_fuxictr"] = r.get("fuxictr_version"), r.get("torch")
            rec["models"][model] = {s: {"summary": summarise(v), "per_seed": v} for s, v in sides.items() if v}
            rec["load_end"] = os.getloadavg()[0]
            records = json.loads(args.out.read_text()).get("records", {}) if args.out.exists() else {}
            records[args.label] = portable(rec)
            atomic_write_json(args.out, {"records": records})
            atomic_write_text(args.out.with_suffix(".md"), render_all(records))
        done[model] = rec["models"][model]
        a, b = done[model]["llmcf"]["summary"], done[model]["fuxictr"]["summary"]
        print(f"[fuxictr] {model}: test AUC llmcf {a['test_auc']['mean']:.4f} vs FuxiCTR {b['test_auc']['mean']:.4f}; "
              f"CPU s/epoch {a['cpu_seconds_per_epoch']['mean']:.2f} vs {b['cpu_seconds_per_epoch']['mean']:.2f} "
              f"(FuxiCTR/llmcf {b['cpu_seconds_per_epoch']['mean'] / a['cpu_seconds_per_epoch']['mean']:.2f}x)",
              flush=True)
    print(f"[fuxictr] wrote {args.out} and {args.out.with_suffix('.md')}", flush=True)


if __name__ == "__main__":
    main()
