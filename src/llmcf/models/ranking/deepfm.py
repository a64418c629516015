"""DeepFM (Guo et al., IJCAI 2017): first-order weights + FM second-order interactions + a DNN, summed as one logit.

Hyper-parameters (defaults):
    embed_dim=32       size of each field embedding (7 fields, see llmcf.models.layers)
    mlp=(200, 80)      hidden sizes of the DNN
    dropout=0.1        dropout after each DNN hidden layer
    extra_dim=0        size of the ICT vector; > 0 concatenates it into the DNN input and adds Linear(extra_dim, 1)
    init_std=0.01      std of the embedding initialisation
    batch_norm=False   BatchNorm in the DNN
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from llmcf.data.schema import FeatureSchema
from llmcf.models.layers import MLP, FeatureEmbedding, check_extra
from llmcf.models.ranking import BACKBONES


def fm_interaction(fields: Tensor) -> Tensor:
    """Sum of pairwise inner products of the field vectors [B, F, D] → [B]: ½·Σ_d((Σ_f v)² − Σ_f v²)."""
    return 0.5 * (fields.sum(1).pow(2) - fields.pow(2).sum(1)).sum(1)


@BACKBONES.register("DeepFM")
class DeepFM(nn.Module):
    def __init__(self, schema: FeatureSchema, embed_dim: int = 32, mlp: Sequence[int] = (200, 80),
                 dropout: float = 0.1, extra_dim: int = 0, init_std: float = 1e-2, batch_norm: bool = False):
        super().__init__()
        self.extra_dim = extra_dim
        self.embed = FeatureEmbedding(schema, embed_dim, init_std)
        self.linear = FeatureEmbedding(schema, 1, init_std)
        self.bias = nn.Parameter(torch.zeros(1))
        self.dnn = MLP(self.embed.n_fields * embed_dim + extra_dim, mlp, 1, dropout, batch_norm=batch_norm)
        self.extra_linear = nn.Linear(extra_dim, 1, bias=False) if extra_dim > 0 else None

    def forward(self, batch: dict[str, Tensor], extra: Tensor | None = None) -> dict:
        check_extra(extra, self.extra_dim, batch["item"].shape[0], "DeepFM")
        fields = self.embed(batch)  # [B, F, D]
        dnn_in = fields.flatten(1)
        logit = self.bias + self.linear(batch).sum((1, 2)) + fm_interaction(fields)
        if extra is not None:
            dnn_in = torch.cat([dnn_in, extra], dim=1)
            logit = logit + self.extra_linear(extra).squeeze(1)
        logit = logit + self.dnn(dnn_in).squeeze(1)
        return {"logit": logit, "losses": {}}
