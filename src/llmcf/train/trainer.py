"""One trainer for every model: fit with early stopping on validation AUC, reload the best weights, test once.

A model's forward takes a batch dict and returns {"logit": [B], "losses": {name: scalar}}; the trainer adds the BCE
loss to every auxiliary loss (e.g. the ICT's reconstruction term), so new losses plug in without new code here.
"""
from __future__ import annotations

import copy
import resource
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from llmcf.config import TrainConfig
from llmcf.train.batches import ArrayBatches
from llmcf.train.metrics import ctr_metrics


@dataclass
class FitResult:
    best_epoch: int
    valid: dict[str, float]
    test: dict[str, float]
    curve: list[dict] = field(default_factory=list)
    seconds_per_epoch: float = 0.0
    peak_rss_mb: float = 0.0
    stopped_early: bool = False


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@torch.no_grad()
def predict(model: torch.nn.Module, batches: ArrayBatches) -> np.ndarray:
    """Probabilities for every row, in order."""
    model.eval()
    out = [torch.sigmoid(model(b)["logit"]).float().numpy() for b in batches]
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def evaluate(model, batches: ArrayBatches, labels: np.ndarray, users: np.ndarray | None = None) -> dict[str, float]:
    return ctr_metrics(labels, predict(model, batches), users)


def param_groups(model: torch.nn.Module, weight_decay: float, ict_weight_decay: float) -> list[dict]:
    """Adam parameter groups: the ICT module's parameters (names under ``ict.``) get ``ict_weight_decay``, the rest
    ``weight_decay``. Empty groups are left out."""
    ict, rest = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (ict if name.startswith("ict.") else rest).append(p)
    groups = [{"params": rest, "weight_decay": weight_decay}, {"params": ict, "weight_decay": ict_weight_decay}]
    return [g for g in groups if g["params"]]


def fit(model: torch.nn.Module, train: ArrayBatches, valid: ArrayBatches, valid_labels: np.ndarray,
        cfg: TrainConfig, *, valid_users: np.ndarray | None = None, test: ArrayBatches | None = None,
        test_labels: np.ndarray | None = None, test_users: np.ndarray | None = None,
        progress: bool = True, desc: str = "train") -> FitResult:
    """Train with Adam until validation AUC stops improving for ``cfg.patience`` epochs; test the best weights once."""
    opt = torch.optim.Adam(param_groups(model, cfg.weight_decay, cfg.ict_weight_decay), lr=cfg.lr)
    best_auc, best_epoch, best_state, best_valid = -1.0, -1, None, {}
    curve, epoch_secs, bad = [], [], 0
    stopped_early = False
    for epoch in range(cfg.max_epochs):
        model.train()
        t0 = time.perf_counter()
        losses, aux_sums = [], {}
        bar = tqdm(train, desc=f"{desc} epoch {epoch + 1}", disable=not progress, leave=False, mininterval=1.0)
        for batch in bar:
            out = model(batch)
            loss = F.binary_cross_entropy_with_logits(out["logit"], batch["label"].float())
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
        metrics = evaluate(model, valid, valid_labels, valid_users)
        row = {"epoch": epoch + 1, "train_bce": float(np.mean(losses)) if losses else float("nan"),
               **{f"train_{k}": v / max(len(losses), 1) for k, v in aux_sums.items()},
               **{f"valid_{k}": v for k, v in metrics.items()}, "seconds": epoch_secs[-1]}
        curve.append(row)
        if progress:
            tqdm.write(f"  {desc} epoch {epoch + 1}: train bce {row['train_bce']:.4f}  valid auc {metrics['auc']:.4f}"
                       f"  logloss {metrics['logloss']:.4f}  ({epoch_secs[-1]:.1f}s)")
        if metrics["auc"] > best_auc:
            best_auc, best_epoch, best_valid, bad = metrics["auc"], epoch + 1, metrics, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            bad += 1
            if bad >= cfg.patience:
                stopped_early = True
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    test_metrics = {}
    if test is not None:
        test_metrics = evaluate(model, test, test_labels, test_users)
    return FitResult(best_epoch=best_epoch, valid=best_valid, test=test_metrics, curve=curve,
                     seconds_per_epoch=float(np.mean(epoch_secs)) if epoch_secs else 0.0,
                     peak_rss_mb=peak_rss_mb(), stopped_early=stopped_early)
