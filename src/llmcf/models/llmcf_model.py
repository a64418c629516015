"""LLM-CF = a ranking backbone whose ``extra`` input is the ICT feature; ``build_model`` picks backbone ± ICT."""
from __future__ import annotations

import torch
from torch import nn

from llmcf.config import ICTConfig, ModelConfig
from llmcf.data.schema import FeatureSchema
from llmcf.errors import DataError
from llmcf.models.ict import ICT


class LLMCFModel(nn.Module):
    """backbone(batch, extra=ICT(batch)); losses = backbone losses ∪ ICT losses (the trainer adds BCE)."""

    def __init__(self, backbone: nn.Module, ict: ICT):
        super().__init__()
        self.backbone, self.ict = backbone, ict

    def forward(self, batch: dict[str, torch.Tensor], return_attention: bool = False) -> dict:
        """-> {"logit": [B], "losses": {...}}, plus "attention" [B, H, T] (query over tokens) when asked."""
        if return_attention:
            w, ict_losses, attn = self.ict(batch, return_attention=True)
        else:
            w, ict_losses = self.ict(batch)
        out = self.backbone(batch, extra=w)
        clash = set(out["losses"]) & set(ict_losses)
        if clash:
            raise ValueError(f"backbone and ICT both report losses named {sorted(clash)}")
        result = {"logit": out["logit"], "losses": {**out["losses"], **ict_losses}}
        if return_attention:
            result["attention"] = attn
        return result


def build_model(name: str, schema: FeatureSchema, model_cfg: ModelConfig, ict_cfg: ICTConfig | None = None,
                item_text: torch.Tensor | None = None, cot_dim: int | None = None) -> nn.Module:
    """The registered backbone ``name`` alone (ICT off or ``ict_cfg`` None), else an ``LLMCFModel`` around it.

    item_text: [n_items, D] text embedding per item id (``llmcf.models.context.item_text_matrix``); cot_dim: D of the
    CoT bank. Both are required when the ICT is on.
    """
    from llmcf.models.ranking import BACKBONES

    cls = BACKBONES.get(name)
    kwargs = dict(embed_dim=model_cfg.embed_dim, mlp=tuple(model_cfg.mlp), dropout=model_cfg.dropout,
                  **model_cfg.params)
    if ict_cfg is None or not ict_cfg.enabled:
        return cls(schema, **kwargs)
    if item_text is None:
        raise DataError("the ICT needs the item text matrix (run `llmcf embed`)", field="item_text")
    ict = ICT(schema, item_text, cot_dim, dim=ict_cfg.dim, layers=ict_cfg.layers, heads=ict_cfg.heads,
              variant=ict_cfg.variant, dropout=ict_cfg.dropout, field_dim=ict_cfg.field_dim,
              recon_weight=ict_cfg.recon_weight)
    return LLMCFModel(cls(schema, extra_dim=ict.dim, **kwargs), ict)
