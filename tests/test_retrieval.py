"""CoT bank, FAISS indexes and leakage-safe selection, on small random data."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llmcf.config import Config, RetrievalConfig
from llmcf.errors import DataError
from llmcf.retrieval.bank import ItemVectors, compose_keys, normalise
from llmcf.retrieval.index import build_index, kind, load_index, save_index, search
from llmcf.retrieval.select import Selector
from llmcf.retrieval.stage import Retriever, leakage_violations, run_retrieve

faiss = pytest.importorskip("faiss")
faiss.omp_set_num_threads(1)


def unit(rng, n, d):
    return normalise(rng.standard_normal((n, d)).astype(np.float32))


def make_bank(rng, n=400, users=8, max_pos=60, d=8, pos_rate=0.5):
    """Few users, so many bank rows share the query's user: a hard case for the leakage rule."""
    frame = pd.DataFrame({"user_id": [f"u{i}" for i in rng.integers(0, users, n)],
                          "pos": rng.integers(0, max_pos, n).astype(np.int64),
                          "label": (rng.random(n) < pos_rate).astype(np.int8)})
    return frame, unit(rng, n, d), unit(rng, n, d)


def make_selector(frame, h, t, cfg):
    keys = compose_keys(h, t, cfg)
    lab = frame["label"].to_numpy()
    idx = {1: build_index(keys[lab == 1], cfg), 0: build_index(keys[lab == 0], cfg)}
    return Selector(frame["user_id"].tolist(), frame["pos"].to_numpy(), lab, idx, cfg), keys


def brute_force(keys, qkeys, frame, users, pos, cfg):
    """Reference selection by hand: sets of allowed best rows per label (order-free)."""
    scores = qkeys @ keys.T
    bu, bp, lab = frame["user_id"].to_numpy(), frame["pos"].to_numpy(), frame["label"].to_numpy()
    out = []
    for i in range(len(qkeys)):
        bad = (bu == users[i]) & ((bp >= pos[i]) if cfg.leakage == "same_or_later" else (bp > pos[i]))
        allowed = np.flatnonzero(~bad)
        if cfg.balanced:
            sel = []
            for lb, m in ((1, cfg.k - cfg.k // 2), (0, cfg.k // 2)):
                cand = allowed[lab[allowed] == lb]
                sel += cand[np.argsort(-scores[i, cand], kind="stable")][:m].tolist()
        else:
            sel = allowed[np.argsort(-scores[i, allowed], kind="stable")][:cfg.k].tolist()
        out.append(set(sel))
    return out


def test_inner_product_equals_weighted_cosine_sum():
    rng = np.random.default_rng(0)
    hb, tb, hq, tq = (rng.standard_normal((50, 16)).astype(np.float32) for _ in range(4))
    for wh, wt in ((0.5, 0.5), (0.8, 0.2), (1.0, 0.0)):
        cfg = RetrievalConfig(history_weight=wh, target_weight=wt)
        keys = compose_keys(normalise(hb), normalise(tb), cfg)
        assert keys.shape[1] == (32 if wt > 0 else 16)
        scores, ids = search(build_index(keys, cfg), compose_keys(normalise(hq), normalise(tq), cfg), 50, cfg)
        cos = lambda a, b: (a @ b.T) / np.linalg.norm(a, axis=1)[:, None] / np.linalg.norm(b, axis=1)[None, :]
        expect = wh * cos(hq, hb) + wt * cos(tq, tb)
        np.testing.assert_allclose(scores, np.take_along_axis(expect, ids, axis=1), atol=1e-5)
        assert (np.diff(scores, axis=1) <= 1e-6).all()


def test_history_mean_keys_and_unknown_items():
    rng = np.random.default_rng(1)
    vecs = unit(rng, 5, 6)
    vecs[4] = 0  # an item without text
    items = ItemVectors([f"i{j}" for j in range(5)], vecs)
    out = items.history_means([["i0", "i1"], [], ["zzz"], ["i2", "new", "i4"], ["i3"]])
    m = vecs[0] + vecs[1]
    np.testing.assert_allclose(out[0], m / np.linalg.norm(m), atol=1e-6)
    assert not out[1].any() and not out[2].any()
    np.testing.assert_allclose(out[3], vecs[2], atol=1e-6)  # unknown and zero items add nothing
    np.testing.assert_allclose(out[4], vecs[3], atol=1e-6)
    assert not items.targets([None, "nope"]).any()


@pytest.mark.parametrize("rule", ["same_or_later", "later"])
@pytest.mark.parametrize("balanced", [True, False])
def test_selection_is_exact_and_leakage_safe(rule, balanced):
    rng = np.random.default_rng(2)
    frame, h, t = make_bank(rng)
    cfg = RetrievalConfig(k=4, leakage=rule, balanced=balanced, margin=2, query_batch=64)
    sel, keys = make_selector(frame, h, t, cfg)
    # queries = the bank rows themselves (each one's own row is its best match) + noisy copies
    q = np.concatenate([keys, keys + 0.3 * rng.standard_normal(keys.shape).astype(np.float32)])
    users = frame["user_id"].tolist() * 2
    pos = np.concatenate([frame["pos"].to_numpy()] * 2)
    ctx = sel.select(q, users, pos, ["x"] * len(q))
    assert ctx.shape == (len(q), 4) and ctx.dtype == np.int64
    assert sel.stats["re_searched_queries"] > 0  # the small margin forces the grow-and-re-search path
    assert leakage_violations(ctx, frame, users, pos, rule) == 0
    own = np.concatenate([np.arange(len(frame))] * 2)
    bu, bp = frame["user_id"].to_numpy()[ctx], frame["pos"].to_numpy()[ctx]
    same_user = bu == np.asarray(users)[:, None]
    if rule == "same_or_later":
        assert not (ctx == own[:, None]).any()
        assert not (same_user & (bp >= pos[:, None])).any()
    else:
        assert not (same_user & (bp > pos[:, None])).any()
        assert (ctx == own[:, None]).any()  # the original rule lets a row retrieve itself
    # exact against a brute-force reference (flat index)
    ref = brute_force(keys, q, frame, users, pos, cfg)
    assert all(set(row.tolist()) == r for row, r in zip(ctx, ref))
    # the leakage rule actually bit: same-user rows are frequent near the top without it
    open_ctx = sel.select(q, [None] * len(q), pos, ["x"] * len(q))
    assert leakage_violations(open_ctx, frame, users, pos, rule) > 0


def test_balance_exactly_half_of_each_label():
    rng = np.random.default_rng(3)
    frame, h, t = make_bank(rng, n=300, pos_rate=0.15)  # positives rare: unbalanced top-k would skew to negatives
    for k in (2, 4, 6):
        cfg = RetrievalConfig(k=k)
        sel, keys = make_selector(frame, h, t, cfg)
        q = unit(rng, 100, keys.shape[1])
        ctx = sel.select(q, ["newuser"] * 100, np.zeros(100, np.int64), [str(i) for i in range(100)])
        lab = frame["label"].to_numpy()[ctx]
        assert (ctx >= 0).all()
        assert ((lab == 1).sum(1) == k // 2).all() and ((lab == 0).sum(1) == k // 2).all()
    cfg = RetrievalConfig(k=4, balanced=False)
    sel, keys = make_selector(frame, h, t, cfg)
    ctx = sel.select(q, ["newuser"] * 100, np.zeros(100, np.int64), [str(i) for i in range(100)])
    assert (frame["label"].to_numpy()[ctx] == 1).mean() < 0.4


@pytest.mark.parametrize("balanced", [True, False])
def test_random_selection_is_a_leakage_safe_uniform_control(balanced):
    """``selection: random``: the same count per label, no repeats, the leakage rule, independent of the key, the
    same rows for the same query in any batch, and spread over the whole bucket."""
    from llmcf.config import ConfigError, ICTConfig, check_sim_input

    rng = np.random.default_rng(7)
    frame, h, t = make_bank(rng, n=200, users=4, pos_rate=0.3)
    cfg = RetrievalConfig(k=4, balanced=balanced, selection="random", margin=1, query_batch=32)
    sel, keys = make_selector(frame, h, t, cfg)
    n = 400
    users = [f"u{i % 4}" for i in range(n)]
    pos = rng.integers(0, 60, n).astype(np.int64)
    targets = [f"t{i}" for i in range(n)]
    ctx, sim = sel.select(unit(rng, n, keys.shape[1]), users, pos, targets, with_scores=True)
    assert ctx.shape == (n, 4) and leakage_violations(ctx, frame, users, pos, "same_or_later") == 0
    assert (ctx >= 0).all() and not sim.any()  # a full row for every query; scores 0
    assert all(len(set(r)) == 4 for r in ctx.tolist())  # no repeats within a query
    lab = frame["label"].to_numpy()[ctx]
    if balanced:
        assert ((lab == 1).sum(1) == 2).all()
    # the key plays no part, the query's seed does: other keys and other batching give the same rows
    again = sel.select(unit(rng, n, keys.shape[1])[::-1][::-1], users, pos, targets)
    np.testing.assert_array_equal(again, ctx)
    one = Selector(frame["user_id"].tolist(), frame["pos"].to_numpy(), frame["label"].to_numpy(), sel.indexes,
                   RetrievalConfig(**{**cfg.__dict__, "query_batch": 7}))
    np.testing.assert_array_equal(one.select(unit(rng, n, keys.shape[1]), users, pos, targets), ctx)
    # the draws differ from query to query and cover most of the bank
    assert len({tuple(sorted(r)) for r in ctx.tolist()}) > 0.9 * n
    assert len(np.unique(ctx)) > 0.8 * len(frame)
    # a user holding most of a tiny bucket still gets only allowed rows (the fallback path), short rows padded
    small = frame.iloc[:12].assign(user_id="u0", label=[1] * 6 + [0] * 6, pos=np.arange(12))
    s2, _ = make_selector(small, h[:12], t[:12], cfg)
    c2 = s2.select(unit(rng, 3, keys.shape[1]), ["u0"] * 3, np.array([0, 3, 12]), ["a", "b", "c"])
    assert (c2[0] == -1).all() and leakage_violations(c2, small, ["u0"] * 3, np.array([0, 3, 12]), "same_or_later") == 0
    assert ((c2[2] >= 0).sum() == 4)
    with pytest.raises(ConfigError, match="sim_input"):
        check_sim_input(cfg, ICTConfig(sim_input=True))
    with pytest.raises(Exception, match="selection"):
        Selector(frame["user_id"].tolist(), frame["pos"].to_numpy(), frame["label"].to_numpy(), sel.indexes,
                 RetrievalConfig(selection="nearest"))


def test_deterministic_order_under_seed():
    rng = np.random.default_rng(4)
    frame, h, t = make_bank(rng)
    q = unit(rng, 200, 16)
    users, pos, tg = [f"u{i % 8}" for i in range(200)], rng.integers(0, 60, 200), [f"t{i}" for i in range(200)]
    out = {}
    for seed, qb in ((0, 2048), (0, 13), (1, 2048)):
        cfg = RetrievalConfig(seed=seed, query_batch=qb)
        sel, _ = make_selector(frame, h, t, cfg)
        out[seed, qb] = sel.select(q, users, pos, tg)
    np.testing.assert_array_equal(out[0, 2048], out[0, 13])  # independent of batching
    a, b = out[0, 2048], out[1, 2048]
    assert all(set(x) == set(y) for x, y in zip(a.tolist(), b.tolist()))  # same examples
    assert (a != b).any(axis=1).mean() > 0.5  # in a different order
    # the order is not the score order: label positions vary across rows
    assert len({tuple(frame["label"].to_numpy()[r]) for r in a}) > 1


def test_short_buckets_pad_with_minus_one():
    cfg = RetrievalConfig(k=4)
    frame = pd.DataFrame({"user_id": ["a"], "pos": np.array([5], np.int64), "label": np.array([1], np.int8)})
    rng = np.random.default_rng(5)
    sel, keys = make_selector(frame, unit(rng, 1, 4), unit(rng, 1, 4), cfg)
    q = unit(rng, 3, 8)
    ctx = sel.select(q, ["b", "a", None], np.array([0, 3, 0]), ["x", "y", None])
    np.testing.assert_array_equal(ctx, [[0, -1, -1, -1], [-1, -1, -1, -1], [0, -1, -1, -1]])
    ctx = sel.select(q[:0], [], np.zeros(0), [])
    assert ctx.shape == (0, 4)
    for index in ("ivf", "hnsw"):  # tiny banks fall back gracefully
        c2 = RetrievalConfig(k=4, index=index)
        s2, _ = make_selector(frame, unit(rng, 1, 4), unit(rng, 1, 4), c2)
        assert s2.select(q, ["b"] * 3, np.zeros(3), ["x"] * 3)[:, 0].tolist() == [0, 0, 0]


@pytest.mark.parametrize("index", ["ivf", "hnsw"])
def test_approximate_indexes_agree_with_flat(index):
    rng = np.random.default_rng(6)
    centers = unit(rng, 20, 32)
    keys = normalise(centers[rng.integers(0, 20, 4000)] + 0.15 * rng.standard_normal((4000, 32)).astype(np.float32))
    q = normalise(centers[rng.integers(0, 20, 200)] + 0.15 * rng.standard_normal((200, 32)).astype(np.float32))
    cfg = RetrievalConfig(index=index, nlist=32, nprobe=8, hnsw_m=16)
    approx = build_index(keys, cfg)
    assert kind(approx) == {"ivf": "IndexIVFFlat", "hnsw": "IndexHNSWFlat"}[index]
    _, ia = search(approx, q, 10, cfg)
    _, ie = search(build_index(keys, RetrievalConfig()), q, 10, cfg)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(ia.tolist(), ie.tolist())])
    assert recall > 0.8


@pytest.mark.parametrize("index", ["flat", "ivf", "hnsw"])
def test_index_save_load_round_trip(tmp_path, index):
    rng = np.random.default_rng(7)
    keys, q = unit(rng, 2000, 16), unit(rng, 20, 16)
    cfg = RetrievalConfig(index=index, nlist=16, nprobe=4)
    ix = build_index(keys, cfg)
    save_index(ix, tmp_path / "x.faiss")
    assert [p.name for p in tmp_path.iterdir()] == ["x.faiss"]
    back = load_index(tmp_path / "x.faiss")
    assert kind(back) == kind(ix) and back.ntotal == 2000
    for a, b in zip(search(ix, q, 5, cfg), search(back, q, 5, cfg)):
        np.testing.assert_array_equal(a, b)
    (tmp_path / "bad.faiss").write_bytes(b"not an index")
    with pytest.raises(DataError, match="bad.faiss"):
        load_index(tmp_path / "bad.faiss")


def build_run_dir(root: Path, rng, n_users=12, n_items=40, d=8, with_history_in_selected=False) -> Path:
    data, embed, cot = root / "data", root / "embed", root / "cot"
    for p in (data, embed, cot):
        p.mkdir(parents=True)
    item_ids = [f"i{j}" for j in range(n_items)]
    vecs = unit(rng, n_items, d)
    vecs[3] = 0  # no text
    np.save(embed / "items.npy", vecs)
    (embed / "item_ids.json").write_text(json.dumps(item_ids))
    pd.DataFrame({"item_id": item_ids}).to_parquet(data / "items.parquet")
    rows = {"train": [], "valid": [], "test": []}
    for u in range(n_users):
        seq = rng.choice(item_ids, size=14).tolist()
        for p, it in enumerate(seq):
            split = "train" if p < 12 else ("valid" if p == 12 else "test")
            for lab, item in ((1, it), (0, str(rng.choice(item_ids)))):
                rows[split].append({"user_id": f"u{u}", "pos": p, "item_id": item, "label": lab, "rating": np.nan,
                                    "timestamp": float(p), "history": seq[max(0, p - 5):p]})
    frames = {}
    for s, r in rows.items():
        df = pd.DataFrame(r).astype({"pos": "int64", "label": "int8"})
        df.to_parquet(data / f"{s}.parquet")
        frames[s] = df
    sel = frames["train"].sample(frac=0.4, random_state=0).reset_index(drop=True)
    sel["cot"], sel["score"] = "because", 0.5
    cols = ["user_id", "pos", "item_id", "label", "cot", "score"] + (["history"] if with_history_in_selected else [])
    sel[cols].to_parquet(cot / "selected.parquet")
    np.save(embed / "cot.npy", unit(rng, len(sel), d))
    return root


def test_run_retrieve_writes_everything(tmp_path):
    rng = np.random.default_rng(8)
    run = build_run_dir(tmp_path / "run", rng)
    cfg = Config()
    cfg.retrieval.query_batch = 16
    meta = run_retrieve(run, cfg, progress=False)
    out = run / "retrieval"
    sel = pd.read_parquet(run / "cot" / "selected.parquet")
    bank = pd.read_parquet(out / "bank.parquet")
    assert list(bank.columns) == ["user_id", "pos", "item_id", "label", "history", "cot_row"]
    assert len(bank) == len(sel) == meta["bank_rows"]
    assert bank["cot_row"].tolist() == list(range(len(sel)))
    train = pd.read_parquet(run / "data" / "train.parquet")
    hist = dict(((u, p), list(h)) for u, p, h in zip(train.user_id, train.pos, train.history))
    assert all(list(h) == hist[u, p] for u, p, h in zip(bank.user_id, bank.pos, bank.history))
    assert np.load(out / "bank_hist.npy").shape == (len(bank), 8)
    for s in ("train", "valid", "test"):
        df = pd.read_parquet(run / "data" / f"{s}.parquet")
        ctx = np.load(out / f"{s}_ctx.npy")
        assert ctx.shape == (len(df), 4) and ctx.dtype == np.int64
        assert ctx.max() < len(bank) and (ctx >= 0).mean() > 0.9
        assert leakage_violations(ctx, bank, df.user_id.tolist(), df.pos.to_numpy(), "same_or_later") == 0
        assert meta["splits"][s]["rows"] == len(df)
    assert meta["leakage_violations"] == 0
    assert {"index_pos.faiss", "index_neg.faiss", "meta.json"} <= {p.name for p in out.iterdir()}
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]

    # online retrieval reproduces the precomputed ids for the same rows
    r = Retriever.load(run)
    test = pd.read_parquet(run / "data" / "test.parquet")
    online = r.query(test.user_id.tolist(), test.pos.to_numpy(), [list(h) for h in test.history],
                     test.item_id.tolist())
    np.testing.assert_array_equal(online, np.load(out / "test_ctx.npy"))
    # unknown user and items: no crash, full rows
    got = r.query([None], np.array([0]), [["brand-new", "i1"]], ["brand-new"])
    assert got.shape == (1, 4) and (got >= 0).all()

    # rerun: cached splits, same outputs
    before = np.load(out / "train_ctx.npy")
    meta2 = run_retrieve(run, cfg, progress=False)
    assert all(s.get("cached") for s in meta2["splits"].values())
    np.testing.assert_array_equal(before, np.load(out / "train_ctx.npy"))


def test_history_only_mode_and_history_from_selected(tmp_path):
    rng = np.random.default_rng(9)
    run = build_run_dir(tmp_path / "run", rng, with_history_in_selected=True)
    cfg = Config()
    cfg.retrieval.target_weight = 0.0
    cfg.retrieval.history_weight = 1.0
    meta = run_retrieve(run, cfg, progress=False)
    assert meta["key_dim"] == 8 and meta["leakage_violations"] == 0
    r = Retriever.load(run)
    assert r.query(["u0"], np.array([20]), [["i1", "i2"]], [None]).shape == (1, 4)


def test_misaligned_cot_embeddings_raise(tmp_path):
    run = build_run_dir(tmp_path / "run", np.random.default_rng(10))
    np.save(run / "embed" / "cot.npy", np.zeros((3, 8), np.float32))
    with pytest.raises(DataError, match="cot.npy"):
        run_retrieve(run, Config(), progress=False)


def test_id_index_small_and_large_queries_agree():
    """IdIndex answers a few ids through a dict and many through pandas: the same positions, -1 for unknown ids."""
    from llmcf.lookup import SMALL, IdIndex

    ids = [f"i{j}" for j in range(1000)]
    idx = IdIndex(ids)
    rng = np.random.default_rng(0)
    values = [f"i{j}" for j in rng.integers(0, 1300, SMALL * 3)]  # ids >= 1000 are unknown
    want = np.array([int(v[1:]) if int(v[1:]) < 1000 else -1 for v in values])
    np.testing.assert_array_equal(idx.positions(values), want)  # pandas path
    np.testing.assert_array_equal(idx.positions(values[:SMALL]), want[:SMALL])  # dict path
    assert idx.positions([]).shape == (0,) and idx.positions(["nope"]).tolist() == [-1]
    assert not IdIndex(["a", "b", "a"]).is_unique
