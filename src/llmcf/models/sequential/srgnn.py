"""SR-GNN (Wu et al., 2019): a gated graph neural network over the history's session graph, attention readout.

Session graph: one node per distinct history item, a directed edge for each consecutive pair; in- and out-adjacency
normalised by degree. Hyper-parameters (defaults): hidden=64, steps=1 (gated GNN steps), dropout=0.2, alpha=0.1 (ICT
fusion u + alpha·w). Readout: s_g = Σ_i a_i v_i with a_i = q·σ(W1 v_last + W2 v_i + c) over the history positions,
user vector = W3 [s_g ; v_last].
"""
from __future__ import annotations

import torch
from torch import nn

from llmcf.models.sequential import SEQ_BACKBONES
from llmcf.models.sequential.base import SeqBackbone


class GatedGNNCell(nn.Module):
    """h' = (1 − z)·h + z·n, with messages a = [A_in (W_in h) ; A_out (W_out h)] driving GRU-style gates."""

    def __init__(self, hidden: int):
        super().__init__()
        self.w_in, self.w_out = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)
        self.gate_a = nn.Linear(2 * hidden, 3 * hidden)
        self.gate_h = nn.Linear(hidden, 3 * hidden, bias=False)

    def forward(self, h: torch.Tensor, a_in: torch.Tensor, a_out: torch.Tensor) -> torch.Tensor:
        msg = torch.cat([a_in @ self.w_in(h), a_out @ self.w_out(h)], -1)
        ar, az, an = self.gate_a(msg).chunk(3, -1)
        hr, hz, hn = self.gate_h(h).chunk(3, -1)
        r, z = torch.sigmoid(ar + hr), torch.sigmoid(az + hz)
        n = torch.tanh(an + r * hn)
        return (1 - z) * h + z * n


@SEQ_BACKBONES.register("SRGNN")
class SRGNN(SeqBackbone):
    def __init__(self, n_items: int, n_users: int, hist_len: int, hidden: int = 64, steps: int = 1,
                 dropout: float = 0.2, extra_dim: int = 0, alpha: float = 0.1):
        super().__init__(n_items, hidden, extra_dim, alpha)
        self.steps = steps
        self.cell = GatedGNNCell(hidden)
        self.drop = nn.Dropout(dropout)
        self.w1, self.w2 = nn.Linear(hidden, hidden, bias=False), nn.Linear(hidden, hidden)
        self.q = nn.Linear(hidden, 1, bias=False)
        self.w3 = nn.Linear(2 * hidden, hidden)

    @staticmethod
    def session_graph(hist: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Node slot of every position (its item's first occurrence) [B, L] and normalised A_in, A_out [B, L, L]."""
        b, length = hist.shape
        same = hist[:, :, None] == hist[:, None, :]
        alias = same.to(torch.int64).argmax(-1)  # first position holding the same item
        real = hist > 0
        edge = real[:, :-1] & real[:, 1:]
        adj = torch.zeros(b, length, length, dtype=hist.dtype if hist.is_floating_point() else torch.float32,
                          device=hist.device)
        rows = torch.arange(b, device=hist.device)[:, None].expand(-1, length - 1)
        adj[rows[edge], alias[:, :-1][edge], alias[:, 1:][edge]] = 1.0  # a set of edges: repeats count once
        a_out = adj / adj.sum(2, keepdim=True).clamp_min(1.0)
        adj_t = adj.transpose(1, 2)
        a_in = adj_t / adj_t.sum(2, keepdim=True).clamp_min(1.0)
        return alias, a_in, a_out

    def forward(self, batch: dict[str, torch.Tensor], extra: torch.Tensor | None = None) -> dict:
        hist = batch["hist"]
        alias, a_in, a_out = self.session_graph(hist)
        h = self.drop(self.item_emb(hist))  # slot j holds the item at position j (used when j is a first occurrence)
        for _ in range(self.steps):
            h = self.cell(h, a_in, a_out)
        seq = h.gather(1, alias[..., None].expand(-1, -1, h.shape[-1]))  # node vector at each history position
        mask = (hist > 0).to(seq.dtype)
        last = seq[:, -1]
        score = self.q(torch.sigmoid(self.w1(last)[:, None] + self.w2(seq))).squeeze(-1) * mask
        s_g = (score[..., None] * seq).sum(1)
        u = self.w3(torch.cat([s_g, last], -1))
        return {"user_vec": self.fuse(u, extra), "losses": {}}
