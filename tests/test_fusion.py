"""Safe fusion (ict.fusion: residual): LLM-CF starts equal to its backbone, learns away from it, warm-starts."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from llmcf.config import ICTConfig, ModelConfig
from llmcf.errors import RunError
from llmcf.models.llmcf_model import LLMCFModel, build_model, warm_start_backbone
from llmcf.models.ranking import BACKBONES
from test_ict import D, make_batch, make_schema, make_text

torch.set_num_threads(1)
MCFG = ModelConfig(embed_dim=8, mlp=[16], dropout=0.0)


def _pair(name: str, fusion: str = "residual", mcfg: ModelConfig = MCFG):
    schema, text = make_schema(), make_text()
    torch.manual_seed(0)
    base = build_model(name, schema, mcfg, None).eval()
    icfg = ICTConfig(enabled=True, dim=8, field_dim=4, layers=1, heads=2, fusion=fusion)
    torch.manual_seed(1)
    model = build_model(name, schema, mcfg, icfg, item_text=text, cot_dim=D).eval()
    return base, model


def _steps(model, batch, n: int = 3) -> None:
    """n Adam steps (lr 0.05) on BCE + the model's auxiliary losses, over the parameters that take gradients."""
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.05)
    for _ in range(n):
        out = model(batch)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(out["logit"], batch["label"])
        opt.zero_grad()
        (loss + sum(out["losses"].values())).backward()
        opt.step()


@pytest.mark.parametrize("name", BACKBONES.names())
def test_at_init_safe_fusion_equals_the_backbone_with_the_same_weights(name):
    base, model = _pair(name)
    assert isinstance(model, LLMCFModel) and model.fusion == "residual"
    model.backbone.load_state_dict(base.state_dict())  # same shapes: the backbone takes no extra input
    batch = make_batch(b=6, mask_p=0.3)
    with torch.no_grad():
        assert torch.equal(model(batch)["logit"], base(batch)["logit"]), name
    # the concat fusion (the paper's) does not start equal: its backbone has another input layer
    _, concat = _pair(name, "concat")
    with pytest.raises(RuntimeError):
        concat.backbone.load_state_dict(base.state_dict())


def test_safe_fusion_gate_opens_under_training():
    base, model = _pair("DIN")
    model.train()
    _steps(model, make_batch(b=8))
    assert model.ict_head[2].weight.abs().sum() > 0  # the zero-initialised layer moved
    assert model.ict.feat_mlp[0].weight.grad.abs().sum() > 0  # and gradients reach the ICT through it


def test_warm_start_loads_the_base_weights_and_checks_the_fusion(tmp_path):
    base, model = _pair("DCN")
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in base.state_dict().items()}, str(path))
    warm_start_backbone(model, path)
    batch = make_batch(b=5)
    with torch.no_grad():
        assert torch.equal(model(batch)["logit"], base(batch)["logit"])
    with pytest.raises(RunError, match="train it first"):
        warm_start_backbone(model, tmp_path / "nope.safetensors")
    _, concat = _pair("DCN", "concat")
    with pytest.raises(RunError, match="fusion: residual"):
        warm_start_backbone(concat, path)


def test_unknown_fusion_is_rejected():
    with pytest.raises(ValueError, match="ict.fusion"):  # ConfigError is a ValueError
        _pair("DIN", "sum")


def test_frozen_backbone_keeps_every_base_weight_and_statistic_while_the_ict_learns(tmp_path):
    # batch norm and dropout in the DNN: train mode would move the running statistics and draw masks
    base, model = _pair("DIN", mcfg=ModelConfig(embed_dim=8, mlp=[16], dropout=0.3, params={"batch_norm": True}))
    model.backbone.load_state_dict(base.state_dict())
    model.freeze_backbone()
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    model.train()
    assert not model.backbone.training and model.ict.training
    batch = make_batch(b=8)
    _steps(model, batch)
    after = model.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any("running_mean" in k for k in before)  # the statistics were there to move
    assert model.ict_head[2].weight.abs().sum() > 0  # the residual head learned
    # what is added to the logit is the head's output alone
    model.eval()
    with torch.no_grad():
        w, _ = model.ict(batch)
        diff = model(batch)["logit"] - base.eval()(batch)["logit"]
        assert torch.allclose(diff, model.ict_head(w).squeeze(-1), atol=1e-6)
    _, concat = _pair("DIN", "concat")
    with pytest.raises(ValueError, match="fusion: residual"):
        concat.freeze_backbone()


def test_a_run_plan_with_warm_start_needs_the_base_model_trained_first():
    from llmcf.config import ConfigError, load_config
    from llmcf.pipeline import check_plan

    warm = ["models=[DCN]", "ict.fusion=residual", "ict.warm_start=true"]
    check_plan(load_config(None, warm + ["variants=[base, no_cot]"]))
    for variants in ("[no_cot, base]", "[no_cot]"):
        with pytest.raises(ConfigError, match="list 'base' first"):
            check_plan(load_config(None, warm + [f"variants={variants}"]))
    with pytest.raises(ConfigError, match="needs ict.warm_start"):
        check_plan(load_config(None, ["models=[DCN]", "ict.fusion=residual", "ict.freeze_backbone=true"]))
