import numpy as np
import pytest
import torch
from torch import nn

from llmcf.config import TrainConfig
from llmcf.train.batches import ArrayBatches
from llmcf.train.ctr_task import lr_rule
from llmcf.train.trainer import evaluate, fit

torch.set_num_threads(1)


class TinyModel(nn.Module):
    """Item-bias model with an auxiliary loss pulling a spare parameter to 3."""

    def __init__(self, n_items=20):
        super().__init__()
        self.bias = nn.Embedding(n_items, 1)
        nn.init.zeros_(self.bias.weight)
        self.spare = nn.Parameter(torch.zeros(1))

    def forward(self, batch):
        return {"logit": self.bias(batch["item"]).squeeze(-1), "losses": {"aux": ((self.spare - 3) ** 2).sum()}}


def make_split(n, seed):
    rng = np.random.default_rng(seed)
    item = rng.integers(0, 20, n)
    p = np.where(item < 10, 0.85, 0.15)  # items 0-9 are liked
    label = (rng.random(n) < p).astype(np.float32)
    return {"item": item.astype(np.int64), "label": label}


def test_fit_learns_reloads_best_and_adds_aux_losses():
    torch.manual_seed(0)
    tr, va, te = make_split(2000, 0), make_split(500, 1), make_split(500, 2)
    model = TinyModel()
    cfg = TrainConfig(lr=0.05, weight_decay=0.0, batch_size=64, max_epochs=6, patience=2)
    res = fit(model, ArrayBatches(tr, 64, shuffle=True), ArrayBatches(va, 256), va["label"], cfg,
              test=ArrayBatches(te, 256), test_labels=te["label"], progress=False)
    assert res.valid["auc"] > 0.75 and res.test["auc"] > 0.75
    # the weights in the model after fit are the best epoch's: re-evaluating gives the recorded valid metrics
    again = evaluate(model, ArrayBatches(va, 256), va["label"])
    assert again["auc"] == pytest.approx(res.valid["auc"])
    assert again["logloss"] == pytest.approx(res.valid["logloss"])
    assert 1 <= res.best_epoch <= len(res.curve)
    assert "train_aux" in res.curve[0]
    # CPU time beside wall per epoch (training steps only), averaged into the result
    assert all(r["cpu_seconds"] > 0 for r in res.curve)
    assert res.cpu_seconds_per_epoch == pytest.approx(np.mean([r["cpu_seconds"] for r in res.curve]))
    assert model.spare.item() > 1.0  # the auxiliary loss was optimised too


def test_early_stopping_stops_after_patience_without_improvement():
    class Constant(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def forward(self, batch):  # ignores its input: valid AUC can never improve after epoch 1
            return {"logit": self.w.expand(len(batch["label"])) + 0 * batch["item"].float(), "losses": {}}

    tr, va = make_split(300, 0), make_split(200, 1)
    cfg = TrainConfig(lr=0.01, batch_size=64, max_epochs=10, patience=2)
    res = fit(Constant(), ArrayBatches(tr, 64, shuffle=True), ArrayBatches(va, 256), va["label"], cfg, progress=False)
    assert res.stopped_early and len(res.curve) == 3 and res.best_epoch == 1
    assert [r["lr"] for r in res.curve] == [0.01] * 3  # no decay unless asked

    # plateau_lr_factor: every epoch without a better valid AUC multiplies the rate; patience still stops training
    cfg = TrainConfig(lr=0.01, batch_size=64, max_epochs=10, patience=3, plateau_lr_factor=0.1)
    res = fit(Constant(), ArrayBatches(tr, 64, shuffle=True), ArrayBatches(va, 256), va["label"], cfg, progress=False)
    assert len(res.curve) == 4 and res.best_epoch == 1
    assert [r["lr"] for r in res.curve] == pytest.approx([0.01, 0.01, 0.001, 0.0001])
    with pytest.raises(ValueError, match="plateau_lr_factor"):
        fit(Constant(), ArrayBatches(tr, 64), ArrayBatches(va, 256), va["label"],
            TrainConfig(plateau_lr_factor=1.5), progress=False)
    # the protocol line says which schedule trained the model
    assert lr_rule(TrainConfig()) == ""
    assert "x0.1 after every epoch without a better valid AUC" in lr_rule(cfg)
    # min_epochs: neither patience nor decay acts before it, so a flat start trains on at the full rate
    cfg = TrainConfig(lr=0.01, batch_size=64, max_epochs=10, patience=2, plateau_lr_factor=0.1, min_epochs=4)
    res = fit(Constant(), ArrayBatches(tr, 64, shuffle=True), ArrayBatches(va, 256), va["label"], cfg, progress=False)
    assert len(res.curve) == 5 and res.best_epoch == 1  # epochs 1-3 free; 4 and 5 count against patience 2
    assert [r["lr"] for r in res.curve] == pytest.approx([0.01] * 4 + [0.001])
    assert "from epoch 4" in lr_rule(cfg)


def test_batches_cover_every_row_once_and_gather_context():
    arrays = {"x": np.arange(10), "label": np.zeros(10, dtype=np.float32)}

    class Source:
        def gather(self, idx):
            return {"ctx": torch.from_numpy(idx)}

    ctx_idx = np.arange(20).reshape(10, 2)
    seen = []
    for b in ArrayBatches(arrays, 3, shuffle=True, seed=1, ctx=(ctx_idx, Source())):
        assert torch.equal(b["ctx"][:, 0], b["x"] * 2)  # context rows follow their samples through the shuffle
        seen += b["x"].tolist()
    assert sorted(seen) == list(range(10))
    with pytest.raises(ValueError, match="in-context ids"):
        ArrayBatches(arrays, 3, ctx=(ctx_idx[:5], Source()))


def test_ict_parameters_get_their_own_weight_decay():
    import torch

    from llmcf.train.trainer import param_groups

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = torch.nn.Linear(3, 1)
            self.ict = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.LayerNorm(2))

    m = Wrapped()
    groups = param_groups(m, 1e-4, 0.0)
    assert [g["weight_decay"] for g in groups] == [1e-4, 0.0]
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in m.ict.parameters()}
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in m.backbone.parameters()}
    assert len(param_groups(m.backbone, 1e-4, 0.0)) == 1  # a backbone alone: one group, unchanged training


def test_base_model_hash_ignores_the_ict_only_setting():
    from llmcf.config import Config
    from llmcf.train.stage import config_hash

    a, b = Config(), Config()
    b.train.ict_weight_decay = 1e-4
    assert config_hash(a) == config_hash(b)  # base models keep their cached results
    a.ict.enabled = b.ict.enabled = True
    assert config_hash(a) != config_hash(b)


def test_result_hash_leaves_out_which_seeds_run():
    from llmcf.config import Config
    from llmcf.train.stage import config_hash

    a, b = Config(), Config()
    b.train.seeds, b.train.seed = 5, 2
    assert config_hash(a) == config_hash(b)  # more seeds keep the trained ones
    b.train.lr = 0.5
    assert config_hash(a) != config_hash(b)


def test_validate_start_keeps_the_starting_weights_when_training_only_hurts():
    torch.manual_seed(0)
    tr, va = make_split(1000, 0), make_split(400, 1)
    model = TinyModel()
    with torch.no_grad():  # start from a good model: liked items 0-9 up, the rest down
        model.bias.weight[:10] = 2.0
        model.bias.weight[10:] = -2.0
    start = model.bias.weight.detach().clone()
    flipped = {**tr, "label": 1.0 - tr["label"]}  # training on flipped labels can only make validation worse
    cfg = TrainConfig(lr=0.5, weight_decay=0.0, batch_size=64, max_epochs=3, patience=2)
    res = fit(model, ArrayBatches(flipped, 64, shuffle=True), ArrayBatches(va, 256), va["label"], cfg,
              progress=False, validate_start=True)
    assert res.best_epoch == 0 and res.curve[0]["epoch"] == 0
    assert torch.equal(model.bias.weight, start)  # the starting weights were kept
    assert res.curve[1]["valid_auc"] < res.curve[0]["valid_auc"]
