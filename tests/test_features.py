"""Vocabularies, encoded features, FeatureSchema and the run-directory build."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import llmcf.data.build as build_mod
from llmcf.config import DataConfig
from llmcf.data.build import build_run_data
from llmcf.data.features import encode, load_encoded, load_split, make_schema
from llmcf.data.samples import build_samples
from llmcf.data.schema import OOV, PAD, SPLITS, RawDataset, item_text
from llmcf.data.splits import assign_splits
from llmcf.data.vocab import Vocab
from llmcf.errors import DataError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def make_ds(n_users=30, n_items=60, seed=0, with_users=True) -> RawDataset:
    rng = np.random.default_rng(seed)
    rows = [(f"u{u:02d}", f"i{it:02d}", float(t))
            for u in range(n_users)
            for t, it in enumerate(rng.choice(n_items, size=int(rng.integers(2, 12)), replace=False))]
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    ids = [f"i{j:02d}" for j in range(n_items)]
    brand = [f"b{j % 5}" if j % 4 else "" for j in range(n_items)]
    cats = [[f"c{(j + k) % 7}" for k in range(j % 4)] for j in range(n_items)]
    items = pd.DataFrame({"item_id": ids, "title": ids, "brand": brand, "categories": cats,
                          "text": [item_text(t, b, c) for t, b, c in zip(ids, brand, cats)]})
    users = pd.DataFrame({"user_id": [f"u{u:02d}" for u in range(n_users)], "age": ["30"] * n_users}) \
        if with_users else None
    return RawDataset("toy", inter, items, users=users, real_time=True, source="toy-src")


def split_frames(ds, cfg):
    df = build_samples(ds, cfg)
    split, _ = assign_splits(df, cfg, label_rule="implicit")
    return {s: df[(split == s).to_numpy()].reset_index(drop=True) for s in SPLITS}


def test_vocab_from_train_only_with_oov_and_padding():
    cfg = DataConfig(label="implicit", split="loo", num_negatives=1)
    parts = split_frames(make_ds(), cfg)
    # a user and an item that only occur outside train
    extra = parts["test"].iloc[:1].assign(user_id="ghost", item_id="i_new")
    parts["test"] = pd.concat([parts["test"], extra], ignore_index=True)
    v = Vocab.from_train(parts["train"], make_ds().items)
    assert v.user == sorted(set(parts["train"].user_id))
    hist_items = {x for h in parts["train"].history for x in h}
    assert set(v.item) == set(parts["train"].item_id) | hist_items
    a = encode(parts["test"], v, 5)
    assert a["user"][-1] == OOV and a["item"][-1] == OOV
    assert (a["user"][:-1] >= 2).all()  # loo: every test user has train rows
    assert a["hist"].min() >= PAD and (a["hist"] == PAD).any()
    ids = v.encode_items(v.item)
    assert ids.tolist() == list(range(2, len(v.item) + 2))
    assert v.encode_items(["nope", None]).tolist() == [OOV, OOV]
    assert v.decode("item", [0, 1, 2]) == [None, None, v.item[0]]
    # brands / categories: only those of vocabulary items, never the empty string
    items = make_ds().items
    kept = items[items.item_id.isin(v.item)]
    assert set(v.brand) == {b for b in kept.brand if b}
    assert set(v.category) == {c for cs in kept.categories for c in cs}


def test_vocab_history_only_items_and_stability(tmp_path):
    train = pd.DataFrame({"user_id": ["b", "a"], "item_id": ["x", "y"],
                          "history": [np.array(["h1"], dtype=object), np.array(["h2", "x"], dtype=object)],
                          "label": [1, 0]})
    v = Vocab.from_train(train)
    assert v.item == ["h1", "h2", "x", "y"] and v.user == ["a", "b"]
    v2 = Vocab.from_train(train.iloc[::-1])
    assert v2.to_dict() == v.to_dict()  # row order does not change ids
    v.save(tmp_path / "vocab.json")
    w = Vocab.load(tmp_path / "vocab.json")
    assert w.to_dict() == v.to_dict()
    assert w.encode_items(["y", "h1", "zz"]).tolist() == v.encode_items(["y", "h1", "zz"]).tolist() == [5, 2, 1]
    (tmp_path / "bad.json").write_text('{"user": ["a", "a"], "item": []}')
    with pytest.raises(DataError, match="twice"):
        Vocab.load(tmp_path / "bad.json")
    (tmp_path / "bad.json").write_text('[1, 2]')
    with pytest.raises(DataError, match="bad.json"):
        Vocab.load(tmp_path / "bad.json")


def test_encode_hand_made_rows():
    v = Vocab(user=["u1", "u2"], item=["a", "b", "c", "d"])
    df = pd.DataFrame({"user_id": ["u2", "zz", "u1"], "item_id": ["d", "a", "q"],
                       "history": [["a", "b", "c"], [], np.array(["q", "d", "c", "b", "a"], dtype=object)],
                       "label": np.array([1, 0, 1], dtype=np.int8)})
    a = encode(df, v, 4)
    assert a["user"].tolist() == [3, OOV, 2] and a["item"].tolist() == [5, 2, OOV]
    assert a["hist"].tolist() == [[0, 2, 3, 4], [0, 0, 0, 0], [5, 4, 3, 2]]  # last 4, oldest first, left-padded
    assert a["hist_len"].tolist() == [3, 0, 4]
    assert a["label"].dtype == np.float32 and a["label"].tolist() == [1.0, 0.0, 1.0]
    assert all(a[k].dtype == np.int64 for k in ("user", "item", "hist", "hist_len"))
    b = encode(df, v, 6)
    assert b["hist"][2].tolist() == [0, OOV, 5, 4, 3, 2]
    assert encode(df, v, 0)["hist"].shape == (3, 0)


def test_make_schema_side_tables():
    ds = make_ds()
    v = Vocab.from_train(split_frames(ds, DataConfig(label="implicit", split="loo"))["train"], ds.items)
    s = make_schema(v, ds.items, 7, max_cats=2)
    assert s.item_brand.shape == (v.n_items,) and s.item_cats.shape == (v.n_items, 2)
    assert s.n_brands == len(v.brand) + 2 and s.n_cats == len(v.category) + 2 and s.hist_len == 7
    assert (s.item_brand[:2] == 0).all() and (s.item_cats[:2] == 0).all()
    by_id = ds.items.set_index("item_id")
    for it in v.item:
        i = v.encode_items([it])[0]
        brand, cats = by_id.loc[it, "brand"], list(by_id.loc[it, "categories"])
        assert s.item_brand[i] == (v.encode("brand", [brand])[0] if brand else 0)
        want = list(v.encode("category", cats[:2])) + [0] * (2 - len(cats[:2]))
        assert s.item_cats[i].tolist() == want
    # an item missing from the items table keeps zeros
    s2 = make_schema(v, ds.items.iloc[5:], 7)
    first = v.encode_items(ds.items.item_id.iloc[:5])
    first = first[first >= 2]
    assert (s2.item_brand[first] == 0).all() and (s2.item_cats[first] == 0).all()


def _recount(df):
    return {"users": df.user_id.nunique(), "items": df.item_id.nunique(), "rows": len(df),
            "positives": int((df.label == 1).sum()), "positive_rate": float((df.label == 1).mean())}


def test_build_run_data_writes_everything(tmp_path):
    ds = make_ds()
    cfg = DataConfig(label="implicit", split="loo", num_negatives=2, history_len=5, seed=7)
    stats = build_run_data(ds, cfg, tmp_path, show_progress=False)
    data = tmp_path / "data"
    names = {"items.parquet", "users.parquet", "train.parquet", "valid.parquet", "test.parquet", "vocab.json",
             "stats.json"}
    assert {p.name for p in data.iterdir()} == names  # nothing else (no temp files)
    assert json.loads((data / "stats.json").read_text()) == json.loads(json.dumps(stats))
    assert stats["dataset"] == "toy" and stats["source"] == "toy-src"
    assert stats["protocol"]["split"] == "loo" and stats["protocol"]["negatives"] == 2
    assert stats["protocol"]["label"] == "implicit" and stats["protocol"]["seed"] == 7
    total = 0
    for s in SPLITS:
        df = load_split(tmp_path, s)
        total += len(df)
        got = stats["splits"][s]
        want = _recount(df)
        assert {k: got[k] for k in want} == pytest.approx(want)
        schema = pq.read_schema(data / f"{s}.parquet")
        assert schema.field("label").type == pa.int8() and schema.field("pos").type == pa.int64()
        assert schema.field("history").type == pa.list_(pa.string())
        assert df.history.map(len).max() <= 5
    assert total == 3 * len(ds.interactions)
    items = pd.read_parquet(data / "items.parquet")
    assert len(items) == len(ds.items) and list(items.categories.iloc[3]) == ds.items.categories.iloc[3]
    v = Vocab.load(data / "vocab.json")
    train = load_split(tmp_path, "train")
    assert v.user == sorted(set(train.user_id))
    assert set(v.item) == set(train.item_id) | {x for h in train.history for x in h}  # train only
    test = load_split(tmp_path, "test")
    assert stats["oov_rate"]["test"]["item"] == pytest.approx((~test.item_id.isin(set(v.item))).mean())
    arrays = load_encoded(tmp_path, "valid")
    assert arrays["hist"].shape == (stats["splits"]["valid"]["rows"], 5)
    direct = encode(load_split(tmp_path, "valid"), v, 5)
    assert all((arrays[k] == direct[k]).all() for k in direct)
    # rebuilding is deterministic
    again = build_run_data(ds, cfg, tmp_path / "again", show_progress=False)
    assert again["splits"] == stats["splits"]
    a, b = (pd.read_parquet(p / "data" / "test.parquet") for p in (tmp_path, tmp_path / "again"))
    assert a.drop(columns="history").equals(b.drop(columns="history"))
    # a dataset without users drops a stale users.parquet
    build_run_data(make_ds(with_users=False), cfg, tmp_path, show_progress=False)
    assert not (data / "users.parquet").exists()


def test_build_vocab_ignores_valid_and_test_only_items(tmp_path):
    ds = make_ds()
    extra = pd.DataFrame({"user_id": ["u00", "u01"], "item_id": ["new_a", "new_b"], "timestamp": [99.0, 99.0]})
    inter = pd.concat([ds.interactions, extra], ignore_index=True)
    ds.interactions = inter.assign(rating=np.where(np.arange(len(inter)) % 2, 5.0, 1.0))  # both labels in every split
    stats = build_run_data(ds, DataConfig(label="rating", split="loo"), tmp_path, show_progress=False)
    v = Vocab.load(tmp_path / "data" / "vocab.json")
    assert "new_a" not in v.item and "new_b" not in v.item
    test = load_split(tmp_path, "test")
    enc = load_encoded(tmp_path, "test", v, 20)
    assert (enc["item"][test.item_id.isin(["new_a", "new_b"]).to_numpy()] == OOV).sum() == 2
    assert stats["oov_rate"]["test"]["item"] >= 2 / len(test)


def test_build_failure_leaves_no_partial_parquet(tmp_path, monkeypatch):
    ds = make_ds()
    cfg = DataConfig(label="implicit", split="loo")
    build_run_data(ds, cfg, tmp_path, show_progress=False)
    data = tmp_path / "data"
    old_test = (data / "test.parquet").read_bytes()
    real = pq.write_table

    def flaky(table, where, **kw):
        if "test" in Path(where).name:
            Path(where).write_bytes(b"PAR1 half a file")
            raise OSError("disk full")
        real(table, where, **kw)

    monkeypatch.setattr(build_mod.pq, "write_table", flaky)
    with pytest.raises(OSError, match="disk full"):
        build_run_data(make_ds(seed=1), cfg, tmp_path, show_progress=False)
    assert (data / "test.parquet").read_bytes() == old_test  # the old file is intact, not half-overwritten
    assert not (data / "stats.json").exists()  # an interrupted build is visible
    assert not [p for p in os.listdir(data) if p.endswith(".tmp")]
    fresh = tmp_path / "fresh"
    with pytest.raises(OSError):
        build_run_data(ds, cfg, fresh, show_progress=False)
    assert not (fresh / "data" / "test.parquet").exists() and (fresh / "data" / "valid.parquet").exists()


def test_time_split_build_refuses_per_user_timestamps(tmp_path):
    ds = make_ds()
    ds.real_time = False
    with pytest.raises(DataError, match="real_time=False"):
        build_run_data(ds, DataConfig(label="implicit", split="time"), tmp_path, show_progress=False)


@pytest.mark.slow
def test_encode_many_rows():
    rng = np.random.default_rng(0)
    items = [f"item{j}" for j in range(12000)]
    v = Vocab(user=[f"u{j}" for j in range(20000)], item=items)
    pool = np.array(items, dtype=object)
    n = 100_000
    df = pd.DataFrame({"user_id": pool[rng.integers(0, 12000, n)], "item_id": pool[rng.integers(0, 12000, n)],
                       "history": [pool[rng.integers(0, 12000, 20)] for _ in range(n)], "label": np.ones(n, np.int8)})
    a = encode(df, v, 20)
    assert a["hist"].shape == (n, 20) and (a["hist"] >= 2).all()


def _read_atomic(path: Path) -> pd.DataFrame:
    """A tiny RecBole atomic-file reader for the test (header 'name:type', tab-separated)."""
    df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=3)
    df.columns = [c.split(":")[0] for c in df.columns]
    return df


@pytest.mark.shared_data
def test_amazon_beauty_loo_implicit(tmp_path):
    folder = SHARED / "amazon-beauty"
    if not (folder / "Amazon_Beauty.inter").exists():
        pytest.skip("../shared/data/amazon-beauty is absent")
    inter = _read_atomic(folder / "Amazon_Beauty.inter")
    inter["timestamp"] = inter["timestamp"].astype(float)
    ids = sorted(inter.item_id.unique())
    items = pd.DataFrame({"item_id": ids, "title": "", "brand": "", "categories": [[] for _ in ids], "text": ""})
    ds = RawDataset("amazon-beauty", inter, items, real_time=False, source=str(folder), label_hint="implicit")
    cfg = DataConfig(label="auto", split="loo", num_negatives=1, history_len=20)
    stats = build_run_data(ds, cfg, tmp_path, show_progress=False)
    n_users, n_inter = inter.user_id.nunique(), len(inter)
    assert (n_users, n_inter) == (22363, 198502)
    assert stats["splits"]["test"]["rows"] == 2 * n_users and stats["splits"]["valid"]["rows"] == 2 * n_users
    assert sum(stats["splits"][s]["positives"] for s in SPLITS) == n_inter
    assert all(stats["splits"][s]["positive_rate"] == 0.5 for s in SPLITS)
    test = load_split(tmp_path, "test")
    seen = inter.groupby("user_id").item_id.agg(set)
    neg = test[test.label == 0]
    assert not any(it in seen[u] for u, it in zip(neg.user_id, neg.item_id))
    # the timestamp column is the position: the target of pos p is the user's p-th item
    last = inter.assign(t=inter.timestamp.astype(int)).sort_values(["user_id", "t"]).groupby("user_id").tail(21)
    seq = last.groupby("user_id").item_id.agg(list)
    pos_rows = test[test.label == 1].head(2000)
    assert all(list(h) + [it] == seq[u][-len(h) - 1:] for u, it, h in zip(pos_rows.user_id, pos_rows.item_id,
                                                                            pos_rows.history))
