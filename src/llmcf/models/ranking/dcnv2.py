"""DCN-V2 (Wang et al., WWW 2021): full-rank cross network and a DNN in parallel (the paper's "parallel" structure).

Cross layer l: x_{l+1} = x_0 ⊙ (W_l x_l + b_l) + x_l with a full d×d matrix W_l (or a low-rank U_l V_lᵀ when
``low_rank`` is set). The input x_0 concatenates the field embeddings (and the ICT vector when given); the cross and
DNN outputs are concatenated and mapped to the logit.

Hyper-parameters (defaults):
    embed_dim=32      size of each field embedding (7 fields, see llmcf.models.layers)
    mlp=(200, 80)     hidden sizes of the DNN
    dropout=0.1       dropout after each DNN hidden layer
    extra_dim=0       size of the ICT vector; > 0 concatenates it into x_0 (input of cross network and DNN)
    cross_layers=3    number of cross layers
    low_rank=None     rank r of W_l = U_l V_lᵀ; None = full rank (the paper's default DCN-V2)
    init_std=0.01     std of the embedding initialisation
    batch_norm=False  BatchNorm in the DNN
"""
from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from llmcf.data.schema import FeatureSchema
from llmcf.models.ranking import BACKBONES
from llmcf.models.ranking.dcn import DCN


class CrossNetV2(nn.Module):
    """Matrix cross layers of DCN-V2: [B, d] → [B, d]."""

    def __init__(self, dim: int, layers: int, low_rank: int | None = None):
        super().__init__()
        if low_rank is None:
            self.maps = nn.ModuleList([nn.Linear(dim, dim) for _ in range(layers)])
        else:
            self.maps = nn.ModuleList([nn.Sequential(nn.Linear(dim, low_rank, bias=False), nn.Linear(low_rank, dim))
                                       for _ in range(layers)])

    def forward(self, x0: Tensor) -> Tensor:
        x = x0
        for m in self.maps:
            x = x0 * m(x) + x
        return x


@BACKBONES.register("DCNv2")
class DCNv2(DCN):
    """DCN with the matrix cross network (``CrossNetV2``); same embeddings, DNN tower and output layer."""

    def __init__(self, schema: FeatureSchema, embed_dim: int = 32, mlp: Sequence[int] = (200, 80),
                 dropout: float = 0.1, extra_dim: int = 0, cross_layers: int = 3, low_rank: int | None = None,
                 init_std: float = 1e-2, batch_norm: bool = False):
        self.low_rank = low_rank
        super().__init__(schema, embed_dim, mlp, dropout, extra_dim, cross_layers, init_std, batch_norm)

    def cross_net(self, in_dim: int, layers: int) -> nn.Module:
        return CrossNetV2(in_dim, layers, self.low_rank)
