"""SASRec (Kang & McAuley, 2018): causal self-attention over the history; the last position is the user vector.

Hyper-parameters (defaults): hidden=64, blocks=1, heads=2, dropout=0.2, learned positions (hist_len of them),
pre-LayerNorm blocks (causal multi-head attention + point-wise feed-forward of width hidden), alpha=0.1 (ICT fusion
u + alpha·w). Padding keys are masked; every position may attend to itself, so left-padded rows stay finite.
The last block computes only the last position (the one read), which gives the same output as the full block.
"""
from __future__ import annotations

import torch
from torch import nn

from llmcf.models.sequential import SEQ_BACKBONES
from llmcf.models.sequential.base import SeqBackbone


class _Block(nn.Module):
    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.attn = nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, hidden))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, blocked: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """x [B, L, d]; blocked [B·heads, L, L]. last_only: compute the last position alone ([B, 1, d])."""
        h = self.norm1(x)
        q = h[:, -1:] if last_only else h
        a, _ = self.attn(q, h, h, attn_mask=blocked[:, -1:] if last_only else blocked, need_weights=False)
        x = (x[:, -1:] if last_only else x) + self.drop(a)
        return x + self.drop(self.ffn(self.norm2(x)))


@SEQ_BACKBONES.register("SASRec")
class SASRec(SeqBackbone):
    def __init__(self, n_items: int, n_users: int, hist_len: int, hidden: int = 64, blocks: int = 1, heads: int = 2,
                 dropout: float = 0.2, extra_dim: int = 0, alpha: float = 0.1):
        super().__init__(n_items, hidden, extra_dim, alpha)
        self.heads = heads
        self.pos_emb = nn.Embedding(hist_len, hidden)
        nn.init.normal_(self.pos_emb.weight, std=0.05)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(_Block(hidden, heads, dropout) for _ in range(blocks))
        self.norm = nn.LayerNorm(hidden)
        self.register_buffer("causal", torch.triu(torch.ones(hist_len, hist_len, dtype=torch.bool), 1),
                             persistent=False)

    def forward(self, batch: dict[str, torch.Tensor], extra: torch.Tensor | None = None) -> dict:
        hist = batch["hist"]
        b, length = hist.shape
        x = self.item_emb(hist) * self.hidden ** 0.5 + self.pos_emb.weight[-length:]
        x = self.drop(x) * (hist > 0)[..., None]
        eye = torch.eye(length, dtype=torch.bool, device=hist.device)
        blocked = (self.causal[-length:, -length:] | (hist == 0)[:, None, :]) & ~eye  # [B, L, L], True = not allowed
        blocked = blocked.repeat_interleave(self.heads, 0)
        for i, block in enumerate(self.blocks):  # only the last position of the last block is used
            x = block(x, blocked, last_only=i == len(self.blocks) - 1)
        u = self.norm(x[:, -1])
        return {"user_vec": self.fuse(u, extra), "losses": {}}
