"""Shared parts of the sequential backbones: the item table used for scoring, ICT fusion, and the LLM-CF wrapper."""
from __future__ import annotations

import torch
from torch import nn

from llmcf.models.llmcf_model import LLMCFModel


class SeqBackbone(nn.Module):
    """Base class: ``item_emb`` (padding 0) is both the input embedding and the scoring table.

    fusion: "add" → u + alpha·P(w) (P = identity when extra_dim == hidden, else a linear map to hidden);
            "mlp" → MLP([u ; w]) → hidden.
    """

    fusion = "add"

    def __init__(self, n_items: int, hidden: int = 64, extra_dim: int = 0, alpha: float = 0.1):
        super().__init__()
        self.n_items, self.hidden, self.extra_dim, self.alpha = n_items, hidden, extra_dim, float(alpha)
        self.item_emb = nn.Embedding(n_items, hidden, padding_idx=0)
        nn.init.normal_(self.item_emb.weight, std=0.05)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()
        if extra_dim and self.fusion == "add":
            self.extra_proj = nn.Identity() if extra_dim == hidden else nn.Linear(extra_dim, hidden, bias=False)
        elif extra_dim and self.fusion == "mlp":
            self.extra_mlp = nn.Sequential(nn.Linear(hidden + extra_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden))

    def item_vectors(self) -> torch.Tensor:
        return self.item_emb.weight

    def fuse(self, u: torch.Tensor, extra: torch.Tensor | None) -> torch.Tensor:
        if (extra is None) != (self.extra_dim == 0):
            raise ValueError(f"{type(self).__name__}: extra input {'missing' if extra is None else 'unexpected'} "
                             f"(extra_dim={self.extra_dim})")
        if extra is None:
            return u
        if self.fusion == "add":
            return u + self.alpha * self.extra_proj(extra)
        return self.extra_mlp(torch.cat([u, extra], -1))


class SeqLLMCF(LLMCFModel):
    """The LLM-CF wrapper of a sequential backbone: ``LLMCFModel`` with the target hidden from the ICT (its
    current-sample features token is built from the user and the history only)."""

    def __init__(self, backbone: SeqBackbone, ict: nn.Module):
        super().__init__(backbone, ict, hide_target=True)


def build_seq_model(name: str, n_items: int, n_users: int, hist_len: int, seq_cfg,
                    ict: nn.Module | None = None) -> nn.Module:
    """The registered backbone ``name`` (from SeqConfig: hidden, fusion_alpha, ``params_for(name)``), wrapped with
    ``ict`` if given."""
    from llmcf.models.sequential import SEQ_BACKBONES

    cls = SEQ_BACKBONES.get(name)
    kwargs = dict(hidden=seq_cfg.hidden, alpha=seq_cfg.fusion_alpha, **seq_cfg.params_for(name))
    if ict is None:
        return cls(n_items, n_users, hist_len, **kwargs)
    return SeqLLMCF(cls(n_items, n_users, hist_len, extra_dim=ict.dim, **kwargs), ict)
