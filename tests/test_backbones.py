"""Every registered ranking backbone on a tiny synthetic schema: shapes, learning, extra input, padding, determinism."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from llmcf.data.schema import FeatureSchema
from llmcf.errors import DataError
from llmcf.models.layers import MLP, FeatureEmbedding
from llmcf.models.ranking import BACKBONES
from llmcf.models.ranking.deepfm import fm_interaction

torch.set_num_threads(1)
L = 5
NAMES = BACKBONES.names()


def tiny_schema(seed: int = 0) -> FeatureSchema:
    rng = np.random.default_rng(seed)
    n_items, n_cats = 50, 7
    item_brand = rng.integers(2, 5, n_items)
    item_cats = np.zeros((n_items, 2), dtype=np.int64)
    item_cats[:, 0] = rng.integers(2, n_cats, n_items)
    second = rng.random(n_items) < 0.5
    item_cats[second, 1] = rng.integers(2, n_cats, second.sum())
    item_brand[0] = 0
    item_cats[0] = 0
    return FeatureSchema(n_users=30, n_items=n_items, n_brands=5, n_cats=n_cats, hist_len=L,
                         item_brand=item_brand.astype(np.int64), item_cats=item_cats)


def tiny_data(schema: FeatureSchema, n: int = 512, seed: int = 1) -> dict[str, torch.Tensor]:
    """Label 1 iff the target's first category occurs among the (valid) history items' first categories."""
    rng = np.random.default_rng(seed)
    hist_len = rng.integers(1, L + 1, n)
    hist = np.zeros((n, L), dtype=np.int64)
    for r, k in enumerate(hist_len):
        hist[r, L - k:] = rng.integers(2, schema.n_items, k)
    item = rng.integers(2, schema.n_items, n)
    first = schema.item_cats[:, 0]
    label = np.array([first[item[r]] in set(first[hist[r, L - hist_len[r]:]]) for r in range(n)], dtype=np.float32)
    return {"user": torch.from_numpy(rng.integers(2, schema.n_users, n)), "item": torch.from_numpy(item),
            "hist": torch.from_numpy(hist), "hist_len": torch.from_numpy(hist_len), "label": torch.from_numpy(label)}


def rows(data, idx):
    return {k: v[idx] for k, v in data.items()}


SMALL = {"xdeepfm": {"cin_layers": (16, 16)}, "autoint": {"attention_dim": 8}}  # keeps the file fast on a busy CPU


def build(name, schema, seed=0, **kw):
    torch.manual_seed(seed)
    return BACKBONES.get(name)(schema, embed_dim=8, mlp=(32, 16), **SMALL.get(name, {}), **kw)


@pytest.fixture(scope="module")
def schema():
    return tiny_schema()


@pytest.fixture(scope="module")
def data(schema):
    return tiny_data(schema)


def test_registry_has_the_six_backbones_case_insensitive():
    for name in ("DeepFM", "xDeepFM", "DCN", "DCNv2", "AutoInt", "DIN"):
        assert name in BACKBONES and BACKBONES.get(name.upper()) is BACKBONES.get(name)
    assert len(NAMES) == 6
    with pytest.raises(KeyError, match="available"):
        BACKBONES.get("NoSuchNet")


@pytest.mark.parametrize("name", NAMES)
def test_output_contract_and_gradients(name, schema, data):
    model = build(name, schema)
    batch = rows(data, slice(0, 16))
    out = model(batch)
    assert set(out) == {"logit", "losses"} and isinstance(out["losses"], dict)
    assert out["logit"].shape == (16,) and torch.isfinite(out["logit"]).all()
    F.binary_cross_entropy_with_logits(out["logit"], batch["label"]).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters outside the graph: {missing}"
    # the padding rows of every embedding table get no gradient
    for n, p in model.named_parameters():
        if n.endswith(("user.weight", "item.weight", "brand.weight", "cat.weight")):
            assert torch.all(p.grad[0] == 0) and torch.all(p[0] == 0), n


@pytest.mark.parametrize("name", NAMES)
def test_training_loss_falls(name, schema, data):
    model = build(name, schema)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(60):
        idx = torch.randint(0, len(data["item"]), (128,), generator=gen)
        batch = rows(data, idx)
        loss = F.binary_cross_entropy_with_logits(model(batch)["logit"], batch["label"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < first - 0.08, f"{name}: loss {first:.3f} -> {last:.3f}"


@pytest.mark.parametrize("name", NAMES)
def test_extra_vector(name, schema, data):
    model = build(name, schema, extra_dim=8).eval()
    batch = rows(data, slice(0, 16))
    gen = torch.Generator().manual_seed(3)
    e1, e2 = torch.randn(16, 8, generator=gen), torch.randn(16, 8, generator=gen)
    with torch.no_grad():
        a, b, a2 = model(batch, e1)["logit"], model(batch, e2)["logit"], model(batch, e1)["logit"]
    assert torch.equal(a, a2)
    assert (a - b).abs().min() > 0, "every row's logit must depend on its extra vector"
    with pytest.raises(ValueError, match="extra_dim=8"):
        model(batch)
    with pytest.raises(ValueError, match="shape"):
        model(batch, torch.zeros(16, 5))
    with pytest.raises(ValueError, match="extra_dim=0"):
        build(name, schema)(batch, e1)
    # the extra vector receives gradient (it must be trainable through the ICT)
    model.train()
    e = e1.clone().requires_grad_(True)
    model(batch, e)["logit"].sum().backward()
    assert e.grad is not None and e.grad.abs().sum() > 0


@pytest.mark.parametrize("name", NAMES)
def test_padding_invariance_and_history_use(name, schema, data):
    model = build(name, schema).eval()
    batch = rows(data, slice(0, 64))
    short = batch["hist_len"] < L
    assert short.sum() > 10
    noisy = dict(batch, hist=batch["hist"].clone())
    pad = torch.arange(L).unsqueeze(0) < (L - batch["hist_len"]).unsqueeze(1)
    noisy["hist"][pad] = torch.randint(2, schema.n_items, (int(pad.sum()),), generator=torch.Generator().manual_seed(0))
    assert not torch.equal(noisy["hist"], batch["hist"])
    changed = dict(batch, hist=batch["hist"].clone())
    changed["hist"][:, -1] = (changed["hist"][:, -1] + 7 - 2) % (schema.n_items - 2) + 2  # a valid position
    with torch.no_grad():
        base, same, other = (model(b)["logit"] for b in (batch, noisy, changed))
    torch.testing.assert_close(same, base, rtol=0, atol=1e-6)
    assert (other - base).abs().max() > 1e-6, "the history must influence the output"


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_under_seed(name, schema, data):
    batch = rows(data, slice(0, 32))
    outs = []
    for _ in range(2):
        model = build(name, schema, seed=7)
        torch.manual_seed(11)  # dropout
        outs.append(model(batch)["logit"])
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
    assert not torch.equal(build(name, schema, seed=8)(batch)["logit"], outs[0])


def test_feature_embedding_pools_over_valid_entries(schema):
    torch.manual_seed(0)
    emb = FeatureEmbedding(schema, 4)
    batch = {"user": torch.tensor([3]), "item": torch.tensor([5]), "hist": torch.tensor([[9, 0, 0, 12, 17]]),
             "hist_len": torch.tensor([2])}
    fields = emb(batch)
    assert fields.shape == (1, 7, 4)
    cats = [c for c in schema.item_cats[5] if c != 0]
    torch.testing.assert_close(fields[0, 3], emb.cat.weight[cats].mean(0))
    torch.testing.assert_close(fields[0, 2], emb.brand.weight[schema.item_brand[5]])
    # only the last two positions (12, 17) are history; position 0 (id 9) is padding by hist_len
    torch.testing.assert_close(fields[0, 4], emb.item.weight[[12, 17]].mean(0))
    torch.testing.assert_close(fields[0, 5], emb.brand.weight[schema.item_brand[[12, 17]]].mean(0))
    empty = dict(batch, hist_len=torch.tensor([0]))
    assert torch.all(emb(empty)[0, 4:] == 0)


def test_fm_interaction_equals_pairwise_sum():
    x = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(0))
    brute = sum((x[:, i] * x[:, j]).sum(1) for i, j in itertools.combinations(range(5), 2))
    torch.testing.assert_close(fm_interaction(x), brute)


def test_bad_schema_tables_name_the_field(schema):
    bad = FeatureSchema(**{**schema.__dict__, "item_cats": schema.item_cats[:10]})
    with pytest.raises(DataError, match="item_cats"):
        FeatureEmbedding(bad, 4)
    bad = FeatureSchema(**{**schema.__dict__, "item_brand": schema.item_brand + 10})
    with pytest.raises(DataError, match="item_brand"):
        FeatureEmbedding(bad, 4)


def test_mlp_shapes():
    for act in ("relu", "prelu", "dice", "sigmoid", "identity"):  # on [B, L, d] inputs too (DIN's attention unit)
        mlp = MLP(10, [8, 6], 1, dropout=0.5, act=act)
        assert mlp.out_dim == 1 and mlp(torch.randn(4, 10)).shape == (4, 1)
        assert mlp(torch.randn(4, 3, 10)).shape == (4, 3, 1)
    with pytest.raises(ValueError, match="activation"):
        MLP(3, [2], act="swish-ish")


def test_din_factorised_attention_equals_mlp_on_concat():
    from llmcf.models.ranking.din import TargetAttention

    torch.manual_seed(0)
    att = TargetAttention(6, (5, 4), "prelu")
    q, keys = torch.randn(3, 6), torch.randn(3, 4, 6)
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1], [0, 0, 0, 1]], dtype=torch.bool)
    qe = q.unsqueeze(1).expand_as(keys)
    w = att.unit(torch.cat([qe, keys, qe - keys, qe * keys], -1)).squeeze(-1) * mask
    torch.testing.assert_close(att(q, keys, mask), (w.unsqueeze(-1) * keys).sum(1))


@pytest.mark.parametrize("split_half", [True, False])
def test_cin_layer_sizes(split_half):
    from llmcf.models.ranking.xdeepfm import CIN

    cin = CIN(5, (6, 4), split_half=split_half)
    assert cin.out_dim == (3 + 4 if split_half else 6 + 4)
    assert cin(torch.randn(2, 5, 3)).shape == (2, cin.out_dim)
    with pytest.raises(ValueError, match="even"):
        CIN(5, (7, 4), split_half=True)
