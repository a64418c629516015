"""Slices: test AUC and LogLoss per bucket of the user's training activity and of the item's training popularity.

LLM-CF's argument is sparse, long-tail data, so every report shows where a model wins, not only its overall AUC.
A user's (item's) count is its number of rows in ``data/train.parquet``. Buckets, per kind:
    cold        count <= ``cold`` (default 5; users/items absent from training count 0)
    Q1 .. Q4    quartiles of the counts of the *warm* users (items) of the training set, i.e. those with
                count > cold: Q1 = (cold, q25], Q2 = (q25, q50], Q3 = (q50, q75], Q4 = (q75, max]
Quartiles are taken over distinct users (items), not over rows, so each warm bucket holds about a quarter of the
warm users (items); a bucket can be empty when counts tie. Files read, per trained CTR model of a run directory:
``models/<tag>/seed_<s>/test_pred.npy`` (per-row test probabilities, written with each seed's result since the
slice tables exist; seeds without it are left out). Per bucket the metrics are averaged over the seeds that have
predictions; a bucket whose rows hold one label only has no AUC.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from llmcf.errors import DataError
from llmcf.train.metrics import auc, logloss

KINDS = {"user": "user_id", "item": "item_id"}
COLD = 5


def bucket_edges(counts: np.ndarray, cold: int = COLD) -> list[float]:
    """[cold, q25, q50, q75] from the training counts of distinct entities (only those with count > cold enter the
    quartiles; with none, every quartile edge is ``cold``)."""
    c = np.asarray(counts, dtype=np.float64)
    warm = c[c > cold]
    if not len(warm):
        return [float(cold)] * 4
    return [float(cold)] + [float(q) for q in np.quantile(warm, [0.25, 0.5, 0.75])]


def bucket_names(edges: list[float]) -> list[str]:
    def f(x: float) -> str:
        return f"{x:g}"

    cold, q1, q2, q3 = edges
    return [f"cold (<= {f(cold)})", f"Q1 ({f(cold)}, {f(q1)}]", f"Q2 ({f(q1)}, {f(q2)}]",
            f"Q3 ({f(q2)}, {f(q3)}]", f"Q4 > {f(q3)}"]


def assign(counts: np.ndarray, edges: list[float]) -> np.ndarray:
    """Bucket index (0 = cold, 1..4 = Q1..Q4) of each count, with right-closed buckets."""
    return np.searchsorted(np.asarray(edges, dtype=np.float64), np.asarray(counts, dtype=np.float64), side="left")


def row_counts(train_ids, query_ids) -> tuple[np.ndarray, np.ndarray]:
    """(count of each query id in the training rows, count of every distinct training id)."""
    vc = pd.Series(np.asarray(train_ids, dtype=object)).value_counts()
    q = pd.Series(np.asarray(query_ids, dtype=object)).map(vc).fillna(0).to_numpy(np.int64)
    return q, vc.to_numpy(np.int64)


def slice_metrics(labels: np.ndarray, probs: np.ndarray, buckets: np.ndarray, names: list[str]) -> list[dict]:
    """Per bucket: rows, positive share, AUC (None with one label only), LogLoss (None when empty)."""
    labels, probs, buckets = np.asarray(labels), np.asarray(probs), np.asarray(buckets)
    out = []
    for i, name in enumerate(names):
        m = buckets == i
        n = int(m.sum())
        a = auc(labels[m], probs[m]) if n else float("nan")
        out.append({"bucket": name, "rows": n, "positive_share": float(labels[m].mean()) if n else None,
                    "auc": None if np.isnan(a) else a, "logloss": logloss(labels[m], probs[m]) if n else None})
    return out


class SliceTable:
    """The buckets of a run's test rows (from data/{train,test}.parquet), computed once for every model."""

    def __init__(self, run_dir: Path, cold: int = COLD):
        data = Path(run_dir) / "data"
        train = pd.read_parquet(data / "train.parquet", columns=list(KINDS.values()))
        test = pd.read_parquet(data / "test.parquet", columns=[*KINDS.values(), "label"])
        self.labels = test["label"].to_numpy()
        self.kinds: dict[str, dict] = {}
        for kind, col in KINDS.items():
            q, entity = row_counts(train[col].astype(str), test[col].astype(str))
            edges = bucket_edges(entity, cold)
            self.kinds[kind] = {"edges": edges, "names": bucket_names(edges), "buckets": assign(q, edges)}

    def model(self, preds: list[np.ndarray]) -> dict[str, list[dict]]:
        """Per kind, per bucket: the metrics averaged over seeds (``preds``: one probability array per seed)."""
        out = {}
        for kind, k in self.kinds.items():
            per_seed = [slice_metrics(self.labels, p, k["buckets"], k["names"]) for p in preds]
            rows = []
            for j, name in enumerate(k["names"]):
                vals = [s[j] for s in per_seed]
                row = {"bucket": name, "rows": vals[0]["rows"], "positive_share": vals[0]["positive_share"],
                       "seeds": len(vals)}
                for m in ("auc", "logloss"):
                    xs = [v[m] for v in vals if v[m] is not None]
                    row[m] = float(np.mean(xs)) if xs else None
                rows.append(row)
            out[kind] = rows
        return out


def load_predictions(model_dir: Path, n_rows: int) -> list[np.ndarray]:
    """test_pred.npy of every seed of a model (seeds with a result.json), in seed order."""
    preds = []
    for sdir in sorted(Path(model_dir).glob("seed_*"), key=lambda p: int(p.name.split("_")[1])):
        p = sdir / "test_pred.npy"
        if not (sdir / "result.json").exists() or not p.exists():
            continue
        a = np.load(p, allow_pickle=False)
        if a.shape != (n_rows,):
            raise DataError(f"expected {n_rows} test probabilities (one per row of data/test.parquet), got shape "
                            f"{a.shape}: the model was trained on other data", file=str(p))
        preds.append(a)
    return preds


def run_slices(run_dir: Path, summaries: list[dict]) -> dict:
    """{"edges": {kind: edges}, "models": {tag: {kind: rows}}} for every CTR model with saved test predictions
    (empty when the run has no data or no predictions)."""
    run_dir = Path(run_dir)
    if not (run_dir / "data" / "test.parquet").exists():
        return {"edges": {}, "models": {}}
    table = SliceTable(run_dir)
    models = {}
    for s in summaries:
        if s.get("task") == "sequential" or s.get("protocol", {}).get("task") == "sequential":
            continue
        preds = load_predictions(run_dir / "models" / s["tag"], len(table.labels))
        if preds:
            models[s["tag"]] = table.model(preds)
    return {"edges": {k: v["edges"] for k, v in table.kinds.items()}, "models": models}


def _num(x, digits: int = 4) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def slices_markdown(sl: dict) -> str:
    """One table per kind: a row per bucket, AUC / LogLoss columns per model (mean over seeds)."""
    if not sl["models"]:
        return ""
    tags = list(sl["models"])
    parts = []
    for kind in KINDS:
        first = sl["models"][tags[0]][kind]
        head = " | ".join(f"{t} AUC | {t} LogLoss" for t in tags)
        lines = [f"**{kind} training rows** (edges {', '.join(f'{e:g}' for e in sl['edges'][kind])})", "",
                 f"| bucket | test rows | positive share | {head} |",
                 "|---|---|---|" + "---|---|" * len(tags)]
        for j, b in enumerate(first):
            vals = " | ".join(f"{_num(sl['models'][t][kind][j]['auc'])} | {_num(sl['models'][t][kind][j]['logloss'])}"
                              for t in tags)
            lines.append(f"| {b['bucket']} | {b['rows']} | {_num(b['positive_share'], 3)} | {vals} |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def write_slices_json(path: Path, sl: dict) -> None:
    from llmcf.io import atomic_write_text

    atomic_write_text(path, json.dumps(sl, indent=2) + "\n")
