"""CTR samples (labels, negatives, histories) and splits, on small hand-built RawDatasets."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from llmcf.config import DataConfig
from llmcf.data.samples import build_samples, resolve_label_rule, select_users
from llmcf.data.schema import SAMPLE_COLUMNS, RawDataset
from llmcf.data.splits import assign_splits, ratio_counts
from llmcf.errors import DataError


def make_ds(n_users=25, n_items=40, seed=0, rating=False, label=False, unique_items=False, **kw) -> RawDataset:
    """Users with 1..14 interactions, coarse timestamps (many ties). unique_items: item id = original row."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        n = int(rng.integers(1, 15))
        items = rng.choice(n_items, size=n, replace=False)
        for it in items:
            rows.append((f"u{u:03d}", f"i{it:03d}", float(rng.integers(0, 6))))
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    if unique_items:
        inter["item_id"] = [f"r{i:05d}" for i in range(len(inter))]
    inter = inter.sample(frac=1.0, random_state=seed).reset_index(drop=True)  # loaders give any row order
    if rating:
        inter["rating"] = rng.integers(1, 6, len(inter)).astype(float)
    if label:
        inter["label"] = rng.integers(0, 2, len(inter))
    ids = sorted(inter["item_id"].unique())
    items = pd.DataFrame({"item_id": ids, "title": ids, "brand": "", "categories": [[] for _ in ids], "text": ids})
    return RawDataset("toy", inter, items, source="toy", **kw)


def sequences(df: pd.DataFrame) -> dict[str, list[str]]:
    """Each user's item sequence in position order, from the positive (one per position) rows."""
    first = df[~df.duplicated(["user_id", "pos"])].sort_values(["user_id", "pos"])
    return {u: list(g["item_id"]) for u, g in first.groupby("user_id")}


def test_positions_follow_timestamp_then_original_order():
    ds = make_ds(unique_items=True)
    df = build_samples(ds, DataConfig(label="implicit", num_negatives=0))
    orig = {it: i for i, it in enumerate(ds.interactions["item_id"])}
    assert list(df.columns) == list(SAMPLE_COLUMNS)
    for u, g in df.groupby("user_id"):
        g = g.sort_values("pos")
        assert list(g["pos"]) == list(range(len(g)))
        keys = list(zip(g["timestamp"], g["item_id"].map(orig)))
        assert keys == sorted(keys)
    assert len(df) == len(ds.interactions)


@pytest.mark.parametrize("hist_len", [0, 3, 20])
def test_history_is_strictly_earlier_oldest_first(hist_len):
    ds = make_ds(unique_items=True)
    df = build_samples(ds, DataConfig(label="implicit", num_negatives=2, history_len=hist_len))
    seq = sequences(df)
    item_pos = {it: p for s in seq.values() for p, it in enumerate(s)}
    for u, p, h in zip(df["user_id"], df["pos"], df["history"]):
        h = list(h)
        assert len(h) <= hist_len
        assert h == seq[u][max(0, p - hist_len):p]
        assert all(item_pos[x] < p for x in h)  # never the own position or later
        assert [item_pos[x] for x in h] == sorted(item_pos[x] for x in h)
    assert df["history"].map(len).max() == min(hist_len, max(len(s) for s in seq.values()) - 1)


def test_negatives_unseen_counted_and_share_context():
    ds = make_ds()
    k = 3
    df = build_samples(ds, DataConfig(label="implicit", num_negatives=k))
    seen = ds.interactions.groupby("user_id")["item_id"].agg(set)
    catalogue = set(ds.interactions["item_id"])
    pos_rows, neg_rows = df[df.label == 1], df[df.label == 0]
    assert len(pos_rows) == len(ds.interactions) and len(neg_rows) == k * len(pos_rows)
    assert neg_rows["rating"].isna().all()
    assert all(it not in seen[u] and it in catalogue for u, it in zip(neg_rows["user_id"], neg_rows["item_id"]))
    for (u, p), g in df.groupby(["user_id", "pos"]):
        assert (g["label"] == 1).sum() == 1 and (g["label"] == 0).sum() == k
        assert g["timestamp"].nunique() == 1
        assert len({tuple(h) for h in g["history"]}) == 1


def test_negatives_seeded_and_uniform():
    ds = make_ds()
    a = build_samples(ds, DataConfig(label="implicit", num_negatives=2, seed=1))
    b = build_samples(ds, DataConfig(label="implicit", num_negatives=2, seed=1))
    c = build_samples(ds, DataConfig(label="implicit", num_negatives=2, seed=2))
    pd.testing.assert_frame_equal(a.drop(columns="history"), b.drop(columns="history"))
    assert [list(h) for h in a["history"]] == [list(h) for h in b["history"]]
    assert (a["item_id"] != c["item_id"]).mean() > 0.5
    assert (a.label == c.label).all()
    # one user, many draws: every unseen item is drawn about equally often
    inter = pd.DataFrame({"user_id": ["a"] * 3 + ["b"] * 11 + ["c"], "item_id": [f"i{j}" for j in range(3)] +
                          [f"i{j}" for j in range(12)], "timestamp": np.arange(15.0)})
    ds2 = RawDataset("u", inter, ds.items.iloc[:0])
    d = build_samples(ds2, DataConfig(label="implicit", num_negatives=9000))
    counts = d[(d.user_id == "a") & (d.label == 0)]["item_id"].value_counts()
    assert set(counts.index) == {f"i{j}" for j in range(3, 12)}
    assert counts.min() > 2600 and counts.max() < 3400  # 3000 expected each


def test_negatives_for_a_user_who_saw_almost_everything():
    inter = pd.DataFrame({"user_id": ["a"] * 99 + ["b"] * 100, "item_id": [f"i{j}" for j in range(99)] +
                          [f"i{j}" for j in range(100)], "timestamp": np.r_[np.arange(99.0), np.arange(100.0)]})
    items = pd.DataFrame({"item_id": [], "title": [], "brand": [], "categories": [], "text": []})
    ds = RawDataset("x", inter, items)
    with pytest.raises(DataError, match="user 'b' interacted with every one of the 100 items"):
        build_samples(ds, DataConfig(label="implicit", num_negatives=1))
    ds = RawDataset("x", pd.concat([inter[inter.user_id == "a"],
                                    inter[inter.user_id == "b"].iloc[1:]]), items)  # b lacks i0, a lacks i99
    df = build_samples(ds, DataConfig(label="implicit", num_negatives=2))
    neg = df[df.label == 0]
    assert set(neg[neg.user_id == "a"]["item_id"]) == {"i99"}
    assert set(neg[neg.user_id == "b"]["item_id"]) == {"i0"}


def test_rating_labels_and_history_of_all_ratings():
    ds = make_ds(rating=True)
    df = build_samples(ds, DataConfig(label="auto", rating_threshold=4, history_len=50))
    assert resolve_label_rule(ds, DataConfig()) == "rating"
    assert len(df) == len(ds.interactions)
    assert ((df["rating"] >= 4).astype("int8") == df["label"]).all()
    assert sorted(df["rating"]) == sorted(ds.interactions["rating"])
    seq = sequences(df)
    # histories hold low-rated items too
    low = set(df[df.label == 0]["item_id"] + "@" + df[df.label == 0]["user_id"])
    in_hist = {f"{x}@{u}" for u, h in zip(df.user_id, df.history) for x in h}
    assert low & in_hist
    assert all(list(h) == seq[u][:p] for u, p, h in zip(df.user_id, df.pos, df.history))


def test_label_rules_auto_column_and_errors():
    ds = make_ds(rating=True, label=True)
    assert resolve_label_rule(ds, DataConfig()) == "column"
    df = build_samples(ds, DataConfig(label="column"))
    merged = df.merge(ds.interactions, on=["user_id", "item_id"], suffixes=("", "_raw"))
    assert len(merged) == len(ds.interactions)
    assert (merged["label"] == merged["label_raw"]).all()
    assert (merged["rating"] == merged["rating_raw"]).all()
    hinted = make_ds(rating=True, label_hint="implicit")
    assert resolve_label_rule(hinted, DataConfig()) == "implicit"
    assert resolve_label_rule(make_ds(), DataConfig()) == "implicit"
    with pytest.raises(DataError, match="rating"):
        build_samples(make_ds(), DataConfig(label="rating"))
    bad = make_ds(label=True)
    bad.interactions.loc[3, "label"] = 2
    with pytest.raises(DataError, match="0/1"):
        build_samples(bad, DataConfig(label="column"))
    bad = make_ds()
    bad.interactions["timestamp"] = bad.interactions["timestamp"].astype(object)
    bad.interactions.loc[5, "timestamp"] = "yesterday"
    with pytest.raises(DataError, match="timestamp"):
        build_samples(bad, DataConfig(label="implicit"))


def test_max_users_seeded_subset():
    ds = make_ds(n_users=40)
    a = build_samples(ds, DataConfig(label="implicit", max_users=10, seed=3))
    b = build_samples(ds, DataConfig(label="implicit", max_users=10, seed=3))
    c = build_samples(ds, DataConfig(label="implicit", max_users=10, seed=4))
    assert a["user_id"].nunique() == 10 and set(a.user_id) == set(b.user_id) and set(a.user_id) != set(c.user_id)
    kept = ds.interactions[ds.interactions.user_id.isin(set(a.user_id))]
    assert (a.label == 1).sum() == len(kept)
    assert set(a[a.label == 0].item_id) <= set(kept.item_id)  # negatives from the kept catalogue
    assert list(select_users(np.array(["b", "a"]), None, 0)) == ["a", "b"]


def _split(df, cfg, **kw):
    split, proto = assign_splits(df, cfg, label_rule=kw.pop("label_rule", "implicit"), **kw)
    return df.assign(split=split.astype(str)), proto


def test_loo_split():
    cfg = DataConfig(label="implicit", num_negatives=2, split="loo")
    ds = make_ds()
    df, proto = _split(build_samples(ds, cfg), cfg)
    assert proto["split"] == "loo" and proto["negatives"] == 2
    for u, g in df.groupby("user_id"):
        n = g["pos"].max() + 1
        assert g.groupby("pos")["split"].nunique().max() == 1  # negatives follow their positive
        if n < 3:
            assert (g.split == "train").all()
            continue
        assert set(g[g.split == "test"]["pos"]) == {n - 1}
        assert set(g[g.split == "valid"]["pos"]) == {n - 2}
        assert set(g[g.split == "train"]["pos"]) == set(range(n - 2))
    assert (df.split == "train").any() and df.groupby("user_id")["pos"].max().min() < 2  # both kinds covered


def test_ratio_counts_rule():
    tr, va, te = ratio_counts(np.array([10, 20, 3, 2, 1, 25]), [0.8, 0.1, 0.1])
    assert tr.tolist() == [8, 16, 1, 2, 1, 21]
    assert va.tolist() == te.tolist() == [1, 2, 1, 0, 0, 2]
    n = np.arange(1, 300)
    for r in ([0.8, 0.1, 0.1], [0.01, 0.98, 0.01], [0.7, 0.0, 0.3], [1, 1, 1]):
        tr, va, te = ratio_counts(n, r)
        assert (tr + va + te == n).all() and (tr >= 1).all() and (va >= 0).all() and (te >= 0).all()
        assert ((va == 0) | (n >= 3)).all()
        assert (abs(va - n * np.array(r)[1] / sum(r)) <= 1 + 1e-9)[n >= 3].all()


def test_ratio_split_order():
    cfg = DataConfig(label="rating", split="ratio", split_ratio=[0.6, 0.2, 0.2])
    df, proto = _split(build_samples(make_ds(rating=True), cfg), cfg, label_rule="rating")
    assert proto["ratios"] == pytest.approx([0.6, 0.2, 0.2])
    for u, g in df.groupby("user_id"):
        tr, va, te = (g[g.split == s]["pos"] for s in ("train", "valid", "test"))
        assert len(tr) >= 1
        if len(va):
            assert va.min() > tr.max()
        if len(te):
            assert te.min() > max(tr.max(), va.max() if len(va) else -1)
        if len(g) >= 3:
            assert len(va) >= 1 and len(te) >= 1
    with pytest.raises(DataError, match="split_ratio"):
        assign_splits(df, DataConfig(split="ratio", split_ratio=[0.5, 0.5]))


def test_time_split_global_and_needs_real_time():
    inter = pd.DataFrame({"user_id": ["early"] * 6 + ["late"] * 4 + ["mid"] * 5,
                          "item_id": [f"i{j}" for j in range(15)],
                          "timestamp": [1, 2, 3, 4, 5, 6, 100, 101, 102, 103, 50, 51, 52, 53, 54]})
    ds = RawDataset("t", inter, pd.DataFrame(columns=["item_id", "title", "brand", "categories", "text"]))
    cfg = DataConfig(label="implicit", num_negatives=1, split="time", split_ratio=[0.6, 0.2, 0.2])
    df, proto = _split(build_samples(ds, cfg), cfg)
    assert (df[df.user_id == "early"].split == "train").all()  # a per-user split would put pos 5 in test
    assert (df[df.user_id == "late"].split != "train").all()
    assert (df[df.timestamp > 100].split == "test").all()
    for a, b in (("train", "valid"), ("valid", "test")):
        assert df[df.split == a].timestamp.max() < df[df.split == b].timestamp.min()
    assert (df.groupby("split", observed=True).size() > 0).all()
    q1, q2 = proto["cut_timestamps"]
    assert q1 == 52 and q2 == 100
    assert (df[df.timestamp <= 52].split == "train").all() and (df[df.timestamp == 53].split == "valid").all()
    assert df.groupby("split", observed=True).size().to_dict() == {"train": 18, "valid": 6, "test": 6}
    ds.real_time = False
    with pytest.raises(DataError, match="real_time"):
        assign_splits(build_samples(ds, cfg), cfg, real_time=False)
