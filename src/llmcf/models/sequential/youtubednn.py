"""YouTubeDNN (Covington et al., 2016), candidate generation: MLP over [mean history embedding ; user embedding].

Hyper-parameters (defaults): hidden=64 (item and user embedding size and output size), mlp=(128,) hidden layers
(ReLU), dropout=0.2, ICT fusion = an MLP over [u ; w] → hidden (``alpha`` is unused by this backbone).
"""
from __future__ import annotations

import torch
from torch import nn

from llmcf.models.sequential import SEQ_BACKBONES
from llmcf.models.sequential.base import SeqBackbone


@SEQ_BACKBONES.register("YouTubeDNN")
class YouTubeDNN(SeqBackbone):
    fusion = "mlp"

    def __init__(self, n_items: int, n_users: int, hist_len: int, hidden: int = 64, mlp: tuple[int, ...] = (128,),
                 dropout: float = 0.2, extra_dim: int = 0, alpha: float = 0.1):
        super().__init__(n_items, hidden, extra_dim, alpha)
        self.user_emb = nn.Embedding(n_users, hidden)
        nn.init.normal_(self.user_emb.weight, std=0.05)
        layers, d = [], 2 * hidden
        for width in mlp:
            layers += [nn.Linear(d, width), nn.ReLU(), nn.Dropout(dropout)]
            d = width
        layers.append(nn.Linear(d, hidden))
        self.mlp = nn.Sequential(*layers)

    def forward(self, batch: dict[str, torch.Tensor], extra: torch.Tensor | None = None) -> dict:
        hist = batch["hist"]
        mask = (hist > 0).to(self.item_emb.weight.dtype)
        pooled = (self.item_emb(hist) * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp_min(1.0)
        u = self.mlp(torch.cat([pooled, self.user_emb(batch["user"])], -1))
        return {"user_vec": self.fuse(u, extra), "losses": {}}
