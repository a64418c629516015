"""Slice buckets and per-bucket metrics, checked on a hand-made table."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from llmcf.errors import DataError
from llmcf.slices import assign, bucket_edges, run_slices, slice_metrics, slices_markdown


def test_bucket_edges_are_quartiles_of_the_warm_entities():
    # warm users (> 5 rows) have 6, 10, 14, 18, 22 rows: quartiles 10, 14, 18; the cold ones do not move them
    counts = np.array([1, 2, 5, 6, 10, 14, 18, 22])
    assert bucket_edges(counts) == [5.0, 10.0, 14.0, 18.0]
    # right-closed buckets: 0 and 5 cold, 6 and 10 in Q1, 11 in Q2, 18 in Q3, 19 in Q4
    assert assign(np.array([0, 5, 6, 10, 11, 14, 18, 19, 100]), [5, 10, 14, 18]).tolist() == [0, 0, 1, 1, 2, 2, 3, 4, 4]
    assert bucket_edges(np.array([1, 3])) == [5.0] * 4  # nobody warm


def test_slice_metrics_per_bucket():
    labels = np.array([1, 0, 1, 0, 1, 1])
    probs = np.array([0.9, 0.1, 0.2, 0.8, 0.6, 0.7])
    buckets = np.array([0, 0, 1, 1, 2, 2])
    rows = slice_metrics(labels, probs, buckets, ["a", "b", "c", "d"])
    assert [r["rows"] for r in rows] == [2, 2, 2, 0]
    assert rows[0]["auc"] == 1.0 and rows[1]["auc"] == 0.0
    assert rows[2]["auc"] is None  # one label only
    assert rows[3]["auc"] is None and rows[3]["logloss"] is None
    assert rows[0]["logloss"] == pytest.approx(-np.log(0.9))
    assert rows[2]["logloss"] == pytest.approx(-(np.log(0.6) + np.log(0.7)) / 2)


def _run(tmp_path):
    """Users u1..u5 with 6, 10, 14, 18, 22 training rows, c with 2; items: i0 popular, i1 rare."""
    train = []
    for u, n in (("u1", 6), ("u2", 10), ("u3", 14), ("u4", 18), ("u5", 22), ("c", 2)):
        train += [{"user_id": u, "item_id": "i0" if j % 8 else "i1", "label": 1} for j in range(n)]
    test = pd.DataFrame({"user_id": ["c", "new", "u1", "u2", "u3", "u4", "u5", "u5"],
                         "item_id": ["i0", "i9", "i0", "i0", "i1", "i0", "i0", "i1"],
                         "label": [1, 0, 1, 0, 1, 0, 1, 0]})
    data = tmp_path / "run" / "data"
    data.mkdir(parents=True)
    pd.DataFrame(train).to_parquet(data / "train.parquet")
    test.to_parquet(data / "test.parquet")
    return tmp_path / "run", test


def test_run_slices_reads_predictions_of_every_seed(tmp_path):
    run, test = _run(tmp_path)
    seeds = [np.array([0.9, 0.1, 0.8, 0.3, 0.7, 0.2, 0.6, 0.4]), np.array([0.2, 0.8, 0.8, 0.3, 0.7, 0.2, 0.6, 0.4])]
    for s, p in enumerate(seeds):
        d = run / "models" / "DIN" / f"seed_{s}"
        d.mkdir(parents=True)
        np.save(d / "test_pred.npy", p)
        (d / "result.json").write_text("{}")
    sl = run_slices(run, [{"tag": "DIN", "model": "DIN"}])
    assert sl["edges"]["user"] == [5.0, 10.0, 14.0, 18.0]
    user = sl["models"]["DIN"]["user"]
    assert [b["rows"] for b in user] == [2, 2, 1, 1, 2]  # cold: c and new; Q1: u1, u2; Q2: u3; Q3: u4; Q4: u5 x2
    # cold rows (labels 1, 0): seed 0 ranks them right (AUC 1), seed 1 wrong (AUC 0) -> mean 0.5
    assert user[0]["auc"] == pytest.approx(0.5) and user[0]["seeds"] == 2
    ll = [-(np.log(0.9) + np.log(0.9)) / 2, -(np.log(0.2) + np.log(0.2)) / 2]
    assert user[0]["logloss"] == pytest.approx(np.mean(ll))
    assert user[4]["auc"] == 1.0
    item = sl["models"]["DIN"]["item"]
    # items: i0 has 52 training rows, i1 has 8 -> edges over the two warm items; i9 is unseen -> cold
    assert item[0]["rows"] == 1
    assert "cold (<= 5)" in slices_markdown(sl)


def test_predictions_of_another_length_are_a_clear_error(tmp_path):
    run, _ = _run(tmp_path)
    d = run / "models" / "DIN" / "seed_0"
    d.mkdir(parents=True)
    np.save(d / "test_pred.npy", np.zeros(3))
    (d / "result.json").write_text("{}")
    with pytest.raises(DataError, match="expected 8 test probabilities"):
        run_slices(run, [{"tag": "DIN", "model": "DIN"}])
