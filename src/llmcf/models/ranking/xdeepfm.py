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
    """Compressed Interaction Network over [B, m, D] field embeddings → [B, Σ layer sizes]."""

    def __init__(self, n_fields: int, layer_sizes: Sequence[int], act: str = "identity"):
        super().__init__()
        if not layer_sizes:
            raise ValueError("cin_layers must name at least one layer")
        self.convs = nn.ModuleList()
        self.acts = nn.ModuleList()
        prev = n_fields
        for h in layer_sizes:
            self.convs.append(nn.Conv1d(prev * n_fields, h, kernel_size=1))
            self.acts.append(activation(act, h))
            prev = h
        self.out_dim = sum(layer_sizes)

    def forward(self, x0: Tensor) -> Tensor:
        B, m, D = x0.shape
        xk, pooled = x0, []
        for conv, act in zip(self.convs, self.acts):
            z = (xk.unsqueeze(2) * x0.unsqueeze(1)).reshape(B, -1, D)  # [B, H_k·m, D]
            xk = conv(z)  # [B, H_{k+1}, D]
            xk = act(xk.transpose(1, 2)).transpose(1, 2)  # activations act over the feature-map dimension
            pooled.append(xk.sum(2))
        return torch.cat(pooled, dim=1)


@BACKBONES.register("xDeepFM")
class XDeepFM(nn.Module):
    def __init__(self, schema: FeatureSchema, embed_dim: int = 32, mlp: Sequence[int] = (200, 80),
                 dropout: float = 0.1, extra_dim: int = 0, cin_layers: Sequence[int] = (100, 100),
                 cin_activation: str = "identity", init_std: float = 1e-2, batch_norm: bool = False):
        super().__init__()
        self.extra_dim = extra_dim
        self.embed = FeatureEmbedding(schema, embed_dim, init_std)
        self.linear = FeatureEmbedding(schema, 1, init_std)
        self.bias = nn.Parameter(torch.zeros(1))
        n_fields = self.embed.n_fields + (1 if extra_dim > 0 else 0)
        self.extra_field = nn.Linear(extra_dim, embed_dim) if extra_dim > 0 else None
        self.cin = CIN(n_fields, cin_layers, cin_activation)
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
