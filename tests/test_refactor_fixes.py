"""Defects fixed by the structural refactor (issue 18): each test fails on the code before it."""
import numpy as np
import pytest
import torch
from torch import nn

from llmcf.config import Config, ModelConfig, SeqConfig, load_config
from llmcf.fingerprint import ctr_config_hash, seq_config_hash
from llmcf.models.llmcf_model import build_model
from llmcf.models.sequential import build_seq_model
from llmcf.train.batches import ArrayBatches
from llmcf.train.seq_trainer import fit_seq


# ---- per-backbone params --------------------------------------------------------------------------------------------
def test_backbone_params_keyed_by_name_reach_only_that_backbone(tiny_schema):
    cfg = load_config(None, ["model.params.xDeepFM={cin_layers: [8, 8]}", "model.params.AutoInt={attention_dim: 8}",
                             "model.embed_dim=8", "model.mlp=[16]"])
    assert cfg.model.params_for("xdeepfm") == {"cin_layers": [8, 8]}
    assert cfg.model.params_for("DeepFM") == {}
    schema = tiny_schema
    for name in ("DeepFM", "DCN", "xDeepFM", "AutoInt"):  # the xDeepFM-only setting used to break DeepFM
        assert isinstance(build_model(name, schema, cfg.model), nn.Module)
    x = build_model("xDeepFM", schema, cfg.model)
    assert x.cin.out_dim == 4 + 8  # CIN layers [8, 8], split half (the default [100, 100] gives 150)
    # another backbone's entry does not move a model's cache key, its own does
    plain = Config()
    plain.model.embed_dim, plain.model.mlp = 8, [16]
    assert ctr_config_hash(cfg, "DeepFM") == ctr_config_hash(plain, "DeepFM")
    assert ctr_config_hash(cfg, "xDeepFM") != ctr_config_hash(plain, "xDeepFM")


def test_shared_params_still_apply_to_every_backbone_and_keyed_ones_override():
    m = ModelConfig(params={"num_layers": 3, "DCN": {"num_layers": 1}})
    assert m.params_for("DCN") == {"num_layers": 1} and m.params_for("DCNv2") == {"num_layers": 3}
    s = SeqConfig(params={"SASRec": {"blocks": 2}})
    assert s.params_for("sasrec") == {"blocks": 2} and s.params_for("GRU4Rec") == {}
    m2 = build_seq_model("GRU4Rec", 30, 10, 4, SeqConfig(hidden=8, params={"SASRec": {"blocks": 2}}))
    assert isinstance(m2, nn.Module)


# ---- the sequential task's config ------------------------------------------------------------------------------
def test_sequential_hash_reads_only_what_the_sequential_task_reads():
    a, b = Config(), Config()
    b.train.lr, b.train.weight_decay, b.train.max_epochs = 0.5, 0.3, 2  # read by the CTR task only
    for ict in (False, True):
        assert seq_config_hash(a, "SASRec", ict) == seq_config_hash(b, "SASRec", ict)
    b.train.ict_weight_decay = 1e-3
    assert seq_config_hash(a, "SASRec", False) == seq_config_hash(b, "SASRec", False)
    assert seq_config_hash(a, "SASRec", True) != seq_config_hash(b, "SASRec", True)
    b.train.batch_size = 7
    assert seq_config_hash(a, "SASRec", False) != seq_config_hash(b, "SASRec", False)


class ToyICT(nn.Module):
    """Stands in for the ICT: one parameter vector as the ICT feature (what the optimiser groups see)."""

    dim = 8

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(8))

    def forward(self, batch, return_attention=False):
        return self.w.expand(len(batch["user"]), 8), {}


def _seq_batches(n=256, seed=0):
    rng = np.random.default_rng(seed)
    hist = rng.integers(2, 30, (n, 4))
    arrays = {"user": rng.integers(2, 10, n), "item": rng.integers(2, 30, n), "hist": hist,
              "hist_len": np.full(n, 4)}
    return ArrayBatches(arrays, 32, shuffle=True, seed=seed), ArrayBatches(arrays, 128)


@pytest.mark.parametrize("wd", [0.0, 1e3])
def test_ict_weight_decay_reaches_the_sequential_trainer(wd):
    torch.manual_seed(0)
    model = build_seq_model("GRU4Rec", 30, 10, 4, SeqConfig(hidden=8), ict=ToyICT())
    train, valid = _seq_batches()
    lr = 0.01
    fit_seq(model, train, valid, lr=lr, weight_decay=0.0, ict_weight_decay=wd, max_epochs=1, patience=1,
            num_negatives=4, progress=False)
    w = model.ict.w.detach().numpy()
    steps = len(train)
    if wd > 0:  # L2 dominates the gradient: Adam moves every coordinate by ~lr towards zero per step
        assert np.allclose(w, 1 - steps * lr, atol=0.02)
    else:
        assert not np.allclose(w, 1 - steps * lr, atol=0.02)


def test_the_sequential_task_passes_train_ict_weight_decay(monkeypatch):
    import llmcf.train.seq_trainer as st
    from llmcf.train.seq_task import SeqTask

    seen = {}
    monkeypatch.setattr(st, "fit_seq", lambda *a, **kw: seen.update(kw))

    class Run:
        def batches(self, *a):
            return None

    cfg = Config()
    cfg.train.ict_weight_decay = 0.25
    SeqTask(Run(), ict=True).fit(None, cfg, 0, False, "t")
    assert seen["ict_weight_decay"] == 0.25 and seen["weight_decay"] == cfg.seq.weight_decay


def test_a_multi_model_plan_rejects_a_shared_param_one_backbone_does_not_take():
    from llmcf.config import ConfigError
    from llmcf.pipeline import check_plan

    cfg = load_config(None, ["models=[DeepFM, xDeepFM]", "model.params.cin_layers=[8]"])
    with pytest.raises(ConfigError, match="model.params.cin_layers: not an argument of DeepFM"):
        check_plan(cfg)
    check_plan(load_config(None, ["models=[DeepFM, xDeepFM]", "model.params.xDeepFM={cin_layers: [8]}"]))


def test_the_sequential_samples_are_stamped_by_what_they_read():
    from llmcf.fingerprint import seq_data_stamp

    a, b = Config(), Config()
    b.seq.lr, b.seq.hidden, b.train.lr = 0.5, 7, 0.3  # training settings: the samples do not depend on them
    assert seq_data_stamp(a) == seq_data_stamp(b)
    b.seq.history_len = 9
    assert seq_data_stamp(a) != seq_data_stamp(b)
