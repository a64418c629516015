"""Trainer for next-item retrieval: sampled softmax, early stopping on valid NDCG@10, best weights reloaded, test once.

A model's forward takes a batch dict and returns {"user_vec": [B, d], "losses": {name: scalar}}; ``model.item_vectors()``
is the item table [n_items, d] scored by inner product. Loss = softmax cross-entropy of the target against
``num_negatives`` uniform negatives shared by the batch (ids >= 2, drawn with replacement); a negative equal to a
row's target gets logit −inf in that row, so the target never counts as its own negative. ``num_negatives`` = 0 is
the full softmax over every item (pad/OOV excluded). Auxiliary losses (e.g. the ICT's reconstruction) are added.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from llmcf.data.schema import OOV
from llmcf.train.loop import FitResult, early_stopping_fit
from llmcf.train.seq_metrics import ranking_metrics, target_ranks

STOP_METRIC = "ndcg@10"


SeqFitResult = FitResult  # one result type for both tasks


def sampled_softmax_logits(user_vec: torch.Tensor, items: torch.Tensor, target: torch.Tensor,
                           negatives: torch.Tensor | None) -> torch.Tensor:
    """Logits [B, 1 + N]: column 0 the target, then the shared negatives [N] (−inf where a negative is the target)."""
    pos = (user_vec * items[target]).sum(-1, keepdim=True)
    neg = user_vec @ items[negatives].T
    neg = neg.masked_fill(negatives[None, :] == target[:, None], -torch.inf)
    return torch.cat([pos, neg], 1)


def sampled_softmax_loss(user_vec: torch.Tensor, items: torch.Tensor, target: torch.Tensor, num_negatives: int,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    n_items = items.shape[0]
    if num_negatives <= 0:
        logits = user_vec @ items.T
        logits[:, : OOV + 1] = -torch.inf
        return F.cross_entropy(logits, target)
    negatives = torch.randint(OOV + 1, n_items, (num_negatives,), generator=generator, device=user_vec.device)
    logits = sampled_softmax_logits(user_vec, items, target, negatives)
    return F.cross_entropy(logits, torch.zeros_like(target))


@torch.no_grad()
def rank_targets(model: torch.nn.Module, batches, remove_history: bool = False) -> np.ndarray:
    """0-based full-ranking rank of every row's target, in order."""
    from llmcf.train.device import model_device, to_device

    model.eval()
    items = model.item_vectors()
    dev = model_device(model)
    out = [target_ranks(model(b)["user_vec"] @ items.T, b["item"], b["hist"], remove_history)
           for b in (to_device(x, dev) for x in batches)]
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def evaluate_seq(model, batches, remove_history: bool = False, ks=(5, 10, 20)) -> dict[str, float]:
    return ranking_metrics(rank_targets(model, batches, remove_history), ks)


def fit_seq(model: torch.nn.Module, train, valid, *, lr: float = 1e-3, weight_decay: float = 1e-5,
            ict_weight_decay: float | None = None, max_epochs: int = 50, patience: int = 2, num_negatives: int = 256, remove_history: bool = False,
            ks=(5, 10, 20), test=None, seed: int = 0, progress: bool = True, desc: str = "train",
            device: str = "cpu", grad_clip: float | None = None, amp: bool = False) -> SeqFitResult:
    """Adam until valid NDCG@10 stops improving for ``patience`` epochs; the best weights are reloaded and tested.
    The ICT's parameters get ``ict_weight_decay`` (None: ``weight_decay``, like the backbone's)."""
    from llmcf.train.trainer import adam, param_groups

    ks = tuple(sorted(set(ks) | {10}))
    wd_ict = weight_decay if ict_weight_decay is None else ict_weight_decay
    from llmcf.train.device import resolve_device

    dev = resolve_device(device, "train.device")
    model.to(dev)
    opt = adam(param_groups(model, weight_decay, wd_ict), lr, dev)
    gen = torch.Generator(device=dev).manual_seed(seed)
    return early_stopping_fit(
        model, opt, train,
        batch_loss=lambda m, batch, out: sampled_softmax_loss(out["user_vec"], m.item_vectors(), batch["item"],
                                                              num_negatives, gen),
        validate=lambda m: evaluate_seq(m, valid, remove_history, ks),
        test=(lambda m: evaluate_seq(m, test, remove_history, ks)) if test is not None else None,
        stop_metric=STOP_METRIC, max_epochs=max_epochs, patience=patience, loss_name="loss",
        epoch_line=lambda row, m: f"loss {row['train_loss']:.4f}  valid recall@10 {m['recall@10']:.4f}  "
                                  f"ndcg@10 {m['ndcg@10']:.4f}",
        progress=progress, desc=desc, device=dev, grad_clip=grad_clip, amp=amp)
