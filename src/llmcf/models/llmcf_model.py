"""LLM-CF = a backbone whose ``extra`` input is the ICT feature: the one wrapper for both tasks, and ``build_ict``.

``LLMCFModel(backbone, ict)`` runs ``backbone(batch, extra=ICT(batch))`` and merges their losses; with
``hide_target=True`` (the sequential task) the ICT's current-sample token gets the OOV item instead of the target, so
nothing about the target reaches the user vector. ``build_model`` picks a ranking backbone ± ICT.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from llmcf.config import ICTConfig, ModelConfig
from llmcf.data.schema import OOV, FeatureSchema
from llmcf.errors import DataError
from llmcf.models.ict import ICT
from llmcf.models.residual import FrozenBackbone, zero_head


def build_ict(schema: FeatureSchema, item_text: torch.Tensor | None, cot_dim: int | None, cfg: ICTConfig,
              cot_gaps: bool = False) -> ICT:
    """The ICT module of ``cfg`` (dim, layers, heads, variant, dropout, field_dim, recon_weight, sim_input) over
    ``schema``.

    item_text: [n_items, D] text embedding per item id (``llmcf.rundir.TrainedInputs.item_text``); cot_dim: D of the
    CoT bank; cot_gaps: the bank has rows without CoT (hybrid bank: the ICT gets its learned "no CoT" token)."""
    if item_text is None:
        raise DataError("the ICT needs the item text matrix (run `llmcf embed`)", field="item_text")
    return ICT(schema, item_text, cot_dim, dim=cfg.dim, layers=cfg.layers, heads=cfg.heads, variant=cfg.variant,
               dropout=cfg.dropout, field_dim=cfg.field_dim, recon_weight=cfg.recon_weight, no_cot_token=cot_gaps,
               sim_input=cfg.sim_input)


FUSIONS = ("concat", "residual")


class LLMCFModel(FrozenBackbone, nn.Module):
    """backbone(batch, extra=ICT(query)); losses = backbone losses ∪ ICT losses (the trainer adds the task loss).

    The output is the backbone's (``logit`` for ranking, ``user_vec`` for sequential) with the merged losses.
    fusion="residual" (safe fusion, ranking): the backbone takes no extra input and the logit is
    ``backbone(batch) + head(w)`` with ``head = Linear(dim, dim) → SiLU → Linear(dim, 1)`` whose last layer starts at
    zero, so at initialisation the output equals the backbone's and the ICT's path opens only as training moves it."""

    def __init__(self, backbone: nn.Module, ict: ICT, hide_target: bool = False, fusion: str = "concat"):
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"ict.fusion '{fusion}': expected one of {', '.join(FUSIONS)}")
        self.backbone, self.ict, self.hide_target, self.fusion = backbone, ict, hide_target, fusion
        if self.residual:
            self.ict_head = zero_head(ict.dim)

    @property
    def residual(self) -> bool:
        """Safe fusion: the backbone is built exactly as the base model (what ``warm_start_backbone`` loads into)."""
        return self.fusion == "residual"

    def freeze_backbone(self) -> None:
        """Keep the backbone's current weights (``ict.freeze_backbone``; residual fusion only): no gradients, and
        eval mode whatever ``train()`` is called with, so dropout and batch-norm statistics stay put too."""
        if not self.residual:
            raise ValueError("ict.freeze_backbone needs ict.fusion: residual (the ICT then learns the residual of the "
                             "backbone's logit)")
        super().freeze_backbone()

    def item_vectors(self) -> torch.Tensor:
        """The backbone's item table (sequential backbones)."""
        return self.backbone.item_vectors()

    def forward(self, batch: dict[str, torch.Tensor], return_attention: bool = False) -> dict:
        """-> the backbone's output with "losses" merged, plus "attention" [B, H, T] (query over tokens) if asked."""
        query = batch
        if self.hide_target:
            query = {**batch, "item": torch.full_like(batch["user"], OOV)}
        if return_attention:
            w, ict_losses, attn = self.ict(query, return_attention=True)
        else:
            w, ict_losses = self.ict(query)
        if self.residual:
            out = self.backbone_output(batch)
            out = {**out, "logit": out["logit"] + self.ict_head(w).squeeze(-1)}
        else:
            out = self.backbone(batch, extra=w)
        clash = set(out["losses"]) & set(ict_losses)
        if clash:
            raise ValueError(f"backbone and ICT both report losses named {sorted(clash)}")
        result = {**out, "losses": {**out["losses"], **ict_losses}}
        if return_attention:
            result["attention"] = attn
        return result


def build_model(name: str, schema: FeatureSchema, model_cfg: ModelConfig, ict_cfg: ICTConfig | None = None,
                item_text: torch.Tensor | None = None, cot_dim: int | None = None,
                cot_gaps: bool = False) -> nn.Module:
    """The registered ranking backbone ``name`` alone (ICT off or ``ict_cfg`` None), else an ``LLMCFModel`` around
    it (``ict_cfg.fusion``: concat | residual). Its constructor gets embed_dim, mlp, dropout and
    ``model_cfg.params_for(name)``. cot_gaps: see ``build_ict``."""
    from llmcf.models.ranking import BACKBONES

    cls = BACKBONES.get(name)
    kwargs = dict(embed_dim=model_cfg.embed_dim, mlp=tuple(model_cfg.mlp), dropout=model_cfg.dropout,
                  **model_cfg.params_for(name))
    if ict_cfg is None or not ict_cfg.enabled:
        return cls(schema, **kwargs)
    if ict_cfg.fusion not in FUSIONS:
        from llmcf.config import ConfigError

        raise ConfigError(f"ict.fusion='{ict_cfg.fusion}': expected one of {', '.join(FUSIONS)}")
    ict = build_ict(schema, item_text, cot_dim, ict_cfg, cot_gaps)
    if ict_cfg.fusion == "residual":
        return LLMCFModel(cls(schema, **kwargs), ict, fusion="residual")
    return LLMCFModel(cls(schema, extra_dim=ict.dim, **kwargs), ict)


def warm_start_backbone(model: nn.Module, weights: Path) -> None:
    """Load a trained base model's weights (``weights``: its model.safetensors) into ``model.backbone``; only a
    safe-fusion model (fusion=residual) or a residual baseline (``ResidualModel``) has a backbone of exactly the base
    model's shape."""
    from safetensors.torch import load_file

    from llmcf.errors import RunError

    if not getattr(model, "residual", False):
        raise RunError("ict.warm_start needs ict.fusion: residual (with concat the backbone's input layer differs "
                       "from the base model's)")
    if not weights.exists():
        raise RunError(f"{weights}: missing; ict.warm_start (and a residual baseline) starts from the trained base "
                       "model, so train it first (llmcf train without --ict or --baseline, same seeds)")
    state = load_file(str(weights))
    missing, unexpected = model.backbone.load_state_dict(state, strict=False)
    if unexpected or missing:
        raise RunError(f"{weights}: does not fit the backbone (missing {sorted(missing)[:3]}, unexpected "
                       f"{sorted(unexpected)[:3]}): was it trained with another model config?")
