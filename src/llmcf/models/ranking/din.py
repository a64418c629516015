"""DIN, Deep Interest Network (Zhou et al., KDD 2018): target attention over the user's history, then a DNN.

Queries and keys are item representations [item, brand, mean categories] (3·embed_dim), from the same tables for
target and history. The attention unit scores each history position with MLP([q, k, q−k, q⊙k]) and, as in the paper,
does not normalise the weights with a softmax; padding positions get weight 0. The DNN input is
[user, target item fields, attention-pooled history (3·embed_dim), ICT vector if given].

Hyper-parameters (defaults):
    embed_dim=32                 size of each field embedding
    mlp=(200, 80)                hidden sizes of the DNN
    dropout=0.1                  dropout after each DNN hidden layer
    extra_dim=0                  size of the ICT vector; > 0 concatenates it into the DNN input
    attention_mlp=(80, 40)       hidden sizes of the attention unit
    attention_activation="relu"  activation of the attention unit: relu | prelu | dice (the paper's Dice)
    dnn_activation="relu"        activation of the DNN: relu | prelu | dice
    init_std=0.01                std of the embedding initialisation
    batch_norm=False             BatchNorm in the DNN
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from llmcf.data.schema import FeatureSchema
from llmcf.models.layers import MLP, FeatureEmbedding, check_extra
from llmcf.models.ranking import BACKBONES


class TargetAttention(nn.Module):
    """Weighted sum of history keys [B, L, d] with weights MLP([q, k, q−k, q⊙k]) (no softmax), masked to 0 at padding.

    The first layer is applied in factorised form, W·[q, k, q−k, q⊙k] = (W_q+W_d)·q + (W_k−W_d)·k + W_p·(q⊙k),
    so the query part is computed once per row instead of once per history position (same function, half the cost).
    """

    def __init__(self, dim: int, hidden: Sequence[int], act: str):
        super().__init__()
        if not hidden:
            raise ValueError("attention_mlp must name at least one hidden layer")
        self.dim = dim
        self.unit = MLP(4 * dim, hidden, 1, act=act)

    def forward(self, query: Tensor, keys: Tensor, mask: Tensor) -> Tensor:
        first = self.unit[0]
        w_q, w_k, w_d, w_p = first.weight.split(self.dim, dim=1)
        h = (nn.functional.linear(query, w_q + w_d, first.bias).unsqueeze(1)
             + nn.functional.linear(keys, w_k - w_d) + nn.functional.linear(query.unsqueeze(1) * keys, w_p))
        for layer in list(self.unit)[1:]:
            h = layer(h)
        w = h.squeeze(-1)  # [B, L]
        w = w * mask.to(w.dtype)
        return (w.unsqueeze(-1) * keys).sum(1)


@BACKBONES.register("DIN")
class DIN(nn.Module):
    def __init__(self, schema: FeatureSchema, embed_dim: int = 32, mlp: Sequence[int] = (200, 80),
                 dropout: float = 0.1, extra_dim: int = 0, attention_mlp: Sequence[int] = (80, 40),
                 attention_activation: str = "relu", dnn_activation: str = "relu", init_std: float = 1e-2,
                 batch_norm: bool = False):
        super().__init__()
        self.extra_dim = extra_dim
        self.embed = FeatureEmbedding(schema, embed_dim, init_std)
        item_dim = 3 * embed_dim
        self.attention = TargetAttention(item_dim, attention_mlp, attention_activation)
        self.dnn = MLP(embed_dim + 2 * item_dim + extra_dim, mlp, 1, dropout, act=dnn_activation,
                       batch_norm=batch_norm)

    def forward(self, batch: dict[str, Tensor], extra: Tensor | None = None) -> dict:
        check_extra(extra, self.extra_dim, batch["item"].shape[0], "DIN")
        target = self.embed.item_fields(batch["item"]).flatten(1)  # [B, 3D]
        hist, mask = self.embed.history(batch)  # [B, L, 3, D], [B, L]
        pooled = self.attention(target, hist.flatten(2), mask)
        parts = [self.embed.user(batch["user"]), target, pooled]
        if extra is not None:
            parts.append(extra)
        logit = self.dnn(torch.cat(parts, dim=1)).squeeze(1)
        return {"logit": logit, "losses": {}}
