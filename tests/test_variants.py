"""Variants of the in-context module: hybrid bank (every train row, learned "no CoT" token) and similarity input."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from llmcf.config import Config
from llmcf.models.context import ContextBank
from llmcf.retrieval.bank import ItemVectors, build_bank
from llmcf.retrieval.stage import leakage_violations, run_retrieve
from test_ict import D, make_batch, make_schema, make_text
from test_retrieval import build_run_dir

from llmcf.models.ict import ICT

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]


def test_hybrid_bank_holds_every_train_row_and_keeps_the_cot_rows(tmp_path):
    rng = np.random.default_rng(3)
    run = build_run_dir(tmp_path / "run", rng)
    bank = build_bank(run, ItemVectors.load(run), "hybrid")
    train = pd.read_parquet(run / "data" / "train.parquet")
    sel = pd.read_parquet(run / "cot" / "selected.parquet")
    assert len(bank) == len(train)
    has = bank.frame[bank.frame.cot_row >= 0]
    assert set(has.cot_row) == set(range(len(sel)))
    # each CoT row lands on its own (user, pos, item, label) train row(s)
    got = {(u, p, i, int(y)): c for u, p, i, y, c in zip(has.user_id, has.pos, has.item_id, has.label, has.cot_row)}
    assert all(got[(u, p, i, int(y))] == j
               for j, (u, p, i, y) in enumerate(zip(sel.user_id, sel.pos, sel.item_id, sel.label)))

    cfg = Config()
    cfg.retrieval.bank = "hybrid"
    meta = run_retrieve(run, cfg, progress=False)
    assert meta["bank_rows"] == len(train) and meta["leakage_violations"] == 0
    test = pd.read_parquet(run / "data" / "test.parquet")
    ctx = np.load(run / "retrieval" / "test_ctx.npy")
    frame = pd.read_parquet(run / "retrieval" / "bank.parquet")
    assert leakage_violations(ctx, frame, test.user_id.tolist(), test.pos.to_numpy(), "same_or_later") == 0
    # the similarity file matches the keys: score = inner product of query and bank keys
    sim = np.load(run / "retrieval" / "test_sim.npy")
    assert sim.shape == ctx.shape and sim.dtype == np.float32
    from llmcf.retrieval.bank import CoTBank, compose_keys

    items = ItemVectors.load(run)
    q = compose_keys(items.history_means([list(h) for h in test.history]), items.targets(test.item_id.tolist()),
                     cfg.retrieval)
    bk = CoTBank.load(run / "retrieval").keys(cfg.retrieval)
    want = np.where(ctx >= 0, np.einsum("nd,nkd->nk", q, bk[np.maximum(ctx, 0)]), 0)
    np.testing.assert_allclose(sim, want, atol=1e-5)

    vocab = {"user": [f"u{u}" for u in range(12)], "item": [f"i{j}" for j in range(40)]}
    cb = ContextBank.from_run(run, vocab, 5)
    assert cb.cot_gaps
    g = cb.gather(ctx[:4])
    want_has = (ctx[:4] >= 0) & (frame.cot_row.to_numpy()[np.maximum(ctx[:4], 0)] >= 0)
    assert torch.equal(g["ctx_has_cot"], torch.from_numpy(want_has))
    assert (g["ctx_cot"][~g["ctx_has_cot"]] == 0).all()


def test_a_plain_cot_bank_has_no_gaps_and_no_extra_input():
    cb = ContextBank(np.array([2, 3]), np.array([4, 5]), np.zeros((2, 5), np.int64), np.array([0, 1]),
                     np.ones((2, D), np.float32))
    assert not cb.cot_gaps and "ctx_has_cot" not in cb.gather(np.array([[0, 1]]))
    with pytest.raises(Exception, match="cot_row"):
        ContextBank(np.array([2]), np.array([4]), np.zeros((1, 5), np.int64), np.array([0]),
                    np.ones((1, D), np.float32), cot_row=np.array([-2]))


def _ict(**kw) -> ICT:
    torch.manual_seed(0)
    return ICT(make_schema(), make_text(), D, dim=16, layers=1, heads=2, field_dim=8, **kw).eval()


def test_no_cot_token_replaces_the_cot_of_rows_without_one():
    ict = _ict(no_cot_token=True)
    with torch.no_grad():
        ict.no_cot.normal_()
    batch = make_batch(b=3, k=4)
    batch["ctx_has_cot"] = torch.tensor([[True, False, True, False]] * 3)
    with torch.no_grad():
        w, losses = ict(batch)
        other = dict(batch, ctx_cot=batch["ctx_cot"].clone())
        other["ctx_cot"][:, 1] = torch.randn(3, D)  # a row without CoT: its (zero) CoT input is never read
        w2, losses2 = ict(other)
        assert torch.allclose(w, w2) and torch.allclose(losses["recon"], losses2["recon"])
        other["ctx_cot"][:, 0] = torch.randn(3, D)  # a row with CoT is read
        assert not torch.allclose(w, ict(other)[0])
        # the learned token differs from "all zeros" (the CoT of a missing row) and moves the output
        plain = dict(batch, ctx_has_cot=torch.ones(3, 4, dtype=torch.bool))
        assert not torch.allclose(w, ict(plain)[0])
    with pytest.raises(Exception, match="ctx_has_cot"):
        ict(make_batch(b=2))


def test_similarity_input_enters_the_tokens_of_present_examples_only():
    ict = _ict(sim_input=True)
    batch = make_batch(b=3, k=4)
    batch["ctx_mask"][:, 3] = False
    batch["ctx_sim"] = torch.rand(3, 4)
    with torch.no_grad():
        w = ict(batch)[0]
        changed = dict(batch, ctx_sim=batch["ctx_sim"].clone())
        changed["ctx_sim"][:, 3] = 5.0  # a missing slot's similarity is ignored
        assert torch.allclose(w, ict(changed)[0])
        changed["ctx_sim"][:, 0] = 5.0
        assert not torch.allclose(w, ict(changed)[0])
    with pytest.raises(Exception, match="ctx_sim"):
        ict(make_batch(b=2))


@pytest.fixture
def ict_run(tmp_path):
    """A built run (CLI data build on a toy data set) with stand-in CoT and embedding files (random unit vectors in
    place of the LLM and the encoder, which these tests do not exercise)."""
    import json

    from llmcf.cli import main
    from test_cli import _write_atomic

    _write_atomic(tmp_path / "toy", n_users=20, n_items=15, per_user=8)
    run = tmp_path / "run"
    assert main(["data", "build", "--dataset", str(tmp_path / "toy"), "--out", str(run),
                 "--set", "data.label=rating", "--set", "data.history_len=5"]) == 0
    rng = np.random.default_rng(0)
    (run / "embed").mkdir()
    (run / "cot").mkdir()
    items = pd.read_parquet(run / "data" / "items.parquet")["item_id"].astype(str).tolist()
    vec = rng.normal(size=(len(items), 8)).astype(np.float32)
    np.save(run / "embed" / "items.npy", vec / np.linalg.norm(vec, axis=1, keepdims=True))
    (run / "embed" / "item_ids.json").write_text(json.dumps(items))
    sel = pd.read_parquet(run / "data" / "train.parquet").sample(frac=0.3, random_state=0).reset_index(drop=True)
    sel = sel.assign(cot="because", score=0.5)[["user_id", "pos", "item_id", "label", "cot", "score"]]
    sel.to_parquet(run / "cot" / "selected.parquet")
    cot = rng.normal(size=(len(sel), 8)).astype(np.float32)
    np.save(run / "embed" / "cot.npy", cot / np.linalg.norm(cot, axis=1, keepdims=True))
    return run


SMALL = ["--set", "train.max_epochs=1", "--set", "train.batch_size=32", "--set", "model.embed_dim=4",
         "--set", "model.mlp=[8]", "--set", "ict.dim=8", "--set", "ict.layers=1", "--set", "ict.field_dim=4"]


def test_variants_train_end_to_end(ict_run, capsys):
    import json

    from llmcf.cli import main

    hybrid = ["--set", "retrieval.bank=hybrid", "--set", "retrieval.query_batch=64"]
    assert main(["retrieve", "--run", str(ict_run), *hybrid]) == 0
    assert main(["train", "--run", str(ict_run), "--model", "DIN", "--quiet", *SMALL]) == 0
    flags = ["--set", "ict.sim_input=true", "--set", "ict.fusion=residual", "--set", "ict.warm_start=true"]
    assert main(["train", "--run", str(ict_run), "--model", "DIN", "--ict", "--quiet", *SMALL, *hybrid, *flags]) == 0
    res = json.loads((ict_run / "models" / "DIN+llmcf" / "seed_0" / "result.json").read_text())
    base = json.loads((ict_run / "models" / "DIN" / "seed_0" / "result.json").read_text())
    assert 0 <= res["test"]["auc"] <= 1 and res["params"] > base["params"]
    # the model's weights hold the no-CoT token, the similarity projection and the safe-fusion head
    from safetensors.torch import load_file

    state = load_file(str(ict_run / "models" / "DIN+llmcf" / "seed_0" / "model.safetensors"))
    assert {"ict.no_cot", "ict.sim_proj.weight", "ict_head.2.weight"} <= set(state)
    # served: the scorer passes each example's retrieval score to the ICT, so it gives the offline test scores
    from llmcf.serve.scorer import Scorer

    scorer = Scorer.load(ict_run, "DIN+llmcf", seed=0)
    assert scorer.sim_input
    test = pd.read_parquet(ict_run / "data" / "test.parquet")
    rows = scorer.score_rows(test.user_id.tolist(), [list(h) for h in test.history], test.item_id.tolist(),
                             test.pos.to_numpy())
    offline = np.load(ict_run / "models" / "DIN+llmcf" / "seed_0" / "test_pred.npy")
    np.testing.assert_allclose(rows, offline, atol=1e-5)
    # the similarity input is read: other scores give other outputs
    with torch.no_grad():
        scorer.model.ict.sim_proj.weight.add_(1.0)
    moved = scorer.score_rows(test.user_id.tolist(), [list(h) for h in test.history], test.item_id.tolist(),
                              test.pos.to_numpy())
    assert not np.allclose(moved, offline, atol=1e-4)
    # warm start without a trained base is a clear error
    capsys.readouterr()
    assert main(["train", "--run", str(ict_run), "--model", "DCN", "--ict", "--quiet", *SMALL, *hybrid, *flags]) == 1
    assert "train it first" in capsys.readouterr().err


def test_tuning_k_uses_a_retrieval_view_of_the_run(ict_run):
    pytest.importorskip("optuna")
    from llmcf.cli import main
    from llmcf.config import load_config
    from llmcf.tune import run_tune

    assert main(["retrieve", "--run", str(ict_run)]) == 0
    cfg = load_config(None, [s for s in SMALL if s != "--set"] +
                      ["tune.space={train.lr: {low: 0.001, high: 0.01}}", "tune.models={}",
                       "tune.ict={retrieval.k: {choices: [2]}}", "tune.startup_trials=3", "data.history_len=5"])
    cfg.ict.enabled = True
    summary = run_tune(ict_run, cfg, "DIN", trials=3)
    assert summary["trials"] == 3 and {a["params"]["retrieval.k"] for a in summary["all"]} == {2}
    # K=2 differs from the run's K=4: retrieved once in a view with links to the run's inputs; the run is untouched
    views = list((ict_run / "tune" / "_retrieval").iterdir())
    assert len(views) == 1 and (views[0] / "data").is_symlink()
    assert np.load(views[0] / "retrieval" / "test_ctx.npy").shape[1] == 2
    assert np.load(ict_run / "retrieval" / "test_ctx.npy").shape[1] == 4
    trial = ict_run / "tune" / "DIN+llmcf" / "trials" / "0" / "models" / "DIN+llmcf" / "config.yaml"
    assert load_config(trial).retrieval.k == 2


def test_tuning_a_warm_started_llmcf_fixes_the_backbone_and_never_ends_below_it(ict_run, capsys):
    pytest.importorskip("optuna")
    import json

    from llmcf.cli import main
    from llmcf.config import ConfigError, load_config
    from llmcf.errors import RunError
    from llmcf.tune import run_tune

    assert main(["retrieve", "--run", str(ict_run)]) == 0
    sets = [s for s in SMALL if s != "--set"] + ["data.history_len=5", "ict.fusion=residual", "ict.warm_start=true",
                                                 "tune.startup_trials=2", "tune.models={}",
                                                 "tune.space={model.embed_dim: {choices: [8, 16]}}",
                                                 "tune.ict={train.ict_lr: {low: 0.001, high: 0.01, log: true}}"]
    cfg = load_config(None, sets)
    cfg.ict.enabled = True
    with pytest.raises(RunError, match="train it first"):
        run_tune(ict_run, cfg, "DIN", trials=2)
    assert main(["train", "--run", str(ict_run), "--model", "DIN", "--quiet", *SMALL]) == 0  # embed_dim 4
    capsys.readouterr()
    summary = run_tune(ict_run, cfg, "DIN", trials=2)
    assert "not searched: model.embed_dim" in capsys.readouterr().out
    assert set(summary["space"]) == {"train.ict_lr"} and summary["trials"] == 2
    base = json.loads((ict_run / "models" / "DIN" / "seed_0" / "result.json").read_text())["valid"]["auc"]
    for a in summary["all"]:  # each trial started from the base weights (embed_dim 4 fits them) and kept the best
        assert a["valid_auc"] >= base - 1e-9
    best = load_config(ict_run / "tune" / "DIN+llmcf" / "best.yaml")
    assert best.model.embed_dim == 4 and best.ict.warm_start
    cfg.ict.fusion = "concat"
    with pytest.raises(ConfigError, match="fusion: residual"):
        run_tune(ict_run, cfg, "DIN", trials=2)


def test_a_frozen_backbone_ends_as_the_base_model_plus_the_residual_head(ict_run, capsys):
    """ict.freeze_backbone: the saved LLM-CF model's backbone is the trained base, weight for weight."""
    import json

    from safetensors.torch import load_file

    from llmcf.cli import main

    assert main(["retrieve", "--run", str(ict_run)]) == 0
    frozen = ["--set", "ict.fusion=residual", "--set", "ict.freeze_backbone=true", "--set", "train.max_epochs=2"]
    capsys.readouterr()
    assert main(["train", "--run", str(ict_run), "--model", "DIN", "--ict", "--quiet", *SMALL, *frozen]) == 1
    assert "needs ict.warm_start" in capsys.readouterr().err  # freezing an untrained backbone is refused
    assert main(["train", "--run", str(ict_run), "--model", "DIN", "--quiet", *SMALL]) == 0
    assert main(["train", "--run", str(ict_run), "--model", "DIN", "--ict", "--quiet", *SMALL, *frozen,
                 "--set", "ict.warm_start=true"]) == 0
    base = load_file(str(ict_run / "models" / "DIN" / "seed_0" / "model.safetensors"))
    llmcf = load_file(str(ict_run / "models" / "DIN+llmcf" / "seed_0" / "model.safetensors"))
    assert base and all(torch.equal(llmcf[f"backbone.{k}"], v) for k, v in base.items())
    res = json.loads((ict_run / "models" / "DIN+llmcf" / "seed_0" / "result.json").read_text())
    base_valid = json.loads((ict_run / "models" / "DIN" / "seed_0" / "result.json").read_text())["valid"]["auc"]
    assert res["valid"]["auc"] >= base_valid - 1e-9  # epoch 0 is the base model, which early stopping may keep
    if res["best_epoch"] > 0:  # the head learned something validation kept
        assert llmcf["ict_head.2.weight"].abs().sum() > 0
    # the seed is stamped with the base weights it loaded: the same base keeps it cached, a replaced base retrains it
    from safetensors.torch import save_file

    from llmcf.fingerprint import file_sha

    base_path = ict_run / "models" / "DIN" / "seed_0" / "model.safetensors"
    assert res["base_weights"] == file_sha(base_path)
    warm = ["train", "--run", str(ict_run), "--model", "DIN", "--ict", "--quiet", *SMALL, *frozen,
            "--set", "ict.warm_start=true"]
    capsys.readouterr()
    assert main(warm) == 0 and "DIN+llmcf seed 0: cached" in capsys.readouterr().out
    save_file({k: v * 1.01 if v.is_floating_point() else v for k, v in base.items()}, str(base_path))
    assert main(warm) == 0 and "DIN+llmcf seed 0: cached" not in capsys.readouterr().out
    again = json.loads((ict_run / "models" / "DIN+llmcf" / "seed_0" / "result.json").read_text())
    assert again["base_weights"] == file_sha(base_path) != res["base_weights"]
    moved = load_file(str(ict_run / "models" / "DIN+llmcf" / "seed_0" / "model.safetensors"))
    assert all(torch.equal(moved[f"backbone.{k}"], v * 1.01 if v.is_floating_point() else v) for k, v in base.items())
    # benchmarks/residual_probe.py reads it from a bench_variants-style folder: one row per seed, the two terms
    # adding up to the served logit (it checks that itself), the concat-fusion and base models left out
    import importlib.util

    spec = importlib.util.spec_from_file_location("residual_probe_under_test", ROOT / "benchmarks" /
                                                  "residual_probe.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    bench = ict_run.parent / "bench"
    (bench / "variants").mkdir(parents=True)
    (bench / "data").symlink_to(ict_run / "data", target_is_directory=True)
    (bench / "variants" / "frozen").symlink_to(ict_run, target_is_directory=True)
    probe.RESULTS = ict_run.parent / "results"
    probe.RESULTS.mkdir()
    assert probe.main(["--run-dir", str(bench), "--model", "DIN", "--name", "tiny", "--rows", "30"]) == 0
    table = [ln for ln in (probe.RESULTS / "residual-probe.md").read_text().splitlines() if ln.startswith("| frozen")]
    assert len(table) == 1 and table[0].startswith(f"| frozen | 0 | {res['best_epoch']} |")


def test_new_switches_at_their_default_keep_old_hashes():
    """A result recorded before these switches existed (its config has none of them) stays cached."""
    from llmcf.fingerprint import ADDED_AT_DEFAULT, digest, seed_hash
    from llmcf.train.stage import config_hash

    cfg = Config()
    cfg.ict.enabled = True
    from llmcf.fingerprint import CTR_SECTIONS, NOT_HASHED

    # the payload as it was before the switches existed: every field of the sections, less NOT_HASHED ones
    old = {n: {k: v for k, v in cfg.to_dict()[n].items() if k not in NOT_HASHED.get(n, ())} for n in CTR_SECTIONS}
    old["model"]["params"] = cfg.model.params_for(cfg.model.name)
    for sec, f in ADDED_AT_DEFAULT:
        if sec in old:  # recgen's switches are in the RecGen stamp, not a CTR model's hash
            old[sec].pop(f)
    old["retrieval"]["index"] = "flat"  # the default before `auto` (fingerprint.HASHED_AS)
    assert config_hash(cfg) == seed_hash(old)
    # the stage stamps of `llmcf run` too: an old run's retrieve stage is not rerun
    assert Config().section_hash("retrieval") == digest({"retrieval": old["retrieval"]})
    for sec, f, val in (("ict", "fusion", "residual"), ("retrieval", "bank", "hybrid"), ("ict", "sim_input", True),
                        ("train", "ict_lr", 0.001)):
        changed = Config()
        changed.ict.enabled = True
        setattr(getattr(changed, sec), f, val)
        assert config_hash(changed) != config_hash(cfg), f
