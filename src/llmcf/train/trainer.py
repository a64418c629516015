"""One trainer for every model: fit with early stopping on validation AUC, reload the best weights, test once.

A model's forward takes a batch dict and returns {"logit": [B], "losses": {name: scalar}}; the trainer adds the BCE
loss to every auxiliary loss (e.g. the ICT's reconstruction term), so new losses plug in without new code here.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from llmcf.config import TrainConfig
from llmcf.train.batches import ArrayBatches
from llmcf.train.distributed import current
from llmcf.train.loop import FitResult, early_stopping_fit, peak_rss_mb  # noqa: F401  (re-exported)
from llmcf.train.metrics import ctr_metrics


@torch.no_grad()
def predict(model: torch.nn.Module, batches: ArrayBatches) -> np.ndarray:
    """Probabilities for every row, in order. Under torchrun each process predicts its chunk of rows and every
    process gets all of them back (``llmcf.train.distributed``)."""
    from llmcf.train.device import model_device, to_device

    model.eval()
    dev = model_device(model)
    out = [torch.sigmoid(model(to_device(b, dev))["logit"]).float().cpu().numpy() for b in batches]
    probs = np.concatenate(out) if out else np.zeros(0, dtype=np.float32)
    d = getattr(batches, "dist", None)
    return d.gather_rows(probs, batches.n) if d is not None else probs


def evaluate(model, batches: ArrayBatches, labels: np.ndarray, users: np.ndarray | None = None) -> dict[str, float]:
    return ctr_metrics(labels, predict(model, batches), users)


def param_groups(model: torch.nn.Module, weight_decay: float, ict_weight_decay: float,
                 ict_lr: float | None = None) -> list[dict]:
    """Adam parameter groups: the ICT module's parameters (names under ``ict.``, and the safe-fusion head) get ``ict_weight_decay`` (and
    ``ict_lr`` when given), the rest ``weight_decay``. Empty groups are left out."""
    ict, rest = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (ict if name.startswith(("ict.", "ict_head.")) else rest).append(p)
    groups = [{"params": rest, "weight_decay": weight_decay},
              {"params": ict, "weight_decay": ict_weight_decay, **({"lr": ict_lr} if ict_lr is not None else {})}]
    return [g for g in groups if g["params"]]


def adam(params, lr: float, device: torch.device | str = "cpu") -> torch.optim.Adam:
    """The trainers' Adam: the fused kernel (one pass over every parameter tensor; the same update up to float
    rounding) on CPU and CUDA, where PyTorch has it. On CPU it takes an LLM-CF step's optimiser time from ~2.8 to
    ~0.5 ms (48 small tensors; benchmarks/results/train_cost.md)."""
    fused = torch.device(device).type in ("cpu", "cuda")
    return torch.optim.Adam(params, lr=lr, fused=fused or None)


def fit(model: torch.nn.Module, train: ArrayBatches, valid: ArrayBatches, valid_labels: np.ndarray,
        cfg: TrainConfig, *, valid_users: np.ndarray | None = None, test: ArrayBatches | None = None,
        test_labels: np.ndarray | None = None, test_users: np.ndarray | None = None,
        progress: bool = True, desc: str = "train", validate_start: bool = False) -> FitResult:
    """Train with Adam until validation AUC stops improving for ``cfg.patience`` epochs; test the best weights once.
    ``validate_start``: the untrained (e.g. warm-started) weights are a candidate too (best_epoch 0).
    Under torchrun the training steps run through DistributedDataParallel (``llmcf.train.distributed``)."""
    from llmcf.train.device import resolve_device

    device = resolve_device(cfg.device, "train.device")
    model.to(device)  # before the optimiser is built: its state lives where the parameters do
    opt = adam(param_groups(model, cfg.weight_decay, cfg.ict_weight_decay, cfg.ict_lr), cfg.lr, device)
    return early_stopping_fit(
        model, opt, train, step_model=current().wrap(model),
        batch_loss=lambda m, batch, out: F.binary_cross_entropy_with_logits(out["logit"], batch["label"].float()),
        validate=lambda m: evaluate(m, valid, valid_labels, valid_users),
        test=(lambda m: evaluate(m, test, test_labels, test_users)) if test is not None else None,
        stop_metric="auc", max_epochs=cfg.max_epochs, patience=cfg.patience, loss_name="bce",
        epoch_line=lambda row, m: f"train bce {row['train_bce']:.4f}  valid auc {m['auc']:.4f}  "
                                  f"logloss {m['logloss']:.4f}",
        progress=progress, desc=desc, validate_start=validate_start, device=device, grad_clip=cfg.grad_clip,
        amp=cfg.amp, plateau_lr_factor=cfg.plateau_lr_factor, min_epochs=cfg.min_epochs)
