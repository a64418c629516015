"""Trainer for next-item retrieval: sampled softmax, early stopping on valid NDCG@10, best weights reloaded, test once.

A model's forward takes a batch dict and returns {"user_vec": [B, d], "losses": {name: scalar}}; ``model.item_vectors()``
is the item table [n_items, d] scored by inner product. Loss = softmax cross-entropy of the target against
``num_negatives`` uniform negatives shared by the batch (ids >= 2, drawn with replacement); a negative equal to a
row's target gets logit −inf in that row, so the target never counts as its own negative. ``num_negatives`` = 0 is
the full softmax over every item (pad/OOV excluded). Auxiliary losses (e.g. the ICT's reconstruction) are added.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from llmcf.data.schema import OOV
from llmcf.train.seq_metrics import ranking_metrics, target_ranks
from llmcf.train.trainer import peak_rss_mb

STOP_METRIC = "ndcg@10"


@dataclass
class SeqFitResult:
    best_epoch: int
    valid: dict[str, float]
    test: dict[str, float]
    curve: list[dict] = field(default_factory=list)
    seconds_per_epoch: float = 0.0
    peak_rss_mb: float = 0.0
    stopped_early: bool = False


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
    model.eval()
    items = model.item_vectors()
    out = [target_ranks(model(b)["user_vec"] @ items.T, b["item"], b["hist"], remove_history) for b in batches]
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def evaluate_seq(model, batches, remove_history: bool = False, ks=(5, 10, 20)) -> dict[str, float]:
    return ranking_metrics(rank_targets(model, batches, remove_history), ks)


def fit_seq(model: torch.nn.Module, train, valid, *, lr: float = 1e-3, weight_decay: float = 1e-5,
            max_epochs: int = 50, patience: int = 2, num_negatives: int = 256, remove_history: bool = False,
            ks=(5, 10, 20), test=None, seed: int = 0, progress: bool = True, desc: str = "train") -> SeqFitResult:
    """Adam until valid NDCG@10 stops improving for ``patience`` epochs; the best weights are reloaded and tested."""
    ks = tuple(sorted(set(ks) | {10}))
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    best, best_epoch, best_state, best_valid = -1.0, -1, None, {}
    curve, epoch_secs, bad, stopped_early = [], [], 0, False
    for epoch in range(max_epochs):
        model.train()
        t0 = time.perf_counter()
        losses, aux_sums = [], {}
        bar = tqdm(train, desc=f"{desc} epoch {epoch + 1}", disable=not progress, leave=False, mininterval=1.0)
        for batch in bar:
            out = model(batch)
            loss = sampled_softmax_loss(out["user_vec"], model.item_vectors(), batch["item"], num_negatives, gen)
            total = loss
            for name, aux in out.get("losses", {}).items():
                total = total + aux
                aux_sums[name] = aux_sums.get(name, 0.0) + float(aux.detach())
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            losses.append(float(loss.detach()))
            if len(losses) % 50 == 0:
                bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        epoch_secs.append(time.perf_counter() - t0)
        metrics = evaluate_seq(model, valid, remove_history, ks)
        row = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)) if losses else float("nan"),
               **{f"train_{k}": v / max(len(losses), 1) for k, v in aux_sums.items()},
               **{f"valid_{k}": v for k, v in metrics.items()}, "seconds": epoch_secs[-1]}
        curve.append(row)
        if progress:
            tqdm.write(f"  {desc} epoch {epoch + 1}: loss {row['train_loss']:.4f}  valid recall@10 "
                       f"{metrics['recall@10']:.4f}  ndcg@10 {metrics['ndcg@10']:.4f}  ({epoch_secs[-1]:.1f}s)")
        if metrics[STOP_METRIC] > best:
            best, best_epoch, best_valid, bad = metrics[STOP_METRIC], epoch + 1, metrics, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            bad += 1
            if bad >= patience:
                stopped_early = True
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    test_metrics = evaluate_seq(model, test, remove_history, ks) if test is not None else {}
    return SeqFitResult(best_epoch=best_epoch, valid=best_valid, test=test_metrics, curve=curve,
                        seconds_per_epoch=float(np.mean(epoch_secs)) if epoch_secs else 0.0,
                        peak_rss_mb=peak_rss_mb(), stopped_early=stopped_early)
