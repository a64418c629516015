"""ICT module, causal decoder, LLM-CF wrapper and the in-context bank (tiny sizes, CPU, one thread)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from llmcf.config import ICTConfig, ModelConfig
from llmcf.data.schema import FeatureSchema
from llmcf.data.vocab import Vocab
from llmcf.errors import DataError
from llmcf.models.context import ContextBank, item_text_matrix
from llmcf.models.ict import ICT
from llmcf.models.llmcf_model import LLMCFModel, build_model

torch.set_num_threads(1)

N_USERS, N_ITEMS, N_BRANDS, N_CATS, L, C, D = 12, 30, 6, 7, 5, 3, 8


def make_schema(seed: int = 0) -> FeatureSchema:
    rng = np.random.default_rng(seed)
    brand = rng.integers(2, N_BRANDS, N_ITEMS)
    cats = rng.integers(0, N_CATS, (N_ITEMS, C))
    brand[:2], cats[:2] = 0, 0
    return FeatureSchema(N_USERS, N_ITEMS, N_BRANDS, N_CATS, L, brand.astype(np.int64), cats.astype(np.int64))


def make_text(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = F.normalize(torch.randn(N_ITEMS, D, generator=g), dim=-1)
    t[:2] = 0
    return t


def make_batch(b: int = 4, k: int = 4, seed: int = 0, mask_p: float = 0.0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    hist = torch.randint(2, N_ITEMS, (b, L), generator=g)
    hist[0, :2] = 0  # a short history
    ctx_hist = torch.randint(2, N_ITEMS, (b, k, L), generator=g)
    ctx_hist[:, :, 0] = 0
    return {
        "user": torch.randint(2, N_USERS, (b,), generator=g),
        "item": torch.randint(2, N_ITEMS, (b,), generator=g),
        "hist": hist,
        "hist_len": (hist > 0).sum(1),
        "label": torch.randint(0, 2, (b,), generator=g).float(),
        "ctx_user": torch.randint(2, N_USERS, (b, k), generator=g),
        "ctx_item": torch.randint(2, N_ITEMS, (b, k), generator=g),
        "ctx_hist": ctx_hist,
        "ctx_label": torch.randint(0, 2, (b, k), generator=g),
        "ctx_cot": F.normalize(torch.randn(b, k, D, generator=g), dim=-1),
        "ctx_mask": torch.rand(b, k, generator=g) >= mask_p,
    }


def make_ict(variant: str = "full", seed: int = 0, **kw) -> ICT:
    torch.manual_seed(seed)
    return ICT(make_schema(), make_text(), D, dim=16, layers=2, heads=2, variant=variant, field_dim=8, **kw).eval()


class ToyBackbone(nn.Module):
    """Minimal backbone with the registry interface: item embedding ⊕ extra → MLP → logit."""

    def __init__(self, schema, embed_dim=8, mlp=(16,), dropout=0.0, extra_dim=0):
        super().__init__()
        self.extra_dim = extra_dim
        self.item = nn.Embedding(schema.n_items, embed_dim)
        self.mlp = nn.Sequential(nn.Linear(embed_dim + extra_dim, mlp[0]), nn.ReLU(), nn.Linear(mlp[0], 1))

    def forward(self, batch, extra=None):
        x = self.item(batch["item"])
        if self.extra_dim:
            x = torch.cat([x, extra], 1)
        return {"logit": self.mlp(x).squeeze(1), "losses": {}}


def _perturb_example(batch: dict, j: int, seed: int = 99) -> dict:
    """A copy of the batch whose example j has entirely different contents (mask unchanged)."""
    other = make_batch(batch["user"].shape[0], batch["ctx_item"].shape[1], seed=seed)
    out = {k: v.clone() for k, v in batch.items()}
    for key in ("ctx_user", "ctx_item", "ctx_hist", "ctx_cot"):
        out[key][:, j] = other[key][:, j]
    out["ctx_label"][:, j] = 1 - batch["ctx_label"][:, j]
    return out


# ---- ICT ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant,per", [("full", 3), ("no_cot", 2), ("mean_pool", 3)])
def test_shapes_per_variant(variant, per):
    ict, k = make_ict(variant), 4
    w, losses, attn = ict(make_batch(k=k, mask_p=0.3), return_attention=True)
    t = per * k + 1
    assert w.shape == (4, 16) and torch.isfinite(w).all()
    assert set(losses) == ({"recon"} if variant == "full" else set())
    assert attn.shape == (4, 1 if variant == "mean_pool" else 2, t)
    assert torch.allclose(attn.sum(-1), torch.ones(attn.shape[:2]), atol=1e-5)
    assert len(ict.token_names(k)) == t and ict.token_names(k)[-1] == "fq"
    w2, _ = ict(make_batch(k=k, mask_p=0.3))
    assert torch.allclose(w, w2, atol=1e-5)  # fused vs explicit attention kernels


@pytest.mark.parametrize("variant", ["full", "no_cot"])
def test_fused_and_explicit_attention_agree(variant):
    ict, batch = make_ict(variant), make_batch(mask_p=0.3)
    a, b = ict.encode(batch, need_weights=True), ict.encode(batch, need_weights=False)
    assert b["attention"] is None and a["attention"].shape[-1] == a["hidden"].shape[1]
    assert torch.allclose(a["hidden"], b["hidden"], atol=1e-5)


def test_no_cot_does_not_need_cot_inputs():
    batch = make_batch()
    del batch["ctx_cot"]
    w, losses = make_ict("no_cot")(batch)
    assert w.shape == (4, 16) and losses == {}
    with pytest.raises(DataError, match="ctx_cot"):
        make_ict("full")(batch)


@pytest.mark.parametrize("variant", ["full", "no_cot"])
def test_causal_mask(variant):
    ict, batch = make_ict(variant), make_batch()
    per = ict.tokens_per_example
    h = ict.encode(batch)["hidden"]
    h2 = ict.encode(_perturb_example(batch, 1))["hidden"]
    assert torch.allclose(h[:, :per], h2[:, :per], atol=1e-6)  # example 1 cannot see example 2
    assert not torch.allclose(h[:, per:2 * per], h2[:, per:2 * per], atol=1e-4)
    assert not torch.allclose(h[:, -1], h2[:, -1], atol=1e-4)  # the query sees it


@pytest.mark.parametrize("variant", ["full", "no_cot", "mean_pool"])
def test_missing_examples_do_not_affect_w(variant):
    ict, batch = make_ict(variant), make_batch()
    batch["ctx_mask"][:, 1] = False
    batch["ctx_mask"][0, :] = False  # a row with no examples at all
    w, _, attn = ict(batch, return_attention=True)
    w2, _ = ict(_perturb_example(batch, 1))
    assert torch.allclose(w, w2, atol=1e-6)
    per = ict.tokens_per_example
    assert attn[:, :, per:2 * per].abs().max() == 0  # no attention on the missing example's tokens
    w3, _ = ict(_perturb_example(batch, 2))  # a present example does change w (rows 1..)
    assert not torch.allclose(w[1:], w3[1:], atol=1e-4) and torch.allclose(w[0], w3[0], atol=1e-6)


@pytest.mark.parametrize("variant", ["full", "no_cot", "mean_pool"])
def test_shared_bank_rows_computed_once_give_same_output_and_grads(variant):
    """When scoring, the features of a bank row repeated across a batch are computed once; nothing else changes."""
    rng = np.random.default_rng(3)
    n_bank, b, k = 5, 6, 4
    bank = ContextBank(user=rng.integers(2, N_USERS, n_bank), item=rng.integers(2, N_ITEMS, n_bank),
                       hist=rng.integers(0, N_ITEMS, (n_bank, L)), label=rng.integers(0, 2, n_bank),
                       cot=rng.normal(size=(n_bank, D)).astype(np.float32), cot_row=np.arange(n_bank))
    idx = rng.integers(-1, n_bank, (b, k))  # 24 slots over 5 rows: many repeats, some missing
    batch = {**make_batch(b=b, k=k), **bank.gather(idx)}
    assert set(batch["ctx_row"].unique().tolist()) <= set(range(n_bank + 1))
    plain = {key: v for key, v in batch.items() if key != "ctx_row"}
    outs = []
    for inputs in (batch, plain):
        ict = make_ict(variant)  # eval mode: the deduplicated path (gradients still flow, e.g. for explanations)
        w, losses = ict(inputs)
        (w.square().sum() + sum(losses.values(), torch.tensor(0.0))).backward()
        outs.append((w.detach(), {n: p.grad.clone() for n, p in ict.named_parameters() if p.grad is not None}))
    assert torch.allclose(outs[0][0], outs[1][0], atol=1e-5)
    assert outs[0][1].keys() == outs[1][1].keys()
    for name, g in outs[0][1].items():
        assert torch.allclose(g, outs[1][1][name], atol=1e-5), name


@pytest.mark.parametrize("variant,gaps", [("full", False), ("full", True), ("no_cot", False)])
def test_training_fast_path_equals_the_reference_path(variant, gaps, monkeypatch):
    """The training path's savings change no number (dropout off so both paths are deterministic): bank rows
    deduplicated per batch vs every slot computed on its own, the last layer computed only at the read positions vs
    all of them, keys padded to 16 vs not — same w, losses and gradients (float64, so that only the order of float
    sums differs: to 1e-10; in float32 the gradients agree to ~1e-5)."""
    from llmcf.models import ict_layers

    rng = np.random.default_rng(5)
    n_bank, b, k = 6, 7, 4
    bank = ContextBank(user=rng.integers(2, N_USERS, n_bank), item=rng.integers(2, N_ITEMS, n_bank),
                       hist=rng.integers(0, N_ITEMS, (n_bank, L)), label=rng.integers(0, 2, n_bank),
                       cot=rng.normal(size=(n_bank, D)).astype(np.float32),
                       cot_row=np.where(np.arange(n_bank) == 2, -1, np.arange(n_bank)) if gaps else None)
    batch = {**make_batch(b=b, k=k), **bank.gather(rng.integers(-1, n_bank, (b, k)))}
    batch = {key: v.double() if v.is_floating_point() else v for key, v in batch.items()}
    reference = {key: v for key, v in batch.items() if key != "ctx_row"}  # per slot

    def run(inputs, fast: bool):
        monkeypatch.setattr(ict_layers, "MIN_KEYS", 16 if fast else 0)
        torch.manual_seed(0)
        ict = ICT(make_schema(), make_text().double(), D, dim=16, layers=2, heads=2, variant=variant, field_dim=8,
                  dropout=0.0, no_cot_token=gaps).double().train()
        if fast:
            w, losses = ict(inputs)
        else:  # every position of the last layer, as the explanation path computes it
            out = ict.encode(inputs, need_weights=False)
            w, losses = out["w"], {}
            if variant == "full":
                mask = inputs["ctx_mask"] & (inputs["ctx_has_cot"] if gaps else True)
                losses["recon"] = ict.recon_loss(out["hidden"], inputs["ctx_cot"], mask)
        (w.square().sum() + sum(losses.values(), torch.tensor(0.0, dtype=torch.float64))).backward()
        return w.detach(), {n: v.detach() for n, v in losses.items()}, \
            {n: p.grad.clone() for n, p in ict.named_parameters() if p.grad is not None}

    w0, l0, g0 = run(reference, fast=False)
    w1, l1, g1 = run(batch, fast=True)
    torch.testing.assert_close(w1, w0, atol=1e-10, rtol=0)
    assert l0.keys() == l1.keys() == ({"recon"} if variant == "full" else set())
    for name in l0:
        torch.testing.assert_close(l1[name], l0[name], atol=1e-10, rtol=0)
    assert g0.keys() == g1.keys()
    for name, g in g0.items():
        torch.testing.assert_close(g1[name], g, atol=1e-10, rtol=0, msg=name)


@pytest.mark.parametrize("dedup", [False, True])
def test_token_layout_features_cot_label_per_example(dedup):
    """Sequence position 3j is example j's features token, 3j+1 its CoT token, 3j+2 its label token, the last f_q
    (with or without the per-batch deduplication of bank rows)."""
    rng = np.random.default_rng(7)
    bank = ContextBank(user=rng.integers(2, N_USERS, 5), item=rng.integers(2, N_ITEMS, 5),
                       hist=rng.integers(0, N_ITEMS, (5, L)), label=rng.integers(0, 2, 5),
                       cot=rng.normal(size=(5, D)).astype(np.float32))
    batch = {**make_batch(b=3, k=4), **bank.gather(rng.integers(0, 5, (3, 4)))}
    if not dedup:
        del batch["ctx_row"]
    ict = make_ict("full")
    with torch.no_grad():
        seq, present = ict.tokens(batch)
        f = ict.features(batch["ctx_user"].reshape(-1), batch["ctx_item"].reshape(-1),
                         batch["ctx_hist"].reshape(-1, L)).view(3, 4, -1)
        torch.testing.assert_close(seq[:, 0:12:3], f, atol=1e-6, rtol=0)
        torch.testing.assert_close(seq[:, 1:12:3], ict.text_mlp(batch["ctx_cot"]), atol=1e-6, rtol=0)
        torch.testing.assert_close(seq[:, 2:12:3], ict.label_emb(batch["ctx_label"]), atol=0, rtol=0)
        torch.testing.assert_close(seq[:, -1], ict.features(batch["user"], batch["item"], batch["hist"]),
                                   atol=1e-6, rtol=0)


def test_decoder_kept_positions_and_padded_keys_match_the_full_pass():
    from llmcf.models.ict_layers import CausalDecoder

    torch.manual_seed(0)
    dec = CausalDecoder(16, 2, 2, 0.0).eval()
    x = torch.randn(5, 13, 16)
    present = torch.rand(5, 13) > 0.3
    full, attn = dec(x, present, need_weights=True)  # explicit attention, no padding
    keep = torch.tensor([0, 3, 6, 9, 12])
    part, none = dec(x, present, keep=keep)  # fused kernel, keys padded to 16, last layer at 5 positions
    assert none is None and part.shape == (5, 5, 16)
    torch.testing.assert_close(part, full[:, keep], atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="keep"):
        dec(x, present, need_weights=True, keep=keep)


@pytest.mark.parametrize("variant,gaps", [("full", False), ("full", True), ("no_cot", False), ("mean_pool", False)])
def test_cached_bank_examples_score_like_the_full_inputs(variant, gaps):
    """Scoring with the bank's example tokens computed once (cache_examples + ctx_row/ctx_mask alone) gives the
    numbers of the full ctx_* inputs; a weight change refreshes the cache; training never uses it."""
    rng = np.random.default_rng(4)
    n_bank, b, k = 6, 5, 4
    cot_row = np.where(np.arange(n_bank) % 2 == 0, np.arange(n_bank), -1) if gaps else np.arange(n_bank)
    bank = ContextBank(user=rng.integers(2, N_USERS, n_bank), item=rng.integers(2, N_ITEMS, n_bank),
                       hist=rng.integers(0, N_ITEMS, (n_bank, L)), label=rng.integers(0, 2, n_bank),
                       cot=rng.normal(size=(n_bank, D)).astype(np.float32), cot_row=cot_row)
    idx = rng.integers(-1, n_bank, (b, k))
    query = make_batch(b=b, k=k)
    full = {**query, **bank.gather(idx)}
    light = {**{key: query[key] for key in ("user", "item", "hist", "hist_len", "label")}, **bank.gather_rows(idx)}
    ict = make_ict(variant, no_cot_token=gaps)
    with torch.no_grad():
        want = ict(full)[0]
        ict.cache_examples(bank.all_rows())
        got = ict(light)[0]
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
        for p in ict.parameters():  # new weights: the cache follows them
            p.add_(0.1)
        ict.cache_examples(None)
        want2 = ict(full)[0]
        ict.cache_examples(bank.all_rows())
        ict(light)
        for p in ict.parameters():
            p.add_(-0.1)
        ict.cache_examples(None)
        want3 = ict(full)[0]
        ict.cache_examples(bank.all_rows())
        torch.testing.assert_close(ict(light)[0], want3, atol=1e-6, rtol=0)
    assert not torch.allclose(want2, want3)
    ict.train()
    with pytest.raises(DataError, match="ctx_user"):  # training reads the full inputs, never the cache
        ict(light)


def test_reconstruction_loss_matches_hand_computation():
    ict, batch = make_ict("full", recon_weight=2.5), make_batch(b=5, mask_p=0.4)
    assert batch["ctx_mask"].any() and not batch["ctx_mask"].all()
    torch.manual_seed(3)
    ict.recon_head = nn.Linear(16, D)  # a known MLP_up
    _, losses = ict(batch)
    with torch.no_grad():
        h = ict.encode(batch)["hidden"]
    cos = []
    for i in range(5):
        for j in range(4):
            if batch["ctx_mask"][i, j]:
                with torch.no_grad():
                    up = ict.recon_head(h[i, 3 * j])
                c = batch["ctx_cot"][i, j]
                cos.append(float(up @ c / (up.norm() * c.norm())))
    assert losses["recon"].item() == pytest.approx(2.5 * (1 - np.mean(cos)), abs=1e-5)
    batch["ctx_mask"][:] = False
    assert make_ict("full")(batch)[1]["recon"].item() == 0.0
    assert make_ict("no_cot")(make_batch())[1] == {} and make_ict("mean_pool")(make_batch())[1] == {}


def test_determinism_under_seed():
    def run(seed):
        torch.manual_seed(seed)
        model = LLMCFModel(ToyBackbone(make_schema(), extra_dim=16),
                           ICT(make_schema(), make_text(), D, dim=16, field_dim=8, dropout=0.1))
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for step in range(3):
            batch = make_batch(seed=step)
            out = model(batch)
            loss = F.binary_cross_entropy_with_logits(out["logit"], batch["label"]) + sum(out["losses"].values())
            opt.zero_grad()
            loss.backward()
            opt.step()
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_llmcf_learns_from_in_context_labels():
    """The query's label equals its examples' labels (90% agreement); nothing else carries signal, and every batch
    is fresh, so only a model that reads the in-context labels can beat log 2."""
    torch.manual_seed(0)
    schema = make_schema()
    model = LLMCFModel(ToyBackbone(schema, extra_dim=16),
                       ICT(schema, make_text(), D, dim=16, field_dim=8, dropout=0.0))
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)

    def task(seed, b=64):
        batch = make_batch(b=b, seed=seed, mask_p=0.2)
        g = torch.Generator().manual_seed(seed + 10_000)
        y = torch.randint(0, 2, (b,), generator=g)
        flip = (torch.rand(b, 4, generator=g) < 0.1).long()
        batch["ctx_label"] = (y[:, None] + flip) % 2
        batch["label"] = y.float()
        return batch

    held = task(-1, b=512)

    def held_bce():
        model.eval()
        with torch.no_grad():
            out = model(held)
        model.train()
        return F.binary_cross_entropy_with_logits(out["logit"], held["label"]).item()

    before = held_bce()
    for step in range(150):
        batch = task(step)
        out = model(batch)
        loss = F.binary_cross_entropy_with_logits(out["logit"], batch["label"]) + sum(out["losses"].values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = held_bce()
    assert before > 0.6 and after < 0.4, (before, after)


# ---- build_model / registered backbones ---------------------------------------------------------------------------
def _backbones():
    from llmcf.models.ranking import BACKBONES

    assert BACKBONES.names(), "no registered backbones"
    return BACKBONES


def test_every_registered_backbone_with_ict():
    backbones = _backbones()
    schema, text = make_schema(), make_text()
    mcfg = ModelConfig(embed_dim=8, mlp=[16], dropout=0.0)
    icfg = ICTConfig(enabled=True, dim=8, field_dim=4, layers=1, heads=2)
    batch = make_batch(b=6, mask_p=0.3)
    for name in backbones.names():
        torch.manual_seed(0)
        plain = build_model(name, schema, mcfg, None)
        assert not isinstance(plain, LLMCFModel)
        assert plain(batch)["logit"].shape == (6,)
        model = build_model(name, schema, mcfg, icfg, item_text=text, cot_dim=D)
        assert isinstance(model, LLMCFModel), name
        out = model(batch)
        assert out["logit"].shape == (6,) and "recon" in out["losses"], name
        (out["logit"].sum() + sum(out["losses"].values())).backward()
        grads = [p.grad for p in model.ict.feat_mlp.parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in grads), name


def test_build_model_validates_inputs():
    backbones = _backbones()
    name = backbones.names()[0]
    mcfg, icfg = ModelConfig(embed_dim=8, mlp=[16]), ICTConfig(enabled=True, dim=8, field_dim=4)
    with pytest.raises(DataError, match="item text"):
        build_model(name, make_schema(), mcfg, icfg)
    with pytest.raises(DataError, match="same encoder"):
        build_model(name, make_schema(), mcfg, icfg, item_text=make_text(), cot_dim=D + 1)
    with pytest.raises(DataError, match="item_text"):
        build_model(name, make_schema(), mcfg, icfg, item_text=make_text()[:-1], cot_dim=D)


# ---- context bank -------------------------------------------------------------------------------------------------
def test_gather_fills_missing_with_zeros():
    rng = np.random.default_rng(0)
    n, k_dim = 3, 4
    bank = ContextBank(user=np.array([2, 3, 4]), item=np.array([5, 6, 7]), hist=rng.integers(2, 9, (n, L)),
                       label=np.array([1, 0, 1]), cot=rng.normal(size=(5, k_dim)).astype(np.float32),
                       cot_row=np.array([4, 0, 2]))
    idx = np.array([[0, -1], [2, 1], [-1, -1]])
    out = bank.gather(idx)
    assert out["ctx_hist"].shape == (3, 2, L) and out["ctx_cot"].shape == (3, 2, k_dim)
    assert out["ctx_mask"].tolist() == [[True, False], [True, True], [False, False]]
    assert out["ctx_user"].tolist() == [[2, 0], [4, 3], [0, 0]]
    assert out["ctx_label"].dtype == torch.int64 and out["ctx_label"].tolist() == [[1, 0], [1, 0], [0, 0]]
    assert out["ctx_cot"].dtype == torch.float32
    assert np.array_equal(out["ctx_cot"][1, 0].numpy(), bank._cot[2])  # cot_row maps bank row 2 -> cot 2
    assert np.array_equal(out["ctx_cot"][0, 0].numpy(), bank._cot[4])
    for key in ("ctx_user", "ctx_item", "ctx_hist", "ctx_label", "ctx_cot"):
        assert out[key][~out["ctx_mask"]].abs().sum() == 0, key
    with pytest.raises(DataError, match="ctx_idx"):
        bank.gather(np.array([[0, 3]]))
    with pytest.raises(DataError, match="cot_row"):
        ContextBank(np.array([2]), np.array([5]), np.zeros((1, L)), np.array([1]), np.zeros((2, 4)), np.array([2]))


def _write_run(tmp_path, drop_column=None):
    vocab = {"user": ["u1", "u2"], "item": ["a", "b", "c", "d"], "brand": [], "category": []}
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "vocab.json").write_text(json.dumps(vocab))
    bank = pd.DataFrame({
        "user_id": ["u2", "u1", "zz"], "pos": [3, 1, 0], "item_id": ["c", "a", "nope"], "label": [1, 0, 1],
        "history": [["a", "b", "c", "d"], ["b"], []], "cot_row": [1, 0, 2],
    })
    if drop_column:
        bank = bank.drop(columns=[drop_column])
    (tmp_path / "retrieval").mkdir()
    bank.to_parquet(tmp_path / "retrieval" / "bank.parquet", index=False)
    (tmp_path / "embed").mkdir()
    np.save(tmp_path / "embed" / "cot.npy", np.arange(12, dtype=np.float32).reshape(3, 4))
    np.save(tmp_path / "embed" / "items.npy", np.arange(1, 13, dtype=np.float32).reshape(3, 4))
    (tmp_path / "embed" / "item_ids.json").write_text(json.dumps(["d", "a", "unknown"]))


def test_context_bank_from_run_and_item_text(tmp_path):
    _write_run(tmp_path)
    bank = ContextBank.from_run(tmp_path, None, hist_len=3)
    assert len(bank) == 3 and bank.cot_dim == 4 and bank.hist_len == 3
    out = bank.gather(np.array([[0, 1, 2, -1]]))
    assert out["ctx_user"].tolist() == [[3, 2, 1, 0]]  # u2 -> 3, u1 -> 2, unknown -> OOV 1
    assert out["ctx_item"].tolist() == [[4, 2, 1, 0]]
    # last 3 of [a b c d] = b c d -> 3 4 5; [b] -> left-padded; [] -> zeros
    assert out["ctx_hist"][0].tolist() == [[3, 4, 5], [0, 0, 3], [0, 0, 0], [0, 0, 0]]
    assert out["ctx_cot"][0, 0].tolist() == [4.0, 5.0, 6.0, 7.0]  # cot_row 1
    vocab = Vocab.load(tmp_path / "data" / "vocab.json")
    assert torch.equal(ContextBank.from_run(tmp_path, vocab, hist_len=3).gather(np.array([[0]]))["ctx_hist"],
                       out["ctx_hist"][:, :1])
    text = item_text_matrix(tmp_path, json.loads((tmp_path / "data" / "vocab.json").read_text()))
    assert text.shape == (6, 4) and text.dtype == np.float32
    assert text[5].tolist() == [1, 2, 3, 4] and text[2].tolist() == [5, 6, 7, 8]  # d -> id 5, a -> id 2
    assert not text[[0, 1, 3, 4]].any()  # pad, OOV, items without text


def test_context_bank_reports_bad_files(tmp_path):
    _write_run(tmp_path, drop_column="cot_row")
    with pytest.raises(DataError, match="bank.parquet.*cot_row"):
        ContextBank.from_run(tmp_path, None, hist_len=3)


def test_features_of_one_request_shared_history_equal_the_per_row_path():
    """A request's candidates share the user and history: those fields are computed once,
    and the tokens equal the general path's (rows computed one at a time), an empty history included."""
    ict = make_ict("full")
    g = torch.Generator().manual_seed(3)
    items = torch.randint(0, N_ITEMS, (7,), generator=g)
    for hist_row in (torch.randint(0, N_ITEMS, (L,), generator=g), torch.zeros(L, dtype=torch.long)):
        user, hist = torch.full((7,), 5), hist_row.expand(7, L).clone()
        with torch.no_grad():
            shared = ict.features(user, items, hist)
            rows = torch.cat([ict.features(user[i:i + 1], items[i:i + 1], hist[i:i + 1]) for i in range(7)])
        torch.testing.assert_close(shared, rows, atol=1e-6, rtol=0)
    hist[3, 0] = 7 if hist[3, 0] != 7 else 8  # one row differs: the general path, same numbers row by row
    with torch.no_grad():
        mixed = ict.features(user, items, hist)
        rows = torch.cat([ict.features(user[i:i + 1], items[i:i + 1], hist[i:i + 1]) for i in range(7)])
    torch.testing.assert_close(mixed, rows, atol=1e-6, rtol=0)
