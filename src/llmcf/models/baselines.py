"""The baselines' modules (``llmcf.train.baselines`` builds them): what each adds to an unchanged ranking backbone.

``AugmentedModel(backbone, feature)`` runs ``backbone(batch, extra=feature(batch))``, like ``LLMCFModel`` with a
feature module in place of the ICT. Two feature modules:

``TextEmbFeature`` (textemb): frozen sentence-encoder vectors of the target item and the mean over the non-padding
history positions, ``MLP([t, h]) → dim``; an item without text (an all-zero row) reads a learned "missing" vector
instead. Hyper-parameters: dim=32, hidden=64, dropout=0.1.

``KARFeature`` (KAR, Xi et al. 2023): frozen encoder vectors of one LLM text per user (reasoning about preferences)
and per item (factual knowledge), each mapped by a ``HybridExpertAdaptor`` to ``dim``, concatenated → ``2·dim``. A
user or item without a generated text (an all-zero row: outside a sampled generation budget) gets a learned
"missing" vector of its side in place of the adaptor's output. Hyper-parameters: dim=32, hidden=64, shared=2,
dedicated=2, dropout=0.1.

``DistilledModel(backbone, weight, temperature)`` (kd): the backbone unchanged; in training, batches that carry
``kd_prob`` [B] (teacher p(Yes)) and ``kd_mask`` [B] add ``weight · T² · Σ_masked BCE(σ(z/T), σ(logit(p)/T)) / B``
as the loss ``kd``. Hyper-parameters: weight=1.0, temperature=1.0.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from llmcf.models.layers import MLP


def _frozen(table) -> Tensor:
    t = torch.as_tensor(table, dtype=torch.float32)
    if t.ndim != 2:
        raise ValueError(f"expected a [n, D] vector table, got shape {tuple(t.shape)}")
    return t.clone()


def _present(table: Tensor) -> Tensor:
    """[n] bool: the rows that hold a vector (an all-zero row means "no text")."""
    return table.abs().sum(1) > 0


class TextEmbFeature(nn.Module):
    """[text(target), mean text(history)] → MLP → [B, dim]. ``item_text``: [n_items, D] by vocabulary id (zero rows:
    no text); kept as a non-persistent buffer (rebuilt from the run's embed/ when loaded, never trained)."""

    def __init__(self, item_text, dim: int = 32, hidden: int = 64, dropout: float = 0.1):
        super().__init__()
        self.register_buffer("item_text", _frozen(item_text), persistent=False)
        self.register_buffer("has_text", _present(self.item_text), persistent=False)
        D = self.item_text.shape[1]
        self.dim = dim
        self.missing = nn.Parameter(torch.zeros(D))
        self.mlp = MLP(2 * D, (hidden,), dim, dropout)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        item = batch["item"]
        target = torch.where(self.has_text[item].unsqueeze(1), self.item_text[item], self.missing)
        hist = batch["hist"]  # [B, L], 0 = padding
        mask = (hist > 0) & self.has_text[hist]
        vecs = self.item_text[hist] * mask.unsqueeze(-1)
        mean = vecs.sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        return self.mlp(torch.cat([target, mean], dim=1))


class SeqTextEmb(nn.Module):
    """textemb for a sequential backbone (``seq-<name>+textemb``): the frozen item-text vectors enter on both sides of
    the dot product. Item side: the scoring vector of item i is its id embedding plus ``P·text(i)`` (P learned, [D →
    hidden]; zero for an item without text), so the full ranking over all items reads the text. User side: the mean
    text of the history, ``P·mean``, through the backbone's ``extra`` input (its own fusion, ``seq.fusion_alpha``).
    ``item_text``: [n_items, D] by vocabulary id, a non-persistent buffer (rebuilt from embed/ when loaded)."""

    def __init__(self, backbone: nn.Module, item_text, dropout: float = 0.1):
        super().__init__()
        self.backbone = backbone
        self.register_buffer("item_text", _frozen(item_text), persistent=False)
        self.register_buffer("has_text", _present(self.item_text), persistent=False)
        hidden = backbone.hidden
        if backbone.extra_dim != hidden:
            raise ValueError(f"SeqTextEmb needs a backbone built with extra_dim={hidden}, got {backbone.extra_dim}")
        self.proj = nn.Linear(self.item_text.shape[1], hidden, bias=False)
        nn.init.normal_(self.proj.weight, std=0.01)  # starts near the id embeddings alone
        self.drop = nn.Dropout(dropout)

    def item_vectors(self) -> Tensor:
        return self.backbone.item_vectors() + self.proj(self.item_text)

    def forward(self, batch: dict[str, Tensor], extra: Tensor | None = None) -> dict:
        if extra is not None:
            raise ValueError("SeqTextEmb makes its own extra input; it is not combined with the ICT")
        hist = batch["hist"]  # [B, L], 0 = padding
        mask = (hist > 0) & self.has_text[hist]
        mean = (self.item_text[hist] * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        return self.backbone(batch, extra=self.drop(self.proj(mean)))


class HybridExpertAdaptor(nn.Module):
    """KAR's hybrid-expert adaptor for two kinds of knowledge vectors (sides ``user`` and ``item``).

    Every side has its own ``dedicated`` experts; ``shared`` experts serve both sides. An expert is
    ``Linear(D, hidden) → ReLU → Dropout → Linear(hidden, dim)``. Side s's gate ``softmax(Linear(D, shared +
    dedicated)(x))`` weighs the shared experts and its own, and the output is the weighted sum of their outputs."""

    SIDES = ("user", "item")

    def __init__(self, in_dim: int, dim: int = 32, hidden: int = 64, shared: int = 2, dedicated: int = 2,
                 dropout: float = 0.1):
        super().__init__()
        if shared < 0 or dedicated < 0 or shared + dedicated < 1:
            raise ValueError(f"KAR needs at least one expert per side (shared={shared}, dedicated={dedicated})")

        def expert():
            return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, dim))

        self.shared = nn.ModuleList(expert() for _ in range(shared))
        self.dedicated = nn.ModuleDict({s: nn.ModuleList(expert() for _ in range(dedicated)) for s in self.SIDES})
        self.gate = nn.ModuleDict({s: nn.Linear(in_dim, shared + dedicated) for s in self.SIDES})
        self.dim = dim

    def forward(self, x: Tensor, side: str) -> Tensor:
        """x [B, D] of one side → [B, dim] (its gate weights: ``gates(x, side)``)."""
        experts = [*self.shared, *self.dedicated[side]]
        out = torch.stack([e(x) for e in experts], dim=1)  # [B, E, dim]
        return (self.gates(x, side).unsqueeze(-1) * out).sum(1)

    def gates(self, x: Tensor, side: str) -> Tensor:
        return torch.softmax(self.gate[side](x), dim=-1)


class KARFeature(nn.Module):
    """[adaptor(user text vector, "user"), adaptor(target item text vector, "item")] → [B, 2·dim]. ``user_text``
    [n_users, D] and ``item_text`` [n_items, D] by vocabulary id (zero rows: no generated text), frozen buffers."""

    def __init__(self, user_text, item_text, dim: int = 32, hidden: int = 64, shared: int = 2, dedicated: int = 2,
                 dropout: float = 0.1):
        super().__init__()
        self.register_buffer("user_text", _frozen(user_text), persistent=False)
        self.register_buffer("item_text", _frozen(item_text), persistent=False)
        if self.user_text.shape[1] != self.item_text.shape[1]:
            raise ValueError(f"user and item knowledge vectors differ in size: {self.user_text.shape[1]} vs "
                             f"{self.item_text.shape[1]}")
        self.register_buffer("user_has", _present(self.user_text), persistent=False)
        self.register_buffer("item_has", _present(self.item_text), persistent=False)
        self.adaptor = HybridExpertAdaptor(self.user_text.shape[1], dim, hidden, shared, dedicated, dropout)
        self.missing = nn.ParameterDict({s: nn.Parameter(torch.zeros(dim)) for s in HybridExpertAdaptor.SIDES})
        self.dim = 2 * dim

    def side(self, ids: Tensor, side: str) -> Tensor:
        """[B] vocabulary ids of one side → [B, dim]: the adaptor's output, or the side's missing vector."""
        table, has = (self.user_text, self.user_has) if side == "user" else (self.item_text, self.item_has)
        out = self.adaptor(table[ids], side)
        return torch.where(has[ids].unsqueeze(1), out, self.missing[side])

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return torch.cat([self.side(batch["user"], "user"), self.side(batch["item"], "item")], dim=1)


class AugmentedModel(nn.Module):
    """backbone(batch, extra=feature(batch)): a backbone built with ``extra_dim = feature.dim``."""

    def __init__(self, backbone: nn.Module, feature: nn.Module):
        super().__init__()
        self.backbone, self.feature = backbone, feature

    def forward(self, batch: dict[str, Tensor]) -> dict:
        return self.backbone(batch, extra=self.feature(batch))


def soft_label_loss(logit: Tensor, teacher_p: Tensor, mask: Tensor, temperature: float = 1.0) -> Tensor:
    """T² · Σ_masked BCE(σ(logit/T), σ(logit(teacher_p)/T)) / B (0 when no row is masked in)."""
    T = float(temperature)
    p = teacher_p.clamp(1e-6, 1 - 1e-6)
    target = torch.sigmoid(torch.log(p / (1 - p)) / T)
    per_row = F.binary_cross_entropy_with_logits(logit / T, target, reduction="none")
    return (T * T) * (per_row * mask.to(per_row.dtype)).sum() / max(logit.shape[0], 1)


class DistilledModel(nn.Module):
    """The backbone alone, plus the soft-label loss ``kd`` on training batches that carry teacher scores."""

    def __init__(self, backbone: nn.Module, weight: float = 1.0, temperature: float = 1.0):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"baseline.kd_temperature must be > 0, got {temperature}")
        self.backbone, self.weight, self.temperature = backbone, float(weight), float(temperature)

    def forward(self, batch: dict[str, Tensor]) -> dict:
        out = self.backbone(batch)
        if self.training and "kd_prob" in batch:
            kd = self.weight * soft_label_loss(out["logit"], batch["kd_prob"], batch["kd_mask"], self.temperature)
            out = {**out, "losses": {**out["losses"], "kd": kd}}
        return out
