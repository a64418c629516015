"""A trained backbone plus a learned correction of its logit: the pieces safe fusion and the residual baselines share.

``zero_head(dim)``: ``Linear(dim, dim) → SiLU → Linear(dim, 1)`` whose last layer starts at zero, so a model that adds
it to a backbone's logit starts exactly as the backbone.

``FrozenBackbone``: a mixin for a module with a ``backbone`` attribute; ``freeze_backbone()`` keeps the backbone's
current weights (no gradients, held in eval mode whatever ``train()`` says, so dropout and batch-norm statistics do
not move either). ``LLMCFModel`` (``ict.freeze_backbone``) and ``ResidualModel`` use it.

``ResidualModel(backbone, delta)``: ``logit = backbone(batch) + delta(batch)`` where ``delta`` starts at zero. Two
deltas: ``FeatureHead(feature)`` = ``zero_head(feature(batch))`` (a baseline's feature module learning the residual,
``baseline.residual``) and ``GatedLogit(second)`` = ``g · second(batch).logit`` with a scalar ``g`` that starts at 0
(``--baseline boost``: a second backbone of the same kind fitted to the first one's residual, i.e. one round of
boosting — the control for "does any extra capacity on the residual help?").
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


def zero_head(dim: int) -> nn.Sequential:
    head = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, 1))
    nn.init.zeros_(head[2].weight)
    nn.init.zeros_(head[2].bias)
    return head


class FrozenBackbone:
    """Mixin for an ``nn.Module`` with a ``backbone``: ``freeze_backbone()`` and the ``train()`` that respects it."""

    backbone_frozen = False

    def freeze_backbone(self) -> None:
        self.backbone_frozen = True
        self.backbone.requires_grad_(False)
        self.backbone.train(False)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.backbone_frozen:
            self.backbone.train(False)
        return self

    def backbone_output(self, batch: dict[str, Tensor]) -> dict:
        if self.backbone_frozen:
            with torch.no_grad():
                return self.backbone(batch)
        return self.backbone(batch)


class FeatureHead(nn.Module):
    """``zero_head(feature(batch))`` → [B]: a baseline's feature vector (``feature.dim``) read as a logit correction."""

    def __init__(self, feature: nn.Module):
        super().__init__()
        self.feature, self.head = feature, zero_head(feature.dim)

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict]:
        return self.head(self.feature(batch)).squeeze(-1), {}


class GatedLogit(nn.Module):
    """``g · second(batch)["logit"]`` → [B], g a learned scalar starting at 0 (so the sum starts as the first model;
    g's gradient is non-zero at once and the second model's follows as g moves); the second model's own losses are
    returned under ``boost_<name>``."""

    def __init__(self, second: nn.Module):
        super().__init__()
        self.second = second
        self.gate = nn.Parameter(torch.zeros(()))

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict]:
        out = self.second(batch)
        return self.gate * out["logit"], {f"boost_{k}": v for k, v in out["losses"].items()}


class ResidualModel(FrozenBackbone, nn.Module):
    """``backbone(batch)`` with ``delta(batch)`` added to its logit (``delta`` → ([B], losses), zero at init).
    ``backbone`` is built exactly as the base model, so the trained base weights load into it (``ict.warm_start``'s
    ``warm_start_backbone``) and ``freeze_backbone()`` keeps them."""

    residual = True

    def __init__(self, backbone: nn.Module, delta: nn.Module):
        super().__init__()
        self.backbone, self.delta = backbone, delta

    def forward(self, batch: dict[str, Tensor]) -> dict:
        out = self.backbone_output(batch)
        d, losses = self.delta(batch)
        clash = set(out["losses"]) & set(losses)
        if clash:
            raise ValueError(f"backbone and residual both report losses named {sorted(clash)}")
        return {**out, "logit": out["logit"] + d, "losses": {**out["losses"], **losses}}
