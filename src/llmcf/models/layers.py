"""Shared layers of the ranking backbones: the MLP, the feature embedding and the check of the extra (ICT) input.

FeatureEmbedding turns an encoded batch (llmcf.data.schema) into field embeddings. The seven fields, in order:
    user, item, brand (the item's first brand), cats (mean over the item's non-padding categories),
    hist_item, hist_brand, hist_cats (each a mean over the valid history positions).
Brands and categories of target and history items come from the same tables (``FeatureSchema.item_brand`` /
``item_cats``, kept as buffers), so one item always has one representation. Padding (id 0) contributes nothing:
the embedding row 0 is zero and never trained, and history positions outside ``hist_len`` are masked before lookup.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from llmcf.data.schema import FeatureSchema
from llmcf.errors import DataError

FEATURE_FIELDS = ("user", "item", "brand", "cats", "hist_item", "hist_brand", "hist_cats")


class Dice(nn.Module):
    """DIN's data-adaptive activation: p·x + (1−p)·α·x with p = sigmoid(BatchNorm(x)) over the last dimension."""

    def __init__(self, dim: int, eps: float = 1e-8):
        super().__init__()
        self.bn = nn.BatchNorm1d(dim, affine=False, eps=eps)
        self.alpha = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        p = torch.sigmoid(self.bn(x.reshape(-1, x.shape[-1]))).reshape(x.shape)
        return p * x + (1 - p) * self.alpha * x


class PReLU(nn.Module):
    """PReLU with one slope per feature of the last dimension (nn.PReLU uses dimension 1, wrong for [B, L, d])."""

    def __init__(self, dim: int, init: float = 0.25):
        super().__init__()
        self.weight = nn.Parameter(torch.full((dim,), init))

    def forward(self, x: Tensor) -> Tensor:
        return torch.where(x >= 0, x, self.weight * x)


def activation(name: str, dim: int) -> nn.Module:
    """``relu`` | ``prelu`` | ``dice`` | ``sigmoid`` | ``identity``."""
    makers = {"relu": nn.ReLU, "prelu": lambda: PReLU(dim), "dice": lambda: Dice(dim),
              "sigmoid": nn.Sigmoid, "identity": nn.Identity}
    if name not in makers:
        raise ValueError(f"unknown activation '{name}'; expected one of {', '.join(makers)}")
    return makers[name]()


class MLP(nn.Sequential):
    """Linear → [BatchNorm] → activation → Dropout per hidden layer, then an optional linear output layer."""

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int | None = None, dropout: float = 0.0,
                 act: str = "relu", batch_norm: bool = False):
        layers: list[nn.Module] = []
        d = in_dim
        for h in hidden:
            layers.append(nn.Linear(d, h))
            if batch_norm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(activation(act, h))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            d = h
        if out_dim is not None:
            layers.append(nn.Linear(d, out_dim))
            d = out_dim
        super().__init__(*layers)
        self.out_dim = d


def _schema_table(arr, name: str, n_items: int, ndim: int, n_max: int) -> Tensor:
    a = np.asarray(arr)
    if a.ndim != ndim or a.shape[0] != n_items:
        raise DataError(f"expected shape ({n_items}{', C' if ndim == 2 else ''}), got {a.shape}", field=name)
    if not np.issubdtype(a.dtype, np.integer):
        raise DataError(f"expected integer ids, got dtype {a.dtype}", field=name)
    if a.size and (a.min() < 0 or a.max() >= n_max):
        raise DataError(f"ids must lie in [0, {n_max}), got [{a.min()}, {a.max()}]", field=name)
    return torch.from_numpy(a.astype(np.int64, copy=True))


class FeatureEmbedding(nn.Module):
    """Field embeddings of a batch; see the module docstring for the fields.

    embed_dim: size of every field vector (1 gives the first-order/linear weights of the FM family).
    init_std:  std of the normal initialisation of the embedding tables (padding rows stay zero).
    """

    n_fields = len(FEATURE_FIELDS)

    def __init__(self, schema: FeatureSchema, embed_dim: int, init_std: float = 1e-2):
        super().__init__()
        self.embed_dim = embed_dim
        self.hist_len = schema.hist_len
        self.register_buffer("item_brand", _schema_table(schema.item_brand, "item_brand", schema.n_items, 1,
                                                         schema.n_brands), persistent=False)
        self.register_buffer("item_cats", _schema_table(schema.item_cats, "item_cats", schema.n_items, 2,
                                                        schema.n_cats), persistent=False)
        self.user = nn.Embedding(schema.n_users, embed_dim, padding_idx=0)
        self.item = nn.Embedding(schema.n_items, embed_dim, padding_idx=0)
        self.brand = nn.Embedding(schema.n_brands, embed_dim, padding_idx=0)
        self.cat = nn.Embedding(schema.n_cats, embed_dim, padding_idx=0)
        for emb in (self.user, self.item, self.brand, self.cat):
            nn.init.normal_(emb.weight, std=init_std)
            with torch.no_grad():
                emb.weight[0].zero_()

    def item_fields(self, items: Tensor) -> Tensor:
        """Item, brand and mean category embeddings of item ids of any shape S: [*S, 3, D]."""
        cats = self.item_cats[items]  # [*S, C]
        n = (cats != 0).sum(-1, keepdim=True).clamp(min=1)
        cat_mean = self.cat(cats).sum(-2) / n
        return torch.stack([self.item(items), self.brand(self.item_brand[items]), cat_mean], dim=-2)

    def history_mask(self, batch: dict[str, Tensor]) -> Tensor:
        """[B, L] bool: True at the ``hist_len`` right-most (valid) positions of the left-padded history."""
        hist = batch["hist"]
        L = hist.shape[1]
        pos = torch.arange(L, device=hist.device)
        return pos.unsqueeze(0) >= (L - batch["hist_len"].clamp(0, L)).unsqueeze(1)

    def history(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Per-position item fields of the history [B, L, 3, D] (zeros at padding) and the mask [B, L]."""
        mask = self.history_mask(batch)
        return self.item_fields(batch["hist"] * mask), mask

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """All seven fields with the history mean-pooled: [B, 7, D]."""
        target = self.item_fields(batch["item"])
        hist, mask = self.history(batch)
        n = mask.sum(1).clamp(min=1).to(hist.dtype)
        pooled = hist.sum(1) / n[:, None, None]
        return torch.cat([self.user(batch["user"]).unsqueeze(1), target, pooled], dim=1)


def check_extra(extra: Tensor | None, extra_dim: int, batch_size: int, model: str) -> None:
    """Raise ValueError unless ``extra`` is a [B, extra_dim] tensor exactly when the model was built with extra_dim>0."""
    if extra_dim > 0 and extra is None:
        raise ValueError(f"{model} was built with extra_dim={extra_dim} but forward() got no extra vector; "
                         "pass the ICT output as extra=[B, extra_dim] or build the model with extra_dim=0")
    if extra_dim == 0 and extra is not None:
        raise ValueError(f"{model} was built with extra_dim=0 but forward() got an extra vector of shape "
                         f"{tuple(extra.shape)}; build it with extra_dim={extra.shape[-1]}")
    if extra is not None and tuple(extra.shape) != (batch_size, extra_dim):
        raise ValueError(f"{model}: extra must have shape ({batch_size}, {extra_dim}), got {tuple(extra.shape)}")
