"""data.engine: duckdb writes the same run-directory tables as the pandas engine (row for row, same schema, same
split, vocabulary and stats), and the engine switch refuses what it cannot do."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from llmcf.config import load_config
from llmcf.data import duck
from llmcf.data.build import build_run_data
from llmcf.data.loaders import load_dataset
from llmcf.data.schema import RawDataset, item_text
from llmcf.errors import DataError

needs_duckdb = pytest.mark.skipif(not duck.available(), reason="the optional duckdb package is not installed")


def _synthetic(n_users=120, n_items=300, seed=5, label=False) -> RawDataset:
    """A few thousand interactions: non-ASCII and mixed-case ids (collation), users of 1..60 rows, tied timestamps
    (order falls back to the input row), ratings 1..5 and optionally a 0/1 label column."""
    rng = np.random.default_rng(seed)
    names = ["Zoë", "zoe", "Émile", "ämy", "bob", "Bob", "日本", "_x", "10", "9"]
    rows = []
    for u in range(n_users):
        uid = f"{names[u % len(names)]}{u}"
        n = int(rng.integers(1, 61))
        ts = np.sort(rng.integers(0, 40, n)).astype(float)  # many ties
        for t in ts:
            rows.append((uid, f"it{'é' if rng.random() < 0.3 else ''}{int(rng.integers(0, n_items))}", t,
                         float(rng.integers(1, 6))))
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "rating"])
    df = df.sample(frac=1.0, random_state=1).reset_index(drop=True)  # input order is not the sorted order
    if label:
        df["label"] = (df["rating"] >= 3).astype(np.int64)
        df = df.drop(columns="rating")
    ids = sorted(set(df["item_id"]))
    items = pd.DataFrame({"item_id": ids, "title": ids, "brand": [f"b{j % 4}" for j in range(len(ids))],
                          "categories": [[f"c{j % 6}", f"c{j % 5}"] for j in range(len(ids))]})
    items["text"] = [item_text(t, b, c) for t, b, c in zip(items["title"], items["brand"], items["categories"])]
    return RawDataset("synth", df.drop_duplicates().reset_index(drop=True), items, real_time=True, source="synth")


def _build_both(ds: RawDataset, tmp_path, sets: list[str]):
    out = {}
    for engine in ("pandas", "duckdb"):
        cfg = load_config(None, sets + [f"data.engine={engine}"])
        out[engine] = (tmp_path / engine, build_run_data(ds, cfg.data, tmp_path / engine, show_progress=False))
    return out


def _assert_same(out) -> None:
    (a, sa), (b, sb) = out["pandas"], out["duckdb"]
    for f in ("train", "valid", "test", "items"):
        ta, tb = pq.read_table(a / "data" / f"{f}.parquet"), pq.read_table(b / "data" / f"{f}.parquet")
        assert ta.schema.equals(tb.schema, check_metadata=True), (f, ta.schema, tb.schema)
        assert ta.num_rows == tb.num_rows and ta.num_rows > 0, f
        assert ta.equals(tb), f
        pd.testing.assert_frame_equal(pd.read_parquet(a / "data" / f"{f}.parquet"),
                                      pd.read_parquet(b / "data" / f"{f}.parquet"))
    assert (a / "data" / "vocab.json").read_text() == (b / "data" / "vocab.json").read_text()
    drop = {"files", "seconds"}
    assert {k: v for k, v in sa.items() if k not in drop} == {k: v for k, v in sb.items() if k not in drop}
    on_disk = json.loads((b / "data" / "stats.json").read_text())
    assert on_disk["splits"] == sb["splits"]


@needs_duckdb
def test_duckdb_engine_matches_pandas_on_ml100k(tmp_path):
    ds = load_dataset("ml-100k")
    _assert_same(_build_both(ds, tmp_path, ["data.max_users=80"]))


@needs_duckdb
@pytest.mark.parametrize("sets", [
    ["data.label=implicit", "data.num_negatives=2", "data.split=loo", "data.history_len=5"],
    ["data.label=rating", "data.split=time", "data.history_len=0"],
    ["data.label=rating", "data.split=ratio", "data.split_ratio=[0.7,0.2,0.1]", "data.max_users=70",
     "data.history_len=3"],
])
def test_duckdb_engine_matches_pandas_on_synthetic_rows(tmp_path, sets):
    ds = _synthetic()
    assert len(ds.interactions) > 2000
    out = _build_both(ds, tmp_path, sets)
    _assert_same(out)
    train = pq.read_table(out["duckdb"][0] / "data" / "train.parquet")
    if "data.num_negatives=2" in sets:  # each positive followed by its two negatives, as in the pandas engine
        assert train.column("label").to_pylist()[:3] == [1, 0, 0]


@needs_duckdb
def test_duckdb_engine_matches_pandas_with_a_label_column(tmp_path):
    _assert_same(_build_both(_synthetic(label=True), tmp_path, ["data.label=column", "data.history_len=4"]))


@needs_duckdb
def test_duckdb_engine_writes_row_groups(tmp_path, monkeypatch):
    monkeypatch.setattr(duck, "ROW_GROUP_ROWS", 500)
    cfg = load_config(None, ["data.engine=duckdb", "data.label=rating"])
    build_run_data(_synthetic(), cfg.data, tmp_path, show_progress=False)
    f = pq.ParquetFile(tmp_path / "data" / "train.parquet")
    assert f.metadata.num_row_groups == -(-f.metadata.num_rows // 500) > 1


@needs_duckdb
@pytest.mark.parametrize("sets,field", [(["data.label=rating"], "rating"), (["data.label=column"], "label")])
def test_duckdb_engine_refuses_bad_labels_like_pandas(tmp_path, sets, field):
    ds = _synthetic(label=field == "label")
    ds.interactions.loc[17, field] = np.nan if field == "rating" else 2
    msgs = []
    for engine in ("pandas", "duckdb"):
        cfg = load_config(None, sets + [f"data.engine={engine}"])
        with pytest.raises(DataError) as e:
            build_run_data(ds, cfg.data, tmp_path / engine, show_progress=False)
        msgs.append(str(e.value))
        assert not (tmp_path / engine / "data" / "train.parquet").exists()
    assert msgs[0] == msgs[1] and field in msgs[0]


@needs_duckdb
def test_duckdb_engine_refuses_an_empty_split_like_pandas(tmp_path):
    ds = _synthetic()
    short = ds.interactions.groupby("user_id").head(2).reset_index(drop=True)  # nobody has 3 positions
    ds = RawDataset("short", short, ds.items, real_time=True, source="short")
    msgs = []
    for engine in ("pandas", "duckdb"):
        cfg = load_config(None, ["data.label=rating", "data.split=loo", f"data.engine={engine}"])
        with pytest.raises(DataError, match="split is empty") as e:
            build_run_data(ds, cfg.data, tmp_path / engine, show_progress=False)
        msgs.append(str(e.value))
    assert msgs[0] == msgs[1]


def test_engine_choice(monkeypatch):
    cfg = load_config(None, ["data.engine_auto_rows=1000"]).data
    monkeypatch.setattr(duck, "available", lambda: True)
    assert duck.choose_engine(cfg, 999) == "pandas" and duck.choose_engine(cfg, 1000) == "duckdb"
    monkeypatch.setattr(duck, "available", lambda: False)
    assert duck.choose_engine(cfg, 10 ** 9) == "pandas"  # auto never needs the extra
    cfg.engine = "duckdb"
    with pytest.raises(DataError, match=r"llmcf\[scale\]"):
        duck.choose_engine(cfg, 10)
    monkeypatch.setattr(duck, "available", lambda: True)
    cfg.engine_memory = "2GB'; SET threads=64; --"
    with pytest.raises(DataError, match="engine_memory"):
        duck.choose_engine(cfg, 10)
    cfg.engine = "spark"
    with pytest.raises(DataError, match="data.engine"):
        duck.choose_engine(cfg, 10)
