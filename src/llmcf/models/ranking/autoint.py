"""AutoInt+ (Song et al., CIKM 2019): stacked multi-head self-attention over field embeddings, plus a parallel DNN.

Each interacting layer: per head h, Q/K/V projections of every field to ``attention_dim``; softmax(QKᵀ) mixes the
fields; the heads are concatenated, a projected residual of the layer input is added, then ReLU. The final field
vectors are flattened into a linear logit, which is summed with the DNN's logit (the "+" of AutoInt+).

Hyper-parameters (defaults):
    embed_dim=32         size of each field embedding (7 fields, see llmcf.models.layers)
    mlp=(200, 80)        hidden sizes of the DNN
    dropout=0.1          dropout after each DNN hidden layer
    extra_dim=0          size of the ICT vector; > 0 concatenates it into the DNN input and projects it to
                         embed_dim as an extra field of the self-attention layers
    attention_layers=3   number of interacting layers
    num_heads=2          attention heads per layer
    attention_dim=32     size of each head's query/key/value (a layer outputs num_heads·attention_dim per field)
    use_scale=False      divide scores by sqrt(attention_dim) (the paper does not)
    use_residual=True    add the projected layer input
    init_std=0.01        std of the embedding initialisation
    batch_norm=False     BatchNorm in the DNN
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from llmcf.data.schema import FeatureSchema
from llmcf.models.layers import MLP, FeatureEmbedding, check_extra
from llmcf.models.ranking import BACKBONES


class InteractingLayer(nn.Module):
    """Multi-head self-attention over fields: [B, F, d_in] → [B, F, heads·att_dim]."""

    def __init__(self, d_in: int, heads: int, att_dim: int, use_scale: bool, use_residual: bool):
        super().__init__()
        self.heads, self.att_dim = heads, att_dim
        d_out = heads * att_dim
        self.qkv = nn.Linear(d_in, 3 * d_out, bias=False)
        self.res = nn.Linear(d_in, d_out, bias=False) if use_residual else None
        self.scale = att_dim ** -0.5 if use_scale else 1.0

    def forward(self, x: Tensor) -> Tensor:
        B, F, _ = x.shape
        q, k, v = self.qkv(x).view(B, F, 3, self.heads, self.att_dim).permute(2, 0, 3, 1, 4)  # each [B, H, F, a]
        out = nn.functional.scaled_dot_product_attention(q, k, v, scale=self.scale)  # softmax(s·QKᵀ)V
        out = out.transpose(1, 2).reshape(B, F, -1)
        if self.res is not None:
            out = out + self.res(x)
        return torch.relu(out)


@BACKBONES.register("AutoInt")
class AutoInt(nn.Module):
    def __init__(self, schema: FeatureSchema, embed_dim: int = 32, mlp: Sequence[int] = (200, 80),
                 dropout: float = 0.1, extra_dim: int = 0, attention_layers: int = 3, num_heads: int = 2,
                 attention_dim: int = 32, use_scale: bool = False, use_residual: bool = True,
                 init_std: float = 1e-2, batch_norm: bool = False):
        super().__init__()
        self.extra_dim = extra_dim
        self.embed = FeatureEmbedding(schema, embed_dim, init_std)
        self.extra_field = nn.Linear(extra_dim, embed_dim) if extra_dim > 0 else None
        n_fields = self.embed.n_fields + (1 if extra_dim > 0 else 0)
        dims = [embed_dim] + [num_heads * attention_dim] * attention_layers
        self.layers = nn.ModuleList([InteractingLayer(dims[i], num_heads, attention_dim, use_scale, use_residual)
                                     for i in range(attention_layers)])
        self.att_out = nn.Linear(n_fields * dims[-1], 1)
        self.dnn = MLP(self.embed.n_fields * embed_dim + extra_dim, mlp, 1, dropout, batch_norm=batch_norm)

    def forward(self, batch: dict[str, Tensor], extra: Tensor | None = None) -> dict:
        check_extra(extra, self.extra_dim, batch["item"].shape[0], "AutoInt")
        fields = self.embed(batch)  # [B, F, D]
        dnn_in = fields.flatten(1)
        if extra is not None:
            fields = torch.cat([fields, self.extra_field(extra).unsqueeze(1)], dim=1)
            dnn_in = torch.cat([dnn_in, extra], dim=1)
        x = fields
        for layer in self.layers:
            x = layer(x)
        logit = self.att_out(x.flatten(1)).squeeze(1) + self.dnn(dnn_in).squeeze(1)
        return {"logit": logit, "losses": {}}
