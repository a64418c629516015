"""xDeepFM (Lian et al., KDD 2018): linear part + Compressed Interaction Network (CIN) + DNN, summed as one logit.

CIN layer k: X^k_h = Σ_{i,j} W^{k,h}_{ij} (X^{k-1}_i ∘ X^0_j), a 1×1 convolution over all field-pair Hadamard
products; every layer is sum-pooled over the embedding dimension and the pooled vectors feed one linear output.

Hyper-parameters (defaults):
    embed_dim=32            size of each field embedding (7 fields, see llmcf.models.layers)
    mlp=(200, 80)           hidden sizes of the DNN
    dropout=0.1             dropout after each DNN hidden layer
    extra_dim=0             size of the ICT vector; > 0 concatenates it into the DNN input and projects it to
                            embed_dim as an extra CIN field
    cin_layers=(100, 100)   feature maps per CIN layer
    cin_activation="identity"  activation after each CIN layer (the paper's choice; "relu" also common)
    cin_split_half=True     as in the authors' code: every CIN layer but the last sends half of its maps to the
                            output and half to the next layer (False: all maps to both, the paper's equations)
    init_std=0.01           std of the embedding initialisation
    batch_norm=False        BatchNorm in the DNN
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from llmcf.data.schema import FeatureSchema
from llmcf.models.layers import MLP, FeatureEmbedding, activation, check_extra
from llmcf.models.ranking import BACKBONES


class CIN(nn.Module):
    """Compressed Interaction Network over [B, m, D] field embeddings → [B, out_dim]."""

    def __init__(self, n_fields: int, layer_sizes: Sequence[int], act: str = "identity", split_half: bool = True):
        super().__init__()
        if not layer_sizes:
            raise ValueError("cin_layers must name at least one layer")
        if split_half and any(h % 2 for h in layer_sizes[:-1]):
            raise ValueError(f"cin_split_half needs even sizes for all but the last CIN layer, got {list(layer_sizes)}")
        self.convs = nn.ModuleList()
        self.acts = nn.ModuleList()
        self.split = []
        prev, self.out_dim = n_fields, 0
        for i, h in enumerate(layer_sizes):
            self.convs.append(nn.Conv1d(prev * n_fields, h, kernel_size=1))  # measured faster than Linear on CPU
            self.acts.append(activation(act, h))
            half = split_half and i < len(layer_sizes) - 1
            self.split.append(half)
            prev = h // 2 if half else h
            self.out_dim += h // 2 if half else h

    def forward(self, x0: Tensor) -> Tensor:
        B, m, D = x0.shape
        xk, pooled = x0, []
        for conv, act, half in zip(self.convs, self.acts, self.split):
            z = (xk.unsqueeze(2) * x0.unsqueeze(1)).reshape(B, -1, D)  # [B, H_k·m, D]
            h = act(conv(z).transpose(1, 2)).transpose(1, 2)  # [B, H_{k+1}, D]; activations act per feature map
            if half:
                xk, out = h.chunk(2, dim=1)
            else:
                xk = out = h
            pooled.append(out.sum(2))
        return torch.cat(pooled, dim=1)


@BACKBONES.register("xDeepFM")
class XDeepFM(nn.Module):
    def __init__(self, schema: FeatureSchema, embed_dim: int = 32, mlp: Sequence[int] = (200, 80),
                 dropout: float = 0.1, extra_dim: int = 0, cin_layers: Sequence[int] = (100, 100),
                 cin_activation: str = "identity", cin_split_half: bool = True, init_std: float = 1e-2, batch_norm: bool = False):
        super().__init__()
        self.extra_dim = extra_dim
        self.embed = FeatureEmbedding(schema, embed_dim, init_std)
        self.linear = FeatureEmbedding(schema, 1, init_std)
        self.bias = nn.Parameter(torch.zeros(1))
        n_fields = self.embed.n_fields + (1 if extra_dim > 0 else 0)
        self.extra_field = nn.Linear(extra_dim, embed_dim) if extra_dim > 0 else None
        self.cin = CIN(n_fields, cin_layers, cin_activation, cin_split_half)
        self.cin_out = nn.Linear(self.cin.out_dim, 1, bias=False)
        self.dnn = MLP(self.embed.n_fields * embed_dim + extra_dim, mlp, 1, dropout, batch_norm=batch_norm)

    def forward(self, batch: dict[str, Tensor], extra: Tensor | None = None) -> dict:
        check_extra(extra, self.extra_dim, batch["item"].shape[0], "xDeepFM")
        fields = self.embed(batch)  # [B, F, D]
        dnn_in = fields.flatten(1)
        if extra is not None:
            fields = torch.cat([fields, self.extra_field(extra).unsqueeze(1)], dim=1)
            dnn_in = torch.cat([dnn_in, extra], dim=1)
        logit = (self.bias + self.linear(batch).sum((1, 2)) + self.cin_out(self.cin(fields)).squeeze(1)
                 + self.dnn(dnn_in).squeeze(1))
        return {"logit": logit, "losses": {}}
