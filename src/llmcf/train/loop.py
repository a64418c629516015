"""The epoch loop both trainers share: optimise, validate after every epoch, stop after ``patience`` epochs without a
better validation score, reload the best weights and test them once.

The task-specific parts come in as functions: ``batch_loss(model, batch, out)`` (the main loss of one batch, given
the model's output dict) and ``validate(model, batches)`` / ``test`` (metrics dicts). Every auxiliary loss a model
returns under ``out["losses"]`` is added to the main loss and averaged per epoch in the curve as ``train_<name>``.
"""
from __future__ import annotations

import copy
import resource
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import torch
from tqdm.auto import tqdm


@dataclass
class FitResult:
    best_epoch: int
    valid: dict[str, float]
    test: dict[str, float]
    curve: list[dict] = field(default_factory=list)
    seconds_per_epoch: float = 0.0
    cpu_seconds_per_epoch: float = 0.0
    """CPU time (``time.process_time``: every thread of the process) of the training steps per epoch, beside the
    wall ``seconds_per_epoch``; validation excluded from both."""
    peak_rss_mb: float = 0.0
    stopped_early: bool = False


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def early_stopping_fit(model: torch.nn.Module, opt: torch.optim.Optimizer, train: Iterable[dict], *,
                       batch_loss: Callable, validate: Callable[[torch.nn.Module], dict[str, float]],
                       stop_metric: str, max_epochs: int, patience: int, loss_name: str,
                       epoch_line: Callable[[dict, dict], str], test: Callable[[torch.nn.Module], dict] | None = None,
                       progress: bool = True, desc: str = "train", validate_start: bool = False,
                       device: torch.device | None = None, grad_clip: float | None = None,
                       amp: bool = False, step_model: torch.nn.Module | None = None,
                       plateau_lr_factor: float | None = None, min_lr: float = 1e-6,
                       min_epochs: int = 0) -> FitResult:
    """Train until ``validate(model)[stop_metric]`` has not improved for ``patience`` epochs (at most
    ``max_epochs``); the curve rows hold ``train_<loss_name>``, the auxiliary losses, ``valid_*`` and ``seconds``.
    ``epoch_line(row, metrics)`` is the progress line printed after an epoch. ``validate_start``: also validate the
    weights before any training (curve row epoch 0), which early stopping may keep (best_epoch 0) — so a model
    warm-started from a trained one never ends below it on validation. ``device``: the model and every batch are
    moved there (None: where the model is); ``grad_clip``: clip the global gradient norm before each step;
    ``amp``: torch.autocast (``llmcf.train.device.amp_dtype``; a gradient scaler on cuda). ``step_model``: what the
    training steps call (a DistributedDataParallel wrapper of ``model`` under torchrun); validation, weights and
    losses use ``model``. ``plateau_lr_factor``: after every epoch that does not improve the validation score,
    multiply each parameter group's learning rate by it (not below ``min_lr``); the patience rule is unchanged, so
    training stops as before unless an epoch at the lower rate improves. ``min_epochs``: the epochs before epoch
    ``min_epochs`` count neither against patience nor for the decay (the best epoch is still the one kept)."""
    from llmcf.train.device import amp_dtype, model_device, to_device

    if plateau_lr_factor is not None and not 0.0 < plateau_lr_factor <= 1.0:
        raise ValueError(f"train.plateau_lr_factor must lie in (0, 1], got {plateau_lr_factor}")

    device = model_device(model) if device is None else device
    model.to(device)
    scaler = torch.amp.GradScaler("cuda") if amp and device.type == "cuda" else None
    step_model = model if step_model is None else step_model
    best, best_epoch, best_state, best_valid = -float("inf"), -1, None, {}
    curve, epoch_secs, epoch_cpu, bad, stopped_early = [], [], [], 0, False
    if validate_start:
        metrics = validate(model)
        curve.append({"epoch": 0, **{f"valid_{k}": v for k, v in metrics.items()}, "seconds": 0.0})
        best, best_epoch, best_valid = metrics[stop_metric], 0, metrics
        best_state = copy.deepcopy(model.state_dict())
    for epoch in range(max_epochs):
        model.train()
        t0, c0 = time.perf_counter(), time.process_time()
        losses, aux_sums = [], {}
        bar = tqdm(train, desc=f"{desc} epoch {epoch + 1}", disable=not progress, leave=False, mininterval=1.0)
        for batch in bar:
            batch = to_device(batch, device)
            with torch.autocast(device.type, dtype=amp_dtype(device), enabled=amp):
                out = step_model(batch)
                loss = batch_loss(model, batch, out)
                total = loss
                for name, aux in out.get("losses", {}).items():
                    total = total + aux
                    aux_sums[name] = aux_sums.get(name, 0.0) + float(aux.detach())
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(total).backward()
                if grad_clip:
                    scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                scaler.step(opt)
                scaler.update()
            else:
                total.backward()
                if grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                opt.step()
            losses.append(float(loss.detach()))
            if len(losses) % 50 == 0:
                bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        epoch_secs.append(time.perf_counter() - t0)
        epoch_cpu.append(time.process_time() - c0)
        metrics = validate(model)
        row = {"epoch": epoch + 1, f"train_{loss_name}": float(np.mean(losses)) if losses else float("nan"),
               **{f"train_{k}": v / max(len(losses), 1) for k, v in aux_sums.items()},
               **{f"valid_{k}": v for k, v in metrics.items()}, "seconds": epoch_secs[-1],
               "cpu_seconds": epoch_cpu[-1]}
        row["lr"] = opt.param_groups[0]["lr"]  # the rate this epoch trained with
        curve.append(row)
        if progress:
            tqdm.write(f"  {desc} epoch {epoch + 1}: {epoch_line(row, metrics)}  ({epoch_secs[-1]:.1f}s)")
        if metrics[stop_metric] > best:
            best, best_epoch, best_valid, bad = metrics[stop_metric], epoch + 1, metrics, 0
            best_state = copy.deepcopy(model.state_dict())
        elif epoch + 1 >= min_epochs:
            bad += 1
            if plateau_lr_factor is not None:
                for group in opt.param_groups:
                    group["lr"] = max(group["lr"] * plateau_lr_factor, min_lr)
            if bad >= patience:
                stopped_early = True
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    return FitResult(best_epoch=best_epoch, valid=best_valid, test=test(model) if test is not None else {},
                     curve=curve, seconds_per_epoch=float(np.mean(epoch_secs)) if epoch_secs else 0.0,
                     cpu_seconds_per_epoch=float(np.mean(epoch_cpu)) if epoch_cpu else 0.0,
                     peak_rss_mb=peak_rss_mb(), stopped_early=stopped_early)
