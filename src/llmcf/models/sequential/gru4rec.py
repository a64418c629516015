"""GRU4Rec (Hidasi et al., 2016): a GRU over the history; its final hidden state is the user vector.

Hyper-parameters (defaults): hidden=64, layers=1, dropout=0.2 (on the item embeddings), alpha=0.1 (ICT fusion
u + alpha·w). Left-padded histories are packed, so padding never enters the recurrence.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from llmcf.models.sequential import SEQ_BACKBONES
from llmcf.models.sequential.base import SeqBackbone


@SEQ_BACKBONES.register("GRU4Rec")
class GRU4Rec(SeqBackbone):
    def __init__(self, n_items: int, n_users: int, hist_len: int, hidden: int = 64, layers: int = 1,
                 dropout: float = 0.2, extra_dim: int = 0, alpha: float = 0.1):
        super().__init__(n_items, hidden, extra_dim, alpha)
        self.drop = nn.Dropout(dropout)
        self.gru = nn.GRU(hidden, hidden, num_layers=layers, batch_first=True)
        self.out = nn.Linear(hidden, hidden)

    def forward(self, batch: dict[str, torch.Tensor], extra: torch.Tensor | None = None) -> dict:
        hist = batch["hist"]
        b, length = hist.shape
        n = (hist > 0).sum(1).clamp_min(1)
        # left-padded → left-aligned: row r reads positions L-n_r .. L-1 first
        idx = (torch.arange(length, device=hist.device)[None, :] + (length - n)[:, None]).clamp_max(length - 1)
        x = self.drop(self.item_emb(hist.gather(1, idx)))
        packed = pack_padded_sequence(x, n.cpu(), batch_first=True, enforce_sorted=False)
        _, h = self.gru(packed)
        u = self.out(h[-1])
        return {"user_vec": self.fuse(u, extra), "losses": {}}
