"""DCN, Deep & Cross Network (Wang et al., ADKDD 2017): a cross network and a DNN in parallel over the same input.

Cross layer l: x_{l+1} = x_0 · (x_lᵀ w_l) + b_l + x_l (a rank-one feature cross with a residual). The input x_0 is
the concatenation of the field embeddings (and of the ICT vector when given); the cross output and the DNN output
are concatenated and mapped to the logit.

Hyper-parameters (defaults):
    embed_dim=32      size of each field embedding (7 fields, see llmcf.models.layers)
    mlp=(200, 80)     hidden sizes of the DNN
    dropout=0.1       dropout after each DNN hidden layer
    extra_dim=0       size of the ICT vector; > 0 concatenates it into x_0 (input of cross network and DNN)
    cross_layers=3    number of cross layers
    init_std=0.01     std of the embedding initialisation
    batch_norm=False  BatchNorm in the DNN
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from llmcf.data.schema import FeatureSchema
from llmcf.models.layers import MLP, FeatureEmbedding, check_extra
from llmcf.models.ranking import BACKBONES


class CrossNet(nn.Module):
    """Rank-one cross layers of DCN: [B, d] → [B, d]."""

    def __init__(self, dim: int, layers: int):
        super().__init__()
        self.w = nn.ParameterList([nn.Parameter(torch.randn(dim) * dim ** -0.5) for _ in range(layers)])
        self.b = nn.ParameterList([nn.Parameter(torch.zeros(dim)) for _ in range(layers)])

    def forward(self, x0: Tensor) -> Tensor:
        x = x0
        for w, b in zip(self.w, self.b):
            x = x0 * (x @ w).unsqueeze(1) + b + x
        return x


@BACKBONES.register("DCN")
class DCN(nn.Module):
    def __init__(self, schema: FeatureSchema, embed_dim: int = 32, mlp: Sequence[int] = (200, 80),
                 dropout: float = 0.1, extra_dim: int = 0, cross_layers: int = 3, init_std: float = 1e-2,
                 batch_norm: bool = False):
        super().__init__()
        self.extra_dim = extra_dim
        self.embed = FeatureEmbedding(schema, embed_dim, init_std)
        in_dim = self.embed.n_fields * embed_dim + extra_dim
        self.cross = self.cross_net(in_dim, cross_layers)
        self.dnn = MLP(in_dim, mlp, None, dropout, batch_norm=batch_norm)
        self.out = nn.Linear(in_dim + self.dnn.out_dim, 1)

    def cross_net(self, in_dim: int, layers: int) -> nn.Module:
        """The cross network (DCN-V2 swaps in its matrix version; the DNN tower and output stay the same)."""
        return CrossNet(in_dim, layers)

    def forward(self, batch: dict[str, Tensor], extra: Tensor | None = None) -> dict:
        check_extra(extra, self.extra_dim, batch["item"].shape[0], type(self).__name__)
        x0 = self.embed(batch).flatten(1)
        if extra is not None:
            x0 = torch.cat([x0, extra], dim=1)
        logit = self.out(torch.cat([self.cross(x0), self.dnn(x0)], dim=1)).squeeze(1)
        return {"logit": logit, "losses": {}}
