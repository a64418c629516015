"""Sequential task: leave-one-out samples, backbones, sampled softmax, full-ranking metrics, ICT target masking."""
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from llmcf.config import Config, DataConfig, SeqConfig
from llmcf.data.schema import FeatureSchema, RawDataset
from llmcf.data.seq_samples import build_seq_data, encode_seq, leave_one_out, positive_sequences, seq_vocab
from llmcf.models.sequential import SEQ_BACKBONES, SeqLLMCF, build_seq_model
from llmcf.train.batches import ArrayBatches
from llmcf.train.seq_metrics import MISS, ranking_metrics, target_ranks
from llmcf.train.seq_trainer import fit_seq, sampled_softmax_logits, sampled_softmax_loss

torch.set_num_threads(1)


def raw(rows, name="toy"):
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    items = pd.DataFrame({"item_id": sorted(inter["item_id"].unique())})
    items["title"], items["brand"], items["categories"], items["text"] = "", "", [[]] * len(items), ""
    return RawDataset(name=name, interactions=inter, items=items, label_hint="rating")


# ---- samples ------------------------------------------------------------------------------------------------------
def test_leave_one_out_positives_history_and_positions(tmp_path):
    rows = [("u1", f"i{k}", r, t) for k, (r, t) in enumerate([(5, 10), (2, 20), (4, 30), (5, 40), (4, 50), (5, 60)])]
    rows += [("u2", "i0", 5, 3), ("u2", "i9", 5, 1)]  # two positives: only a test row; out of time order on input
    rows += [("u3", "i1", 5, 1), ("u3", "i2", 4, 2), ("u3", "i3", 4, 2)]  # tie at t=2 keeps input order
    ds = raw(rows)
    cfg = DataConfig(label="rating", rating_threshold=4.0)
    pos, rule = positive_sequences(ds, cfg)
    assert rule == "rating"
    assert pos[pos.user_id == "u1"]["item_id"].tolist() == ["i0", "i2", "i3", "i4", "i5"]  # i1 (rating 2) dropped
    assert pos[pos.user_id == "u1"]["pos"].tolist() == [0, 2, 3, 4, 5]  # positions in the FULL sequence
    sp = leave_one_out(pos, history_len=2)
    u1 = {s: df[df.user_id == "u1"] for s, df in sp.items()}
    assert u1["test"]["item_id"].tolist() == ["i5"] and u1["test"]["history"].iloc[0] == ["i3", "i4"]
    assert u1["valid"]["item_id"].tolist() == ["i4"] and u1["valid"]["history"].iloc[0] == ["i2", "i3"]
    assert u1["train"]["item_id"].tolist() == ["i2", "i3"]
    assert [list(h) for h in u1["train"]["history"]] == [["i0"], ["i0", "i2"]]
    assert u1["test"]["pos"].tolist() == [5]
    # u2: sorted by time, one test row whose history is the earlier item; no valid/train rows
    assert sp["test"][sp["test"].user_id == "u2"]["history"].iloc[0] == ["i9"]
    assert (sp["valid"].user_id == "u2").sum() == 0 and (sp["train"].user_id == "u2").sum() == 0
    assert sp["test"][sp["test"].user_id == "u3"]["item_id"].iloc[0] == "i3"
    # the files: seq_vocab.json from the seq train split when the run has no CTR vocab
    stats = build_seq_data(ds, tmp_path, cfg, history_len=2)
    assert stats["vocab"] == "seq_vocab.json" and stats["rows"] == {"train": 2, "valid": 2, "test": 3}
    vocab = seq_vocab(tmp_path)
    assert set(vocab.item) == {"i0", "i2", "i3"}  # train targets and histories only
    test = pd.read_parquet(tmp_path / "data" / "seq_test.parquet")
    enc = encode_seq(test, vocab, 2)
    assert enc["hist"].shape == (3, 2) and (enc["item"] == 1).sum() == stats["oov_targets"]["test"] == 1


# ---- metrics ------------------------------------------------------------------------------------------------------
def test_full_ranking_metrics_hand_computed():
    n = 30
    scores = torch.arange(n, dtype=torch.float32).flip(0).repeat(3, 1)  # item 2 best, then 3, 4, ...
    scores[:, :2] = 1e9  # pad and OOV must never be ranked, however high they score
    target = torch.tensor([4, 7, 1])  # ranks (1-based) 3, 6; OOV target
    r = target_ranks(scores, target)
    assert r.tolist() == [2, 5, MISS]
    m = ranking_metrics(r, ks=(5, 10))
    assert m["recall@5"] == pytest.approx(1 / 3) and m["recall@10"] == pytest.approx(2 / 3)
    assert m["ndcg@5"] == pytest.approx((1 / math.log2(4)) / 3)
    assert m["ndcg@10"] == pytest.approx((1 / math.log2(4) + 1 / math.log2(7)) / 3)
    # ties count against the model
    flat = torch.zeros(1, 10)
    assert target_ranks(flat, torch.tensor([5])).tolist() == [7]  # 8 rankable items, 7 others tie
    # history removal: the two better history items leave the ranking; the target in the history becomes a miss
    hist = torch.tensor([[0, 2, 3], [0, 0, 7], [0, 0, 0]])
    r2 = target_ranks(scores, target, hist, remove_history=True)
    assert r2.tolist() == [0, MISS, MISS]
    assert target_ranks(scores, target, hist, remove_history=False).tolist() == [2, 5, MISS]


# ---- sampled softmax ----------------------------------------------------------------------------------------------
def test_sampled_negative_equal_to_target_is_masked():
    torch.manual_seed(0)
    items = torch.randn(12, 4, requires_grad=True)
    user = torch.randn(3, 4)
    target = torch.tensor([5, 6, 7])
    negatives = torch.tensor([5, 9, 5, 10])
    logits = sampled_softmax_logits(user, items, target, negatives)
    assert torch.isinf(logits[0, [1, 3]]).all() and torch.isfinite(logits[1:, 1:]).all()
    assert float(logits[0, 0].detach()) == pytest.approx(float(user[0] @ items[5].detach()))
    loss = torch.nn.functional.cross_entropy(logits, torch.zeros(3, dtype=torch.long))
    assert math.isfinite(loss.item())
    # row 0 = softmax over the target and the two real negatives only; same value and same gradient
    manual = torch.logsumexp(torch.stack([user[0] @ items[5], user[0] @ items[9], user[0] @ items[10]]), 0) \
        - user[0] @ items[5]
    row0 = torch.nn.functional.cross_entropy(logits[:1], torch.zeros(1, dtype=torch.long))
    assert row0.item() == pytest.approx(manual.item(), rel=1e-5)
    g_row0, = torch.autograd.grad(row0, items)
    g_manual, = torch.autograd.grad(manual, items)
    assert torch.allclose(g_row0, g_manual, atol=1e-6)
    # pad (0) and OOV (1) never serve as negatives: give them huge scores and the loss does not notice
    with torch.no_grad():
        big = items.detach().clone()
        big[:2] = user.mean(0) * 1e4
    g = torch.Generator().manual_seed(0)
    full = sampled_softmax_loss(user, big, target, 0)
    ref = torch.nn.functional.cross_entropy(user @ big[2:].T, target - 2)
    assert full.item() == pytest.approx(ref.item(), rel=1e-5)
    assert sampled_softmax_loss(user, big, target, 64, g).item() < 100


# ---- backbones ----------------------------------------------------------------------------------------------------
N_ITEMS, N_USERS, L = 24, 12, 6


def pattern(n, seed):
    """Next item = last history item + 1 (a learnable rule): user [n], hist [n, L], item [n]."""
    rng = np.random.default_rng(seed)
    lens = rng.integers(1, L + 1, n)
    hist = np.zeros((n, L), dtype=np.int64)
    item = np.zeros(n, dtype=np.int64)
    for r in range(n):
        start = rng.integers(2, N_ITEMS - lens[r] - 1)
        hist[r, L - lens[r]:] = np.arange(start, start + lens[r])
        item[r] = start + lens[r]
    return {"user": rng.integers(2, N_USERS, n), "item": item, "hist": hist, "hist_len": lens.astype(np.int64)}


@pytest.mark.parametrize("name", SEQ_BACKBONES.names())
def test_backbone_learns_and_scores_all_items(name):
    torch.manual_seed(0)
    model = build_seq_model(name, N_ITEMS, N_USERS, L, SeqConfig(hidden=32))
    tr, va = pattern(600, 0), pattern(200, 1)
    batch = {k: torch.from_numpy(v[:5]) for k, v in va.items()}
    out = model(batch)
    assert out["user_vec"].shape == (5, 32) and out["losses"] == {}
    assert model.item_vectors().shape == (N_ITEMS, 32)
    assert (out["user_vec"] @ model.item_vectors().T).shape == (5, N_ITEMS)
    res = fit_seq(model, ArrayBatches(tr, 32, shuffle=True), ArrayBatches(va, 100), lr=0.01, weight_decay=0.0,
                  max_epochs=8, patience=8, num_negatives=8, progress=False, test=ArrayBatches(va, 100))
    losses = [row["train_loss"] for row in res.curve]
    assert losses[-1] < 0.7 * losses[0], losses
    assert res.valid["recall@5"] > 0.3, res.valid  # chance is 5/22
    assert res.test["ndcg@10"] == pytest.approx(res.valid["ndcg@10"])  # best weights reloaded (test = valid data)


def test_left_padding_does_not_change_user_vectors():
    """Same history with more leading padding (a longer L) gives the same vector for the padding-aware models."""
    torch.manual_seed(0)
    for name in ("GRU4Rec", "YouTubeDNN", "SRGNN"):
        m = SEQ_BACKBONES.get(name)(N_ITEMS, N_USERS, 8, hidden=16).eval()
        short = {"user": torch.tensor([3]), "hist": torch.tensor([[0, 0, 5, 6, 5, 9]])}
        long = {"user": torch.tensor([3]), "hist": torch.tensor([[0, 0, 0, 0, 5, 6, 5, 9]])}
        assert torch.allclose(m(short)["user_vec"], m(long)["user_vec"], atol=1e-5), name


# ---- ICT: the query's features token never sees the target --------------------------------------------------------
def tiny_ict():
    from llmcf.models.ict import ICT

    schema = FeatureSchema(n_users=N_USERS, n_items=N_ITEMS, n_brands=4, n_cats=5, hist_len=L,
                           item_brand=np.arange(N_ITEMS) % 4, item_cats=(np.arange(N_ITEMS * 2) % 5).reshape(-1, 2))
    text = torch.randn(N_ITEMS, 8)
    return ICT(schema, text, 8, dim=16, layers=1, heads=2, variant="full", dropout=0.0, field_dim=4)


def ctx_batch(b=4, k=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    batch = {k2: torch.from_numpy(v[:b]) for k2, v in pattern(b, seed).items()}
    batch.update(ctx_user=torch.randint(2, N_USERS, (b, k), generator=g),
                 ctx_item=torch.randint(2, N_ITEMS, (b, k), generator=g),
                 ctx_hist=torch.randint(0, N_ITEMS, (b, k, L), generator=g),
                 ctx_label=torch.randint(0, 2, (b, k), generator=g), ctx_cot=torch.randn(b, k, 8, generator=g),
                 ctx_mask=torch.ones(b, k, dtype=torch.bool))
    return batch


@pytest.mark.parametrize("name", SEQ_BACKBONES.names())
def test_ict_user_vector_ignores_the_target(name):
    torch.manual_seed(0)
    ict = tiny_ict()
    model = build_seq_model(name, N_ITEMS, N_USERS, L, SeqConfig(hidden=32), ict=ict).eval()
    assert isinstance(model, SeqLLMCF)
    batch = ctx_batch()
    other = dict(batch, item=(batch["item"] + 3) % (N_ITEMS - 2) + 2)
    assert not torch.equal(other["item"], batch["item"])
    with torch.no_grad():
        a, b = model(batch), model(other)
        assert torch.equal(a["user_vec"], b["user_vec"])
        assert "recon" in a["losses"]
        # the check could fail: fed the target directly, the ICT output does depend on it
        w1, _ = ict(batch)
        w2, _ = ict(other)
        assert not torch.allclose(w1, w2)
        # and the ICT output reaches the user vector (changing the examples changes it)
        c = model(dict(batch, ctx_label=1 - batch["ctx_label"]))
        assert not torch.allclose(a["user_vec"], c["user_vec"])


def test_fusion_requires_the_extra_input_exactly_when_configured():
    m = SEQ_BACKBONES.get("SASRec")(N_ITEMS, N_USERS, L, hidden=16, extra_dim=8)
    batch = {k: torch.from_numpy(v) for k, v in pattern(3, 0).items()}
    with pytest.raises(ValueError):
        m(batch)
    assert m(batch, extra=torch.zeros(3, 8))["user_vec"].shape == (3, 16)
    y = SEQ_BACKBONES.get("YouTubeDNN")(N_ITEMS, N_USERS, L, hidden=16, extra_dim=8)
    assert hasattr(y, "extra_mlp") and y(batch, extra=torch.zeros(3, 8))["user_vec"].shape == (3, 16)


# ---- stage --------------------------------------------------------------------------------------------------------
def test_run_seq_train_writes_summary_with_protocol_and_resumes(tmp_path):
    from llmcf.train.seq_stage import SeqRunData, run_seq_train

    rng = np.random.default_rng(0)
    rows = []
    for u in range(40):
        start = int(rng.integers(0, 20))
        for t in range(8):
            rows.append((f"u{u}", f"i{(start + t) % 30}", 5.0, float(t)))
    ds = raw(rows)
    cfg = Config()
    cfg.data.label = "rating"
    cfg.seq = SeqConfig(history_len=5, hidden=16, max_epochs=2, num_negatives=10)
    cfg.train.seeds, cfg.train.batch_size = 2, 64
    run = SeqRunData(tmp_path, cfg, ds=ds)
    s = run_seq_train(tmp_path, cfg, "GRU4Rec", run=run, progress=False)
    out = tmp_path / "models" / "seq-GRU4Rec"
    assert (out / "seed_0" / "model.safetensors").exists() and (out / "seed_1" / "result.json").exists()
    saved = json.loads((out / "summary.json").read_text())
    assert saved["protocol"]["remove_history"] is False and "leave-one-out" in saved["protocol"]["split"]["split"]
    assert saved["test"]["ndcg@10"]["n"] == 2 and 0.0 <= s["test"]["recall@20"]["mean"] <= 1.0
    assert s["protocol"]["rows"]["test"] == 40
    mtime = (out / "seed_0" / "result.json").stat().st_mtime_ns
    run_seq_train(tmp_path, cfg, "GRU4Rec", run=run, progress=False)
    assert (out / "seed_0" / "result.json").stat().st_mtime_ns == mtime  # cached, not retrained
    # asking for a third seed trains only that one
    mtimes = [(out / f"seed_{k}" / "result.json").stat().st_mtime_ns for k in (0, 1)]
    cfg.train.seeds = 3
    s3 = run_seq_train(tmp_path, cfg, "GRU4Rec", run=run, progress=False)
    assert [(out / f"seed_{k}" / "result.json").stat().st_mtime_ns for k in (0, 1)] == mtimes
    assert s3["seeds"] == [0, 1, 2] and (out / "seed_2" / "model.safetensors").exists()
    # train.lr, train.weight_decay and train.max_epochs are not read by the sequential task (seq.* are): no retrain
    mtime2 = (out / "seed_2" / "result.json").stat().st_mtime_ns
    cfg.train.lr, cfg.train.weight_decay, cfg.train.max_epochs = 0.5, 0.1, 3
    run_seq_train(tmp_path, cfg, "GRU4Rec", run=run, progress=False)
    assert (out / "seed_2" / "result.json").stat().st_mtime_ns == mtime2
    # a setting that changes training does retrain
    cfg.seq.lr = 0.01
    run_seq_train(tmp_path, cfg, "GRU4Rec", run=run, progress=False)
    assert (out / "seed_0" / "result.json").stat().st_mtime_ns != mtimes[0]


def test_run_seq_train_with_ict_end_to_end(tmp_path):
    """Real data build + retrieval stages on a fabricated CoT bank; seq in-context ids are leakage-safe."""
    from llmcf.data.build import build_run_data
    from llmcf.retrieval.stage import leakage_violations, run_retrieve
    from llmcf.train.seq_stage import SeqRunData, run_seq_train

    rng = np.random.default_rng(1)
    rows = []
    for u in range(16):
        start = int(rng.integers(0, 20))
        for t in range(9):
            rows.append((f"u{u}", f"i{(start + t) % 25}", float(rng.choice([2, 4, 5])), float(t)))
    ds = raw(rows)
    cfg = Config()
    cfg.data.label, cfg.data.split, cfg.data.history_len = "rating", "loo", 5
    cfg.seq = SeqConfig(history_len=5, hidden=16, max_epochs=2, num_negatives=10)
    cfg.ict.enabled, cfg.ict.dim, cfg.ict.layers = True, 8, 1
    cfg.train.seeds, cfg.train.batch_size = 1, 32
    build_run_data(ds, cfg.data, tmp_path, show_progress=False)
    train = pd.read_parquet(tmp_path / "data" / "train.parquet")
    sel = train.sample(frac=0.5, random_state=0).reset_index(drop=True)
    sel["cot"], sel["score"] = "because", 0.5
    (tmp_path / "cot").mkdir()
    sel[["user_id", "pos", "item_id", "label", "cot", "score"]].to_parquet(tmp_path / "cot" / "selected.parquet")
    (tmp_path / "embed").mkdir()
    d = 8
    unit = rng.normal(size=(25 + len(sel), d)).astype(np.float32)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    np.save(tmp_path / "embed" / "items.npy", unit[:25])
    (tmp_path / "embed" / "item_ids.json").write_text(json.dumps([f"i{j}" for j in range(25)]))
    np.save(tmp_path / "embed" / "cot.npy", unit[25:])
    run_retrieve(tmp_path, cfg, progress=False)

    run = SeqRunData(tmp_path, cfg, ds=ds)
    assert run.stats["vocab"] == "vocab.json"  # the CTR vocabulary is reused
    bank, idx, _, _, _, _ = run.context(cfg, progress=False)
    frame = pd.read_parquet(tmp_path / "retrieval" / "bank.parquet")
    for s in ("train", "valid", "test"):
        df = run.frames[s]
        assert idx[s].shape == (len(df), cfg.retrieval.k) and (idx[s] >= 0).mean() > 0.5
        assert leakage_violations(idx[s], frame, df.user_id.tolist(), df.pos.to_numpy(), "same_or_later") == 0
    s = run_seq_train(tmp_path, cfg, "SASRec", ict=True, run=run, progress=False)
    assert s["tag"] == "seq-SASRec+llmcf" and s["protocol"]["retrieval"]["key"] == "history only"
    result = json.loads((tmp_path / "models" / "seq-SASRec+llmcf" / "seed_0" / "result.json").read_text())
    assert "train_recon" in result["curve"][0]  # the ICT's reconstruction loss was trained


def test_seq_textemb_baseline_reads_item_text_on_both_sides_and_caches(tmp_path):
    from llmcf.config import ConfigError
    from llmcf.data.build import build_run_data
    from llmcf.models.baselines import SeqTextEmb
    from llmcf.train.seq_stage import SeqRunData, run_seq_train
    from llmcf.train.seq_task import SeqTask

    rng = np.random.default_rng(2)
    rows = []
    for u in range(20):
        start = int(rng.integers(0, 20))
        for t in range(8):
            rows.append((f"u{u}", f"i{(start + t) % 25}", float(rng.choice([2, 5])), float(t)))
    ds = raw(rows)
    cfg = Config()
    cfg.data.label, cfg.data.split, cfg.data.history_len = "rating", "loo", 5
    cfg.seq = SeqConfig(history_len=5, hidden=16, max_epochs=2, num_negatives=10)
    cfg.train.seeds, cfg.train.batch_size = 1, 32
    build_run_data(ds, cfg.data, tmp_path, show_progress=False)
    (tmp_path / "embed").mkdir()
    vecs = rng.normal(size=(24, 8)).astype(np.float32)  # i24 gets no text vector
    np.save(tmp_path / "embed" / "items.npy", vecs / np.linalg.norm(vecs, axis=1, keepdims=True))
    (tmp_path / "embed" / "item_ids.json").write_text(json.dumps([f"i{j}" for j in range(24)]))

    cfg.baseline.name = "textemb"
    run = SeqRunData(tmp_path, cfg, ds=ds)
    s = run_seq_train(tmp_path, cfg, "SASRec", run=run, progress=False)
    assert s["tag"] == "seq-SASRec+textemb" and s["protocol"]["baseline"]["name"] == "textemb"
    out = tmp_path / "models" / "seq-SASRec+textemb"
    assert 0.0 <= s["test"]["ndcg@10"]["mean"] <= 1.0 and (out / "seed_0" / "model.safetensors").exists()

    model = SeqTask(run, ict=False).build("SASRec", cfg)
    assert isinstance(model, SeqTextEmb)
    with torch.no_grad():
        model.proj.weight.normal_()
        diff = (model.item_vectors() - model.backbone.item_vectors()).abs().sum(1)
    no_text = int(run.vocab.encode_items(["i24"])[0])
    known = run.vocab.encode_items([f"i{j}" for j in range(24)])
    assert diff[no_text] == 0 and diff[0] == 0 and (diff[known] > 0).all()  # text only where there is one
    batch = {k: torch.as_tensor(v[:4]) for k, v in run.arrays["test"].items()}
    u1 = model(batch)["user_vec"]
    batch2 = {**batch, "hist": torch.where(batch["hist"] > 0, torch.full_like(batch["hist"], no_text), batch["hist"])}
    assert not torch.allclose(u1, model(batch2)["user_vec"])  # the user side reads the history's text

    mtime = (out / "seed_0" / "result.json").stat().st_mtime_ns
    run_seq_train(tmp_path, cfg, "SASRec", run=run, progress=False)
    assert (out / "seed_0" / "result.json").stat().st_mtime_ns == mtime  # cached
    np.save(tmp_path / "embed" / "items.npy", np.roll(np.load(tmp_path / "embed" / "items.npy"), 1, axis=0))
    run_seq_train(tmp_path, cfg, "SASRec", run=run, progress=False)
    assert (out / "seed_0" / "result.json").stat().st_mtime_ns != mtime  # new item vectors: retrained
    assert (tmp_path / "models" / "seq-SASRec" / "seed_0").exists() is False  # the backbone's folder untouched

    cfg.baseline.name = "kd"
    with pytest.raises(ConfigError, match="baseline 'kd' is for the ctr task"):
        run_seq_train(tmp_path, cfg, "SASRec", run=run, progress=False)
    cfg.baseline.name, cfg.baseline.residual = "textemb", True
    with pytest.raises(ConfigError, match="baseline.residual is for the ctr task"):
        run_seq_train(tmp_path, cfg, "SASRec", run=run, progress=False)
