"""LLM-CF = a backbone whose ``extra`` input is the ICT feature: the one wrapper for both tasks, and ``build_ict``.

``LLMCFModel(backbone, ict)`` runs ``backbone(batch, extra=ICT(batch))`` and merges their losses; with
``hide_target=True`` (the sequential task) the ICT's current-sample token gets the OOV item instead of the target, so
nothing about the target reaches the user vector. ``build_model`` picks a ranking backbone ± ICT.
"""
from __future__ import annotations

import torch
from torch import nn

from llmcf.config import ICTConfig, ModelConfig
from llmcf.data.schema import OOV, FeatureSchema
from llmcf.errors import DataError
from llmcf.models.ict import ICT


def build_ict(schema: FeatureSchema, item_text: torch.Tensor | None, cot_dim: int | None, cfg: ICTConfig) -> ICT:
    """The ICT module of ``cfg`` (dim, layers, heads, variant, dropout, field_dim, recon_weight) over ``schema``.

    item_text: [n_items, D] text embedding per item id (``llmcf.rundir.TrainedInputs.item_text``); cot_dim: D of the
    CoT bank."""
    if item_text is None:
        raise DataError("the ICT needs the item text matrix (run `llmcf embed`)", field="item_text")
    return ICT(schema, item_text, cot_dim, dim=cfg.dim, layers=cfg.layers, heads=cfg.heads, variant=cfg.variant,
               dropout=cfg.dropout, field_dim=cfg.field_dim, recon_weight=cfg.recon_weight)


class LLMCFModel(nn.Module):
    """backbone(batch, extra=ICT(query)); losses = backbone losses ∪ ICT losses (the trainer adds the task loss).

    The output is the backbone's (``logit`` for ranking, ``user_vec`` for sequential) with the merged losses."""

    def __init__(self, backbone: nn.Module, ict: ICT, hide_target: bool = False):
        super().__init__()
        self.backbone, self.ict, self.hide_target = backbone, ict, hide_target

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
        out = self.backbone(batch, extra=w)
        clash = set(out["losses"]) & set(ict_losses)
        if clash:
            raise ValueError(f"backbone and ICT both report losses named {sorted(clash)}")
        result = {**out, "losses": {**out["losses"], **ict_losses}}
        if return_attention:
            result["attention"] = attn
        return result


def build_model(name: str, schema: FeatureSchema, model_cfg: ModelConfig, ict_cfg: ICTConfig | None = None,
                item_text: torch.Tensor | None = None, cot_dim: int | None = None) -> nn.Module:
    """The registered ranking backbone ``name`` alone (ICT off or ``ict_cfg`` None), else an ``LLMCFModel`` around
    it. Its constructor gets embed_dim, mlp, dropout and ``model_cfg.params_for(name)``."""
    from llmcf.models.ranking import BACKBONES

    cls = BACKBONES.get(name)
    kwargs = dict(embed_dim=model_cfg.embed_dim, mlp=tuple(model_cfg.mlp), dropout=model_cfg.dropout,
                  **model_cfg.params_for(name))
    if ict_cfg is None or not ict_cfg.enabled:
        return cls(schema, **kwargs)
    ict = build_ict(schema, item_text, cot_dim, ict_cfg)
    return LLMCFModel(cls(schema, extra_dim=ict.dim, **kwargs), ict)
